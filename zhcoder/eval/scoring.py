"""Scoring: unbiased pass@k, the per-sample results file, the summary, and resuming interrupted runs.

pass@k is the unbiased estimator of Chen et al. 2021 (the Codex paper), 1 - C(n-c, k) / C(n, k), computed in
its numerically stable product form. It is reported only when every task has at least k samples.

    python -m pytest tests/test_scoring.py
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c of them correct) is correct."""
    if not 0 <= c <= n or k < 1 or k > n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


class RowFile:
    """A JSONL file of rows keyed by (task_id, completion_id), appended and flushed row by row, so an interrupted
    run resumes where it stopped: results.jsonl (task_id, completion_id, passed, result, stages) and the
    generations of a model (samples.jsonl)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: dict[tuple[str, int], dict] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.rows[(row["task_id"], int(row["completion_id"]))] = row
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # a line cut by an interruption: that sample runs again
        self._handle = None

    def done(self, task_id: str, completion_id: int) -> bool:
        return (task_id, completion_id) in self.rows

    def add(self, row: dict) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            cut = self.path.exists() and self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n")
            self._handle = self.path.open("a", encoding="utf-8")
            if cut:  # end the line an interruption left unfinished, so the next row starts clean
                self._handle.write("\n")
        self.rows[(row["task_id"], int(row["completion_id"]))] = row
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def summarize(rows: list[dict], task_ids: list[str], difficulties: dict[str, str | None] | None = None,
              stages: tuple[str, ...] = ("default",), ks: tuple[int, ...] = (1, 10, 100)) -> dict:
    """pass@k (in percent) over the tasks, overall, per difficulty and per stage, from results rows."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_task[row["task_id"]].append(row)

    def scores(ids: list[str], passed_of) -> dict:
        counts = [(len(by_task[t]), sum(passed_of(r) for r in by_task[t])) for t in ids]
        out = {"n_tasks": len(ids), "passed": sum(c for _, c in counts)}
        if not ids or any(n == 0 for n, _ in counts):
            return out
        for k in ks:
            if all(n >= k for n, _ in counts):
                out[f"pass@{k}"] = 100.0 * sum(pass_at_k(n, c, k) for n, c in counts) / len(ids)
        return out

    summary = scores(task_ids, lambda r: r["passed"])
    if len(stages) > 1:
        summary["stages"] = {s: scores(task_ids, lambda r, s=s: r.get("stages", {}).get(s) == "passed") for s in stages}
    if difficulties and any(difficulties.values()):
        groups: dict[str, list[str]] = defaultdict(list)
        for t in task_ids:
            groups[difficulties.get(t) or "Unknown"].append(t)
        order = {"Easy": 0, "Medium": 1, "Hard": 2}
        summary["by_difficulty"] = {
            name: scores(ids, lambda r: r["passed"]) for name, ids in sorted(groups.items(), key=lambda g: order.get(g[0], 9))
        }
    summary["n_samples"] = sum(len(by_task[t]) for t in task_ids)
    return summary


def round_scores(summary: dict, digits: int = 1) -> dict:
    """A copy with percentages rounded, for display."""
    return {
        k: (round(v, digits) if k.startswith("pass@") else round_scores(v, digits) if isinstance(v, dict) else v)
        for k, v in summary.items()
    }

