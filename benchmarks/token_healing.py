"""Token healing on prompts that end where a tokenizer would not cut: HumanEval, greedy, with and without healing.

Two cuts of each of HumanEval's 164 prompts, as an editor sends them:
- "closing quotes": the prompt without its final newline, ending at the docstring's closing quotes (CodeFuse's
  HumanEval-zh prompts are published this way); the full prompt's completion is the reference.
- "mid-line": the prompt plus the canonical solution's first line cut at a seeded random character (inside a
  name, an operator, a string), as when completion fires while typing.
For each: the share of prompt + completion that parses (`ast.parse`, HumanEval's stop strings), and for the first
cut the share of programs identical to the full prompt's. Writes JSON and prints a table.

    python benchmarks/token_healing.py                      # the embedded zhcoder-nano, ~2 minutes on 2 cores
    python benchmarks/token_healing.py --model DIR --limit 40 --out /tmp/healing.json
"""

from __future__ import annotations

import argparse
import ast
import json
import platform
import random
import time
from pathlib import Path

import torch

from zhcoder.checkpoint import default_model
from zhcoder.engine import Engine, SamplingParams
from zhcoder.eval.tasks import FUNCTION_STOPS, load_humaneval


def parses(program: str) -> bool:
    try:
        ast.parse(program)
        return True
    except (SyntaxError, ValueError):
        return False


def mid_line(prompt: str, solution: str, rng: random.Random) -> str:
    """`prompt` + the solution's first non-blank line cut after a random character of its code."""
    line = next(text for text in solution.splitlines() if text.strip())
    indent = len(line) - len(line.lstrip())
    return prompt + line[:rng.randrange(indent + 1, len(line))]


def complete(engine: Engine, prompts: list[str], healing: bool, new_tokens: int, batch: int) -> list[str]:
    params = SamplingParams(max_new_tokens=new_tokens, stop=list(FUNCTION_STOPS), token_healing=healing)
    texts = []
    for first in range(0, len(prompts), batch):
        texts += [c.text for c in engine.generate(prompts[first:first + batch], params)]
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint folder (default: the embedded zhcoder-nano)")
    parser.add_argument("--limit", type=int, default=None, help="the first N problems")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = default_model(args.model)
    engine = Engine.from_dir(model, dtype="float32")
    problems = load_humaneval().problems[:args.limit]
    rng = random.Random(0)
    full = [p.prompt for p in problems]
    cuts = {"closing quotes": [p.prompt.rstrip("\n") for p in problems],
            "mid-line": [mid_line(p.prompt, p.canonical_solution, rng) for p in problems]}
    start = time.perf_counter()
    reference = [prompt + text for prompt, text in zip(full, complete(engine, full, False, args.new_tokens,
                                                                      args.batch))]
    uncut = sum(map(parses, reference)) / len(full)
    rows = [{"cut": "none (HumanEval's prompt)", "healing": False, "parse_rate": uncut}]
    for cut, prompts in cuts.items():
        for healing in (False, True):
            programs = [p + t for p, t in zip(prompts, complete(engine, prompts, healing, args.new_tokens, args.batch))]
            row = {"cut": cut, "healing": healing, "parse_rate": sum(map(parses, programs)) / len(programs)}
            if cut == "closing quotes":
                row["same_program_as_uncut"] = sum(a == b for a, b in zip(programs, reference)) / len(programs)
            rows.append(row)
            print(row, flush=True)
    result = {"model": str(model), "problems": len(problems), "new_tokens": args.new_tokens, "greedy": True,
              "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
              "seconds": round(time.perf_counter() - start, 1), "date": time.strftime("%Y-%m-%d"), "rows": rows}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("| cut | healing | parses | same program as the uncut prompt |\n|---|---|---|---|")
    for row in rows:
        same = row.get("same_program_as_uncut")
        print(f"| {row['cut']} | {'on' if row['healing'] else 'off'} | {row['parse_rate']:.1%} | "
              f"{'-' if same is None else f'{same:.1%}'} |")


if __name__ == "__main__":
    main()
