"""Command-line options generated from settings dataclasses, so that a setting is declared once: as a field.

    @data_app.command("build")
    @settings_options(config=BuildConfig, run=RunConfig)
    def data_build(sources: list[str] = typer.Argument(...), config: dict = None, run: dict = None): ...

Each field becomes the option `--field-name` (or `metadata["flag"]`, e.g. "--time" or "--lora/--full"), typed as
the field (`X | None` as X, a bool as `--x/--no-x`, a list or tuple as comma-separated text), with
`metadata["help"]` as its help and the field's default shown by --help (`metadata["default_text"]` where the
default needs words). The command receives, per dataclass, a dict of the options the user GAVE: a default never
overrides a TOML file, and the dataclass fills in the rest. A field that may be None but has another default (a
filter threshold) is switched off (None) with 0. `metadata["cli"] = False` keeps a field off the command line.

    pytest -q tests/test_cli.py -k settings
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any, Callable, Optional

import typer


def _cli_type(hint: Any) -> tuple[type, bool]:
    """(the option's type, whether the field is a list given as comma-separated text)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if typing.get_origin(hint) in (list, tuple) or hint in (list, tuple):
        return str, True
    return hint, False


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return ...                                          # required


def options_of(cls: type, skip: tuple[str, ...] = ()) -> dict[str, tuple[inspect.Parameter, bool, bool]]:
    """Field name -> (the typer option as a parameter, listed, 0 means off) for each command-line field of `cls`."""
    hints = typing.get_type_hints(cls)
    found = {}
    for field in dataclasses.fields(cls):
        meta = field.metadata
        if field.name in skip or meta.get("cli") is False:
            continue
        kind, listed = _cli_type(hints[field.name])
        flag = meta.get("flag") or "--" + field.name.replace("_", "-")
        default = _default(field)
        if kind is bool and "/" not in flag:
            flag = f"{flag}/--no-{flag[2:]}"
        if listed and default not in (None, ...):
            default = ",".join(default)
        off = default not in (None, ...) and type(None) in typing.get_args(hints[field.name]) and kind is not bool
        text = meta.get("help", "") + (" (0: off)" if off else "")
        shown = meta.get("default_text", True)
        option = typer.Option(default, *flag.split(" "), help=text, show_default=shown)
        annotation = kind if default is not None and default is not ... else Optional[kind]
        found[field.name] = (inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                               annotation=annotation), listed, off)
    return found


def settings_options(skip: tuple[str, ...] = (), **classes: type) -> Callable:
    """Decorator: add every field of each dataclass in `classes` as an option of the command; the command gets,
    for each keyword, the dict {field: value} of the options the user gave (see the module docstring)."""

    def decorate(func: Callable) -> Callable:
        own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name not in classes]
        generated = {group: options_of(cls, skip) for group, cls in classes.items()}
        names = [name for fields in generated.values() for name in fields]
        assert len(names) == len(set(names)) and not set(names) & {p.name for p in own}, "option names clash"

        def command(context: typer.Context, **values: Any) -> Any:
            given: dict[str, dict] = {}
            for group, fields in generated.items():
                given[group] = {}
                for name, (_, listed, off) in fields.items():
                    value = values.pop(name)
                    source = context.get_parameter_source(name)       # typer's own click: compared by name
                    if source is None or source.name == "DEFAULT":
                        continue
                    if listed:
                        value = [item.strip() for item in value.split(",") if item.strip()]
                    elif off and value == 0:
                        value = None                     # a threshold switched off
                    given[group][name] = value
            return func(**values, **given)

        context = inspect.Parameter("context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        parameters = [context, *own, *(p for fields in generated.values() for p, _, _ in fields.values())]
        command.__signature__ = inspect.Signature(parameters)
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        command.__name__, command.__doc__ = func.__name__, func.__doc__
        return command

    return decorate
