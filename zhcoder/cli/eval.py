"""`zhcoder eval TASK` (score a samples file, a local model or an endpoint) and `zhcoder report` (the report card,
the benchmark table and its chart from several runs).

    zhcoder eval humaneval --samples samples.jsonl --out runs/he --json
    zhcoder report runs/he runs/mbpp tokens.json --out report.md           # + report.html, report-benchmarks.png
    zhcoder report runs/* --md table.md --png table.png                     # only the table and the chart
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from zhcoder.cli.app import DtypeOption, JsonFlag, Seed, Temperature, TopP, UsageError, app
from zhcoder.eval.tasks import TASK_NAMES


@app.command("eval")
def eval_(task: str = typer.Argument(..., help=", ".join(TASK_NAMES)),
          extra: Optional[list[str]] = typer.Argument(None, hidden=True),      # `eval report DIR...` of old
          samples: Optional[Path] = typer.Option(None, help="score a JSONL of task_id + completion/solution (for "
                                                 "translation tasks also a text file, one line per example)"),
          model: Optional[str] = typer.Option(None, "--model", "-m", help="generate with a local checkpoint (the "
                                              "default subject: $ZHCODER_MODEL, else the embedded zhcoder-nano)"),
          endpoint: Optional[str] = typer.Option(None, help="OpenAI-compatible base URL, e.g. http://host:8000/v1"),
          endpoint_model: Optional[str] = typer.Option(None, "--endpoint-model", help="model name at the endpoint"),
          api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="environment variable with the key"),
          mode: str = typer.Option("base", help="base (continue the prompt) or chat (instruction, fenced code)"),
          out: Optional[Path] = typer.Option(None, help="output folder (resumes if it holds the same run)"),
          name: Optional[str] = typer.Option(None, help="subject label for reports (default: the earlier run's in "
                                             "--out, else the file/model name)"),
          n: int = typer.Option(1, "--n", help="samples per task (pass@k needs n >= k)"),
          temperature: float = Temperature, top_p: float = TopP, seed: Optional[int] = Seed,
          max_new_tokens: int = typer.Option(512, "--max-new-tokens"),
          dtype: str = DtypeOption,
          workers: Optional[int] = typer.Option(None, help="sandbox processes (default: CPU count)"),
          timeout: Optional[float] = typer.Option(None, help="seconds per program (default: the task's)"),
          limit: Optional[int] = typer.Option(None, help="only the first N problems"),
          concurrency: int = typer.Option(8, help="parallel endpoint requests"),
          retries: int = typer.Option(3, help="endpoint retries, with backoff"),
          data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="benchmark data (default: $ZHCODER_DATA, "
                                                  "else ../shared/data next to the checkout)"),
          as_json: bool = JsonFlag):
    """Score a subject (samples file, local model or endpoint) on a benchmark."""
    if task == "report":
        raise UsageError("`zhcoder eval report` is now `zhcoder report FOLDERS... [--md TABLE] [--png CHART]`")
    if task not in TASK_NAMES:                              # before any other check: a typo is the first thing to say
        raise UsageError(f"unknown task {task!r}; choose one of {', '.join(TASK_NAMES)}")
    if extra:
        raise UsageError(f"unexpected argument(s): {' '.join(extra)}")
    if sum(x is not None for x in (samples, model, endpoint)) > 1:
        raise UsageError("give one of --samples FILE, --model DIR, --endpoint URL (none: the default model)")
    if out is None:
        raise UsageError("--out DIR is required")
    if mode not in ("base", "chat"):
        raise UsageError("--mode must be base or chat")
    if endpoint and not endpoint_model:
        raise UsageError("--endpoint needs --endpoint-model NAME")
    if n < 1:
        raise UsageError("--n must be at least 1")
    from zhcoder.eval.run import evaluate
    from zhcoder.eval.scoring import round_scores
    from zhcoder.eval.subjects import Endpoint, GenerationSettings, LocalModel

    if samples is None and endpoint is None:
        from zhcoder.checkpoint import default_model

        model = default_model(model)
    settings = GenerationSettings(mode=mode, n=n, temperature=temperature, top_p=top_p,
                                  max_new_tokens=max_new_tokens, seed=seed)
    subject = None
    if model:
        subject = LocalModel(model, settings, dtype=dtype)
    elif endpoint:
        subject = Endpoint(endpoint, endpoint_model, settings, api_key_env=api_key_env, concurrency=concurrency,
                           retries=retries)
    summary = evaluate(task, out, samples=str(samples) if samples else None, subject=subject, settings=settings,
                       workers=workers, timeout_s=timeout, limit=limit, name=name,
                       data_dir=str(data_dir) if data_dir else None, show_progress=not as_json)
    print(json.dumps(round_scores(summary), ensure_ascii=False, indent=None if as_json else 2))


@app.command()
def report(inputs: list[Path] = typer.Argument(..., help="eval output folders and `tokens compare --json` files"),
           out: Optional[Path] = typer.Option(None, "--out", help="the Markdown card, with its HTML and PNG beside "
                                              "it (default: report.md, unless only --md / --png are asked for)"),
           md: Optional[Path] = typer.Option(None, "--md", help="also the benchmark table alone, as Markdown"),
           png: Optional[Path] = typer.Option(None, "--png", help="also the benchmark bar chart alone"),
           ):
    """One report card (Markdown + HTML + charts) from eval results and tokenizer comparisons; or (--md, --png)
    the benchmark table and its chart."""
    from zhcoder.eval.report import write

    if out is None and md is None and png is None:
        out = Path("report.md")
    for kind, path in write(inputs, out, table=md, chart=png).items():
        print(f"{kind}: {path}")
    if md is not None:
        sys.stdout.write(md.read_text(encoding="utf-8"))
