"""LoRA through PEFT on zhcoder's model: apply, save, load, merge.

zhcoder's module names are Hugging Face's (`model.layers.0.self_attn.q_proj`), so PEFT wraps the model as it wraps
transformers' Qwen classes, and an adapter saved here is the same file transformers + peft write: each side loads
the other's adapters on the same base checkpoint (tests/test_lora.py).

    zhcoder train sft --model BASE --data DATA --out RUN --lora            # RUN/final is a PEFT adapter folder
    zhcoder lora merge BASE RUN/final MERGED                               # a plain HF checkpoint
    zhcoder chat --model RUN/final                 # or use the adapter folder as a model: merged when loaded
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:                  # light to import: zhcoder.train.config (the CLI's options) reads DEFAULT_TARGETS
    from torch import nn

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def apply_lora(model: nn.Module, r: int = 16, alpha: int = 32, dropout: float = 0.05,
               targets: tuple[str, ...] | list[str] = DEFAULT_TARGETS):
    """A PeftModel around `model`: LoRA on `targets` (module names), only the adapters trainable."""
    from peft import LoraConfig, get_peft_model

    if r < 1 or alpha <= 0 or not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA needs r >= 1, alpha > 0 and 0 <= dropout < 1 (got r={r}, alpha={alpha}, "
                         f"dropout={dropout})")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none")
    return get_peft_model(model, config)


def base_record(base: str | Path) -> str:
    """What an adapter records as its `base_model_name_or_path`: the base checkpoint's absolute folder, where
    `Engine.from_dir` (and `zhcoder.checkpoint.adapter_base`) finds it again."""
    return str(Path(base).resolve()) if Path(base).is_dir() else str(base)


def load_adapter(model: nn.Module, adapter_dir: str | Path, trainable: bool = False):
    """A PeftModel of `model` with the adapter in `adapter_dir` (written by zhcoder or by transformers + peft)."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"no adapter_config.json in {adapter_dir}: not a PEFT adapter folder")
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)


def merged_model(base: str | Path, adapter: str | Path, dtype: str = "auto", device: str = "cpu") -> nn.Module:
    """The base checkpoint with the adapter merged into its weights (in fp32, in CPU memory), then cast to `dtype`
    ("auto": the base's stored dtype) and moved to `device`: a plain zhcoder model, as fast as the base."""
    from zhcoder.checkpoint import CheckpointError, load_model, resolve_dtype

    try:
        import peft  # noqa: F401
    except ImportError:
        raise CheckpointError(f"{adapter} is a LoRA adapter: loading it needs peft (pip install -e '.[train]')") \
            from None
    merged = load_adapter(load_model(base, dtype="float32"), adapter).merge_and_unload()
    return merged.to(resolve_dtype(dtype, merged.config)).to(device)


def merge(base: str | Path, adapter: str | Path, out: str | Path, dtype: str = "auto") -> Path:
    """Write base + adapter merged into a plain HF checkpoint (config, safetensors, tokenizer) at `out`."""
    from zhcoder.checkpoint import save_model
    from zhcoder.tokenizer import Tokenizer

    merged = merged_model(base, adapter, dtype)
    tokenizer = Tokenizer.from_dir(base) if Path(base, "tokenizer.json").is_file() else None
    return save_model(merged, out, tokenizer=tokenizer, chat_template=tokenizer.chat_template if tokenizer else None)
