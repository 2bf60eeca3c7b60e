"""`zhcoder report`: one report card from eval output folders and tokenizer comparisons, in Markdown and HTML.

    zhcoder eval humaneval --samples ... --out runs/he;  zhcoder eval codexglue-java-cs --samples ... --out runs/cxg
    zhcoder tokens compare src/ --json > runs/tokens.json
    zhcoder report runs/he runs/cxg runs/tokens.json --out report.md         # also report.html and report-*.png

The card holds the seed-style table (subjects x HumanEval, MBPP, CodeXGLUE, Chinese completion, LeetCode by
difficulty, vulnerability rate: whichever the folders have), the tokenizer and cost tables, PNG charts, and the
exact settings behind every number (task, data file and its sha256, subject, decoding, time and memory limits,
zhcoder version, date).
"""

from __future__ import annotations

import json
from pathlib import Path

from .report import bar_chart, load_summaries, table

# The seed's column order; a summary's columns (zhcoder.eval.report.columns_of) are placed by their task prefix.
SEED_ORDER = ("humaneval", "mbpp", "codexglue", "humaneval-zh", "humaneval-xl-zh", "mbpp-zh", "leetcode",
              "security")


def _order(column: str) -> tuple[int, str]:
    ranks = [i for i, prefix in enumerate(SEED_ORDER) if column.startswith(prefix)]
    return (max(ranks) if ranks else len(SEED_ORDER), column)


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
        subjects, benchmarks, cells = table(summaries)
        benchmarks = sorted(benchmarks, key=_order)
        lines += ["## Benchmarks", "", "| subject | " + " | ".join(benchmarks) + " |",
                  "|---|" + "---:|" * len(benchmarks)]
        for subject in subjects:
            values = [f"{cells[(subject, b)]:.1f}" if (subject, b) in cells else "–" for b in benchmarks]
            lines.append(f"| {subject} | " + " | ".join(values) + " |")
        lines += ["", "pass@1 in percent (greedy unless the settings say otherwise); CodeXGLUE: BLEU, exact match "
                  "(EM) and CodeBLEU; security: share of programs with a vulnerability (lower is better).", ""]
        if chart:
            lines += [f"![benchmarks]({chart})", ""]
    for comparison in comparisons:
        base = comparison["baseline"]
        lines += [f"## Tokenizers: {comparison['_path']}", "",
                  f"{len(comparison['files'])} files, {comparison['characters']:,} characters "
                  f"({comparison['chinese_characters']:,} on Chinese lines); ratios against {base}.", "",
                  "| tokenizer | tokens | ratio | Chinese-line tokens | ratio |", "|---|---:|---:|---:|---:|"]
        for name, label in comparison["tokenizers"].items():
            lines.append(f"| {label} | {comparison['total'][name]:,} | {comparison['ratio'][name]} | "
                         f"{comparison['chinese_lines'][name]:,} | {comparison['chinese_ratio'][name]} |")
        if comparison.get("costs"):
            lines += ["", "| model | counted with | tokens | as input (USD) | as output (USD) |",
                      "|---|---|---:|---:|---:|"]
            lines += [f"| {r['model']} | {r['tokenizer']} | {r['tokens']:,} | {r['input_usd']:.4f} | "
                      f"{r['output_usd']:.4f} |" for r in comparison["costs"]]
        lines.append("")
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


def write(paths: list[str | Path], out: str | Path) -> dict[str, Path]:
    """Write OUT (Markdown), OUT with .html, and OUT's stem + -benchmarks.png; returns what was written."""
    out = Path(out)
    summaries, comparisons = load_inputs(paths)
    if not summaries and not comparisons:
        raise ValueError("nothing to report: give eval output folders and/or `tokens compare --json` files")
    out.parent.mkdir(parents=True, exist_ok=True)
    written = {}
    chart = None
    if summaries:
        png = out.with_name(out.stem + "-benchmarks.png")
        bar_chart(summaries, png)
        chart, written["png"] = png.name, png
    text = markdown(summaries, comparisons, chart)
    out.write_text(text, encoding="utf-8")
    out.with_suffix(".html").write_text(html(text), encoding="utf-8")
    written.update({"markdown": out, "html": out.with_suffix(".html")})
    return written
