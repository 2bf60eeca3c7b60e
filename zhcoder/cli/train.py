"""`zhcoder train pretrain | sft` and `zhcoder lora merge`: training runs (zhcoder.train) and LoRA adapters.

    zhcoder train pretrain --data data/pretrain --preset qwen3-0.6b --layers 4 --out runs/cpt --steps 2000
    zhcoder train sft --data data/sft --model runs/cpt/final --out runs/sft --lora --config sft.toml
    torchrun --nproc_per_node 8 -m zhcoder.cli train pretrain ...
    zhcoder lora merge BASE runs/sft/final MERGED

The options of `train` are generated from zhcoder.train.config.TrainConfig (`train pretrain --help` lists each with
its default); a TOML `--config` gives any of them, and a flag on the command line wins over the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from zhcoder.cli.app import group
from zhcoder.cli.settings import settings_options
from zhcoder.train.config import TrainConfig

train_app = group("train", "Train: continued pre-training and SFT, full or LoRA.")
lora_app = group("lora", "LoRA adapters.")


def _train_command(stage: str):
    @settings_options(settings=TrainConfig)
    def command(
        config: Optional[Path] = typer.Option(None, "--config", help="TOML file of settings (flags win)"),
        layers: Optional[int] = typer.Option(None, "--layers", help="override num_hidden_layers of --preset"),
        selective_checkpointing: bool = typer.Option(False, "--selective-checkpointing",
                                                     help="recompute all but the matmuls and attention in backward"),
        resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its newest checkpoint"),
        resume_from: Optional[Path] = typer.Option(None, "--resume-from", help="continue from this checkpoint"),
        settings: dict = None,
    ):
        from zhcoder.train.loop import load_toml, train

        chosen = {"stage": stage, **(load_toml(config) if config else {}), **settings}
        if selective_checkpointing:
            chosen["gradient_checkpointing"] = "selective"
        if layers is not None:
            chosen.setdefault("model_overrides", {})["num_hidden_layers"] = layers
        metrics = train(TrainConfig(**chosen), resume=str(resume_from) if resume_from else resume)
        if os.environ.get("RANK", "0") == "0":              # under torchrun, one summary line
            print(json.dumps(metrics))
    return command


train_app.command("pretrain", help="Continued pre-training (or from scratch with --preset) on `data build` shards.")(
    _train_command("pretrain"))
train_app.command("sft", help="Supervised fine-tuning on `data sft` shards (loss on assistant turns and "
                               "completions only).")(_train_command("sft"))


@lora_app.command("merge")
def lora_merge(base: Path = typer.Argument(..., help="the base HF checkpoint"),
               adapter: Path = typer.Argument(..., help="a PEFT adapter folder"),
               out: Path = typer.Argument(..., help="where to write the merged checkpoint"),
               dtype: str = typer.Option("auto", help="auto (the base's), float32, bfloat16 or float16")):
    """Merge a LoRA adapter into its base: a plain HF checkpoint zhcoder and transformers load."""
    from zhcoder.train.lora import merge

    folder = Path(merge(base, adapter, out, dtype=dtype))
    stored = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("torch_dtype")
    files = sorted(path.name for path in folder.iterdir() if path.is_file())
    print(f"wrote {folder}: {', '.join(files)} ({stored} weights of {adapter} merged into {base})")
