"""Benchmark decontamination (issue 4, point 6): n-gram index over the evaluation sets.

    python -m pytest tests/test_decontaminate.py
"""

import inspect
import json.decoder
import re
import time
from pathlib import Path

import pytest

from zhcoder.data.decontaminate import DEFAULT_TASKS, Decontaminator, ngrams, tokenize
from zhcoder.eval.tasks import load_task

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark data not found at {DATA}")
WORD = re.compile(r"\w")

FILLER_HEAD = "import os\nimport sys\n\n\nclass Config:\n    verbose = False\n\n\n"
FILLER_TAIL = "\n\nif __name__ == '__main__':\n    main(sys.argv[1:])\n"


@pytest.fixture(scope="module")
def deco():
    if not DATA.is_dir():
        pytest.skip(f"benchmark data not found at {DATA}")
    start = time.perf_counter()
    d = Decontaminator.from_tasks(data_dir=DATA)
    elapsed = time.perf_counter() - start
    print(f"\nDecontaminator.from_tasks(all {len(DEFAULT_TASKS)} tasks): {elapsed:.2f} s, {len(d)} n-grams")
    assert elapsed < 30, f"building the index took {elapsed:.1f} s"
    return d


def _word_span(text: str, start: int, count: int) -> str:
    """`count` consecutive word tokens of `text` from word `start`, with the punctuation between them."""
    tokens = tokenize(text)
    words = [i for i, t in enumerate(tokens) if WORD.match(t)]
    return " ".join(tokens[words[start]:words[start + count - 1] + 1])


def test_tokenize_is_code_aware_and_ignores_whitespace():
    assert tokenize("def f(x):\n    return x==3.14  # 检查Python代码，ok") == [
        "def", "f", "(", "x", ")", ":", "return", "x", "=", "=", "3.14", "#",
        "检", "查", "Python", "代", "码", "，", "ok"]
    assert ngrams("a b c d", 3) == ngrams("a\n\tb   c\nd", 3)
    assert len(ngrams("a b c d", 3)) == 2
    assert ngrams("a b", 3) == []
    assert all(isinstance(h, int) and 0 <= h < 2 ** 64 for h in ngrams("x = y + z", 2))
    assert ngrams("x = y + z", 2) == ngrams("x = y + z", 2)   # stable (no salted hash)


def test_short_texts_never_match():
    d = Decontaminator(n=5)
    d.add_text("one two three four five six")
    assert d.match("one two three four five") is not None
    assert d.match("one two three four") is None
    assert d.match("") is None


@needs_data
def test_humaneval_solution_is_flagged(deco):
    problem = load_task("humaneval", DATA).problems[0]
    planted = FILLER_HEAD + problem.prompt + problem.canonical_solution + FILLER_TAIL
    source = deco.match(planted)
    assert source is not None and source.startswith(("humaneval/", "humaneval-zh/", "humaneval-xl-zh/"))
    # re-indented / re-wrapped copies are still caught (whitespace is ignored)
    reflowed = re.sub(r"\s+", " ", problem.canonical_solution)
    assert Decontaminator.from_tasks(["humaneval"], DATA).match(FILLER_HEAD + reflowed) is not None


@needs_data
def test_twelve_token_overlap_is_not_flagged_and_n_is_configurable():
    problem = load_task("humaneval", DATA).problems[0]
    text = problem.prompt + problem.canonical_solution
    for start in (0, 5, 20):
        overlap = FILLER_HEAD + _word_span(text, start, 12) + FILLER_TAIL
        d13 = Decontaminator(n=13)
        d13.add_text(text, "he0")
        assert d13.n == 13 and d13.match(overlap) is None
        d12 = Decontaminator(n=12)
        d12.add_text(text, "he0")
        assert d12.match(overlap) == "he0"
        assert d13.match(FILLER_HEAD + _word_span(text, start, 13) + FILLER_TAIL) == "he0"
    assert Decontaminator.from_tasks(["humaneval"], DATA, n=20).n == 20


@needs_data
def test_stdlib_file_is_not_flagged(deco):
    assert deco.match(inspect.getsource(json.decoder)) is None


@needs_data
def test_chinese_prompt_is_flagged(deco):
    problem = load_task("humaneval-zh", DATA).problems[0]
    docstring = problem.prompt.split('"""')[1]
    chinese = "".join(line for line in docstring.splitlines() if re.search(r"[\u4e00-\u9fff]", line)).strip()
    assert len(chinese) >= 13
    # Chinese prose alone (no code), quoted in a note among unrelated text
    note = f"# 备注\n今天的任务如下。\n{chinese}\n请参考上面的说明。\n"
    source = deco.match(note)
    assert source is not None and "-zh/" in source
