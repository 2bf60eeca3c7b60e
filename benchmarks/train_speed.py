"""Training throughput: zhcoder's loop (`zhcoder.train.loop.Trainer`) vs a plain transformers training loop.

    python benchmarks/train_speed.py                                   # CPU, fp32, a small Qwen3 shape
    python benchmarks/train_speed.py --device cuda --shape qwen3-0.6b --seq-len 4096 --batch-size 4 \\
        --tokenizer /path/to/saved/qwen-tokenizer                      # GPU, bf16 (the performance issue's script)

Both sides train the same shape (random init, same seed), same batch of packed sequences of the same synthetic
documents, same dtype (fp32 on CPU; bf16 autocast on GPU, fp32 master weights), AdamW (fused on GPU), gradient
clipping at 1.0. zhcoder runs its real Trainer on token shards written for the purpose: per-document attention
(an SDPA boolean mask on CPU, a FlexAttention block mask on GPU) and the chunked loss. The peer is transformers'
Qwen3ForCausalLM (SDPA) with `labels=` (full logits), plain causal attention over the packed rows (it has no
document masking without flash-attn). Tokens/s counts every input token; the first `--warmup` steps are left out.
Prints one Markdown table row per side and the ratio; `--json` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SHAPES = {
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=64),
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128),
}


def synthetic_shards(folder: Path, vocab: int, tokens: int, seed: int = 0) -> None:
    """Documents of random ids with lengths like source files (log-normal around ~600 tokens)."""
    from zhcoder.data.shards import ShardWriter

    rng = np.random.default_rng(seed)
    with ShardWriter(folder, "train", vocab_size=vocab) as writer:
        written = 0
        while written < tokens:
            length = int(min(max(rng.lognormal(6.4, 1.0), 16), 16384))
            writer.add(rng.integers(0, vocab, length))
            written += length


def zhcoder_side(args, shape: dict, tokenizer_dir: str, work: Path) -> dict:
    from zhcoder.tokenizer import Tokenizer
    from zhcoder.train.loop import TrainConfig, Trainer

    tokenizer = Tokenizer.qwen() if tokenizer_dir == "qwen" else Tokenizer.from_dir(tokenizer_dir)
    steps = args.warmup + args.steps
    synthetic_shards(work / "data", tokenizer.vocab_size, args.seq_len * args.batch_size * (steps + 2))
    config = TrainConfig(stage="pretrain", data=str(work / "data"), out=str(work / "run"), preset="qwen3-0.6b",
                         tokenizer=tokenizer_dir, model_overrides=shape, seq_len=args.seq_len,
                         batch_size=args.batch_size, steps=steps, lr=1e-4, warmup_steps=0, save_every=10**9,
                         eval_every=10**9, log_every=10**9, compile=args.compile,
                         gradient_checkpointing=args.gradient_checkpointing,
                         precision="bf16" if args.device == "cuda" else "fp32")
    trainer = Trainer(config, console=lambda *a, **k: None)
    trainer.run()
    records = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    timed = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][args.warmup:]
    mfu = [r["mfu"] for r in records if r.get("mfu") is not None][args.warmup:]
    return {"tokens_per_s": statistics.median(timed), "mfu": statistics.median(mfu) if mfu else None,
            "loss_first": records[0]["loss"], "loss_last": records[-1]["loss"]}


def transformers_side(args, shape: dict, vocab: int) -> dict:
    import transformers

    device = torch.device(args.device)
    torch.manual_seed(0)
    config = transformers.Qwen3Config(vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=40960,
                                      rope_theta=1_000_000.0, attn_implementation="sdpa", **shape)
    model = transformers.Qwen3ForCausalLM(config).to(device).train()
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if args.compile:
        model.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                  fused=device.type == "cuda")
    rng = np.random.default_rng(0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu",
                                                                                                       enabled=False)
    rates = []
    for step in range(args.warmup + args.steps):
        ids = torch.from_numpy(rng.integers(0, vocab, (args.batch_size, args.seq_len))).to(device)
        start = time.perf_counter()
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss.detach())                                  # wait for the step, as zhcoder's loop does
        rates.append(args.batch_size * args.seq_len / (time.perf_counter() - start))
    return {"tokens_per_s": statistics.median(rates[args.warmup:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shape", default="small", choices=list(SHAPES))
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tokenizer", default="qwen", help="'qwen' or a saved tokenizer folder")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.device == "cpu":
        torch.manual_seed(0)
    shape = SHAPES[args.shape]
    with tempfile.TemporaryDirectory() as tmp:
        ours = zhcoder_side(args, shape, args.tokenizer, Path(tmp))
    from zhcoder.tokenizer import Tokenizer

    vocab = (Tokenizer.qwen() if args.tokenizer == "qwen" else Tokenizer.from_dir(args.tokenizer)).vocab_size
    theirs = transformers_side(args, shape, vocab)
    ratio = ours["tokens_per_s"] / theirs["tokens_per_s"]
    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    print(f"{args.shape} ({args.seq_len} x {args.batch_size}), {device}, torch {torch.__version__}"
          f"{', compiled' if args.compile else ''}")
    print("| loop | tokens/s | MFU |")
    print("|---|---|---|")
    mfu = f"{ours['mfu']:.1%}" if ours["mfu"] is not None else "-"
    print(f"| zhcoder Trainer | {ours['tokens_per_s']:,.0f} | {mfu} |")
    print(f"| transformers Qwen3ForCausalLM | {theirs['tokens_per_s']:,.0f} | |")
    print(f"ratio zhcoder / transformers: {ratio:.2f}x; zhcoder loss {ours['loss_first']:.3f} -> "
          f"{ours['loss_last']:.3f} (ln vocab = {math.log(vocab):.3f})")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "device": device,
                                         "zhcoder": ours, "transformers": theirs, "ratio": ratio}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
