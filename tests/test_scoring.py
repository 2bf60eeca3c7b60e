"""pass@k against the exact binomial formula; summaries, difficulty splits, resumable results files."""

import json
import math

import pytest

from zhcoder.eval.scoring import RowFile, pass_at_k, summarize


@pytest.mark.parametrize("n", [1, 2, 5, 10, 20, 50, 100, 200])
def test_pass_at_k_equals_the_exact_formula(n):
    for c in range(n + 1):
        for k in {1, 2, 5, 10, 20, 100, n} - {0}:
            if k > n:
                continue
            exact = 1.0 if n - c < k else 1 - math.comb(n - c, k) / math.comb(n, k)
            assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12, abs=1e-12), (n, c, k)


def test_pass_at_k_refuses_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        pass_at_k(5, 2, 6)


def rows(spec):
    """spec: {task_id: [passed, ...]} -> results rows."""
    return [{"task_id": t, "completion_id": i, "passed": p, "result": "passed" if p else "failed: AssertionError"}
            for t, verdicts in spec.items() for i, p in enumerate(verdicts)]


def test_summary_pass_at_k_only_when_every_task_has_k_samples():
    summary = summarize(rows({"a": [True, False], "b": [False, False]}), ["a", "b"], ks=(1, 2, 10))
    assert summary["pass@1"] == pytest.approx(25.0)
    assert summary["pass@2"] == pytest.approx(50.0)
    assert "pass@10" not in summary
    assert summary["passed"] == 1 and summary["n_tasks"] == 2 and summary["n_samples"] == 4


def test_summary_by_difficulty_and_stages():
    results = rows({"e1": [True], "e2": [False], "h1": [True]})
    for row in results:
        row["stages"] = {"base": "passed", "plus": row["result"]}
    summary = summarize(results, ["e1", "e2", "h1"], {"e1": "Easy", "e2": "Easy", "h1": "Hard"}, ("base", "plus"))
    assert list(summary["by_difficulty"]) == ["Easy", "Hard"]
    assert summary["by_difficulty"]["Easy"]["pass@1"] == pytest.approx(50.0)
    assert summary["by_difficulty"]["Hard"]["pass@1"] == pytest.approx(100.0)
    assert summary["stages"]["base"]["pass@1"] == pytest.approx(100.0)
    assert summary["stages"]["plus"]["pass@1"] == pytest.approx(200 / 3)


def test_results_file_resumes_and_ignores_a_cut_line(tmp_path):
    path = tmp_path / "results.jsonl"
    results = RowFile(path)
    results.add({"task_id": "t/1", "completion_id": 0, "passed": True, "result": "passed"})
    results.close()
    with path.open("a") as handle:
        handle.write('{"task_id": "t/2", "compl')  # an interrupted write
    again = RowFile(path)
    assert again.done("t/1", 0) and not again.done("t/2", 0)
    again.add({"task_id": "t/2", "completion_id": 0, "passed": False, "result": "timed out"})
    again.close()
    assert RowFile(path).done("t/2", 0)
    assert json.loads(path.read_text().splitlines()[-1])["result"] == "timed out"
