"""Benchmark decontamination: drop training files that share a long n-gram with an evaluation problem.

Recipe (issue 4, point 6; the same idea as StarCoder's and Qwen2.5-Coder's decontamination): every prompt and
canonical solution of the evaluation sets is cut into word n-grams (default n = 13, as in
GPT-3's and Qwen2.5-Coder's decontamination); a training file is contaminated when any of its n-grams is one of
those. Usage:

    deco = Decontaminator.from_tasks()          # all zhcoder.eval.tasks benchmarks, data from ../shared/data
    source = deco.match(text)                   # None, or e.g. "humaneval/HumanEval/0 (canonical_solution)"
    if source is not None:                      -> skip, count "decontaminated"

Tokenisation (`tokenize`), code-aware and whitespace-insensitive, so re-indented or re-wrapped copies still
match:
  * each CJK character (CJK Unified Ideographs incl. extensions A and compatibility block, kana, hangul) is one
    token, so Chinese prose is compared character by character (it has no spaces between words);
  * an identifier or word (`[^\\W\\d]\\w*`: letters, digits, underscores, any script but CJK) is one token;
  * a number (`\\d` followed by letters, digits, `_` or `.`, e.g. `3.14`, `0x1F`, `1e5`) is one token;
  * every other non-space character (ASCII and full-width punctuation, operators, quotes) is one token on its
    own, so `==` is two tokens `=` `=` and `，` is one;
  * whitespace (spaces, tabs, newlines, indentation) separates tokens and is otherwise ignored.
Case is kept (code is case-sensitive).

An n-gram is n consecutive *word* tokens (identifiers, numbers, CJK characters) together with the punctuation
tokens between them: `n` counts words, punctuation only makes a gram more specific. Counting punctuation as
tokens of their own made 13-grams far too short to be evidence: `[1, 2, 3, 4, 5, 6, 7]` or
`.replace(',', ' ').split(` are 13 tokens, and 144 of 1790 standard-library files matched the benchmarks; with
n = 13 words, 6 do (all on one MBPP prompt's list of small numbers).

An n-gram is stored as a stable 64-bit hash (`blake2b`, digest size 8, of its tokens joined by U+001F), not as a
tuple of strings: the index of all eight benchmarks is a dict of ~0.2 M ints, and hashes are identical across
processes and runs (unlike Python's salted `hash`). A 64-bit collision is negligible (~1e-8 chance per file
checked against the full index). Texts with fewer than n word tokens have no n-grams and never match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from hashlib import blake2b
from pathlib import Path

__all__ = ["DEFAULT_N", "DEFAULT_TASKS", "tokenize", "ngrams", "iter_ngrams", "Decontaminator"]

DEFAULT_N = 13
DEFAULT_TASKS = ("humaneval", "mbpp", "humaneval-zh", "humaneval-xl-zh", "mbpp-zh", "leetcode", "leetcode-zh",
                 "mbpp-plus")
# Not `instruction`: zhcoder writes most chat instructions from the prompt plus its own request sentence ("Please
# provide a self-contained Python script ..."), which would flag any file quoting that sentence (zhcoder's own
# eval code among them) while adding no benchmark text the prompt does not already hold.
FIELDS = ("prompt", "canonical_solution")

_CJK = (r"\u3040-\u30ff"            # hiragana, katakana
        r"\u3400-\u4dbf"            # CJK extension A
        r"\u4e00-\u9fff"            # CJK unified ideographs
        r"\uac00-\ud7af"            # hangul syllables
        r"\uf900-\ufaff"            # CJK compatibility ideographs
        r"\U00020000-\U0003134f")   # CJK extensions B-G
_CJK_RE = re.compile(f"[{_CJK}]")
# CJK characters are padded with spaces first, so the word pattern never glues them to latin letters.
_TOKEN_RE = re.compile(r"[^\W\d]\w*|\d[\w.]*|[^\w\s]")
_WORD_RE = re.compile(r"\w")   # a token starting with a word character is a word; any other is punctuation
_SEP = "\x1f"


def tokenize(text: str) -> list[str]:
    """The code-aware word tokens of `text` (see the module docstring); whitespace ignored."""
    return _TOKEN_RE.findall(_CJK_RE.sub(r" \g<0> ", text))


def _hash(tokens: list[str]) -> int:
    return int.from_bytes(blake2b(_SEP.join(tokens).encode("utf-8"), digest_size=8).digest(), "little")


def iter_ngrams(text: str, n: int = DEFAULT_N) -> Iterator[int]:
    """The 64-bit hashes of `text`'s n-grams (n words and the punctuation between them), in text order (lazily, so a caller can stop at the first)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    tokens = tokenize(text)
    words = [i for i, t in enumerate(tokens) if _WORD_RE.match(t)]
    for i in range(len(words) - n + 1):
        yield _hash(tokens[words[i]:words[i + n - 1] + 1])


def ngrams(text: str, n: int = DEFAULT_N) -> list[int]:
    """The 64-bit hashes of `text`'s n-grams (n words and the punctuation between them), in text order; empty
    when `text` has fewer than n word tokens."""
    return list(iter_ngrams(text, n))


class Decontaminator:
    """An index of benchmark n-grams; `match(text)` says whether (and where from) `text` shares one."""

    def __init__(self, n: int = DEFAULT_N):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n
        self._index: dict[int, str] = {}   # n-gram hash -> first source that contained it

    def __len__(self) -> int:
        """The number of distinct n-grams indexed."""
        return len(self._index)

    def add_text(self, text: str, source: str = "text") -> int:
        """Index the n-grams of `text`, labelled `source`; returns how many were new."""
        before = len(self._index)
        setdefault = self._index.setdefault
        for h in iter_ngrams(text, self.n):
            setdefault(h, source)
        return len(self._index) - before

    @classmethod
    def from_tasks(cls, names: Iterable[str] = DEFAULT_TASKS, data_dir: str | Path | None = None,
                   n: int = DEFAULT_N) -> "Decontaminator":
        """Index every prompt and canonical solution (where not None) of the tasks `names`
        (loaded with `zhcoder.eval.tasks.load_task(name, data_dir)`; raises `DataUnavailable` without the data)."""
        from zhcoder.eval.tasks import load_task

        deco = cls(n)
        for name in names:
            for problem in load_task(name, data_dir).problems:
                for field in FIELDS:
                    text = getattr(problem, field, None)
                    if text:
                        deco.add_text(text, f"{name}/{problem.task_id} ({field})")
        return deco

    def match(self, text: str) -> str | None:
        """The source of the first n-gram `text` shares with the index (e.g. "humaneval/HumanEval/0 (prompt)"),
        or None; texts with fewer than n word tokens never match."""
        index = self._index
        for h in iter_ngrams(text, self.n):
            source = index.get(h)
            if source is not None:
                return source
        return None

    def __contains__(self, text: str) -> bool:
        return self.match(text) is not None
