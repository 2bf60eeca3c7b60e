"""FSDP checkpoints of a Trainer (loop.py) under torchrun: every process writes and reads its own shards of the model
and of the optimizer (torch.distributed.checkpoint, HF safetensors); the coordinator also consolidates the model
into the checkpoint's HF files, and rank 0 seals the folder (state.py). Nothing of size model x world is gathered.

    torchrun --nproc_per_node 8 -m zhcoder.cli train pretrain ...    # Trainer._save / _restore call these
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from zhcoder.train import state as ckpt


def model_state(trainer) -> dict:
    """This process's shards of the model's state dict (the tied head once: it is the embedding)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(trainer.model)
    if trainer.model_config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    return state


def save(trainer) -> Path | None:
    """Write the step's checkpoint from every process; returns its folder on rank 0."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    from zhcoder.checkpoint import save_model, save_tensors

    main, run_dir, step = trainer.dist.main, trainer.run_dir, trainer.step
    tmp = ckpt.begin(run_dir, step) if main else run_dir / "checkpoints" / (ckpt.checkpoint_name(step) + ".tmp")
    torch.distributed.barrier()
    dcp.save(model_state(trainer),
             storage_writer=HuggingFaceStorageWriter(str(tmp), save_distributed=True, enable_consolidation=True))
    optimizer = get_optimizer_state_dict(trainer.model, trainer.optimizer)
    tensors = {f"{name}.{key}": value for name, entries in optimizer["state"].items()
               for key, value in entries.items() if key != "step"}
    steps = {name: float(entries["step"]) for name, entries in optimizer["state"].items()}
    dcp.save(tensors, storage_writer=HuggingFaceStorageWriter(str(tmp / "optimizer"), save_distributed=True))
    path = None
    if main:
        trainer.model_config.torch_dtype = "float32"             # the master weights the shards hold
        save_model(trainer.model, tmp, tokenizer=trainer.tokenizer, chat_template=trainer.tokenizer.chat_template,
                   weights=False)
        save_tensors(ckpt.rng_tensors(), tmp / "rng.safetensors")
        state = {"data": trainer.train_batches.state_dict(), "config": dataclasses.asdict(trainer.config),
                 "optimizer_param_groups": optimizer["param_groups"], "optimizer_steps": steps,
                 "world_size": trainer.dist.world}
        path = ckpt.commit(run_dir, step, state, keep_last=trainer.config.keep_last)
        trainer.console(f"checkpoint {path}")
    torch.distributed.barrier()
    return path


def restore(trainer, folder: Path, saved: dict) -> None:
    """Load this process's shards of the model and optimizer of `folder` (its state.json is `saved`), and the RNG."""
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import load_file
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    state = model_state(trainer)
    dcp.load(state, storage_reader=HuggingFaceStorageReader(str(folder / "sharded")))
    set_model_state_dict(trainer.model, state, options=StateDictOptions(strict=False))
    trainable = [(name, p) for name, p in trainer.model.named_parameters() if p.requires_grad]
    tensors = {f"{name}.{key}": torch.zeros_like(p) for name, p in trainable for key in ("exp_avg", "exp_avg_sq")}
    dcp.load(tensors, storage_reader=HuggingFaceStorageReader(str(folder / "optimizer")))
    steps = saved["optimizer_steps"]
    optimizer = {"state": {name: {"exp_avg": tensors[f"{name}.exp_avg"], "exp_avg_sq": tensors[f"{name}.exp_avg_sq"],
                                  "step": torch.tensor(steps[name])} for name, _ in trainable},
                 "param_groups": saved["optimizer_param_groups"]}
    set_optimizer_state_dict(trainer.model, trainer.optimizer, optimizer)
    ckpt.restore_rng(load_file(folder / "rng.safetensors"))
