"""`zhcoder export gguf`: a GGUF file for llama.cpp and Ollama (zhcoder.export).

    zhcoder export gguf MODEL_DIR --out model.gguf --dtype q8_0
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from zhcoder.cli.app import group

export_app = group("export", "Export checkpoints to other formats.")


@export_app.command("gguf")
def export_gguf_command(checkpoint: Optional[Path] = typer.Argument(None, help="checkpoint folder (qwen2, qwen3 or "
                                                                       "qwen3_moe; default: the default model)"),
                        out: Path = typer.Option(..., "--out", help="the .gguf file to write"),
                        dtype: str = typer.Option("f16", help="f16, bf16, f32 or q8_0 (norms, biases, router: f32)"),
                        drop_code_bias: bool = typer.Option(False, "--drop-code-bias",
                                                            help="export without a trained code-aware attention "
                                                                 "bias (llama.cpp cannot compute it)")):
    """Write a GGUF file that llama.cpp and Ollama run (weights, hyper-parameters, tokenizer, chat template)."""
    from zhcoder.checkpoint import default_model
    from zhcoder.export import export_gguf

    path = export_gguf(default_model(checkpoint), out, dtype=dtype, drop_code_bias=drop_code_bias, progress=sys.stderr.isatty())
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {dtype})")
