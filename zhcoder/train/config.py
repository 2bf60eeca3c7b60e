"""The settings of a training run, declared once: `TrainConfig` is the TOML file's keys, the run folder's
config.json and the options of `zhcoder train pretrain|sft` (generated from these fields by zhcoder.cli.settings).
Light on purpose (no torch): the command line imports it to build its options.

    zhcoder train pretrain --help                    # every field, its help and its default
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from zhcoder.config import setting
from pathlib import Path

from zhcoder import ZhcoderError
from zhcoder.train.lora import DEFAULT_TARGETS

STAGE_DEFAULTS = {
    # continued pre-training: Qwen2.5-Coder / StarCoder-style peak lr for small models, 0.1 weight decay
    "pretrain": {"lr": 3e-4, "warmup_steps": 100, "weight_decay": 0.1},
    # SFT: a gentle lr (full fine-tuning); LoRA runs usually want ~1e-4 to 2e-4 (set --lr)
    "sft": {"lr": 2e-5, "warmup_steps": 20, "weight_decay": 0.0},
}
RESUMABLE_CHANGES = {"steps", "save_every", "eval_every", "log_every", "keep_last", "time_limit"}


def _stage_default(key: str) -> str:
    return "stage default: " + ", ".join(f"{stage} {values[key]:g}" for stage, values in STAGE_DEFAULTS.items())


class TrainError(ZhcoderError):
    """A training run that cannot start or go on, with what to change."""


@dataclass
class TrainConfig:
    stage: str = setting("pretrain", "pretrain or sft", cli=False)          # the command names it
    data: str = setting("", "a `data build` / `data sft` output folder (train/, validation/)", default_text="none")
    out: str = setting("", "the run folder", default_text="none")
    model: str | None = setting(None, "HF checkpoint to start from")
    preset: str | None = setting(None, "or a published shape with random weights (pretrain only)")
    model_overrides: dict = setting(help="model config changes, e.g. {num_hidden_layers = 4} ([model] in TOML)",
                                     factory=dict, cli=False)
    tokenizer: str | None = setting(None, "tokenizer folder or qwen", default_text="the model's, else qwen")
    seq_len: int = setting(2048, "tokens per packed sequence")
    batch_size: int = setting(8, "sequences per micro-batch per process")
    grad_accum: int = setting(1, "micro-batches per step")
    steps: int = setting(1000, "optimizer steps")
    lr: float | None = setting(None, "peak learning rate", default_text=_stage_default("lr"))
    min_lr_ratio: float = setting(0.1, "the cosine schedule ends at this fraction of --lr")
    warmup_steps: int | None = setting(None, "linear warm-up steps", default_text=_stage_default("warmup_steps"))
    weight_decay: float | None = setting(None, "AdamW weight decay (matrices only)",
                                          default_text=_stage_default("weight_decay"))
    beta1: float = setting(0.9, "AdamW beta1")
    beta2: float = setting(0.95, "AdamW beta2")
    eps: float = setting(1e-8, "AdamW epsilon")
    grad_clip: float = setting(1.0, "clip the gradient norm to this")
    precision: str = setting("auto", "auto (bf16 on GPU, fp32 on CPU), bf16 or fp32")
    gradient_checkpointing: bool | str = setting(False, "recompute each layer in backward (TOML also takes "
                                                  "\"selective\": all but the matmuls)")
    compile: bool = setting(False, "torch.compile each decoder layer")
    seed: int = setting(0, "seed of the weights (--preset), data order and dropout")
    save_every: int = setting(500, "steps between checkpoints")
    keep_last: int = setting(2, "checkpoints kept")
    eval_every: int = setting(200, "steps between validation losses")
    eval_batches: int = setting(16, "validation micro-batches per evaluation")
    log_every: int = setting(1, "steps between printed lines (every step goes to metrics.jsonl)")
    lora: bool = setting(False, "train a LoRA adapter (PEFT) instead of every weight", flag="--lora/--full")
    lora_r: int = setting(16, "LoRA rank")
    lora_alpha: int = setting(32, "LoRA alpha (the update is scaled by alpha / r)")
    lora_dropout: float = setting(0.05, "LoRA dropout")
    lora_targets: list = setting(help="comma-separated module names LoRA wraps",
                                  factory=lambda: list(DEFAULT_TARGETS))
    code_aware_attention: bool = setting(False, "train the code-aware attention bias (zhcoder.code_bias)",
                                          flag="--code-aware-attention/--plain-attention")
    peak_tflops: float | None = setting(None, "dense bf16 peak of one device, for MFU on unlisted devices")
    time_limit: float | None = setting(None, "seconds of training: the schedule is shortened to fit (timed over "
                                        "the first steps), then a hard stop")

    def resolve(self) -> "TrainConfig":
        if self.stage not in STAGE_DEFAULTS:
            raise TrainError(f"stage must be pretrain or sft, got {self.stage!r}")
        for key, value in STAGE_DEFAULTS[self.stage].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if not self.data or not self.out:
            raise TrainError("--data and --out are required")
        if bool(self.model) == bool(self.preset):
            raise TrainError("give exactly one of --model (a checkpoint) or --preset (random weights)")
        if self.preset and self.stage == "sft":
            raise TrainError("SFT starts from a trained checkpoint: give --model")
        if self.lora and self.preset:
            raise TrainError("LoRA needs a trained base: give --model, not --preset")
        if self.lora and self.code_aware_attention:
            raise TrainError("--code-aware-attention trains new biases that a LoRA adapter file cannot hold: "
                             "add them in a full (--full) run")
        if min(self.seq_len, self.batch_size, self.grad_accum, self.steps, self.save_every, self.eval_every,
               self.log_every) < 1:
            raise TrainError("seq_len, batch_size, grad_accum, steps, save_every, eval_every and log_every must be >= 1")
        if self.gradient_checkpointing not in (False, True, "full", "selective"):
            raise TrainError(f"gradient_checkpointing must be true, false, \"full\" or \"selective\", got "
                             f"{self.gradient_checkpointing!r}")
        if self.time_limit is not None and self.time_limit <= 0:
            raise TrainError(f"time_limit must be a positive number of seconds, got {self.time_limit}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise TrainError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        return self


def load_toml(path: str | Path) -> dict:
    """Settings from a TOML file: top-level keys are TrainConfig fields; a [model] table becomes model_overrides."""
    try:
        import tomllib
    except ImportError:                                     # Python 3.10
        import tomli as tomllib
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no config file {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise TrainError(f"{path} is not valid TOML: {error}") from None
    if "model" in data and isinstance(data["model"], dict):
        data["model_overrides"] = data.pop("model")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TrainError(f"{path}: unknown settings {', '.join(unknown)}")
    return data
