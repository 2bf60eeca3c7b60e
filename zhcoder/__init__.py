"""zhcoder: a self-hosted Qwen3-Coder-style code LLM stack (model, tokenizer, engine, CLI).

Run `zhcoder --help` for the command line.
"""

__version__ = "0.1.0"


class ZhcoderError(RuntimeError):
    """A failure whose message is written for the user (the CLI prints it as one line, exit status 2)."""
