"""One GPU session's measurements (issue 9): zhcoder's decode path against transformers, the bandwidth it
reaches, prefill, int8 decode, and training speed. Made to run once inside a ~9-minute device call: session
tooling, not part of the product (the default test run does not exercise it; tools/README.md).

    python tools/gpu_suite.py --out $OUT/gpu_suite.json            # CUDA, bf16, Qwen3-8B and -0.6B shapes
    python tools/gpu_suite.py --tiny --out /tmp/suite.json          # every part, tiny shapes, CPU, < 1 min
    python tools/gpu_suite.py --list --out /tmp/unused.json         # the plan's entries, in priority order
    python tools/gpu_suite.py --out $OUT/s.json --prewarmed P.json  # after gpu_prewarm.py compiled ahead
    python tools/gpu_suite.py --out $OUT/s2.json --skip-done $OUT/s.json   # go on where a run stopped

Same run, same random weights (bf16, normal std 0.02; transformers' Qwen3ForCausalLM shares zhcoder's weight
tensors, so nothing is copied and both compute on the same numbers; a logits check opens each shape):

- copy bandwidth: a large device-to-device copy (read + write bytes / time): the measured memory bandwidth.
- decode tok/s at batch 1, 8, 32, greedy, prompt --prompt-len, --new-tokens tokens: zhcoder's `Engine` (its one
  decode path: static cache, compiled CUDA-graph step on CUDA, device sampling), transformers `generate()` eager
  (dynamic cache), and transformers `generate(cache_implementation="static")` (which compiles its forward with
  mode="reduce-overhead" on CUDA). Decode tok/s = batch x (N - 1) / (t(N tokens) - t(1 token)); transformers-
  static's t(1) is taken from its eager run (its prefill is the same eager forward, and a 1-token static generate
  would compile new shapes).
  Compile / warm-up time is reported separately. Achieved GB/s = (weight bytes + KV bytes read per step) /
  step time, KV at the mean context of the run; its share of the measured copy bandwidth.
- prefill tok/s: one --prefill-len prompt (zhcoder in chunks of 512 through its static cache; transformers eager).
- where the decode step's time goes: after each zhcoder decode measurement, one --profile-tokens generation under
  torch.profiler; the kernels (CPU ops on CPU) with the most device time, their count and share, and kernels per
  step -- what the bandwidth left on the table is spent on (launch-bound small kernels or slow matrix-vector ones).
- int8 decode, batch 1: when `zhcoder.quant.quantize_model` is importable (on a copy of the model).
- two other ways to compile the batch-1 step, last in the plan: "zhcoder whole graph" (every layer traced) and
  "zhcoder cuBLAS" (no coordinate-descent tuning).
- training tok/s and MFU, Qwen3-0.6B shape, seq 2048: the Trainer's step (bf16 autocast over fp32 weights,
  FlexAttention document masks, the chunked loss, fused AdamW, clipping), timed directly on synthetic packed
  documents -- benchmarks/train_speed.py runs the full Trainer, which needs a tokenizer folder on the machine.

Compile time: every zhcoder batch size compiles its decode step (~1 minute on the 8B shape with the decoder layer
compiled once; ~2 minutes as one graph of all 36 layers). --compile-cache FILE loads torch.compile's portable caches
(`torch.compiler.load_cache_artifacts`) when the file exists, and after every part the suite writes what it has
compiled or looked up to compile_cache.bin beside --out (if at most 15 MiB; what this run did not use is not in
it), to carry into the next call on the same card and torch. On CPU it took a 36-layer step's first compile in a
fresh cache folder from 75 s to 20 s. On the machine itself, tools/gpu_prewarm.py runs the compiling entries
ahead (while the GPU trains in tools/nano_gpu_run.sh, or first, several at a time, in tools/gpu_session.sh);
--prewarmed then budgets the entries it did not finish as compiles from scratch.

The measurements themselves are in tools/gpu_parts.py; this file is the plan and its budget.
Parts run in priority order against a --budget (seconds); a part whose estimate no longer fits is recorded as
skipped. The order: the first shape at the first batch (zhcoder, transformers eager, static), then prefill and
training (seconds each, where every new zhcoder batch size compiles for ~2 minutes on the 8B shape), zhcoder and
eager at the second batch, the second shape's first batch, int8, and the rest (--list names them; --only runs
some, --skip-done skips those an earlier --out measured). Every measurement is appended to --out as it completes
(a timeout leaves the parts done so far). A markdown table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zhcoder.config import preset  # noqa: E402

from gpu_parts import TINY, VARIANTS, Shape, copy_bandwidth, train  # noqa: E402
from gpu_prewarm import compiles  # noqa: E402


class Suite:
    """The run's bookkeeping: the budget, the rows recorded so far (written to --out after each), the log."""

    def __init__(self, args):
        self.args = args
        self.start = time.perf_counter()
        self.results: list[dict] = []
        self.meta: dict = {}
        self.estimates = {"compile": 60.0 if not args.tiny else 5.0}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.args.budget - self.elapsed()

    def log(self, message: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {message}", flush=True)

    def record(self, **row) -> dict:
        row["at_s"] = round(self.elapsed(), 1)
        self.results.append(row)
        self.flush()
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k != "traceback"}
        self.log(f"result {shown}")
        return row

    def save_compile_cache(self) -> None:
        """What torch.compile has built so far, as one portable file beside --out (at most 15 MiB: a returned file)."""
        saved = torch.compiler.save_cache_artifacts()
        if saved is None:
            return
        blob = saved[0]
        if len(blob) <= 15 * 2**20:
            path = Path(self.args.out).parent / "compile_cache.bin"
            path.with_suffix(".tmp").write_bytes(blob)
            os.replace(path.with_suffix(".tmp"), path)               # a timeout never leaves half a file
        self.meta["compile_cache_MiB"] = round(len(blob) / 2**20, 2)

    def flush(self) -> None:
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps({"meta": self.meta, "results": self.results}, indent=1) + "\n")
        os.replace(tmp, out)

    def part(self, name: str, estimate: float, fn, **labels) -> None:
        """Run one measurement if its estimated seconds fit the budget; record errors and skips."""
        if self.left() < estimate:
            self.record(part=name, skipped=f"estimate {estimate:.0f}s > {self.left():.0f}s left", **labels)
            return
        self.log(f"{name} {labels} (estimate {estimate:.0f}s, {self.left():.0f}s left)")
        try:
            fn()
        except Exception as error:                                   # keep going: later parts may still work
            self.record(part=name, error=f"{type(error).__name__}: {error}"[:500],
                        traceback=traceback.format_exc()[-2000:], **labels)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        try:
            self.save_compile_cache()
        except Exception as error:                                   # the measurements stand without it
            self.log(f"compile cache not saved: {type(error).__name__}: {error}")


# ----- the run ---------------------------------------------------------------------------------------------
def label(part: str, shape: str, system: str, batch: int) -> str:
    """A plan entry's name for --list, --only and --skip-done (int8 results are decode rows)."""
    shape = shape.removeprefix("tiny (").removesuffix(")")
    return f"{'decode' if part == 'int8' else part}/{shape}/{system}/{batch}"


def table(suite: Suite) -> str:
    rows = ["| shape | system | batch | decode tok/s | ms/step | GB/s | share of copy bw | vs transformers eager "
            "| vs transformers static |", "|---|---|---|---|---|---|---|---|---|"]
    decode = [r for r in suite.results if r.get("part") == "decode" and "tok_s" in r]
    by = {(r["shape"], r["system"], r["batch"]): r for r in decode}
    for r in decode:
        eager = by.get((r["shape"], "transformers eager", r["batch"]))
        static = by.get((r["shape"], "transformers static", r["batch"]))
        share = f"{r['bandwidth_share']:.0%}" if r.get("bandwidth_share") else "-"
        versus = [f"{r['tok_s'] / peer['tok_s']:.2f}x" if peer else "-" for peer in (eager, static)]
        rows.append(f"| {r['shape']} | {r['system']} | {r['batch']} | {r['tok_s']:.1f} | {r['ms_per_step']:.2f} "
                    f"| {r['GB_s']:.1f} | {share} | {versus[0]} | {versus[1]} |")
    for r in suite.results:
        if r.get("part") == "prefill" and "zhcoder_tok_s" in r:
            rows.append(f"\nprefill {r['shape']} ({r['prompt_len']} tokens): zhcoder {r['zhcoder_tok_s']:,.0f} tok/s "
                        f"(chunk {r['chunk']}; chunks of 512: {r['chunk_512_tok_s']:,.0f}), "
                        f"transformers {r['transformers_tok_s']:,.0f} tok/s ({r['ratio']:.2f}x)")
        if r.get("part") == "train" and "tok_s" in r:
            mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "-"
            rows.append(f"\ntraining {r['shape']} ({r.get('system', 'eager')}) seq {r['seq_len']} x {r['batch']}: "
                        f"{r['tok_s']:,.0f} tok/s, MFU {mfu}")
        if r.get("part") == "profile" and r.get("top"):
            heaviest = "; ".join(f"{k['name'][:60]} {k['share']:.0%} (x{k['count']})" for k in r["top"][:4])
            rows.append(f"\nprofile {r['shape']} {r['system']} batch {r['batch']}: {r['launches_per_token']:.0f} "
                        f"launches and {r['device_us_per_token']:,.0f} us per token; heaviest: {heaviest}")
        if r.get("part") == "copy_bandwidth":
            rows.append(f"\nmeasured copy bandwidth: {r['GB_s']:.0f} GB/s")
    skipped = [f"{r['part']} {r.get('shape', '')} {r.get('system', '')} {r.get('batch', '')}".strip()
               for r in suite.results if "skipped" in r]
    errors = [f"{r['part']} {r.get('shape', '')}: {r['error']}" for r in suite.results if "error" in r]
    if skipped:
        rows.append("\nskipped (budget): " + "; ".join(skipped))
    if errors:
        rows.append("\nerrors: " + "; ".join(errors))
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on CPU: check that every part runs")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 510; tiny 120)")
    parser.add_argument("--shapes", nargs="+", default=["qwen3-8b", "qwen3-0.6b"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 8], help="in priority order")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--eager-new-tokens", type=int, default=32, help="transformers eager is slow: fewer tokens")
    parser.add_argument("--prefill-len", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-seq", type=int, default=2048)
    parser.add_argument("--train-batch", type=int, default=8, help="the issue's transformers figure: batch 8")
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--no-transformers-static", action="store_true")
    parser.add_argument("--whole-graph", action="store_true", help="compile zhcoder's decode steps as one graph of "
                        "all layers (the Engine's reuse_layer=False)")
    parser.add_argument("--compile-cache", help="torch.compile caches to load first (a compile_cache.bin "
                        "an earlier run wrote beside its --out)")
    parser.add_argument("--list", action="store_true", help="print the plan's entries in priority order and exit")
    parser.add_argument("--only", nargs="+", help="run only these entries (as --list names them)")
    parser.add_argument("--skip-done", nargs="+", metavar="JSON", help="skip the entries measured in these earlier "
                        "--out files (a later call on the same warm machine goes on where one stopped)")
    parser.add_argument("--prewarmed", nargs="+", metavar="JSON", help="the --out of gpu_prewarm.py: the "
                        "entries it did not finish are budgeted as compiles from scratch")
    parser.add_argument("--profile-tokens", type=int, default=32, help="profile a generation of this many tokens "
                        "after each zhcoder decode measurement (0: off)")
    args = parser.parse_args()
    if args.tiny:
        args.prompt_len, args.new_tokens, args.eager_new_tokens, args.prefill_len = 8, 6, 4, 40
        args.batches, args.repeats, args.profile_tokens = [1, 2], 1, min(args.profile_tokens, 4)
    args.budget = args.budget or (120.0 if args.tiny else 510.0)
    suite = Suite(args)
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    import transformers

    suite.meta = {"torch": torch.__version__, "transformers": transformers.__version__,
                  "python": platform.python_version(),
                  "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
                  "tiny": args.tiny, "args": vars(args), "reuse_decode_layer": not args.whole_graph,
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if device.type == "cuda":
        suite.meta["gpu_memory_GiB"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        torch.backends.cuda.matmul.allow_tf32 = True
    if not args.list:
        suite.log(f"{suite.meta['device']}, torch {torch.__version__}, transformers {transformers.__version__}, "
                  f"budget {args.budget:.0f}s")
    if args.compile_cache and Path(args.compile_cache).is_file():
        torch.compiler.load_cache_artifacts(Path(args.compile_cache).read_bytes())
        suite.meta["compile_cache_loaded"] = args.compile_cache
        suite.log(f"loaded torch.compile caches from {args.compile_cache}")
    shapes: dict[str, Shape] = {}

    def shape(name: str) -> Shape:
        if name not in shapes:
            config = preset(name, **(TINY if args.tiny else {}))
            shapes[name] = Shape(suite, name if not args.tiny else f"tiny ({name})", config, device, dtype)
        return shapes[name]

    compile_cost = lambda: suite.estimates["compile"]  # noqa: E731
    try:
        from zhcoder.quant import quantize_model
        quant = callable(quantize_model)
    except ImportError as error:
        quant = False
        suite.record(part="int8", skipped=f"zhcoder.quant not importable: {error}")

    def decode(name, batch, system):
        if system == "zhcoder":
            return ("decode", name, system, batch, lambda: shape(name).ours(batch), compile_cost)
        if system in VARIANTS:
            return ("decode", name, system, batch, lambda: shape(name).variant(system), compile_cost)
        static = system == "transformers static"
        return ("decode", name, system, batch, lambda: shape(name).theirs(batch, static=static),
                (lambda: 1.5 * suite.estimates["compile"]) if static else (lambda: 10.0))

    big, small, batches = args.shapes[0], args.shapes[1:], args.batches
    ours_eager = ("zhcoder", "transformers eager")
    static = () if args.no_transformers_static else ("transformers static",)
    plan = [decode(big, batches[0], system) for system in ours_eager + static]      # the headline numbers first
    plan += [("prefill", big, "", 1, lambda: shape(big).prefill(), lambda: 10.0)]   # cheap: before a new compile
    plan += [("train", "qwen3-0.6b", system, args.train_batch, lambda c=compiled: train(suite, device, c),
              lambda c=compiled: 40.0 + compile_cost() * c)
             for system, compiled in (("eager", False), ("compiled per layer", True))]
    plan += [decode(big, batch, system) for batch in batches[1:2] for system in ours_eager]
    plan += [decode(name, batches[0], system) for name in small for system in ours_eager]
    if quant:
        plan.append(("int8", big, "zhcoder int8", 1, lambda: shape(big).int8(), compile_cost))
    plan += [decode(big, batch, system) for batch in batches[2:] for system in ours_eager]
    plan += [decode(big, batch, system) for batch in batches[1:] for system in static]
    plan += [decode(name, batch, system) for name in small for batch in batches[1:] for system in ours_eager]
    plan += [decode(name, batches[0], system) for name in small for system in static]
    plan += [("prefill", name, "", 1, lambda n=name: shape(n).prefill(), lambda: 10.0) for name in small]
    plan += [decode(name, batch, system) for name in small for batch in batches[1:] for system in static]
    if quant:
        plan += [("int8", name, "zhcoder int8", 1, lambda n=name: shape(n).int8(), compile_cost) for name in small]
    plan += [decode(big, batches[0], system) for system in VARIANTS]          # how else it could be compiled
    if args.list:
        print("\n".join(label(*entry[:4]) for entry in plan))
        return
    if args.only:
        plan = [entry for entry in plan if label(*entry[:4]) in args.only]
    done = set()
    for path in args.skip_done or []:
        done |= {label(r["part"], r["shape"], r.get("system", ""), r.get("batch", 1))
                 for r in json.loads(Path(path).read_text())["results"]
                 if r.get("part") in ("decode", "prefill", "train", "int8") and "error" not in r
                 and "skipped" not in r and "shape" in r}
    warm, cold = set(), 0.0          # the compiles --prewarmed finished, and the longest of them alone on the GPU:
    for path in args.prewarmed or []:                # 0.8 x as long as while sharing it (the 8B step on the H200:
        rows = [r for r in json.loads(Path(path).read_text())["results"] if r.get("part") == "prewarm"]   # 135/167 s)
        warm |= {r["entry"] for r in rows if r.get("rc") == 0 and not r.get("error")}
        cold = max([cold] + [0.8 * r["warmup_s"] for r in rows if r.get("rc") == 0 and r.get("warmup_s")])
    if args.prewarmed:
        suite.meta["prewarmed"] = sorted(warm)
    if not args.only:
        suite.part("copy_bandwidth", 5, lambda: suite.meta.update(copy_GB_s=copy_bandwidth(suite, device)))
    for part, name, system, batch, fn, estimate in plan:
        entry = label(part, name, system, batch)
        if entry in done:
            suite.record(part=part, shape=name, system=system, batch=batch, skipped="done in --skip-done")
            continue
        if args.prewarmed and compiles(entry) and entry not in warm:
            estimate = (lambda e=estimate: max(e(), cold))          # a compile from scratch
        if name not in shapes and part != "train":
            build = 20.0 if not args.tiny else 1.0
            if suite.left() < build + estimate():
                suite.record(part=part, shape=name, system=system, batch=batch, skipped="budget")
                continue
        suite.part(part, estimate(), fn, shape=name, system=system, batch=batch)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    suite.meta["wall_s"] = round(suite.elapsed(), 1)
    suite.flush()
    print(table(suite), flush=True)


if __name__ == "__main__":
    main()
