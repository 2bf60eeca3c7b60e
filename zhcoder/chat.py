"""Prompt formats of the Qwen code models: chat templates, fill-in-the-middle, repo-level context, tool calls.

- `render_chat(messages, template="qwen3" | "qwen2.5" | "qwen3-coder" | <Jinja source>)` renders a conversation
  the way `transformers`' `apply_chat_template` does: same sandboxed Jinja settings, same `tojson`, same clean-up
  of the messages (keys set to None dropped, `thinking`/`reasoning` aliased to `reasoning_content`). The built-in
  templates in `zhcoder/templates/` are our own Jinja and produce exactly the text of the templates Qwen ships
  with Qwen2.5(-Coder)-Instruct, Qwen3 and Qwen3-Coder-30B-A3B-Instruct.
- `fim_prompt(prefix, suffix)` and `repo_prompt(repo_name, files, ...)`: Qwen2.5-Coder's FIM (PSM) and repo-level
  formats, as its README shows them.
- `parse_tool_calls(text, tools)` reads a model reply back: `<think>` reasoning, content, and tool calls in either
  format (Qwen3-Coder XML or Qwen2.5/Qwen3 JSON), XML values typed by the tool's JSON schema.

    python -m zhcoder.chat          # prints a Qwen3-Coder prompt with a tool, and a parsed reply
    pytest -q tests/test_chat.py    # expected strings from Qwen's templates; parity with transformers
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

BUILTIN_TEMPLATES = ("qwen2.5", "qwen3", "qwen3-coder")

FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE, FIM_PAD = "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>"
REPO_NAME, FILE_SEP = "<|repo_name|>", "<|file_sep|>"
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class ChatTemplateError(ValueError):
    """A chat template refused the conversation (its `raise_exception`) or could not render it."""


# ----------------------------------------------------------------------------------------------- chat templates
def builtin_template(name: str) -> str:
    """Jinja source of a built-in template: "qwen2.5", "qwen3" or "qwen3-coder"."""
    if name not in BUILTIN_TEMPLATES:
        raise ValueError(f"unknown chat template {name!r}; built-in templates: {', '.join(BUILTIN_TEMPLATES)}")
    return _read_builtin(name)


@lru_cache(maxsize=None)
def _read_builtin(name: str) -> str:
    return (resources.files("zhcoder") / "templates" / f"{name}.jinja").read_text(encoding="utf-8")


def render_chat(messages: list, *, template: str = "qwen3", tools: list[dict] | None = None,
                add_generation_prompt: bool = True, enable_thinking: bool = True, **extra: Any) -> str:
    """Render `messages` into a prompt string.

    `template` is a built-in name or Jinja source (a checkpoint's own `chat_template`). Messages are dicts (or
    dataclasses / pydantic objects) with role system/user/assistant/tool; assistant `tool_calls` may be
    OpenAI-style (`{"type": "function", "function": {"name", "arguments"}}`) with `arguments` a dict or a JSON
    string; they are rendered from a dict. `extra` reaches the template as more variables (e.g. `bos_token`).
    """
    source = _template_source(template)
    conversation = [_prepare_message(message) for message in messages]
    if not conversation:
        raise ValueError("cannot render an empty conversation")
    variables = {"documents": None, **_plain(extra)}
    variables.update(messages=conversation, tools=_plain(tools), add_generation_prompt=add_generation_prompt,
                     enable_thinking=enable_thinking)
    try:
        return _compile(source).render(**variables)
    except jinja2.TemplateSyntaxError as error:
        raise ChatTemplateError(f"chat template is not valid Jinja (line {error.lineno}): {error.message}") from error
    except (jinja2.TemplateError, TypeError) as error:
        raise ChatTemplateError(f"chat template could not render the conversation: {error}") from error


def _template_source(template: str) -> str:
    if template in BUILTIN_TEMPLATES:
        return _read_builtin(template)
    if "{{" in template or "{%" in template:
        return template
    raise ValueError(f"unknown chat template {template!r}: give one of {', '.join(BUILTIN_TEMPLATES)} "
                     "or the Jinja source of a template")


class _GenerationTag(jinja2.ext.Extension):
    """Accepts `{% generation %}...{% endgeneration %}` (transformers' assistant-mask marker) and renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller):
        return caller()


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # As transformers' filter: plain json.dumps, non-ASCII kept, no HTML escaping (Jinja's own tojson escapes <>&').
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


@lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[_GenerationTag, jinja2.ext.loopcontrols])
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = lambda format: datetime.now().strftime(format)
    return environment.from_string(source)


def _plain(value: Any) -> Any:
    """A copy of `value` made of JSON-like types only, so the sandboxed template can reach no method of the caller's
    objects (the same rule transformers applies before rendering): scalars are cut back to their base type, containers
    rebuilt, dataclasses and pydantic models turned into dicts, and anything else replaced by a "<TypeName>" string."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)  # a str enum, say, becomes its plain value
    if isinstance(value, (int, float)):
        return (int if isinstance(value, int) else float)(value)
    if isinstance(value, Mapping):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(item) for item in value]
        return items if isinstance(value, list) else tuple(items)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return _plain(value.model_dump())
    if callable(getattr(value, "item", None)) and hasattr(value, "dtype") and getattr(value, "ndim", None) == 0:
        return _plain(value.item())  # a NumPy scalar
    return f"<{type(value).__name__}>"


def _prepare_message(message: Any) -> dict:
    """Tidy one message as transformers does, and give its tool calls dict arguments."""
    message = _plain(message)
    if not isinstance(message, dict):
        raise ValueError(f"a chat message must be a dict with 'role' and 'content', got {message!r}")
    message = {key: value for key, value in message.items() if value is not None}
    reasoning = next((message[key] for key in ("reasoning_content", "thinking", "reasoning") if key in message), None)
    if reasoning is not None:
        message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
    if isinstance(message.get("tool_calls"), list):
        message["tool_calls"] = [_prepare_tool_call(call) for call in message["tool_calls"]]
    return message


def _prepare_tool_call(call: Any) -> Any:
    if not isinstance(call, dict):
        return call
    if isinstance(call.get("function"), dict):
        return {**call, "function": _prepare_tool_call(call["function"])}
    arguments = call.get("arguments")
    if isinstance(arguments, str):
        try:
            decoded = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as error:
            raise ValueError(f"tool call {call.get('name')!r}: arguments are not valid JSON ({error})") from None
        if not isinstance(decoded, dict):
            raise ValueError(f"tool call {call.get('name')!r}: arguments must be a JSON object, got {arguments!r}")
        return {**call, "arguments": decoded}
    return call


# ----------------------------------------------------------------------------------------- FIM and repo level
def fim_prompt(prefix: str, suffix: str) -> str:
    """Fill-in-the-middle prompt, prefix-suffix-middle order; the model writes the middle, then <|endoftext|>."""
    return f"{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}"


def repo_prompt(repo_name: str, files: Mapping[str, str] | Iterable[tuple[str, str]], *,
                prefix: str | None = None, suffix: str | None = None, path: str | None = None) -> str:
    """Repository-level prompt: `<|repo_name|>NAME`, then `<|file_sep|>PATH\\nCONTENT` per file, newline-separated.

    Without prefix/suffix the model continues the last file (or, with `path`, writes a new file at `path`).
    With prefix and/or suffix the prompt ends with the file at `path` as repo-level FIM:
    `<|file_sep|>PATH\\n<|fim_prefix|>PREFIX<|fim_suffix|>SUFFIX<|fim_middle|>`.
    """
    entries = list(files.items()) if isinstance(files, Mapping) else [tuple(entry) for entry in files]
    parts = [f"{FILE_SEP}{file_path}\n{content}" for file_path, content in entries]
    if prefix is not None or suffix is not None:
        if path is None:
            raise ValueError("repo-level FIM needs `path`, the file the gap is in")
        parts.append(f"{FILE_SEP}{path}\n{fim_prompt(prefix or '', suffix or '')}")
    elif path is not None:
        parts.append(f"{FILE_SEP}{path}\n")
    return f"{REPO_NAME}{repo_name}\n" + "\n".join(parts)


# ------------------------------------------------------------------------------------------------ tool calls
@dataclasses.dataclass
class ToolCall:
    name: str
    arguments: dict

    def to_openai(self, id: str | None = None) -> dict:
        """OpenAI chat-completions form; `arguments` becomes a JSON string. A fresh `call_…` id when none is given."""
        return {"id": id or f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)}}


@dataclasses.dataclass
class ParsedReply:
    content: str
    tool_calls: list[ToolCall] = dataclasses.field(default_factory=list)
    reasoning: str | None = None


def parse_tool_calls(text: str, tools: list[dict] | None = None) -> ParsedReply:
    """Split a model reply into reasoning, content and tool calls. Never raises on malformed output.

    - Reasoning: the text before `</think>` (a leading `<think>` dropped, whitespace stripped); the reply proper
      starts after it. Without `</think>` there is no reasoning and nothing is removed.
    - A tool call starts at `<tool_call>` and holds either one `<function=NAME>` block of `<parameter=ARG>VALUE
      </parameter>` pairs closed by `</function>` (Qwen3-Coder), or one JSON object `{"name": ..., "arguments":
      {...}}` (Qwen2.5/Qwen3); then `</tool_call>`, which may be missing when the block inside is complete (an
      engine stopping on it). XML values lose one leading and one trailing newline and are typed by the tool's
      JSON schema (see `_typed_value`); JSON arguments are kept as decoded.
    - Whatever is not a complete call stays in `content`: an unclosed `<function=`/`<parameter=`, JSON that does
      not decode, a name missing from `tools` (when given), stray text inside the tags. `content` is the reply
      outside the calls, which is normally the text before the first call; when there are calls it is stripped.
    """
    body, reasoning = text, None
    if THINK_CLOSE in text:
        thought, _, body = text.partition(THINK_CLOSE)
        thought = thought.lstrip().removeprefix(THINK_OPEN)
        reasoning, body = thought.strip(), body.lstrip("\n")

    schemas = _tool_schemas(tools)
    calls: list[ToolCall] = []
    kept: list[str] = []
    position = 0
    while (start := body.find(TOOL_CALL_OPEN, position)) >= 0:
        kept.append(body[position:start])
        call, end = _read_tool_call(body, start + len(TOOL_CALL_OPEN), schemas)
        if call is not None and (schemas is None or call.name in schemas):
            calls.append(call)
            position = end
        else:
            # Malformed: the block, up to its closing tag if it has one, stays in the content.
            close = body.find(TOOL_CALL_CLOSE, start)
            following = body.find(TOOL_CALL_OPEN, start + len(TOOL_CALL_OPEN))
            if close < 0 or (0 <= following < close):
                position = following if following >= 0 else len(body)
            else:
                position = close + len(TOOL_CALL_CLOSE)
            kept.append(body[start:position])
    kept.append(body[position:])
    content = "".join(kept)
    return ParsedReply(content=content.strip() if calls else content, tool_calls=calls, reasoning=reasoning)


def _tool_schemas(tools: list[dict] | None) -> dict[str, dict] | None:
    """Tool name -> its parameters' `properties`, from OpenAI-style or bare function schemas."""
    if tools is None:
        return None
    schemas = {}
    for tool in tools:
        function = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            parameters = function.get("parameters")
            properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
            schemas[function["name"]] = properties if isinstance(properties, Mapping) else {}
    return schemas


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def _read_tool_call(text: str, position: int, schemas: dict | None) -> tuple[ToolCall | None, int]:
    """Parse the payload that starts at `position` (just after `<tool_call>`); returns (call or None, end)."""
    position = _skip_space(text, position)
    if text.startswith("<function=", position):
        call, position = _read_xml_function(text, position, schemas)
    elif text.startswith("{", position):
        call, position = _read_json_call(text, position)
    else:
        return None, position
    if call is None:
        return None, position
    position = _skip_space(text, position)
    if text.startswith(TOOL_CALL_CLOSE, position):
        position += len(TOOL_CALL_CLOSE)
    return call, position


_TAG_NAME = re.compile(r"([^<>\n]+)>")


def _read_xml_function(text: str, position: int, schemas: dict | None) -> tuple[ToolCall | None, int]:
    match = _TAG_NAME.match(text, position + len("<function="))
    name = match.group(1).strip() if match else ""
    if not name:
        return None, position
    properties = (schemas or {}).get(name, {})
    arguments: dict[str, Any] = {}
    position = match.end()
    while True:
        position = _skip_space(text, position)
        if text.startswith("</function>", position):
            return ToolCall(name, arguments), position + len("</function>")
        if not text.startswith("<parameter=", position):
            return None, position
        match = _TAG_NAME.match(text, position + len("<parameter="))
        if not match or not match.group(1).strip():
            return None, position
        end = text.find("</parameter>", match.end())
        if end < 0:
            return None, position
        value = text[match.end():end].removeprefix("\n").removesuffix("\n")
        parameter = match.group(1).strip()
        arguments[parameter] = _typed_value(value, properties.get(parameter))
        position = end + len("</parameter>")


def _read_json_call(text: str, position: int) -> tuple[ToolCall | None, int]:
    try:
        payload, end = json.JSONDecoder().raw_decode(text, position)
    except (ValueError, RecursionError):
        return None, position
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        return None, end
    arguments = payload.get("arguments", {})
    if isinstance(arguments, str):  # some models double-encode the arguments
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):
            return None, end
    if not isinstance(arguments, dict):
        return None, end
    return ToolCall(payload["name"], arguments), end


# JSON-schema type names, and the looser names models and hand-written schemas use for them.
_TYPE_ALIASES = {"integer": "integer", "int": "integer", "long": "integer", "number": "number", "float": "number",
                 "double": "number", "boolean": "boolean", "bool": "boolean", "object": "object", "dict": "object",
                 "array": "array", "list": "array", "null": "null", "string": "string", "str": "string",
                 "text": "string"}
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_FAILED = object()


def _typed_value(value: str, schema: Any) -> Any:
    """Convert an XML parameter value by the JSON-schema `type` of its parameter.

    integer -> int, number -> int or float, boolean -> true/false, object/array -> JSON (or a Python literal),
    null -> None for "null". A list of types is tried in order. "null" also reads as None when the type is not a
    string. A string type, an unknown parameter or type, or a value that does not convert: the raw string.
    """
    declared = schema.get("type") if isinstance(schema, Mapping) else None
    names = declared if isinstance(declared, list) else [declared]
    types = [_TYPE_ALIASES.get(str(name).strip().lower()) for name in names if name is not None]
    types = [name for name in types if name]
    if not types:
        return value
    if value.strip().lower() == "null" and ("null" in types or "string" not in types):
        return None
    for kind in types:
        converted = _convert(value.strip(), kind)
        if converted is not _FAILED:
            return converted
    return value


def _convert(text: str, kind: str) -> Any:
    try:
        if kind == "integer" and _INTEGER.fullmatch(text):
            return int(text)
        if kind == "number" and _NUMBER.fullmatch(text):
            number = int(text) if _INTEGER.fullmatch(text) else float(text)
            return number if math.isfinite(number) else _FAILED
        if kind == "boolean" and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if kind in ("object", "array"):
            try:
                decoded = json.loads(text)
            except ValueError:  # perhaps a Python literal such as {'a': True}, as models sometimes write
                decoded = ast.literal_eval(text)
                json.dumps(decoded)  # kept only if it is JSON data
            return decoded if isinstance(decoded, dict if kind == "object" else list) else _FAILED
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # int() of 5000 digits raises too
        pass
    return _FAILED


if __name__ == "__main__":
    weather = {"type": "function", "function": {
        "name": "get_weather", "description": "查询城市天气",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                       "required": ["city"]}}}
    question = [{"role": "user", "content": "杭州明天天气怎么样？"}]
    print(render_chat(question, template="qwen3-coder", tools=[weather]))
    reply = ("我来查一下。\n<tool_call>\n<function=get_weather>\n<parameter=city>\n杭州\n</parameter>\n"
             "<parameter=days>\n1\n</parameter>\n</function>\n</tool_call>")
    print(parse_tool_calls(reply, tools=[weather]))
