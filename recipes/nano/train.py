"""Train zhcoder-nano's two stages for one or both ablation arms (code-aware attention bias on / off).

    python recipes/nano/train.py --work /tmp/nano --out /tmp/nano/models            # both arms, as configured
    python recipes/nano/train.py --work /tmp/nano-tiny --out /tmp/nano-tiny/models --tiny   # a CPU check
    python recipes/nano/train.py --work /tmp/nano --out /tmp/nano/models --cpu   # the CPU run, both arms at once
    python recipes/nano/train.py --work /tmp/nano --out /tmp/nano/models --cpu --sft-only   # stage 2 again
    python recipes/nano/train.py --work .nano --out /tmp/m --together --time-limits 200 60   # the device call

Each arm: `zhcoder train pretrain --preset qwen3-0.6b --config pretrain.toml` (from random weights, the data
and tokenizer of build_corpus.py; `--code-aware-attention` for the "bias" arm), then `zhcoder train sft` on the
SFT shards from the stage-1 model; OUT/<arm>/ is the final HF checkpoint. Same data, seed and steps for both
arms. The GPU run does both in one device call (tools/nano_gpu_run.sh, recipes/nano/README.md). With --cpu or --together the arms run at
once, one process each with an equal share of the cores (OMP_NUM_THREADS), logging to WORK/runs/<arm>.log: small
matrices use two single-thread processes better than one two-thread process, and on a GPU a 19 M-parameter model
leaves it idle between kernel launches, which the other arm fills. --time-limits caps each stage's seconds (the
trainer's --time-limit: the schedule is shortened to fit, then a hard stop), for a device call of fixed length.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACK = HERE.parents[1] / "tools" / "nano_pack.py"          # the device call's packing (session tooling)
TINY = ["--layers", "2", "--steps", "6", "--seq-len", "128", "--batch-size", "2", "--save-every", "6",
        "--eval-every", "6"]


def zhcoder(*args: object) -> None:
    command = [sys.executable, "-m", "zhcoder.cli", *map(str, args)]
    print("+", " ".join(map(str, command[2:])), flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="build_corpus.py's folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arms", nargs="+", default=["bias", "plain"], choices=["bias", "plain"])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--cpu", action="store_true", help="the smaller CPU configs (cpu-*.toml); two arms run at once")
    parser.add_argument("--pack", type=Path, help="after each arm, pack it for the trip back here "
                        "(tools/nano_pack.py)")
    parser.add_argument("--sft-only", action="store_true", help="keep WORK/runs/<arm>/stage1, redo stage 2 from it")
    parser.add_argument("--together", action="store_true", help="run the arms at once (the default with --cpu)")
    parser.add_argument("--time-limits", nargs=2, type=float, metavar=("STAGE1", "STAGE2"),
                        help="seconds of training per stage (the trainer's --time-limit)")
    args = parser.parse_args()
    if (args.cpu or args.together) and len(args.arms) > 1:
        return run_arms_at_once(args)
    for arm in args.arms:
        runs = args.work / "runs" / arm
        if args.sft_only and not (runs / "stage1" / "final" / "config.json").exists():
            sys.exit(f"train.py: --sft-only needs a finished stage 1 in {runs / 'stage1' / 'final'}")
        shutil.rmtree(runs / "stage2" if args.sft_only else runs, ignore_errors=True)
        start = time.time()
        tiny = TINY if args.tiny else []
        prefix = "cpu-" if args.cpu else ""
        limits = [["--time-limit", t] for t in args.time_limits] if args.time_limits else [[], []]
        if not args.sft_only:
            zhcoder("train", "pretrain", "--preset", "qwen3-0.6b", "--config", HERE / f"{prefix}pretrain.toml",
                    "--data", args.work / "pretrain", "--tokenizer", args.work / "tokenizer", "--out", runs / "stage1",
                    *(["--code-aware-attention"] if arm == "bias" else ["--plain-attention"]), *tiny, *limits[0])
        sft_tiny = tiny[2:]                                # no --layers: the model comes from stage 1
        zhcoder("train", "sft", "--config", HERE / f"{prefix}sft.toml", "--model", runs / "stage1" / "final", "--data",
                args.work / "sft", "--out", runs / "stage2", *sft_tiny, *limits[1])
        shutil.copytree(runs / "stage2" / "final", args.out / arm, dirs_exist_ok=True)
        print(f"{arm}: {time.time() - start:.0f} s", flush=True)
        if args.pack:
            subprocess.run([sys.executable, str(PACK), str(runs / "stage2" / "final"), arm, str(runs),
                            str(args.pack)], check=True)


def run_arms_at_once(args: argparse.Namespace) -> None:
    """This script once per arm, all at once, the cores shared out; fails if any arm fails."""
    threads = str(max(1, (os.cpu_count() or 1) // len(args.arms)))
    (args.work / "runs").mkdir(parents=True, exist_ok=True)
    children = []
    for arm in args.arms:
        command = [sys.executable, __file__, "--work", args.work, "--out", args.out, "--arms", arm,
                   *[f"--{flag.replace('_', '-')}" for flag in ("cpu", "tiny", "sft_only") if getattr(args, flag)],
                   *(["--pack", args.pack] if args.pack else []),
                   *(["--time-limits", *args.time_limits] if args.time_limits else [])]
        log = (args.work / "runs" / f"{arm}.log").open("a" if args.sft_only else "w")   # keep stage 1's log
        print(f"{arm}: {threads} thread(s), log {log.name}", flush=True)
        children.append((arm, log, subprocess.Popen(list(map(str, command)), stdout=log, stderr=subprocess.STDOUT,
                                                     env=os.environ | {"OMP_NUM_THREADS": threads})))
    failed = []
    for arm, log, child in children:
        if child.wait() != 0:
            failed.append(arm)
        log.close()
    if failed:
        sys.exit(f"train.py: arm(s) {', '.join(failed)} failed: see {args.work / 'runs'}/<arm>.log")


if __name__ == "__main__":
    main()
