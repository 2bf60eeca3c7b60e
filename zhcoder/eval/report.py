"""`zhcoder report`: one report card from eval output folders and tokenizer comparisons (Markdown, HTML, PNG), or
just the benchmark table and its bar chart.

    zhcoder eval humaneval --samples ... --out runs/he;  zhcoder eval codexglue-java-cs --samples ... --out runs/cxg
    zhcoder tokens compare src/ --json > runs/tokens.json
    zhcoder report runs/he runs/cxg runs/tokens.json --out report.md         # also report.html and report-*.png
    zhcoder report runs/* --md table.md --png table.png                       # the table and the chart only

The card holds the seed-style table (subjects x HumanEval, MBPP, CodeXGLUE, Chinese completion, LeetCode by
difficulty, vulnerability rate: whichever the folders have), the tokenizer and cost tables, a PNG chart, and the
exact settings behind every number (task, data file and its sha256, subject, decoding, time and memory limits,
zhcoder version, date). Every table is written by `markdown_table`.
"""

from __future__ import annotations

import json
from pathlib import Path

# The seed's column order; a summary's columns (`columns_of`) are placed by their task prefix.
SEED_ORDER = ("humaneval", "mbpp", "codexglue", "humaneval-zh", "humaneval-xl-zh", "mbpp-zh", "leetcode",
              "security")
FOOTNOTE = ("pass@1 in percent (greedy unless the settings say otherwise); CodeXGLUE: BLEU, exact match (EM) and "
            "CodeBLEU; security: share of programs with a vulnerability (lower is better).")


def markdown_table(header: list[str], rows: list[list], left: int = 1) -> str:
    """A Markdown table; the first `left` columns are aligned left, the others (numbers) right."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * left + "---:|" * (len(header) - left)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


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


def _order(column: str) -> tuple[int, str]:
    ranks = [i for i, prefix in enumerate(SEED_ORDER) if column.startswith(prefix)]
    return (max(ranks) if ranks else len(SEED_ORDER), column)


def table(summaries: list[dict]) -> tuple[list[str], list[str], dict[tuple[str, str], float]]:
    """(subjects, benchmark columns in the seed's order, {(subject, column): value})."""
    subjects, benchmarks, cells = [], [], {}
    for summary in summaries:
        label = str(summary.get("name") or Path(summary["_dir"]).name)
        if label not in subjects:
            subjects.append(label)
        for column, value in columns_of(summary).items():
            if column not in benchmarks:
                benchmarks.append(column)
            cells[(label, column)] = value
    return subjects, sorted(benchmarks, key=_order), cells


def benchmark_table(summaries: list[dict]) -> str:
    subjects, benchmarks, cells = table(summaries)
    rows = [[subject, *(f"{cells[(subject, b)]:.1f}" if (subject, b) in cells else "–" for b in benchmarks)]
            for subject in subjects]
    return markdown_table(["subject", *benchmarks], rows) + "\n" + FOOTNOTE + "\n"


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
    ax.set_ylabel("percent")
    ax.set_title("pass@1; CodeXGLUE BLEU, EM, CodeBLEU; security: vulnerable share", fontsize=9)
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")        # nothing clipped: labels, ticks and legend fit
    plt.close(fig)


# ----- the card ----------------------------------------------------------------------------------------------
def load_inputs(paths: list[str | Path]) -> tuple[list[dict], list[dict]]:
    """(eval summaries, tokenizer comparisons): folders with summary.json, and JSON files of `tokens compare`."""
    folders, comparisons = [], []
    for path in map(Path, paths):
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise ValueError(f"{path}: not a JSON file ({error})") from None
            if not (isinstance(data, dict) and "tokenizers" in data and "total" in data):
                raise ValueError(f"{path}: not the output of `zhcoder tokens compare --json`")
            data["_path"] = str(path)
            comparisons.append(data)
        else:
            folders.append(path)
    return (load_summaries(folders) if folders else []), comparisons


def _settings(summary: dict) -> str:
    generation = summary.get("generation")
    decoding = ", ".join(f"{k}={v}" for k, v in generation.items()) if generation else "scored from samples"
    limits = summary.get("limits") or {}
    scoring = ("CodeXGLUE's BLEU / exact match, CodeBLEU (codebleu 0.7.0, PYTHONHASHSEED=0)"
               if summary.get("metric") == "translation" else
               f"sandbox limits {limits.get('timeout_s')} s, {limits.get('memory_mb')} MB per program")
    return (f"- **{summary.get('name')} / {summary['task']}**: subject `{summary.get('subject')}`; data "
            f"`{summary.get('source')}`; {decoding}; {scoring}; zhcoder {summary.get('zhcoder')}, "
            f"{summary.get('finished')}")


def markdown(summaries: list[dict], comparisons: list[dict], chart: str | None = None) -> str:
    lines = ["# zhcoder report card", ""]
    if summaries:
        lines += ["## Benchmarks", "", benchmark_table(summaries)]
        if chart:
            lines += [f"![benchmarks]({chart})", ""]
    for comparison in comparisons:
        names = comparison["tokenizers"]
        lines += [f"## Tokenizers: {comparison['_path']}", "",
                  f"{len(comparison['files'])} files, {comparison['characters']:,} characters "
                  f"({comparison['chinese_characters']:,} on Chinese lines); ratios against "
                  f"{comparison['baseline']}.", "",
                  markdown_table(["tokenizer", "tokens", "ratio", "Chinese-line tokens", "ratio"],
                                 [[label, f"{comparison['total'][name]:,}", comparison["ratio"][name],
                                   f"{comparison['chinese_lines'][name]:,}", comparison["chinese_ratio"][name]]
                                  for name, label in names.items()])]
        if comparison.get("costs"):
            lines.append(markdown_table(["model", "counted with", "tokens", "as input (USD)", "as output (USD)"],
                                        [[r["model"], r["tokenizer"], f"{r['tokens']:,}", f"{r['input_usd']:.4f}",
                                          f"{r['output_usd']:.4f}"] for r in comparison["costs"]], left=2))
    if summaries:
        lines += ["## Settings behind each number", ""] + [_settings(s) for s in summaries] + [""]
    return "\n".join(lines)


def html(markdown_text: str, title: str = "zhcoder report card") -> str:
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown_text)
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}"
             "th{background:#f4f4f4}td{text-align:right}td:first-child{text-align:left}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{style}</style></head><body>\n{body}</body></html>\n")


def write(paths: list[str | Path], out: str | Path | None, table: str | Path | None = None,
          chart: str | Path | None = None) -> dict[str, Path]:
    """Write the card at `out` (Markdown), `out` with .html and `out`'s stem + -benchmarks.png; and/or the benchmark
    table alone at `table` and its chart at `chart`. Returns what was written."""
    summaries, comparisons = load_inputs(paths)
    if not summaries and not comparisons:
        raise ValueError("nothing to report: give eval output folders and/or `tokens compare --json` files")
    if (table or chart) and not summaries:
        raise ValueError("--md and --png need eval output folders")
    written: dict[str, Path] = {}
    if table:
        Path(table).write_text(benchmark_table(summaries), encoding="utf-8")
        written["table"] = Path(table)
    if chart:
        bar_chart(summaries, chart)
        written["chart"] = Path(chart)
    if out is None:
        return written
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = None
    if summaries:
        png = out.with_name(out.stem + "-benchmarks.png")
        bar_chart(summaries, png)
        written["png"] = png
    text = markdown(summaries, comparisons, png.name if png else None)
    out.write_text(text, encoding="utf-8")
    out.with_suffix(".html").write_text(html(text), encoding="utf-8")
    written.update({"markdown": out, "html": out.with_suffix(".html")})
    return written
