"""Compile ahead for tools/gpu_suite.py: run the suite's compiling entries, each in its own niced process, a
few at a time, while the GPU does something else (tools/nano_gpu_run.sh: the nano training). They fill
inductor's on-disk caches (FX graphs, autotuning), so that the measuring run afterwards, alone on the GPU, loads
its compiled steps (the 8B batch-1 step on the H200: 135 s from scratch, 47 s from these caches). Their own
figures were measured while sharing the machine: logged, never reported.

    python tools/gpu_prewarm.py --jobs 3 --until 235 --out /tmp/prewarm.json &      # SUITE ARGS may follow
    python tools/gpu_suite.py --out $OUT/suite.json --prewarmed /tmp/prewarm.json  # afterwards
    python tools/gpu_prewarm.py --jobs 2 --limit 1 --out /tmp/p.json --tiny        # a CPU check

Writes {"meta": ..., "results": [one "prewarm" row per entry: rc, seconds, warmup_s, or stopped/skipped]}.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = Path(__file__).with_name("gpu_suite.py")


def compiles(entry: str) -> bool:
    """Whether a suite entry (`gpu_suite.py --list`'s part/shape/system/batch) spends most of its time compiling."""
    part, _, system, _ = entry.split("/")
    return system.startswith("zhcoder") or system in ("transformers static", "compiled per layer")


def gib(entry: str) -> float:
    """GPU memory to leave for one entry's process: an 8B shape with its copies, caches and transformers' static
    cache takes ~20-35 GiB, as does training the 0.6B shape; decoding the 0.6B shape a few."""
    part, shape, _, _ = entry.split("/")
    return 40.0 if "8b" in shape or part == "train" else 8.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=3, help="processes at a time (fewer when GPU memory is short)")
    parser.add_argument("--until", type=float, default=240.0, help="seconds after which what still runs is stopped")
    parser.add_argument("--limit", type=int, help="only the first N compiling entries")
    parser.add_argument("--out", type=Path, required=True)
    args, suite_args = parser.parse_known_args()
    began = time.perf_counter()
    listed = subprocess.run([sys.executable, str(SUITE), "--list", "--out", str(args.out), *suite_args],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    entries = [entry for entry in listed if compiles(entry)][:args.limit]
    jobs, free_gib = args.jobs, float("inf")
    try:
        import torch

        if torch.cuda.is_available():
            free_gib = torch.cuda.mem_get_info()[0] / 2**30
    except ImportError:
        pass
    work = Path(tempfile.mkdtemp(prefix="zhcoder-prewarm-"))
    env = os.environ | {"TORCHINDUCTOR_COMPILE_THREADS": os.environ.get("TORCHINDUCTOR_COMPILE_THREADS", "4")}
    results: list[dict] = []

    def record(**row) -> None:
        row["at_s"] = round(time.perf_counter() - began, 1)
        results.append(row)
        print(f"[{row['at_s']:6.1f}s] prewarm {row}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": {"jobs": jobs, "until_s": args.until, "suite_args": suite_args},
                                        "results": results}, indent=1) + "\n")

    print(f"prewarm: {len(entries)} entries, up to {jobs} at a time in {free_gib:.0f} GiB, until {args.until:.0f}s",
          flush=True)
    waiting, running = list(enumerate(entries)), {}

    def fits(entry: str) -> bool:                         # GPU memory for one more process
        return not running or sum(gib(e) for e, *_ in running.values()) + gib(entry) <= free_gib

    while (waiting or running) and time.perf_counter() - began < args.until:
        while waiting and len(running) < jobs and fits(waiting[0][1]):
            index, entry = waiting.pop(0)
            out = work / f"{index}.json"
            log = (work / f"{index}.log").open("w")
            command = [sys.executable, str(SUITE), "--only", entry, "--out", str(out), "--budget", "100000",
                       *suite_args]
            child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                     preexec_fn=lambda: os.nice(10))
            running[child] = (entry, out, time.perf_counter(), log)
        time.sleep(0.5)
        for child in [c for c in running if c.poll() is not None]:
            entry, out, started, log = running.pop(child)
            log.close()
            rows = json.loads(out.read_text())["results"] if out.is_file() else []
            warmup = [r[key] for r in rows for key in ("warmup_s", "first_step_s") if key in r]
            errors = [r["error"] for r in rows if "error" in r]
            record(part="prewarm", entry=entry, rc=child.returncode, seconds=round(time.perf_counter() - started, 1),
                   warmup_s=warmup[0] if warmup else None, error=errors[0] if errors else None)
    for child, (entry, _, started, log) in running.items():       # past the deadline: each child's own group
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        log.close()
        record(part="prewarm", entry=entry, stopped_after_s=round(time.perf_counter() - started, 1))
    for _, entry in waiting:
        record(part="prewarm", entry=entry, skipped="deadline")
    if not results:
        record(part="prewarm", skipped="nothing to compile")


if __name__ == "__main__":
    main()
