"""The training loop of both stages: continued pre-training and SFT, full or LoRA, one process or FSDP2.

    zhcoder train pretrain --data data/pretrain --model Qwen2.5-Coder-1.5B --out runs/cpt --steps 2000
    zhcoder train sft --data data/sft --model runs/cpt/final --out runs/sft --lora --config sft.toml
    torchrun --nproc_per_node 8 -m zhcoder.cli train pretrain ...        # FSDP2 over 8 GPUs
    zhcoder train pretrain ... --resume                                 # continue after a crash, exactly

Per step: `grad_accum` micro-batches of `batch_size` packed sequences of `seq_len` tokens per process
(zhcoder.data.shards.PackedSequences, one shared order; process r takes every world_size-th slice), each
document attending only to itself (per-document position ids; a block-diagonal causal mask: FlexAttention's
BlockMask on GPU, an SDPA boolean mask on CPU). The loss is the mean cross-entropy over every target token of the
step across all processes (not a mean of per-micro-batch means); then gradient clipping, AdamW (fused on GPU;
weight decay on matrices only) and a linear-warmup + cosine schedule down to `min_lr_ratio` x lr. bf16 on GPU
(autocast, or FSDP2's MixedPrecisionPolicy with fp32 master weights and fp32 gradient reduction), fp32 on CPU.

The run folder holds config.json (the resolved settings), metrics.jsonl (one line per step: loss, lr,
grad_norm, tokens, tokens_per_s, mfu; and val_loss lines), checkpoints/step-N (zhcoder.train.state) and final/
(an HF checkpoint, or a PEFT adapter folder for LoRA runs). Resuming restores model, optimizer, RNG and data
position from the newest complete checkpoint, so the per-step losses continue exactly as if never stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zhcoder.data.shards import IGNORE_INDEX, PackedSequences, TokenDataset, read_index
from zhcoder.train import sharded
from zhcoder.train import state as ckpt
from zhcoder.train.config import RESUMABLE_CHANGES, TrainConfig, TrainError, load_toml  # noqa: F401 (the API)

# Dense bf16 peak FLOP/s for MFU (vendor data sheets); other devices need --peak-tflops.
PEAK_TFLOPS = {"H200": 989.5, "H100": 989.5, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "RTX 4090": 165.2}
FIT_AFTER = 10            # steps timed (after the first, which compiles) before a time limit shortens the schedule


# ----------------------------------------------------------------------------------------------- processes


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            torch.distributed.all_reduce(value)
        return value


def setup_distributed() -> Dist:
    """One process, or this process's place in a torchrun group (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend)
    return Dist(rank, world, local_rank, device)


# ----------------------------------------------------------------------------------------------- the model


def load_tokenizer(config: TrainConfig):
    from zhcoder.tokenizer import Tokenizer

    source = config.tokenizer or (config.model if config.model and Path(config.model, "tokenizer.json").is_file()
                                  else None)
    if source in (None, "qwen"):
        return Tokenizer.qwen()
    return Tokenizer.from_dir(source)


def build_model(config: TrainConfig, tokenizer, device: torch.device):
    """The fp32 model the run starts from: a checkpoint, or a preset with random weights (seeded)."""
    from zhcoder.checkpoint import load_model
    from zhcoder.config import preset
    from zhcoder.model import QwenForCausalLM, init_weights

    if config.model:
        model = load_model(config.model, dtype="float32", device="cpu")
        for key, value in config.model_overrides.items():
            setattr(model.config, key, value)
    else:
        model_config = preset(config.preset, **config.model_overrides)
        model_config.eos_token_id = tokenizer.token_to_id(tokenizer.eos_token) if tokenizer.eos_token else None
        torch.manual_seed(config.seed)
        model = QwenForCausalLM(model_config)
        init_weights(model, seed=config.seed)
    if config.code_aware_attention:
        from zhcoder.code_bias import enable_code_aware_attention

        enable_code_aware_attention(model, tokenizer)
    model.gradient_checkpointing = config.gradient_checkpointing
    return model.to(device).train()


def check_data(config: TrainConfig, tokenizer, model_vocab: int) -> dict:
    """The train split's index, after checking it fits the tokenizer and the model."""
    try:
        index = read_index(Path(config.data, "train"))
    except FileNotFoundError:
        raise TrainError(f"{config.data} has no train/index.json: build it with `zhcoder data build` or "
                         "`zhcoder data sft`") from None
    if not index["complete"]:
        raise TrainError(f"{config.data}/train is incomplete: its build did not finish (run it again)")
    if index["vocab_size"] != tokenizer.vocab_size or index["vocab_size"] > model_vocab:
        raise TrainError(f"{config.data} was built with a tokenizer of {index['vocab_size']} tokens, but this run's "
                         f"tokenizer has {tokenizer.vocab_size} (model vocabulary {model_vocab}): rebuild the data "
                         "with the model's tokenizer (--tokenizer MODEL_DIR)")
    if config.stage == "sft" and not index["with_mask"]:
        raise TrainError(f"{config.data} has no loss mask: SFT data comes from `zhcoder data sft`")
    return index


def peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12
    return None


def flops_per_token(model_config, seq_len: int) -> float:
    """Training FLOPs per token: 6 x (non-embedding) parameters + 6 x layers x seq_len x q_dim (attention scores and
    values, causal half of 12) -- the PaLM appendix B count; MoE counts active experts."""
    params = model_config.num_parameters(active=True) - model_config.vocab_size * model_config.hidden_size
    attention = 6 * model_config.num_hidden_layers * seq_len * model_config.num_attention_heads * model_config.head_dim
    return 6 * params + attention


# --------------------------------------------------------------------------------------------------- steps


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup to lr over warmup_steps, then cosine down to min_lr_ratio x lr at `steps` (1-based step)."""
    if config.warmup_steps and step <= config.warmup_steps:
        return config.lr * step / config.warmup_steps
    span = max(config.steps - config.warmup_steps, 1)
    progress = min((step - config.warmup_steps) / span, 1.0)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class Batches:
    """Micro-batches of this process from one shared PackedSequences order (resumable through `state_dict`)."""

    def __init__(self, split_dir: Path, config: TrainConfig, dist: Dist, pad_id: int, epochs: int | None = None,
                 seed: int | None = None):
        self.packer = PackedSequences(split_dir, config.seq_len, seed=config.seed if seed is None else seed,
                                      pad_id=pad_id, epochs=epochs)
        self.iterator = iter(self.packer)
        self.batch_size, self.dist = config.batch_size, dist

    def next(self, partial: bool = False) -> dict[str, torch.Tensor] | None:
        """The next micro-batch of this process: world x batch_size sequences are drawn, slice `rank` is kept.
        When the data ends inside a batch it is dropped, or with `partial` (evaluation) filled up with rows that
        have no targets, so that a validation split smaller than one batch is still scored."""
        rows = []
        for _ in range(self.batch_size * self.dist.world):
            item = next(self.iterator, None)
            if item is None:
                if not partial or not rows:
                    return None
                item = {"input_ids": np.zeros_like(rows[0]["input_ids"]),
                        "labels": np.full_like(rows[0]["labels"], IGNORE_INDEX),
                        "position_ids": np.arange(len(rows[0]["position_ids"]), dtype=rows[0]["position_ids"].dtype)}
            rows.append(item)
        mine = rows[self.dist.rank * self.batch_size:(self.dist.rank + 1) * self.batch_size]
        device = self.dist.device
        return {key: torch.from_numpy(np.stack([row[key] for row in mine])).to(device)
                for key in ("input_ids", "labels", "position_ids")}

    def state_dict(self) -> dict:
        return self.packer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.packer.load_state_dict(state)
        self.iterator = iter(self.packer)


def attention_mask(position_ids: torch.Tensor):
    from zhcoder.model import document_block_mask, document_causal_mask

    if position_ids.is_cuda:
        return document_block_mask(position_ids)
    return document_causal_mask(position_ids)


class Trainer:
    """One run: `Trainer(config).run()` trains (or resumes) and returns the final metrics."""

    def __init__(self, config: TrainConfig, resume: str | bool = False, console=print):
        self.dist = setup_distributed()
        self.resume = resume
        self.console = console if self.dist.main else (lambda *a, **k: None)
        self.run_dir = Path(config.out)
        if resume:
            config = self._resumed_config(config)
        self.config = config.resolve()
        if self.dist.main and self.config.warmup_steps > self.config.steps:
            print(f"warning: --steps {self.config.steps} ends inside the warm-up (--warmup-steps "
                  f"{self.config.warmup_steps}): the learning rate never reaches --lr {self.config.lr:g}",
                  file=sys.stderr)
        self.tokenizer = load_tokenizer(self.config)
        torch.manual_seed(self.config.seed)
        self.model = build_model(self.config, self.tokenizer, torch.device("cpu"))
        self.index = check_data(self.config, self.tokenizer, self.model.config.vocab_size)
        self.model_config = self.model.config
        self.pad_id = self.tokenizer.token_to_id(self.tokenizer.pad_token or self.tokenizer.eos_token or "") or 0
        if self.config.lora:
            from zhcoder.train.lora import apply_lora

            self.model = apply_lora(self.model, self.config.lora_r, self.config.lora_alpha,
                                    self.config.lora_dropout, self.config.lora_targets)
        self.bf16 = self.config.precision == "bf16" or (self.config.precision == "auto" and self.dist.device.type == "cuda")
        self.fsdp = self.dist.world > 1
        self.model = self._place(self.model)
        self.optimizer = self._optimizer()
        self.step = 0
        self.train_batches = Batches(Path(self.config.data, "train"), self.config, self.dist, self.pad_id)
        validation = Path(self.config.data, "validation")
        self.has_validation = (validation / "index.json").is_file() and TokenDataset(validation).n_tokens > 0
        self.flops_per_token = flops_per_token(self.model_config, self.config.seq_len)
        self.peak = peak_flops(self.dist.device, self.config.peak_tflops)
        if resume:
            self._restore(resume)
        elif self.dist.main:
            self._start_run_dir()

    # -- set-up -------------------------------------------------------------------------------------------
    def _resumed_config(self, config: TrainConfig) -> TrainConfig:
        saved_path = self.run_dir / "config.json"
        if not saved_path.is_file():
            raise TrainError(f"nothing to resume in {self.run_dir}: no config.json (start the run without --resume)")
        saved = TrainConfig(**json.loads(saved_path.read_text(encoding="utf-8")))
        given = dataclasses.asdict(config)
        for key in RESUMABLE_CHANGES:                       # these may change when resuming, the rest may not
            setattr(saved, key, given[key])
        return saved

    def _start_run_dir(self) -> None:
        if (self.run_dir / "config.json").exists():
            raise TrainError(f"{self.run_dir} already holds a run: add --resume to continue it, or choose another --out")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(self.config), indent=1) + "\n")
        (self.run_dir / "metrics.jsonl").write_text("")

    def _place(self, model):
        device = self.dist.device
        if self.fsdp:
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if self.bf16 else torch.float32,
                                          reduce_dtype=torch.float32)
            base = model.get_base_model() if self.config.lora else model
            model.to(device)
            for layer in base.model.layers:
                fully_shard(layer, mp_policy=policy)
            fully_shard(model, mp_policy=policy)
        else:
            model.to(device)
        if self.config.compile:                  # per block, as torchtitan does: one small graph, compiled once
            base = model.get_base_model() if self.config.lora else model
            for layer in base.model.layers:
                layer.compile()
        return model

    def _optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, parameter in self.model.named_parameters():
            if parameter.requires_grad:
                (decay if parameter.ndim >= 2 and "embed" not in name else no_decay).append(parameter)
        groups = [{"params": decay, "weight_decay": self.config.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        fused = self.dist.device.type == "cuda"
        return torch.optim.AdamW(groups, lr=self.config.lr, betas=(self.config.beta1, self.config.beta2),
                                 eps=self.config.eps, fused=fused)

    # -- checkpoints ---------------------------------------------------------------------------------------
    def _options(self, **kwargs):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, cpu_offload=True, **kwargs)

    def _save(self) -> Path | None:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        if self.fsdp and not self.config.lora:
            return sharded.save(self)
        model_state = get_model_state_dict(self.model, options=self._options())
        optimizer_state = get_optimizer_state_dict(self.model, self.optimizer, options=self._options())
        if not self.dist.main:
            return None
        state = {"data": self.train_batches.state_dict(), "config": dataclasses.asdict(self.config)}
        path = ckpt.write(self.run_dir, self.step, lambda folder: self._save_weights(folder, model_state),
                          optimizer_state, state, keep_last=self.config.keep_last)
        self.console(f"checkpoint {path}")
        return path

    def _save_weights(self, folder: Path, model_state: dict) -> None:
        from zhcoder.checkpoint import save_model

        if self.config.lora:
            from peft import get_peft_model_state_dict

            from zhcoder.checkpoint import save_tensors
            from zhcoder.train.lora import base_record

            base = self.model
            adapter = get_peft_model_state_dict(base, state_dict={k: v for k, v in model_state.items()})
            # The base folder goes into the saved copy only: in the live config, get_peft_model_state_dict would
            # load the base's config through transformers at the next save.
            saved = copy.copy(base.peft_config["default"])
            saved.base_model_name_or_path = base_record(self.config.model)
            saved.save_pretrained(str(folder))
            save_tensors({k: v.contiguous() for k, v in adapter.items()}, folder / "adapter_model.safetensors")
            self.tokenizer.save(folder, chat_template=self.tokenizer.chat_template)
            return
        save_model(self.model, folder, tokenizer=self.tokenizer, chat_template=self.tokenizer.chat_template,
                   state_dict=model_state)

    def _restore(self, resume: str | bool) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        if isinstance(resume, str):
            folder = Path(resume)
        else:
            found = ckpt.list_checkpoints(self.run_dir)
            if not found:
                raise TrainError(f"no checkpoint in {self.run_dir}/checkpoints to resume from")
            folder = found[-1]
        saved = ckpt.verify(folder)
        if (folder / "optimizer").is_dir():
            if not self.fsdp:
                raise TrainError(f"{folder} was written by {saved.get('world_size')} processes (FSDP): resume it "
                                 "under torchrun")
            sharded.restore(self, folder, saved)
        else:
            optimizer_state, rng = ckpt.read_optimizer_and_rng(folder, saved)
            set_model_state_dict(self.model, self._weights_of(folder), options=self._options(strict=False))
            set_optimizer_state_dict(self.model, self.optimizer, optimizer_state, options=self._options())
            ckpt.restore_rng(rng)
        self.train_batches.load_state_dict(saved["data"])
        self.step = int(saved["step"])
        if self.dist.main:                                  # drop the metrics logged after the checkpoint
            metrics = self.run_dir / "metrics.jsonl"
            lines = metrics.read_text(encoding="utf-8").splitlines() if metrics.exists() else []
            kept = [line for line in lines if json.loads(line)["step"] <= self.step]
            metrics.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        self.console(f"resumed from {folder} at step {self.step}")

    def _weights_of(self, folder: Path) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        if self.config.lora:
            adapter = load_file(folder / "adapter_model.safetensors")
            names = dict(self.model.named_parameters())
            state = {}
            for key, value in adapter.items():          # PEFT drops the adapter name ("default") when saving
                full = key.replace(".lora_A.weight", ".lora_A.default.weight").replace(
                    ".lora_B.weight", ".lora_B.default.weight")
                if full not in names:
                    raise ckpt.CheckpointInvalid(f"{folder}: adapter tensor {key} does not fit this model")
                state[full] = value
            return state
        from zhcoder.checkpoint import load_model

        return load_model(folder, dtype="float32").state_dict()

    # -- the loop ------------------------------------------------------------------------------------------
    def _autocast(self):
        if self.bf16 and not self.fsdp:
            return torch.autocast(self.dist.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _loss_sum(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with self._autocast():
            return self.model(batch["input_ids"], position_ids=batch["position_ids"],
                              attention_mask=attention_mask(batch["position_ids"]), labels=batch["labels"])

    def train_step(self) -> dict | None:
        config = self.config
        micro = [self.train_batches.next() for _ in range(config.grad_accum)]
        if any(batch is None for batch in micro):
            return None
        targets = self.dist.all_sum(sum((b["labels"] != IGNORE_INDEX).sum() for b in micro).double())
        lr = lr_at(self.step + 1, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.dist.device)
        for batch in micro:
            loss = self._loss_sum(batch)
            # FSDP averages gradients over processes; the world factor turns that into a sum over all targets
            (loss * (self.dist.world / targets.clamp(min=1))).backward()
            loss_sum += loss.detach().double()
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                                   config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        loss_sum = self.dist.all_sum(loss_sum)
        return {"step": self.step, "loss": float(loss_sum / targets.clamp(min=1)), "lr": lr,
                "grad_norm": float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm),
                "tokens": int(targets)}

    @torch.no_grad()
    def evaluate(self) -> float | None:
        if not self.has_validation:
            return None
        self.model.eval()
        batches = Batches(Path(self.config.data, "validation"), self.config, self.dist, self.pad_id, epochs=1, seed=0)
        total = torch.zeros(2, dtype=torch.float64, device=self.dist.device)
        for _ in range(self.config.eval_batches):
            batch = batches.next(partial=True)
            if batch is None:
                break
            total[0] += self._loss_sum(batch).double()
            total[1] += (batch["labels"] != IGNORE_INDEX).sum()
        self.model.train()
        total = self.dist.all_sum(total)
        return float(total[0] / total[1]) if total[1] > 0 else None

    def _log(self, record: dict) -> None:
        if self.dist.main:
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def run(self) -> dict:
        config = self.config
        last: dict[str, Any] = {}
        tokens_per_step = config.seq_len * config.batch_size * config.grad_accum * self.dist.world
        total = self.model_config.num_parameters()
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad) if config.lora else total
        lora = f" (LoRA: {trainable:,} trainable, {trainable / total:.2%})" if config.lora else ""
        self.console(f"training {config.stage}: {total:,} parameters{lora}, {self.dist.world} process(es) on "
                     f"{self.dist.device.type}, {tokens_per_step:,} tokens per step, "
                     f"steps {self.step + 1}..{config.steps}")
        began, first_step, step_times = time.perf_counter(), self.step, []
        while self.step < config.steps:
            start = time.perf_counter()
            try:
                record = self.train_step()
            except (torch.OutOfMemoryError, MemoryError) as error:
                raise TrainError(f"out of memory at --batch-size {config.batch_size} x --seq-len {config.seq_len} "
                                 f"({type(error).__name__}): lower --batch-size (raise --grad-accum to keep the "
                                 "tokens per step) or --seq-len, or add --gradient-checkpointing or --lora") from None
            if record is None:
                self.console("the training data ran out")
                break
            seconds = time.perf_counter() - start
            step_times.append(seconds)
            elapsed = self._main_clock(time.perf_counter() - began) if config.time_limit else 0.0
            if config.time_limit and self.step - first_step == FIT_AFTER + 1:
                median = self._main_clock(sorted(step_times[1:])[FIT_AFTER // 2])
                self._fit_to_time(config.time_limit - elapsed, median)
            if config.time_limit and elapsed >= config.time_limit and self.step < config.steps:
                self.console(f"time limit of {config.time_limit:.0f} s reached at step {self.step} of {config.steps}")
                self._log({"step": self.step, "stopped": "time_limit", "steps_planned": config.steps})
                config.steps = self.step                   # this step is the last: evaluated and saved below
            record["tokens_per_s"] = round(tokens_per_step / seconds, 1)
            record["mfu"] = round(self.flops_per_token * tokens_per_step / seconds / (self.peak * self.dist.world), 4) \
                if self.peak else None
            self._log(record)
            last = record
            if self.step % config.log_every == 0 or self.step == config.steps:
                mfu = f" | mfu {record['mfu']:.1%}" if record["mfu"] is not None else ""
                self.console(f"step {self.step}/{config.steps} | loss {record['loss']:.4f} | lr {record['lr']:.2e} | "
                             f"grad {record['grad_norm']:.3f} | {record['tokens_per_s']:,.0f} tok/s{mfu}")
            if self.step % config.eval_every == 0 or self.step == config.steps:
                val = self.evaluate()
                if val is not None:
                    self._log({"step": self.step, "val_loss": val})
                    self.console(f"step {self.step} | validation loss {val:.4f}")
                    last["val_loss"] = val
            if self.step % config.save_every == 0 or self.step == config.steps:
                self._save()
        self._write_final()
        if self.dist.world > 1:
            torch.distributed.barrier()
        return last

    def _main_clock(self, seconds: float) -> float:
        """The main process's reading, on every process: all of them stop or shorten at the same step."""
        value = torch.tensor(seconds if self.dist.main else 0.0, dtype=torch.float64, device=self.dist.device)
        return float(self.dist.all_sum(value))

    def _fit_to_time(self, seconds_left: float, seconds_per_step: float) -> None:
        """Shorten the schedule (warm-up and cosine, in proportion) so that the steps left fit in 90 % of the time
        left."""
        config = self.config
        fit = self.step + max(int(0.9 * seconds_left / seconds_per_step), 1)
        if fit >= config.steps:
            return
        self.console(f"time limit: {seconds_per_step * 1e3:.0f} ms per step, {fit} of {config.steps} steps fit; "
                     "the schedule now ends there")
        self._log({"step": self.step, "steps_planned": config.steps, "steps_fitted": fit})
        config.warmup_steps = max(round(config.warmup_steps * fit / config.steps), 1)
        config.steps = fit

    def _write_final(self) -> None:
        found = ckpt.list_checkpoints(self.run_dir) if self.dist.main else []
        if not self.dist.main or not found:
            return
        final = self.run_dir / "final"
        tmp = self.run_dir / "final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for path in found[-1].iterdir():          # the model (or adapter) and tokenizer files, not the shards
            if path.is_file() and path.name not in ("optimizer.safetensors", "rng.safetensors", ckpt.STATE_FILE):
                shutil.copy2(path, tmp / path.name)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        self.console(f"wrote {final}")


def train(config: TrainConfig, resume: str | bool = False) -> dict:
    """Run (or resume) a training run; returns the last step's metrics."""
    trainer = Trainer(config, resume=resume)
    try:
        return trainer.run()
    finally:
        if trainer.dist.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit("run `zhcoder train --help`")
