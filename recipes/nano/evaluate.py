"""Score zhcoder-nano checkpoints (the two ablation arms, or the shipped model) the way the model card reports them.

    python recipes/nano/evaluate.py /tmp/nano/models/bias /tmp/nano/models/plain --data /tmp/nano/pretrain \
        --out /tmp/nano/eval                                  # writes OUT/<name>/scores.json and OUT/ablation.md
    python recipes/nano/evaluate.py models/zhcoder-nano --data .nano/pretrain --out /tmp/e --limit 5   # quick
    # the arms in parallel, then the table: run each arm alone (OMP_NUM_THREADS=1), then both with --reuse

Per checkpoint:
- validation loss (nats per token) of the pre-training build's held-out split, overall and on code-boundary
  tokens (the targets the code-aware bias singles out: newline/indentation, brackets, separators, full-width
  punctuation; `zhcoder.code_bias`), and per class;
- HumanEval, HumanEval-zh and MBPP pass@1 with zhcoder's harness (`zhcoder eval`, greedy, base mode);
- the share of HumanEval completions that parse: `ast.parse(prompt + completion)`.
Given two checkpoints, ablation.md adds their paired validation-loss difference with a 95 % bootstrap interval
over the held-out rows.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zhcoder.checkpoint import load_model
from zhcoder.code_bias import token_classes
from zhcoder.config import CODE_CLASSES
from zhcoder.data.shards import PackedSequences
from zhcoder.eval.run import evaluate
from zhcoder.eval.subjects import GenerationSettings, LocalModel
from zhcoder.eval.tasks import load_task
from zhcoder.model import document_causal_mask
from zhcoder.tokenizer import Tokenizer

TASKS = ("humaneval", "humaneval-zh", "mbpp")


@torch.inference_mode()
def validation_loss(model_dir: str, split: Path, seq_len: int = 1024, batch_size: int = 8) -> dict:
    """Mean cross-entropy over every target of the split (packed as in training), overall and per token class; and
    per packed row its loss sums and counts (all targets, boundary targets) for the paired comparison of arms."""
    model = load_model(model_dir, dtype="float32")
    classes = torch.from_numpy(token_classes(Tokenizer.from_dir(model_dir), model.config.vocab_size).astype(np.int64))
    sums, counts = torch.zeros(len(CODE_CLASSES), dtype=torch.float64), torch.zeros(len(CODE_CLASSES))
    per_row = {"loss": [], "tokens": [], "boundary_loss": [], "boundary_tokens": []}
    rows = list(PackedSequences(split, seq_len, seed=0, epochs=1))
    for start in range(0, len(rows), batch_size):
        batch = {k: torch.from_numpy(np.stack([r[k] for r in rows[start:start + batch_size]]))
                 for k in ("input_ids", "labels", "position_ids")}
        logits = model(batch["input_ids"], position_ids=batch["position_ids"],
                       attention_mask=document_causal_mask(batch["position_ids"]))
        labels = batch["labels"]
        keep = labels != -100
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten().clamp(min=0), reduction="none")
        loss = loss.view_as(labels).double() * keep
        target_classes = classes[labels.clamp(min=0)]
        sums.index_add_(0, target_classes[keep], loss[keep])
        counts.index_add_(0, target_classes[keep], torch.ones(int(keep.sum())))
        boundary_targets = keep & (target_classes > 0)                      # every class but "other"
        per_row["loss"] += loss.sum(1).tolist()
        per_row["tokens"] += keep.sum(1).tolist()
        per_row["boundary_loss"] += (loss * boundary_targets).sum(1).tolist()
        per_row["boundary_tokens"] += boundary_targets.sum(1).tolist()
    boundary = slice(1, None)
    return {"overall": float(sums.sum() / counts.sum()), "boundary": float(sums[boundary].sum() / counts[boundary].sum()),
            "tokens": int(counts.sum()), "boundary_tokens": int(counts[boundary].sum()),
            "by_class": {name: float(sums[i] / counts[i]) if counts[i] else None for i, name in enumerate(CODE_CLASSES)},
            "rows": per_row}


def paired_difference(first: dict, second: dict, key: str, samples: int = 2000, seed: int = 0) -> dict:
    """second - first in mean validation loss ("" = all targets, "boundary_" = boundary targets), with a 95 %
    bootstrap interval over the packed rows (both arms scored the same rows): the noise of the evaluation set,
    not of training (one seed per arm)."""
    a, b = first["validation_loss"]["rows"], second["validation_loss"]["rows"]
    loss_a, loss_b = np.array(a[f"{key}loss"]), np.array(b[f"{key}loss"])
    tokens = np.array(a[f"{key}tokens"], dtype=np.float64)
    if not np.array_equal(tokens, b[f"{key}tokens"]):
        raise ValueError("the two arms were scored on different validation rows")
    picks = np.random.default_rng(seed).integers(0, len(tokens), (samples, len(tokens)))
    diffs = (loss_b[picks].sum(1) - loss_a[picks].sum(1)) / tokens[picks].sum(1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"difference": float((loss_b.sum() - loss_a.sum()) / tokens.sum()), "low": float(low), "high": float(high)}


def parse_rate(samples: Path, data_dir: str | None) -> float:
    """Share of HumanEval samples whose prompt + completion is valid Python."""
    prompts = {p.task_id: p.prompt for p in load_task("humaneval", data_dir).problems}
    rows = [json.loads(line) for line in samples.read_text(encoding="utf-8").splitlines() if line.strip()]
    ok = 0
    for row in rows:
        try:
            ast.parse(prompts[row["task_id"]] + row["completion"])
            ok += 1
        except SyntaxError:
            pass
    return ok / len(rows)


def score(model_dir: str, data: Path, out: Path, limit: int | None, data_dir: str | None,
          max_new_tokens: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    result = {"model": str(Path(model_dir).resolve()), "validation_loss": validation_loss(model_dir, data / "validation")}
    settings = GenerationSettings(mode="base", n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    subject = LocalModel(model_dir, settings, dtype="float32")
    for task in TASKS:
        summary = evaluate(task, out / task, subject=subject, settings=settings, limit=limit, data_dir=data_dir,
                           name=Path(model_dir).name)
        result[task] = {"pass@1": summary["pass@1"], "n_tasks": summary["n_tasks"]}
    result["humaneval_parse_rate"] = parse_rate(out / "humaneval" / "samples.jsonl", data_dir)
    (out / "scores.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


def markdown(results: dict[str, dict]) -> str:
    names = list(results)
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    rows = [("validation loss, all tokens", lambda r: f"{r['validation_loss']['overall']:.4f}"),
            ("validation loss, boundary tokens", lambda r: f"{r['validation_loss']['boundary']:.4f}")]
    rows += [(f"… {name.replace('_', ' ')}", lambda r, c=name: f"{r['validation_loss']['by_class'][c]:.4f}")
             for name in CODE_CLASSES[1:]]
    rows += [(f"{task} pass@1 (%)", lambda r, t=task: f"{r[t]['pass@1']:.2f}") for task in TASKS]
    rows += [("HumanEval completions that parse (%)", lambda r: f"{100 * r['humaneval_parse_rate']:.1f}")]
    for label, cell in rows:
        lines.append(f"| {label} | " + " | ".join(cell(results[n]) for n in names) + " |")
    if len(names) == 2:
        first, second = (results[n] for n in names)
        lines.append("")
        verdict = []
        for key, label in (("", "all tokens"), ("boundary_", "boundary tokens")):
            d = paired_difference(first, second, key)
            lines.append(f"- validation loss, {label}: {names[1]} − {names[0]} = {d['difference']:+.4f} nats/token "
                         f"(95 % bootstrap interval over the {len(first['validation_loss']['rows']['tokens'])} "
                         f"held-out rows: {d['low']:+.4f} … {d['high']:+.4f})")
            lower = names[0] if d["low"] > 0 else names[1] if d["high"] < 0 else None
            verdict.append(f"{label}: {lower} lower" if lower else f"{label}: no difference beyond the noise")
        same = all(first[t]["pass@1"] == second[t]["pass@1"] for t in TASKS)
        lines.append(f"- In short (validation loss, an interval that excludes zero): {'; '.join(verdict)}; "
                     f"pass@1 {'the same for both' if same else 'differs (table)'}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="checkpoint folders (their folder names label the results)")
    parser.add_argument("--data", type=Path, required=True, help="the pre-training build (its validation split)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, help="only the first N problems of each task")
    parser.add_argument("--data-dir", help="benchmark data (default $ZHCODER_DATA / ../shared/data)")
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--reuse", action="store_true",
                        help="take OUT/<name>/scores.json where it exists (to tabulate arms scored in parallel)")
    args = parser.parse_args()
    results = {}
    for model_dir in args.models:
        name = Path(model_dir).name
        done = args.out / name / "scores.json"
        if args.reuse and done.is_file():
            results[name] = json.loads(done.read_text(encoding="utf-8"))
            continue
        results[name] = score(model_dir, args.data, args.out / name, args.limit, args.data_dir, args.max_new_tokens)
        shown = results[name] | {"validation_loss": {k: v for k, v in results[name]["validation_loss"].items()
                                                      if k != "rows"}}
        print(json.dumps({name: shown}, indent=1))
    table = markdown(results)
    (args.out / "ablation.md").write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
