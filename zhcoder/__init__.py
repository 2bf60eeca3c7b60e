"""zhcoder: a self-hosted Qwen3-Coder-style code LLM stack (model, tokenizer, engine, CLI).

Run `zhcoder --help` for the command line.
"""

__version__ = "0.1.0"
