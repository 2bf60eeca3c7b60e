"""CPU decode benchmark: zhcoder's engine vs transformers' generate() on the same random weights.

Both run greedy, fp32, on checkpoints written by transformers at two small Qwen3 shapes, at batch 1 and 8.
Prefill tokens/s is measured as a 1-token generation; decode tokens/s from the extra time of N tokens.
Prints a table of both and their ratio (ours / transformers) and writes JSON. `--threads N` sets torch's intra-op threads (on a machine shared with other jobs, 1 avoids OpenMP workers
spinning on descheduled peers, which can make small ops 10-100x slower).

    python benchmarks/decode_cpu.py [--prompt-len 128] [--new-tokens 64] [--repeats 3] [--out benchmarks/decode_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
import transformers

from zhcoder.checkpoint import load_model
from zhcoder.engine import Engine, SamplingParams
from zhcoder.tokenizer import Tokenizer

# Two small Qwen3 shapes: a nano model (32K vocabulary, the size class of zhcoder-nano) where per-token
# overhead matters, and a wider one with Qwen's full 151,936-row vocabulary, bound by memory bandwidth.
SHAPES = {
    "nano 4L-256h-32Kv": dict(vocab_size=32768, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=64),
    "small 8L-512h-152Kv": dict(vocab_size=151936, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                                num_attention_heads=8, num_key_value_heads=4, head_dim=64),
}


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(shape: dict, batch: int, prompt_len: int, new_tokens: int, repeats: int, tokenizer) -> dict:
    config = transformers.Qwen3Config(tie_word_embeddings=True, **shape)
    torch.manual_seed(0)
    hf = transformers.Qwen3ForCausalLM(config).eval()
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        model = load_model(folder, dtype="float32")
    engine = Engine(model, tokenizer)
    prompts = torch.randint(0, shape["vocab_size"], (batch, prompt_len))

    def ours(n):
        return lambda: engine.generate(prompts.tolist(), SamplingParams(max_new_tokens=n, stop_token_ids=[]))

    def theirs(n):
        return lambda: hf.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=n,
                                   min_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None)

    row = {}
    with torch.inference_mode():
        for name, run in (("zhcoder", ours), ("transformers", theirs)):
            prefill = best_time(run(1), repeats)
            full = best_time(run(new_tokens), repeats)
            row[name] = {
                "prefill_tok_s": batch * prompt_len / prefill,
                "decode_tok_s": batch * (new_tokens - 1) / max(full - prefill, 1e-9),
            }
    for key in ("prefill_tok_s", "decode_tok_s"):
        row[key.replace("tok_s", "ratio")] = row["zhcoder"][key] / row["transformers"][key]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/decode_cpu.json"))
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = Tokenizer.qwen()
    results = []
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}; prompt {args.prompt_len}, {args.new_tokens} new tokens, fp32")
    header = "| shape | batch | prefill tok/s zhcoder | transformers | ratio | decode tok/s zhcoder | transformers | ratio |"
    print(header + "\n|" + "---|" * 8)
    for name, shape in SHAPES.items():
        for batch in args.batches:
            r = measure(shape, batch, args.prompt_len, args.new_tokens, args.repeats, tokenizer)
            results.append({"shape": name, "batch": batch, **r})
            z, t = r["zhcoder"], r["transformers"]
            print(f"| {name} | {batch} | {z['prefill_tok_s']:.0f} | {t['prefill_tok_s']:.0f} | {r['prefill_ratio']:.2f}x"
                  f" | {z['decode_tok_s']:.1f} | {t['decode_tok_s']:.1f} | {r['decode_ratio']:.2f}x |", flush=True)
    meta = {"torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads(),
            "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "dtype": "float32"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
