"""Code translation metrics as CodeXGLUE's code-to-code-trans evaluator computes them, and CodeBLEU.

- BLEU: corpus BLEU-4 over whitespace tokens with add-one smoothing of every n-gram precision (the TensorFlow NMT
  `compute_bleu` that CodeXGLUE's `bleu.py` uses, `smooth=True`), times 100, rounded to 2 decimals.
- Exact match: the share of lines equal to the reference after stripping both ends, times 100 (CodeXGLUE's
  `Acc`; spacing inside the line counts).
- CodeBLEU through PyPI `codebleu` 0.7.0 (tree-sitter 0.22, tree-sitter-java / -c-sharp 0.21). Its data-flow
  component iterates over Python sets, so its last digits depend on the hash seed (81.97-82.00 on the published
  Java->C# baseline); `codebleu_score` runs it in a child process with PYTHONHASHSEED=0, so a number is
  reproducible, and reports it with one decimal. The paper's 83.07 is not reproduced by any available
  implementation.

    python -m zhcoder.eval.translation REFERENCES PREDICTIONS [--lang c_sharp]
"""

from __future__ import annotations

import collections
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CODEBLEU_LANGUAGES = {"cs": "c_sharp", "c_sharp": "c_sharp", "java": "java"}


class TranslationError(ValueError):
    """Files that cannot be compared line by line, or a CodeBLEU that cannot run."""


def _ngrams(tokens: list[str], order: int) -> collections.Counter:
    counts = collections.Counter()
    for n in range(1, order + 1):
        for i in range(len(tokens) - n + 1):
            counts[tuple(tokens[i:i + n])] += 1
    return counts


def bleu(references: list[str], hypotheses: list[str], max_order: int = 4) -> float:
    """CodeXGLUE's smoothed corpus BLEU-4 (one reference per line), x100, rounded to 2 decimals."""
    check_lengths(references, hypotheses)
    matches, possible = [0] * max_order, [0] * max_order
    reference_length = translation_length = 0
    for reference, hypothesis in zip(references, hypotheses):
        ref_tokens, hyp_tokens = reference.strip().split(), hypothesis.strip().split()
        reference_length += len(ref_tokens)
        translation_length += len(hyp_tokens)
        overlap = _ngrams(ref_tokens, max_order) & _ngrams(hyp_tokens, max_order)
        for ngram, count in overlap.items():
            matches[len(ngram) - 1] += count
        for n in range(1, max_order + 1):
            possible[n - 1] += max(len(hyp_tokens) - n + 1, 0)
    precisions = [(matches[i] + 1.0) / (possible[i] + 1.0) for i in range(max_order)]     # add-one smoothing
    geo_mean = math.exp(sum(math.log(p) for p in precisions) / max_order)
    ratio = translation_length / reference_length if reference_length else 0.0
    brevity = 1.0 if ratio > 1.0 else (math.exp(1 - 1.0 / ratio) if ratio > 0 else 0.0)
    return round(100 * geo_mean * brevity, 2)


def exact_match(references: list[str], hypotheses: list[str]) -> float:
    """Percentage of lines equal to their reference once both are stripped, 2 decimals."""
    check_lengths(references, hypotheses)
    same = sum(r.strip() == h.strip() for r, h in zip(references, hypotheses))
    return round(100 * same / len(references), 2) if references else 0.0


def check_lengths(references: list[str], hypotheses: list[str]) -> None:
    if len(references) != len(hypotheses):
        raise TranslationError(f"{len(hypotheses)} predictions for {len(references)} references: the files must "
                               "have one line per example, in the same order")


def read_lines(path: str | Path) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise TranslationError(f"cannot read {path}: {error}") from None


def codebleu_score(references: list[str], hypotheses: list[str], lang: str) -> dict:
    """CodeBLEU and its four components (x100, 1 decimal) through PyPI codebleu, in a child process with a fixed
    hash seed."""
    check_lengths(references, hypotheses)
    language = CODEBLEU_LANGUAGES.get(lang, lang)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp, "in.json")
        data.write_text(json.dumps({"references": references, "hypotheses": hypotheses, "lang": language}))
        script = ("import json, sys; from codebleu import calc_codebleu; d = json.load(open(sys.argv[1])); "
                  "print(json.dumps(calc_codebleu(d['references'], d['hypotheses'], lang=d['lang'])))")
        result = subprocess.run([sys.executable, "-c", script, str(data)], capture_output=True, text=True,
                                env={**os.environ, "PYTHONHASHSEED": "0"}, timeout=3600)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise TranslationError(f"CodeBLEU failed ({last}); install it with: pip install 'zhcoder[translation]'")
    scores = json.loads(result.stdout)
    return {key: round(100 * value, 1) for key, value in scores.items()}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("references")
    parser.add_argument("predictions")
    parser.add_argument("--lang", default="c_sharp")
    args = parser.parse_args()
    refs, preds = read_lines(args.references), read_lines(args.predictions)
    print(json.dumps({"bleu": bleu(refs, preds), "exact_match": exact_match(refs, preds),
                      "codebleu": codebleu_score(refs, preds, args.lang)}))
