"""Model configuration: one dataclass for the Qwen2, Qwen3 and Qwen3-MoE families.

Reads and writes Hugging Face `config.json` (`model_type` qwen2 / qwen3 / qwen3_moe), accepting both the
transformers-v4 rope keys (`rope_theta`, `rope_scaling`) and v5's `rope_parameters`. Holds the presets of the
published shapes and counts parameters from the config alone, without allocating weights.

    python -m zhcoder.config            # prints every preset with its parameter count
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path


def setting(default=dataclasses.MISSING, help: str = "", factory=dataclasses.MISSING, **extra):
    """A settings dataclass field with its command-line help (zhcoder.cli.settings makes the option from it)."""
    return field(default=default, default_factory=factory, metadata={"help": help, **extra})

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3", "qwen3_moe")
SUPPORTED_ROPE_TYPES = ("default", "linear", "yarn")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# The token classes of the code-aware attention bias, in id order (zhcoder/code_bias.py assigns them).
CODE_CLASSES = ("other", "newline_indent", "bracket", "separator", "cjk_punctuation")


class ConfigError(ValueError):
    """A config.json zhcoder cannot run (unknown model or rope type, missing keys)."""


@dataclass
class ModelConfig:
    model_type: str = "qwen3"
    vocab_size: int = 151936
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    max_position_embeddings: int = 40960
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    rope_scaling: dict | None = None  # {"rope_type": "linear"|"yarn", "factor": ..., ...}; None = default rope
    tie_word_embeddings: bool = True
    attention_bias: bool = False  # q/k/v bias: True for Qwen2
    hidden_act: str = "silu"
    # Qwen3-MoE
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = True
    decoder_sparse_step: int = 1
    mlp_only_layers: list[int] = field(default_factory=list)
    # zhcoder's code-aware attention bias (zhcoder/code_bias.py); False for every plain Qwen checkpoint
    code_aware_attention: bool = False
    # token ids and storage dtype, kept for round trips
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    torch_dtype: str = "bfloat16"

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"unsupported model_type {self.model_type!r}: zhcoder runs {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.hidden_act != "silu":
            raise ConfigError(f"unsupported hidden_act {self.hidden_act!r}: Qwen models use 'silu'")
        if self.rope_scaling is not None:
            rope_type = self.rope_scaling.get("rope_type", self.rope_scaling.get("type", "default"))
            if rope_type not in SUPPORTED_ROPE_TYPES:
                raise ConfigError(
                    f"unsupported rope type {rope_type!r}: zhcoder supports {', '.join(SUPPORTED_ROPE_TYPES)}"
                )
            if rope_type == "default":
                self.rope_scaling = None
            else:
                self.rope_scaling = {**self.rope_scaling, "rope_type": rope_type}
                self.rope_scaling.pop("type", None)
                if "factor" not in self.rope_scaling:
                    raise ConfigError(f"rope type {rope_type!r} needs a 'factor'")
        if self.model_type == "qwen3_moe" and (self.num_experts <= 0 or self.num_experts_per_tok <= 0):
            raise ConfigError("qwen3_moe needs num_experts and num_experts_per_tok > 0")

    # ----- family traits ---------------------------------------------------------------------------------
    @property
    def qk_norm(self) -> bool:
        """Qwen3 and Qwen3-MoE normalise queries and keys per head before RoPE."""
        return self.model_type in ("qwen3", "qwen3_moe")

    def is_moe_layer(self, layer_idx: int) -> bool:
        """Which decoder layers hold a sparse MoE block (the rule of Qwen3-MoE's reference code)."""
        return (
            self.num_experts > 0
            and layer_idx not in self.mlp_only_layers
            and (layer_idx + 1) % self.decoder_sparse_step == 0
        )

    # ----- Hugging Face config.json ---------------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, d: dict) -> "ModelConfig":
        """Build from a HF config dict; unknown keys are ignored."""
        d = dict(d)
        if "model_type" not in d:
            raise ConfigError("no 'model_type'")
        if d.get("use_sliding_window"):
            raise ConfigError("use_sliding_window=true is not supported (no published Qwen checkpoint uses it)")
        # transformers v5 nests rope settings in rope_parameters (and names num_experts num_local_experts)
        rope = d.get("rope_parameters") or {}
        if isinstance(rope, dict) and rope and "rope_theta" not in rope and "rope_type" not in rope:
            raise ConfigError("per-layer-type rope_parameters are not supported")
        theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"} or d.get("rope_scaling")
        if "num_experts" not in d and "num_local_experts" in d:
            d["num_experts"] = d["num_local_experts"]
        if "torch_dtype" not in d and "dtype" in d:
            d["torch_dtype"] = d["dtype"]
        names = {f.name for f in dataclasses.fields(cls)} - {"rope_theta", "rope_scaling"}
        kwargs = {k: v for k, v in d.items() if k in names and v is not None}
        required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size")
        missing = [k for k in required if k not in kwargs]
        if missing:
            raise ConfigError(f"missing {', '.join(missing)}")
        kwargs.setdefault("num_key_value_heads", kwargs["num_attention_heads"])
        if d["model_type"] == "qwen2":
            kwargs.setdefault("attention_bias", True)  # Qwen2 always has q/k/v bias; its config has no key for it
        return cls(rope_theta=float(theta), rope_scaling=scaling or None, **kwargs)

    def to_hf_dict(self) -> dict:
        """The config.json transformers (v4 and v5) reads for this model."""
        architecture = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM"}
        same = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_theta",
                "rope_scaling", "tie_word_embeddings", "hidden_act", "bos_token_id", "eos_token_id", "torch_dtype")
        d = {"architectures": [architecture[self.model_type]], "model_type": self.model_type,
             **{name: getattr(self, name) for name in same}, "use_cache": True, "use_sliding_window": False}
        if self.model_type != "qwen2":
            d["attention_bias"] = self.attention_bias
        if self.code_aware_attention:
            d["code_aware_attention"] = True
        if self.model_type == "qwen3_moe":
            d.update({name: getattr(self, name) for name in ("num_experts", "num_experts_per_tok",
                      "moe_intermediate_size", "norm_topk_prob", "decoder_sparse_step")},
                     mlp_only_layers=list(self.mlp_only_layers))
        return d

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.exists():
            raise FileNotFoundError(f"no config.json at {path}")
        try:
            return cls.from_hf_dict(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        except ConfigError as e:                                    # the file is named once, here
            raise ConfigError(f"{path}: {e}") from None

    def save(self, directory: str | Path) -> None:
        Path(directory, "config.json").write_text(json.dumps(self.to_hf_dict(), indent=2) + "\n", encoding="utf-8")

    # ----- sizes ---------------------------------------------------------------------------------------
    def num_parameters(self, active: bool = False) -> int:
        """Parameter count from the config alone. `active`: per token for MoE (only top-k experts)."""
        h, hd = self.hidden_size, self.head_dim
        q, kv = self.num_attention_heads * hd, self.num_key_value_heads * hd
        attention = h * q + 2 * h * kv + q * h
        if self.attention_bias:
            attention += q + 2 * kv
        if self.qk_norm:
            attention += 2 * hd
        if self.code_aware_attention:
            attention += self.num_attention_heads * len(CODE_CLASSES)
        dense_mlp = 3 * h * self.intermediate_size
        experts = self.num_experts_per_tok if active else self.num_experts
        moe_mlp = h * self.num_experts + experts * 3 * h * self.moe_intermediate_size
        total = 0
        for i in range(self.num_hidden_layers):
            total += attention + 2 * h + (moe_mlp if self.is_moe_layer(i) else dense_mlp)
        embeddings = self.vocab_size * h
        return total + h + embeddings * (1 if self.tie_word_embeddings else 2)

    def kv_cache_bytes_per_token(self, dtype: str = "bfloat16") -> int:
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * DTYPE_BYTES[dtype]


def _qwen3(**kw) -> dict:
    return dict(model_type="qwen3", head_dim=128, num_key_value_heads=8, max_position_embeddings=40960, **kw)


def _qwen25_coder(**kw) -> dict:
    return dict(model_type="qwen2", attention_bias=True, max_position_embeddings=32768, **kw)


# The published shapes (each checkpoint's config.json on the Hugging Face Hub).
PRESETS: dict[str, dict] = {
    "qwen3-0.6b": _qwen3(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16),
    "qwen3-1.7b": _qwen3(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16),
    "qwen3-4b": _qwen3(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32),
    "qwen3-8b": _qwen3(
        hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32, tie_word_embeddings=False
    ),
    "qwen3-14b": _qwen3(
        hidden_size=5120, intermediate_size=17408, num_hidden_layers=40, num_attention_heads=40, tie_word_embeddings=False
    ),
    "qwen3-coder-30b-a3b": dict(
        model_type="qwen3_moe", hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
        num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4, head_dim=128, num_experts=128,
        num_experts_per_tok=8, norm_topk_prob=True, max_position_embeddings=262144, rope_theta=10_000_000.0,
        tie_word_embeddings=False,
    ),
    "qwen2.5-coder-0.5b": _qwen25_coder(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2
    ),
    "qwen2.5-coder-1.5b": _qwen25_coder(
        hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2
    ),
    "qwen2.5-coder-7b": _qwen25_coder(
        hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
        vocab_size=152064, tie_word_embeddings=False,
    ),
    "qwen2.5-coder-14b": _qwen25_coder(
        hidden_size=5120, intermediate_size=13824, num_hidden_layers=48, num_attention_heads=40, num_key_value_heads=8,
        vocab_size=152064, tie_word_embeddings=False,
    ),
}


def preset(name: str, **overrides) -> ModelConfig:
    """A published shape by name, with optional field overrides (e.g. num_hidden_layers=2 for tests)."""
    key = name.lower()
    if key not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose from {', '.join(PRESETS)}")
    values = {**PRESETS[key], **{k: v for k, v in overrides.items() if v is not None}}
    if "hidden_size" in overrides and "head_dim" not in overrides and "head_dim" in PRESETS[key]:
        values["head_dim"] = PRESETS[key]["head_dim"]
    return ModelConfig(**values)


if __name__ == "__main__":
    for name in PRESETS:
        c = preset(name)
        print(f"{name:22s} {c.model_type:10s} {c.num_parameters():>16,d} total  {c.num_parameters(active=True):>16,d} active")
