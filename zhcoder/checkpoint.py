"""Hugging Face checkpoint folders: load and save config.json + safetensors (single or sharded) + tokenizer.

Loading builds the model on the meta device and assigns tensors read from the memory-mapped safetensors
files one by one, so peak memory stays close to the weights' size. Pickled weights (.bin/.pt) are refused,
never unpickled. Saving writes the layout transformers reads (`model.safetensors` or shards with
`model.safetensors.index.json`, metadata format=pt, tied lm_head left out).

The embedded default model, zhcoder-nano (models/zhcoder-nano in the repository; a wheel installs it as data under
<prefix>/share/zhcoder/models/zhcoder-nano), is what every command uses when neither --model nor $ZHCODER_MODEL
names one (`default_model`).

    zhcoder init --preset qwen3-0.6b --layers 2 /tmp/tiny && zhcoder info /tmp/tiny
"""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import ConfigError, ModelConfig
from .model import QwenForCausalLM

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
SINGLE_FILE, INDEX_FILE = "model.safetensors", "model.safetensors.index.json"
PICKLE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.bin", "model.pt", "consolidated.pth")


def _embedded_model() -> Path:
    """models/zhcoder-nano of the clone (source tree, editable install), else where the installed wheel put it."""
    clone = Path(__file__).resolve().parent.parent / "models" / "zhcoder-nano"
    if (clone / "config.json").exists():
        return clone
    try:
        files = metadata.files("zhcoder") or []
    except metadata.PackageNotFoundError:
        files = []
    config = next((f for f in files if f.name == "config.json" and f.parent.name == "zhcoder-nano"), None)
    return Path(config.locate()).resolve().parent if config else clone


EMBEDDED_MODEL = _embedded_model()


class CheckpointError(ValueError):
    """A checkpoint folder zhcoder cannot load; the message says what is wrong and what to do."""


def default_model(model: str | Path | None = None) -> str:
    """The model a command uses: the one given, else $ZHCODER_MODEL, else the embedded zhcoder-nano."""
    chosen = model or os.environ.get("ZHCODER_MODEL")
    if chosen:
        return str(chosen)
    if not (EMBEDDED_MODEL / "config.json").exists():
        raise CheckpointError(f"no model given (--model DIR or $ZHCODER_MODEL) and the embedded zhcoder-nano is "
                              f"missing from {EMBEDDED_MODEL}")
    return str(EMBEDDED_MODEL)


def resolve_dtype(name: str | torch.dtype | None, config: ModelConfig) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if name in (None, "auto"):
        name = config.torch_dtype
    if name not in DTYPES:
        raise CheckpointError(f"unknown dtype {name!r}: choose float32, bfloat16 or float16")
    return DTYPES[name]


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder, in order; pickles are refused."""
    if (directory / INDEX_FILE).exists():
        try:
            weight_map = json.loads((directory / INDEX_FILE).read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{directory / INDEX_FILE} is not a valid safetensors index: {e}") from None
        files = [directory / name for name in sorted(set(weight_map.values()))]
    elif (directory / SINGLE_FILE).exists():
        files = [directory / SINGLE_FILE]
    else:
        pickles = [p.name for p in directory.iterdir() if p.name in PICKLE_NAMES or p.suffix in (".bin", ".pt", ".pth")]
        if pickles:
            raise CheckpointError(
                f"{directory} holds pickled weights ({', '.join(sorted(pickles))}), which zhcoder never unpickles: "
                "convert them once in a trusted environment with transformers "
                "(AutoModelForCausalLM.from_pretrained(dir).save_pretrained(out, safe_serialization=True))"
            )
        raise CheckpointError(f"no {SINGLE_FILE} or {INDEX_FILE} in {directory}")
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise CheckpointError(f"{directory} lacks shard(s) named in its index: {', '.join(missing)}")
    return files


def adapter_base(path: str | Path) -> Path | None:
    """The base checkpoint folder of a PEFT adapter folder (adapter_config.json, no config.json), found from the
    adapter's `base_model_name_or_path` as written (relative to the current directory) or relative to the adapter
    folder; None for any other folder."""
    directory = Path(path)
    if (directory / "config.json").is_file() or not (directory / "adapter_config.json").is_file():
        return None
    config_file = directory / "adapter_config.json"
    try:
        name = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (ValueError, OSError, AttributeError) as error:
        raise CheckpointError(f"{config_file}: not a PEFT adapter config ({error})") from None
    for candidate in ([Path(name), directory / name] if name else []):
        if (candidate / "config.json").is_file():
            return candidate
    raise CheckpointError(f"{directory} holds a LoRA adapter whose base ({name or 'not named'}) is not a checkpoint "
                          f"folder here: merge it into its base, `zhcoder lora merge BASE {directory} OUT`, and use "
                          "OUT")


def load_config(path: str | Path) -> ModelConfig:
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"model folder not found: {directory}")
    try:
        return ModelConfig.from_file(directory)
    except FileNotFoundError:
        if (directory / "adapter_config.json").is_file():
            raise CheckpointError(f"{directory} holds a LoRA adapter, not a model: merge it into its base first, "
                                  f"`zhcoder lora merge BASE {directory} OUT`, and use OUT") from None
        raise CheckpointError(f"no config.json in {directory}") from None
    except ConfigError as e:                                        # it names the file
        raise CheckpointError(str(e)) from None


def load_model(path: str | Path, dtype: str | torch.dtype | None = "auto", device: str = "cpu") -> QwenForCausalLM:
    """Load a HF model folder into zhcoder's model, memory-mapped, in the given dtype, ready for inference."""
    directory = Path(path)
    config = load_config(directory)
    torch_dtype = resolve_dtype(dtype, config)
    with torch.device("meta"):
        model = QwenForCausalLM(config)
    expected = {name: p for name, p in model.named_parameters(remove_duplicate=False)}
    expected.update((name, b) for name, b in model.named_buffers() if name in model.state_dict(keep_vars=True))
    state: dict[str, torch.Tensor] = {}
    for file in weight_files(directory):
        try:
            with safe_open(file, framework="pt", device=str(device)) as f:
                for name in f.keys():
                    if name not in expected:
                        continue  # e.g. rotary inv_freq saved by old exporters
                    tensor = f.get_tensor(name)
                    if tuple(tensor.shape) != tuple(expected[name].shape):
                        raise CheckpointError(
                            f"shape mismatch for {name}: checkpoint has {tuple(tensor.shape)}, "
                            f"config.json implies {tuple(expected[name].shape)}"
                        )
                    state[name] = tensor.to(torch_dtype) if tensor.is_floating_point() else tensor
        except SafetensorError as e:
            raise CheckpointError(f"{file} is not a readable safetensors file ({e})") from None
        except OSError as e:
            raise CheckpointError(f"cannot read {file}: {e}") from None
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
        expected.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(state))
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise CheckpointError(f"{directory} lacks weights for {shown}")
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    model.model.rotary_emb.inv_freq = torch.empty(0, device=device)  # leave meta, then recompute in fp32
    model.model.rotary_emb.reset_parameters()
    return model.eval()


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    """A safetensors file, readable as the umask allows like every other file written (safetensors makes it 0600)."""
    save_file(tensors, path, metadata=metadata or {"format": "pt"})
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def save_model(
    model: QwenForCausalLM,
    path: str | Path,
    tokenizer=None,
    chat_template: str | None = None,
    max_shard_bytes: int = 5 * 2**30,
    state_dict: dict[str, torch.Tensor] | None = None,
    weights: bool = True,
) -> Path:
    """Write a HF checkpoint folder transformers loads: config.json, safetensors (sharded past max_shard_bytes).
    `state_dict` replaces the model's own (e.g. the full state gathered from an FSDP-sharded model); with
    `weights=False` only config, generation config and tokenizer are written (the weights come from elsewhere)."""
    if getattr(model, "quantization", None):
        raise CheckpointError("a quantized model (zhcoder.quant) cannot be saved as a checkpoint: save the float "
                              "model and quantize after loading (--quantize)")
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config
    if not weights:
        config.save(directory)
        _save_extras(directory, config, tokenizer, chat_template)
        return directory
    state = {k: v.detach().contiguous().cpu() for k, v in (state_dict or model.state_dict()).items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    floats = [v.dtype for v in state.values() if v.is_floating_point()]   # not the code-aware token-class buffer
    config.torch_dtype = str(floats[0] if floats else config.torch_dtype).removeprefix("torch.")
    config.save(directory)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    for old in list(directory.glob("model*.safetensors")) + [directory / INDEX_FILE]:
        old.unlink(missing_ok=True)
    names = [SINGLE_FILE] if len(shards) == 1 else [f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                                                     for i in range(1, len(shards) + 1)]
    for name, shard in zip(names, shards):
        save_tensors(shard, directory / name)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                 "weight_map": {k: name for name, shard in zip(names, shards) for k in shard}}
        (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    _save_extras(directory, config, tokenizer, chat_template)
    return directory


def _save_extras(directory: Path, config: ModelConfig, tokenizer, chat_template: str | None) -> None:
    (directory / "generation_config.json").write_text(
        json.dumps({"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id}, indent=2) + "\n"
    )
    if tokenizer is not None:
        tokenizer.save(directory, chat_template=chat_template)
