"""Training checkpoints: written atomically, verified on load, no pickle.

A checkpoint is a folder RUN/checkpoints/step-NNNNNNN/:

    model.safetensors, config.json, tokenizer files   the model in HF layout (full fine-tuning / pre-training)
    adapter_model.safetensors, adapter_config.json   instead, for LoRA runs: the adapter in PEFT's format
    optimizer.safetensors   every optimizer tensor, keyed "<param name>.<state>" (exp_avg, exp_avg_sq, step)
    sharded/, optimizer/    instead, for FSDP runs: each process's shards of the model and of the optimizer
                            state, written in parallel as safetensors by torch.distributed.checkpoint's
                            HuggingFaceStorageWriter (the full model is also consolidated into the HF files)
    rng.safetensors         torch CPU (and CUDA) generator states
    trainer_state.json      step, data position, optimizer param groups, the list of every file with its size,
                            "complete": true -- written last

It is written into `step-NNNNNNN.tmp` and renamed when complete, so a crash leaves either the previous
checkpoints or a `.tmp` folder that is never read. `verify` refuses a folder whose trainer_state.json is missing,
unreadable or incomplete, or whose files are missing or have other sizes than recorded.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from zhcoder import ZhcoderError
from zhcoder.checkpoint import save_tensors

STATE_FILE = "trainer_state.json"
CHECKPOINT_PREFIX = "step-"


class CheckpointInvalid(ZhcoderError):
    """A training checkpoint that cannot be resumed from (incomplete, corrupt, or of another run)."""


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:07d}"


def optimizer_tensors(state: dict) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """A name-keyed optimizer state dict ({"state": {name: {key: tensor}}, "param_groups": [...]}) as flat tensors
    ("name.key") plus JSON-able param groups."""
    tensors = {}
    for name, entries in state["state"].items():
        for key, value in entries.items():
            tensors[f"{name}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors, state["param_groups"]


def optimizer_state(tensors: dict[str, torch.Tensor], param_groups: list[dict]) -> dict:
    """The inverse of `optimizer_tensors`."""
    state: dict[str, dict] = {}
    for flat, value in tensors.items():
        name, _, key = flat.rpartition(".")
        state.setdefault(name, {})[key] = value
    return {"state": state, "param_groups": param_groups}


def rng_tensors() -> dict[str, torch.Tensor]:
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, value in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda{index}"] = value
    return states


def restore_rng(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["cpu"])
    cuda = [states[f"cuda{i}"] for i in range(len(states) - 1) if f"cuda{i}" in states]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def begin(run_dir: Path, step: int) -> Path:
    """A fresh, empty temporary folder for checkpoint `step` (RUN/checkpoints/step-N.tmp)."""
    tmp = Path(run_dir) / "checkpoints" / (checkpoint_name(step) + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def commit(run_dir: Path, step: int, state: dict, keep_last: int = 2) -> Path:
    """Seal the temporary folder of `step`: record every file (sub-folders included) with its size in
    trainer_state.json, written last and fsync'ed, rename it into place, and drop checkpoints beyond `keep_last`."""
    root = Path(run_dir) / "checkpoints"
    final, tmp = root / checkpoint_name(step), root / (checkpoint_name(step) + ".tmp")
    files = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
    record = {**state, "step": step, "files": files, "complete": True}
    with open(tmp / STATE_FILE, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def write(run_dir: Path, step: int, save_weights, optimizer: dict, state: dict, keep_last: int = 2) -> Path:
    """Write checkpoint `step` atomically from one process. `save_weights(folder)` writes the model or adapter
    files; `optimizer` is a name-keyed optimizer state dict; `state` goes into trainer_state.json."""
    tmp = begin(run_dir, step)
    save_weights(tmp)
    tensors, groups = optimizer_tensors(optimizer)
    save_tensors(tensors, tmp / "optimizer.safetensors")
    save_tensors(rng_tensors(), tmp / "rng.safetensors")
    return commit(run_dir, step, {**state, "optimizer_param_groups": groups}, keep_last)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Completed-looking checkpoint folders (renamed, not .tmp), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
                  and not p.name.endswith(".tmp"))


def verify(folder: Path) -> dict:
    """trainer_state.json of a checkpoint after checking that it is complete; CheckpointInvalid otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointInvalid(f"no checkpoint folder {folder}")
    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointInvalid(f"{folder} is incomplete: no {STATE_FILE} (the run stopped while writing it)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointInvalid(f"{folder}/{STATE_FILE} is corrupt ({error})") from None
    if not state.get("complete"):
        raise CheckpointInvalid(f"{folder} is incomplete ({STATE_FILE} does not say complete)")
    for name, size in state.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise CheckpointInvalid(f"{folder} is incomplete: {name} is missing")
        if path.stat().st_size != size:
            raise CheckpointInvalid(f"{folder} is corrupt: {name} has {path.stat().st_size} bytes, {size} expected")
    return state


def read_optimizer_and_rng(folder: Path, state: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    try:
        tensors = load_file(folder / "optimizer.safetensors")
        rng = load_file(folder / "rng.safetensors")
    except (SafetensorError, OSError) as error:
        raise CheckpointInvalid(f"{folder}: cannot read optimizer or RNG state ({error})") from None
    return optimizer_state(tensors, state["optimizer_param_groups"]), rng
