"""Tests of zhcoder/data/dedup.py: exact (normalised hash) and near-duplicate (MinHash LSH) deduplication.

    pytest -q tests/test_dedup.py
"""

import pytest

pytest.importorskip("datasketch")

from zhcoder.data.dedup import (  # noqa: E402
    ExactDedup,
    NearDedup,
    content_hash,
    normalize_for_hash,
    shingles,
    tokens,
)


def _python_file(name: str = "inventory", n_funcs: int = 10) -> str:
    """A 60-line Python module: 10 distinct functions of 6 lines each."""
    lines = []
    for i in range(n_funcs):
        lines += [
            f"def {name}_step_{i}(items, limit={i + 3}):",
            f'    """Process batch {i} of the {name} records."""',
            f"    total_{i} = sum(x * {i + 1} for x in items if x < limit)",
            f"    scaled_{i} = [v / (total_{i} or 1) for v in items[:{i + 2}]]",
            f"    return {{'{name}_{i}': total_{i}, 'scaled': scaled_{i}, 'n': len(items) - {i}}}",
            "",
        ]
    assert len(lines) == 60
    return "\n".join(lines) + "\n"


# A genuinely different Python file of the same size and a similar style (same language, same keywords).
DIFFERENT = "\n".join(
    line
    for k in range(10)
    for line in (
        f"class Parser{k}:",
        f"    def __init__(self, source, offset={k}):",
        f"        self.source = source.strip().split(',')[{k}:]",
        f"        self.cursor = offset * {k + 7} + len(self.source)",
        f"    def next_token_{k}(self): return self.source[self.cursor % {k + 5}]",
        "",
    )
) + "\n"


def _changed_lines(text: str, which: list[int]) -> str:
    lines = text.split("\n")
    for i in which:
        lines[i] = lines[i] + "  # edited: " + f"tweak {i}"
    return "\n".join(lines)


# ---------------------------------------------------------------- exact


def test_normalize_and_hash_ignore_trailing_whitespace_and_crlf():
    a = "def f():\n    return 1\n"
    b = "def f():   \r\n    return 1\t\r\n\r\n"
    c = "def f():\r    return 1"
    assert normalize_for_hash(a) == normalize_for_hash(b) == normalize_for_hash(c) == "def f():\n    return 1"
    assert content_hash(a) == content_hash(b) == content_hash(c)
    assert len(content_hash(a)) == 64 and int(content_hash(a), 16) >= 0
    # Leading indentation and inner content still matter.
    assert content_hash("def f():\n  return 1") != content_hash(a)
    assert content_hash("def f():\n    return 2") != content_hash(a)


def test_exact_dedup_catches_whitespace_and_crlf_variants_and_keeps_the_first():
    text = _python_file()
    variant = "\r\n".join(line + "  " for line in text.split("\n")) + "\r\n\r\n"
    ex = ExactDedup()
    assert ex.seen(text, key="a.py") is False
    assert ex.seen(variant) is True
    assert ex.add("b.py", variant) == "a.py"  # the first one is remembered
    assert ex.seen(_python_file("orders")) is False
    assert len(ex) == 2


def test_exact_dedup_chinese():
    ex = ExactDedup()
    assert not ex.seen("# 计算总数\nprint('你好')\n")
    assert ex.seen("# 计算总数  \r\nprint('你好')")
    assert not ex.seen("# 计算平均数\nprint('你好')\n")


# ---------------------------------------------------------------- shingles


def test_tokens_split_at_whitespace_and_punctuation_and_per_cjk_character():
    assert tokens("总数 = count_items(x)  # 计算总数") == ["总", "数", "count_items", "x", "计", "算", "总", "数"]
    assert tokens("a.b(c, d_2)->e") == ["a", "b", "c", "d_2", "e"]
    assert tokens("  ,;: \n") == []


def test_shingles_size():
    assert shingles("a b c d e f", n=5) == {"a b c d e", "b c d e f"}
    assert shingles("a b c d e f", n=2) == {"a b", "b c", "c d", "d e", "e f"}
    assert shingles("a b", n=5) == {"a b"}
    assert shingles("", n=5) == set()
    with pytest.raises(ValueError):
        shingles("a b", n=0)


# ---------------------------------------------------------------- near


def _true_jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = shingles(a, n), shingles(b, n)
    return len(sa & sb) / len(sa | sb)


def test_near_duplicate_caught_and_different_file_kept():
    base = _python_file()
    edited = _changed_lines(base, [2, 30])  # two of 60 lines changed
    renamed = base.replace("total_4", "running_sum_4")  # a variable renamed everywhere it occurs (3 times)
    assert renamed != base and renamed.count("running_sum_4") == 3
    assert _true_jaccard(base, edited) > 0.9 and _true_jaccard(base, renamed) > 0.9
    assert _true_jaccard(base, DIFFERENT) < 0.1

    nd = NearDedup()
    assert (nd.threshold, nd.shingle_size, nd.num_perm, nd.seed) == (0.85, 5, 128, 1)
    assert nd.add("base.py", base) is None
    assert nd.add("edited.py", edited) == "base.py"
    assert nd.add("renamed.py", renamed) == "base.py"
    assert nd.add("different.py", DIFFERENT) is None
    assert len(nd) == 2 and "base.py" in nd and "edited.py" not in nd
    with pytest.raises(ValueError):
        nd.add("base.py", "something else entirely here and more")


def test_one_file_kept_per_cluster_first_seen():
    base = _python_file()
    copies = [_changed_lines(base, [i]) for i in (4, 16, 28, 40)]
    nd = NearDedup()
    results = [nd.add(f"f{i}.py", t) for i, t in enumerate([base, *copies])]
    assert results == [None, "f0.py", "f0.py", "f0.py", "f0.py"]
    assert len(nd) == 1


def test_threshold_honoured():
    base = _python_file()
    # Rewrite 15 of 60 lines: true Jaccard well below 0.85 but above 0.4.
    heavy = _changed_lines(base, list(range(0, 60, 4)))
    j = _true_jaccard(base, heavy)
    assert 0.4 < j < 0.75, j
    strict, loose = NearDedup(threshold=0.85), NearDedup(threshold=0.3)
    for nd in (strict, loose):
        assert nd.add("base.py", base) is None
    # The returned match is verified against the MinHash estimate, not only LSH candidacy.
    assert strict.query(heavy) is None
    key, est = loose.query(heavy)
    assert key == "base.py" and est >= 0.3
    assert strict.add("heavy.py", heavy) is None  # kept: not similar enough at 0.85
    assert loose.add("heavy.py", heavy) == "base.py"  # removed at 0.3


def test_shingle_size_honoured():
    # Interleaving a different word every 3 tokens: no 5-gram survives, but many 2-grams do.
    a = " ".join(f"alpha{i} beta{i} gamma{i}" for i in range(80))
    b = " ".join(f"alpha{i} beta{i} gamma{i} x{i}" for i in range(80))
    assert _true_jaccard(a, b, 2) > _true_jaccard(a, b, 5)
    assert shingles(a, 5) & shingles(b, 5) == set()
    big, small = NearDedup(threshold=0.3, shingle_size=5), NearDedup(threshold=0.3, shingle_size=2)
    assert big.add("a", a) is None and small.add("a", a) is None
    assert _true_jaccard(a, b, 2) >= 0.38
    assert big.add("b", b) is None
    assert small.add("b", b) == "a"


def test_deterministic_for_a_seed():
    texts = [_python_file(), _changed_lines(_python_file(), [7]), DIFFERENT, _python_file("orders")]

    def run(seed):
        nd = NearDedup(seed=seed)
        decisions = [nd.add(f"k{i}", t) for i, t in enumerate(texts)]
        return decisions, nd.minhash(texts[0]).hashvalues.tolist()

    assert run(1) == run(1)
    assert run(7) == run(7)
    assert run(1)[1] != run(7)[1]  # the seed changes the permutations


def test_chinese_text():
    para = "".join(f"第{i}条：系统应当在用户提交订单后发送确认邮件，并记录日志。" for i in range(30))
    near = para.replace("第5条：系统应当", "第5条：服务应该")
    other = "".join(f"函数{i}负责读取配置文件，解析参数，然后启动后台任务并返回状态码。" for i in range(30))
    nd = NearDedup()
    assert nd.add("a.md", para) is None
    assert nd.add("b.md", near) == "a.md"
    assert nd.add("c.md", other) is None


def test_empty_text_is_never_a_near_duplicate():
    nd = NearDedup()
    assert nd.add("e1", "") is None
    assert nd.add("e2", "  ;; ") is None
    assert len(nd) == 0
