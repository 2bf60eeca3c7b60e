"""`zhcoder eval report DIR...`: one Markdown table (subjects x benchmarks, pass@1 in percent) and a PNG
bar chart from the summary.json files of several eval output folders.

    zhcoder eval report runs/* --md report.md --png report.png
"""

from __future__ import annotations

import json
from pathlib import Path


def load_summaries(dirs: list[str | Path]) -> list[dict]:
    summaries = []
    for directory in dirs:
        path = Path(directory) / "summary.json"
        if not path.is_file():
            raise FileNotFoundError(f"no summary.json in {directory} (is it an eval output folder?)")
        summary = json.loads(path.read_text(encoding="utf-8"))
        summary["_dir"] = str(directory)
        summaries.append(summary)
    if not summaries:
        raise ValueError("no eval output folders given")
    return summaries


def subject_label(summary: dict) -> str:
    return str(summary.get("name") or Path(summary["_dir"]).name)


def columns_of(summary: dict) -> dict[str, float]:
    """Benchmark column name -> pass@1, with MBPP+ base/plus and LeetCode difficulties as their own columns."""
    task, cols = summary["task"], {}
    if "stages" in summary:
        for stage, scores in summary["stages"].items():
            if "pass@1" in scores:
                cols[f"{task} ({stage})"] = scores["pass@1"]
    elif "pass@1" in summary:
        cols[task] = summary["pass@1"]
    if summary.get("metric") == "translation":
        cols[f"{task} BLEU"] = summary["bleu"]
        cols[f"{task} EM"] = summary["exact_match"]
        if summary.get("codebleu") is not None:
            cols[f"{task} CodeBLEU"] = summary["codebleu"]
    if summary.get("metric") == "security":
        cols[f"{task} vulnerable %"] = summary["vulnerable_rate"]
        if "CWE-89" in summary.get("by_cwe", {}):
            cols[f"{task} CWE-89 %"] = summary["by_cwe"]["CWE-89"]["rate"]
    for difficulty, scores in summary.get("by_difficulty", {}).items():
        if "pass@1" in scores:
            cols[f"{task} {difficulty}"] = scores["pass@1"]
    return cols


def table(summaries: list[dict]) -> tuple[list[str], list[str], dict[tuple[str, str], float]]:
    subjects, benchmarks, cells = [], [], {}
    for summary in summaries:
        label = subject_label(summary)
        if label not in subjects:
            subjects.append(label)
        for column, value in columns_of(summary).items():
            if column not in benchmarks:
                benchmarks.append(column)
            cells[(label, column)] = value
    return subjects, benchmarks, cells


def markdown(summaries: list[dict]) -> str:
    subjects, benchmarks, cells = table(summaries)
    lines = ["| subject | " + " | ".join(benchmarks) + " |", "|---|" + "---:|" * len(benchmarks)]
    for subject in subjects:
        values = [f"{cells[(subject, b)]:.1f}" if (subject, b) in cells else "–" for b in benchmarks]
        lines.append(f"| {subject} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n\npass@1 in percent; translation columns: BLEU, exact match (EM), CodeBLEU.\n"


def bar_chart(summaries: list[dict], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subjects, benchmarks, cells = table(summaries)
    width = 0.8 / max(len(subjects), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(benchmarks) + 2), 4.5))
    for i, subject in enumerate(subjects):
        xs = [j + i * width for j, b in enumerate(benchmarks) if (subject, b) in cells]
        ys = [cells[(subject, b)] for b in benchmarks if (subject, b) in cells]
        bars = ax.bar(xs, ys, width, label=subject)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks([j + width * (len(subjects) - 1) / 2 for j in range(len(benchmarks))], benchmarks,
                  rotation=20, ha="right")
    ax.set_ylabel("percent (pass@1; BLEU, CodeBLEU, EM; vulnerable share)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
