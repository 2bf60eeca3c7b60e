"""The `zhcoder` app itself: its error handling (`main`), the verb groups and the options several stages share.
The stage modules (zhcoder.cli.generate, ...) add their verbs to it; zhcoder.cli imports them all.

    python -m zhcoder.cli --help
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from zhcoder import ZhcoderError

app = typer.Typer(
    add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None, no_args_is_help=True,
    help="zhcoder: a self-hosted Qwen3-Coder-style code model stack.",
)


class UsageError(ValueError):
    """A user error found by the CLI itself."""


def group(name: str, help: str) -> typer.Typer:
    """A verb with sub-verbs (`zhcoder data build`), added to the app."""
    sub = typer.Typer(help=help, no_args_is_help=True)
    app.add_typer(sub, name=name)
    return sub


# ----- options several verbs share -----------------------------------------------------------------------
ModelOption = typer.Option(None, "--model", "-m", help="checkpoint folder (default: $ZHCODER_MODEL, else the embedded "
                                                      "zhcoder-nano)")
DtypeOption = typer.Option("auto", help="auto (as stored), float32, bfloat16 or float16")
MaxNewTokens = typer.Option(256, "--max-new-tokens", "-n", help="tokens to generate at most")
Temperature = typer.Option(0.0, help="0 = greedy")
TopP = typer.Option(1.0, "--top-p")
TopK = typer.Option(0, "--top-k", help="0 = off")
MinP = typer.Option(0.0, "--min-p")
RepetitionPenalty = typer.Option(1.0, "--repetition-penalty")
Seed = typer.Option(None, help="random seed for sampling")
Stop = typer.Option(None, "--stop", help="stop string (repeatable)")
JsonFlag = typer.Option(False, "--json", help="print one JSON object instead of streaming text")
CompileOption = typer.Option(None, "--compile/--no-compile", help="torch.compile the decode step (default: on CUDA)")
QuantizeOption = typer.Option(None, "--quantize", help="int8 or int4 weight-only linear layers (zhcoder.quant; on CPU "
                              "both are fast with --dtype bfloat16)")


def load_engine(model: Optional[str], dtype: str, compile: Optional[bool] = None, quantize: Optional[str] = None):
    """The engine over --model (or the default model)."""
    from zhcoder.checkpoint import default_model
    from zhcoder.engine import Engine

    return Engine.from_dir(default_model(model), dtype=dtype, quantize=quantize, compile=compile)


USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, ConnectionError, ZhcoderError)


def main() -> None:
    try:
        app(standalone_mode=False)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as e:  # bad flags and arguments
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `zhcoder`: the help, not an error
            print(e.format_message())
            sys.exit(0)
        print(f"zhcoder: error: {e.format_message()}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except USER_ERRORS as e:
        if os.environ.get("ZHCODER_DEBUG"):
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"zhcoder: error: {message}", file=sys.stderr)
        sys.exit(2)


def warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"zhcoder: warning: {message}", file=sys.stderr)
