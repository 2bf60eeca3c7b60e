"""Quality check of weight-only quantization (zhcoder/quant.py): int8 and int4 against the float model.

For each model (a random-weight model of the qwen3-0.6b shape with fewer layers, and any checkpoint given with
--model, or models/zhcoder-nano when it exists), and for fp32 and bf16 activations, it measures float, int8 and
int4 (group-wise) on a fixed code text, the source of a few Python standard-library modules read with
`inspect.getsource` and tokenized with the model's tokenizer:
  - perplexity over the text (windows of --window tokens);
  - teacher-forced agreement: how often the argmax of the next-token logits equals the fp32 float model's (and the
    same-dtype float model's), over every position of the text; and the mean KL(float fp32 || variant) of the
    next-token distribution at every 16th position;
  - free-running greedy agreement: --free-tokens greedy tokens through Engine from the text's first 64 tokens,
    compared with the fp32 float model's: the length of the common prefix and the share of equal positions;
  - CPU decode tokens/s at batch 1 (informational: the machine may be shared; the variants take turns, best of
    --repeats) and the bytes of the weights. All six variants of a model are held at once for the timing.
A random-weight model has near-uniform next-token distributions, so its agreement numbers are a lower bound of
what a trained model shows; its perplexity is close to the vocabulary size and only its relative change counts.
Prints a table per model and writes JSON.

    python benchmarks/quant_quality.py [--layers 2] [--also-untied] [--text-tokens 1024] [--model DIR]
                                       [--out benchmarks/quant_quality.json]
"""

from __future__ import annotations

import argparse
import copy
import importlib
import inspect
import json
import math
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from zhcoder.checkpoint import load_model
from zhcoder.config import preset
from zhcoder.engine import Engine, SamplingParams
from zhcoder.model import QwenForCausalLM, init_weights
from zhcoder.quant import linear_size_bytes, model_size_bytes, quantize_model
from zhcoder.tokenizer import Tokenizer

TEXT_MODULES = ("textwrap", "heapq", "bisect", "shlex", "fnmatch", "colorsys", "graphlib", "functools")
PROMPT_TOKENS = 64
KL_EVERY = 16
LOGIT_CHUNK = 128                    # positions whose (chunk x vocab) logits are alive at once
EMBEDDED_NANO = Path("models/zhcoder-nano")


def code_text() -> str:
    return "\n\n".join(inspect.getsource(importlib.import_module(name)) for name in TEXT_MODULES)


def variants(group_size: int) -> list[tuple[str, torch.dtype, str | None]]:
    return [(f"{label} {dtype_name}", dtype, mode)
            for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
            for label, mode in (("float", None), ("int8", "int8"), (f"int4 g{group_size}", "int4"))]


@torch.inference_mode()
def teacher_forced(model: QwenForCausalLM, windows: list[torch.Tensor]) -> dict:
    """Summed NLL, argmax predictions of every position, and log-probs at every KL_EVERY-th position."""
    nll, count, predictions, sampled = 0.0, 0, [], []
    for window in windows:
        hidden = model.hidden_states(window[None])[0, :-1]
        targets = window[1:]
        for start in range(0, targets.numel(), LOGIT_CHUNK):
            logits = model.lm_head(hidden[start:start + LOGIT_CHUNK]).float()
            nll += float(F.cross_entropy(logits, targets[start:start + LOGIT_CHUNK], reduction="sum"))
            count += logits.shape[0]
            predictions.append(logits.argmax(-1))
            keep = [i for i in range(logits.shape[0]) if (start + i) % KL_EVERY == 0]
            sampled.append(torch.log_softmax(logits[keep], dim=-1))
    return {"nll": nll, "count": count, "predictions": torch.cat(predictions), "log_probs": torch.cat(sampled)}


def greedy_tokens(engine: Engine, prompt: list[int], n: int) -> list[int]:
    return engine.generate([prompt], SamplingParams(max_new_tokens=n, stop_token_ids=[]))[0].token_ids


def decode_speeds(engines: list[Engine], prompt: list[int], n: int, repeats: int) -> list[float]:
    """Batch-1 decode tokens/s of each engine: (n - 1) / (time of n tokens - time of 1), best of `repeats`. The
    engines take turns in every round, so a change in the machine's load hits all of them alike."""
    best = [[math.inf, math.inf] for _ in engines]
    for engine in engines:
        greedy_tokens(engine, prompt, 2)                                  # warm-up
    for _ in range(repeats):
        for times, engine in zip(best, engines):
            for slot, tokens in enumerate((1, n)):
                start = time.perf_counter()
                greedy_tokens(engine, prompt, tokens)
                times[slot] = min(times[slot], time.perf_counter() - start)
    return [(n - 1) / max(full - first, 1e-9) for first, full in best]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def measure_model(name: str, float_model: QwenForCausalLM, tokenizer, args) -> dict:
    ids = torch.tensor(tokenizer.encode(code_text())[: args.text_tokens + 1])
    windows = [ids[i:i + args.window + 1] for i in range(0, ids.numel() - 1, args.window)]
    windows = [w for w in windows if w.numel() > 1]
    prompt = ids[:PROMPT_TOKENS].tolist()
    float_model = float_model.float().eval()
    print(f"\n## {name}: {float_model.config.num_hidden_layers} layers, hidden {float_model.config.hidden_size}, "
          f"vocab {float_model.config.vocab_size}, tied head {float_model.config.tie_word_embeddings}; "
          f"{ids.numel() - 1} text tokens in windows of {args.window}", flush=True)
    header = ("| variant | ppl | ppl / fp32 | argmax = fp32 | argmax = same-dtype float | mean KL vs fp32 | "
              f"greedy prefix = fp32 (of {args.free_tokens}) | greedy tokens = fp32 | decode tok/s | "
              "linear MiB | model MiB |")
    print(header + "\n|" + "---|" * 11, flush=True)
    rows, engines, reference, same_dtype_float = [], [], None, None
    for label, dtype, mode in variants(args.group_size):
        model = copy.deepcopy(float_model).to(dtype)
        if mode is not None:
            quantize_model(model, mode, group_size=args.group_size)
        started = time.perf_counter()
        result = teacher_forced(model, windows)
        engines.append(Engine(model, tokenizer))
        free = greedy_tokens(engines[-1], prompt, args.free_tokens)
        if reference is None:
            reference = {**result, "free": free}
        if mode is None:
            same_dtype_float = result
        kl = float(F.kl_div(result["log_probs"], reference["log_probs"], log_target=True, reduction="batchmean"))
        rows.append({
            "variant": label, "dtype": str(dtype).removeprefix("torch."), "mode": mode or "float",
            "group_size": args.group_size if mode == "int4" else None,
            "perplexity": math.exp(result["nll"] / result["count"]),
            "perplexity_ratio": math.exp((result["nll"] - reference["nll"]) / result["count"]),
            "argmax_agreement_vs_fp32": float((result["predictions"] == reference["predictions"]).float().mean()),
            "argmax_agreement_vs_float_same_dtype":
                float((result["predictions"] == same_dtype_float["predictions"]).float().mean()),
            "mean_kl_vs_fp32": kl,
            "greedy_common_prefix_vs_fp32": common_prefix(free, reference["free"]),
            "greedy_equal_positions_vs_fp32": sum(a == b for a, b in zip(free, reference["free"])) / len(free),
            "linear_bytes": linear_size_bytes(model), "model_bytes": model_size_bytes(model),
            "quality_seconds": time.perf_counter() - started,
        })
        del model
    speeds = decode_speeds(engines, prompt[:8], args.decode_tokens, args.repeats)
    for row, speed in zip(rows, speeds):
        row["decode_tok_s_batch1"] = speed
        print(f"| {row['variant']} | {row['perplexity']:.2f} | {row['perplexity_ratio']:.4f} | "
              f"{row['argmax_agreement_vs_fp32']:.2%} | {row['argmax_agreement_vs_float_same_dtype']:.2%} | "
              f"{row['mean_kl_vs_fp32']:.2e} | {row['greedy_common_prefix_vs_fp32']} | "
              f"{row['greedy_equal_positions_vs_fp32']:.0%} | {speed:.1f} | {row['linear_bytes'] / 2**20:.1f} | "
              f"{row['model_bytes'] / 2**20:.1f} |", flush=True)
    del engines
    return {"model": name, "layers": float_model.config.num_hidden_layers,
            "tied_head": float_model.config.tie_word_embeddings, "text_tokens": ids.numel() - 1, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="qwen3-0.6b", help="shape of the random-weight model")
    parser.add_argument("--layers", type=int, default=2, help="its number of layers")
    parser.add_argument("--also-untied", action="store_true",
                        help="also measure it with an untied lm_head (which is then quantized too)")
    parser.add_argument("--model", action="append", default=[], help="also a checkpoint folder (repeatable)")
    parser.add_argument("--text-tokens", type=int, default=1024)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--free-tokens", type=int, default=32)
    parser.add_argument("--decode-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/quant_quality.json"))
    args = parser.parse_args()
    machine = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {machine}; "
          f"text: {', '.join(TEXT_MODULES)} (inspect.getsource)")
    results = []
    for tied in [True, False] if args.also_untied else [True]:
        model = QwenForCausalLM(preset(args.preset, num_hidden_layers=args.layers, tie_word_embeddings=tied))
        init_weights(model, seed=0)
        name = f"random {args.preset} {args.layers}L, {'tied' if tied else 'untied'} head"
        results.append(measure_model(name, model, Tokenizer.qwen(), args))
        del model
    folders = args.model or ([str(EMBEDDED_NANO)] if (EMBEDDED_NANO / "config.json").exists() else [])
    for folder in folders:
        results.append(measure_model(folder, load_model(folder, dtype="float32"), Tokenizer.from_dir(folder), args))
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "text_modules": list(TEXT_MODULES),
            "window": args.window, "free_tokens": args.free_tokens, "decode_tokens": args.decode_tokens,
            "group_size": args.group_size, "kl_every": KL_EVERY}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
