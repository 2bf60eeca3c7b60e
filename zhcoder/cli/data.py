"""`zhcoder tokenizer train`, `zhcoder data build | sft` and `zhcoder tokens compare`: tokenizers and training data.

    zhcoder tokenizer train corpus/ --vocab-size 32000 --out tok
    zhcoder data build ~/src/repo corpus.jsonl --tokenizer qwen --out data/pretrain      # zhcoder.data.build
    zhcoder data sft chat.jsonl --tokenizer MODEL_DIR --out data/sft                     # zhcoder.data.sft
    zhcoder tokens compare src/ --cost

The options of `data build` are generated from zhcoder.data.config (BuildConfig, RunConfig) and
zhcoder.data.filters.FilterConfig: `data build --help` lists each with its default.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import typer

from zhcoder.cli.app import UsageError, group, warn
from zhcoder.cli.settings import settings_options
from zhcoder.data.config import BuildConfig, RunConfig
from zhcoder.data.filters import FilterConfig

tokenizer_app = group("tokenizer", "Train and inspect tokenizers.")
data_app = group("data", "Build training data.")
tokens_app = group("tokens", "Tokenizer economics.")


@tokenizer_app.command("train")
def tokenizer_train(files: list[Path] = typer.Argument(..., help="text files (or folders) to learn from"),
                    vocab_size: int = typer.Option(..., "--vocab-size", help="learned tokens, before the special tokens"),
                    out: Path = typer.Option(..., "--out", help="folder for tokenizer.json + tokenizer_config.json"),
                    min_frequency: int = typer.Option(2, "--min-frequency")):
    """Train a byte-level BPE with Qwen's pre-tokenizer and the ChatML / FIM / repo special tokens."""
    from zhcoder.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(files, vocab_size, out, min_frequency=min_frequency)
    print(json.dumps({"out": str(out), "vocab_size": tokenizer.vocab_size, **tokenizer.training_stats.to_dict()}))


@data_app.command("sft")
def data_sft(inputs: list[Path] = typer.Argument(
                 ..., help="JSONL files: OpenAI messages, Alpaca, ShareGPT or prompt-completion rows"),
             tokenizer: Path = typer.Option(..., "--tokenizer", help="folder with tokenizer.json (a model folder)"),
             out: Path = typer.Option(..., "--out", help="output folder (train/ and validation/ token shards, stats.json)"),
             template: Optional[str] = typer.Option(None, help="chat template (default: the tokenizer's)"),
             max_tokens: int = typer.Option(4096, "--max-tokens", help="longer samples are dropped and counted"),
             train_on: str = typer.Option("all", "--train-on", help="all assistant turns, or only the last"),
             validation_fraction: float = typer.Option(0.01, "--validation-fraction", "--val-fraction",
                                                       help="fraction of rows held out for the validation split"),
             seed: int = typer.Option(0)):
    """Chat rows through the chat template (loss on assistant turns), prompt-completion rows as plain text (loss on
    the completion): masked token shards."""
    from zhcoder.data.sft import build_sft

    if train_on not in ("all", "last"):
        raise UsageError("--train-on must be all or last")
    stats = build_sft(list(map(str, inputs)), str(tokenizer), out, template=template, max_tokens=max_tokens,
                      train_on=train_on, val_fraction=validation_fraction, seed=seed, progress=True)
    print(json.dumps(stats, indent=2, ensure_ascii=False))
    if validation_fraction > 0 and stats["validation_samples"] == 0:
        warn(f"the validation split is empty: {stats['kept']:,} kept rows x --validation-fraction "
             f"{validation_fraction:g} held out none; raise --validation-fraction to get one")


@data_app.command("build")
@settings_options(config=BuildConfig, filters=FilterConfig, run=RunConfig)
def data_build(sources: list[str] = typer.Argument(..., help="folders (git work trees: tracked files only), .jsonl "
                                                             "or .parquet files"),
               config: dict = None, filters: dict = None, run: dict = None):
    """Build pre-training token shards from code: language id, filters, secrets, decontamination, dedup, FIM."""
    from zhcoder.data.build import build, summary, warnings

    settings = BuildConfig(sources=sources, filters=dataclasses.asdict(FilterConfig(**filters)), **config)
    how = RunConfig(**run)
    stats = build(settings, workers=how.workers, executor=how.executor, restart=how.restart,
                  executor_options=how.executor_options())
    out = settings.out
    if stats is None:
        print(f"submitted; when the jobs finish, {out}/stats.json and {out}/train/index.json are written "
              f"(logs: {out}/work/logs/<stage>/)")
        return
    print(summary(stats))
    print(f"wrote {out}/train, {out}/validation, {out}/stats.json, {out}/removed.jsonl")
    for message in warnings(stats, settings):
        warn(message)


@tokens_app.command("compare")
def tokens_compare(paths: list[str] = typer.Argument(..., help="files or folders of code"),
                   tokenizers: str = typer.Option("qwen,o200k,cl100k", "--tokenizers",
                                                  help="comma-separated: qwen, o200k, cl100k, or model folders"),
                   baseline: Optional[str] = typer.Option(None, "--baseline", help="default: the first tokenizer"),
                   cost: bool = typer.Option(False, "--cost", help="add the price table and the cost of the set"),
                   prices: Optional[Path] = typer.Option(None, "--prices", help="JSON price table (USD per 1M)"),
                   per_file: bool = typer.Option(False, "--per-file", help="a row per file"),
                   as_json: bool = typer.Option(False, "--json", help="one JSON object")):
    """Tokens per file, in total and on the Chinese lines, per tokenizer, with ratios (and costs)."""
    from zhcoder.eval.tokens import compare, costs, load_prices, markdown

    result = compare(paths, [t.strip() for t in tokenizers.split(",") if t.strip()], baseline)
    cost_rows = costs(result, load_prices(str(prices) if prices else None)) if cost or prices else None
    if as_json:
        print(json.dumps({**result, "costs": cost_rows}, ensure_ascii=False, indent=1))
    else:
        print(markdown(result, cost_rows, per_file=per_file))
