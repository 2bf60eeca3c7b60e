"""Corpus-build throughput of `zhcoder data build` on the Python standard library: 1 worker vs all cores.

    python benchmarks/data_build.py                      # this interpreter's stdlib, Qwen tokenizer
    python benchmarks/data_build.py --src /path/to/code --workers 1 4 16 --json out.json

The default corpus is a copy of this interpreter's standard library without site-packages and __pycache__, made
once under --scratch (the reader skips symlinks, so it has to be a real copy). For each worker count the benchmark
runs a full build (all four stages) into a fresh folder, times it, and reads OUT/stats.json: input MB/s, files
kept, the dedup rate, and the time per step from datatrove's stats. Prints a Markdown table for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import sysconfig
import time
from pathlib import Path

from zhcoder.data.build import BuildConfig, build

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def stdlib_copy(scratch: Path) -> Path:
    """A copy of this interpreter's standard library without site-packages and __pycache__ (made once)."""
    target = scratch / f"stdlib-{platform.python_version()}"
    if not target.exists():
        source = Path(sysconfig.get_paths()["stdlib"])
        shutil.copytree(source, target, symlinks=True,
                        ignore=shutil.ignore_patterns("site-packages", "__pycache__", "dist-packages"))
    return target


def step_seconds(stats: dict) -> dict[str, float]:
    """Seconds spent per pipeline step (summed over tasks), from the datatrove stats kept in stats.json."""
    seconds = {}
    for stage, steps in stats["datatrove"].items():
        for step in steps:
            name = step["name"].split(": ", 1)[-1]
            timing = step["time_stats"]
            seconds[f"{stage}/{name}"] = round(timing.get("total", 0.0) if isinstance(timing, dict) else timing, 2)
    return seconds


def run(src: Path, workers: int, scratch: Path, tokenizer: str, decontaminate: bool) -> dict:
    out = scratch / f"out-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    config = BuildConfig(sources=[str(src)], tokenizer=tokenizer, out=str(out), decontaminate=decontaminate,
                         data_dir=str(DATA_DIR) if DATA_DIR.exists() else None)
    start = time.perf_counter()
    stats = build(config, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    megabytes = stats["input_bytes"] / 1e6
    return {"workers": workers, "seconds": round(seconds, 2), "input_mb": round(megabytes, 1),
            "mb_per_s": round(megabytes / seconds, 2), "input_files": stats["input_files"],
            "kept_files": stats["kept_files"], "dedup_rate": stats["dedup_rate"], "removed": stats["removed"],
            "train_tokens": stats["splits"]["train"]["n_tokens"],
            "kept_text_mb": round(sum(v["chars"] for v in stats["languages"].values()) / 1e6, 1),
            "tokens_per_s": round(stats["splits"]["train"]["n_tokens"] / seconds),
            "tasks": stats["tasks"], "step_seconds": step_seconds(stats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=Path, help="corpus folder (default: a copy of this Python's stdlib)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/zhcoder-bench-data"))
    parser.add_argument("--tokenizer", default="qwen")
    parser.add_argument("--no-decontaminate", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.scratch.mkdir(parents=True, exist_ok=True)
    src = args.src or stdlib_copy(args.scratch)
    rows = [run(src, w, args.scratch, args.tokenizer, not args.no_decontaminate) for w in args.workers]
    base = rows[0]["seconds"]
    print(f"corpus {src}: {rows[0]['input_files']} files, {rows[0]['input_mb']} MB; {os.cpu_count()} cores; "
          f"Python {platform.python_version()}")
    print("| workers | seconds | input MB/s | kept text MB/s | speed-up | train tokens/s | kept files | dedup rate |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['workers']} | {row['seconds']} | {row['mb_per_s']} | {row['kept_text_mb'] / row['seconds']:.2f} | "
              f"{base / row['seconds']:.2f}x | {row['tokens_per_s']:,} | {row['kept_files']} / {row['input_files']} | "
              f"{row['dedup_rate']:.2%} |")
    print("removed:", json.dumps(rows[0]["removed"]))
    print("time per step (1st run, summed over tasks):", json.dumps(rows[0]["step_seconds"], ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    sys.exit(main())
