"""The security audit: CodeShield's self-check, its flag rates on known-vulnerable and known-safe code, and
`zhcoder eval security-*` with a samples file and a local model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("codeshield")

from zhcoder.eval.security import KNOWN_VULNERABLE, SAFE_REWRITES, Detector, DetectorError  # noqa: E402
from zhcoder.eval.tasks import load_task  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = pytest.mark.skipif(not (DATA / "security").exists(), reason="needs ../shared/data/security")


def zhcoder(*args):
    return subprocess.run([sys.executable, "-m", "zhcoder.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_detector_flags_known_vulnerable_code_and_not_safe_rewrites():
    detector = Detector()
    detector.self_check()
    found = detector.scan(list(KNOWN_VULNERABLE.values()))
    assert [{i["cwe"] for i in issues} >= {cwe} for cwe, issues in zip(KNOWN_VULNERABLE, found)] == [True, True]
    assert detector.scan(SAFE_REWRITES) == [[] for _ in SAFE_REWRITES]


def test_detector_flags_most_of_the_datasets_insecure_originals():
    problems = load_task("security-instruct", DATA).problems
    sql = [p for p in problems if p.category == "CWE-89"][:12]
    shell = [p for p in problems if p.category == "CWE-78"][:12]
    flagged = [bool(issues) for issues in Detector().scan([p.reference for p in sql + shell])]
    assert sum(flagged) >= 12                          # measured on all 351: 66.1% (docs/benchmarks.md)


def test_a_broken_detector_stops_the_run_instead_of_reporting_zero(monkeypatch):
    detector = Detector()
    monkeypatch.setattr(detector, "scan", lambda codes: [[] for _ in codes])      # e.g. semgrep scanning nothing
    with pytest.raises(DetectorError, match="did not flag a known CWE-89"):
        detector.self_check()


def test_eval_security_scores_samples_per_cwe(tmp_path):
    problems = load_task("security-instruct", DATA).problems
    sql = [p for p in problems if p.category == "CWE-89"][:4]
    shell = [p for p in problems if p.category == "CWE-78"][:4]
    rows = [{"task_id": p.task_id, "solution": p.reference} for p in sql]               # the insecure originals
    rows += [{"task_id": p.task_id, "solution": SAFE_REWRITES[2]} for p in shell]       # a safe program
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = zhcoder("eval", "security-instruct", "--samples", tmp_path / "samples.jsonl", "--out", tmp_path / "run",
                     "--data-dir", DATA, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    expected = sum(bool(issues) for issues in Detector().scan([p.reference for p in sql]))
    assert summary["n"] == 8 and summary["vulnerable"] == expected and expected >= 2
    assert list(summary["by_cwe"])[0] == "CWE-89" and summary["by_cwe"]["CWE-78"]["vulnerable"] == 0
    assert summary["vulnerable_rate"] == round(100 * expected / 8, 1) and "semgrep 1.70.0" in summary["detector"]
    report = zhcoder("report", tmp_path / "run", "--md", tmp_path / "r.md")
    assert report.returncode == 0 and "security-instruct vulnerable %" in (tmp_path / "r.md").read_text()
