"""`zhcoder eval` as a user runs it: samples files, a local model, an endpoint, resuming, reports, bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_subjects import server  # noqa: F401  (fixture: a local OpenAI-compatible server)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
QWEN_HE = DATA / "samples" / "qwen2.5-coder-1.5b-base" / "humaneval-generated.jsonl"
PUBLISHED_HE = DATA / "samples" / "qwen2.5-coder-1.5b-base" / "humaneval-generated_eval_results.json"


def zhcoder(*args, env=None):
    return subprocess.run([sys.executable, "-m", "zhcoder.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.fixture(scope="module")
def humaneval_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "qwen-1.5b-he"
    result = zhcoder("eval", "humaneval", "--samples", QWEN_HE, "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    return out, result


def test_json_contract_and_published_number(humaneval_run):
    out, result = humaneval_run
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["task"] == "humaneval" and summary["n_tasks"] == 164
    assert summary["passed"] == 72 and summary["pass@1"] == 43.9          # rounded as the text output rounds
    assert summary["limits"]["timeout_s"] > 0
    assert json.loads((out / "summary.json").read_text())["passed"] == 72


def test_results_rows_match_published_verdicts(humaneval_run):
    out, _ = humaneval_run
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 164
    assert all({"task_id", "completion_id", "passed", "result"} <= set(row) for row in rows)
    published = json.loads(PUBLISHED_HE.read_text())["eval"]
    for row in rows:
        assert row["passed"] == (published[row["task_id"]][0]["base_status"] == "pass"), row["task_id"]
        assert row["passed"] == (row["result"] == "passed")


def test_interrupted_run_resumes_without_redoing(humaneval_run, tmp_path):
    out, _ = humaneval_run
    copy = tmp_path / "copy"
    copy.mkdir()
    lines = (out / "results.jsonl").read_text().splitlines()
    (copy / "run.json").write_text((out / "run.json").read_text())
    kept = lines[:100]
    (copy / "results.jsonl").write_text("\n".join(kept) + "\n" + lines[100][:25])  # cut mid-row
    result = zhcoder("eval", "humaneval", "--samples", QWEN_HE, "--out", copy, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["passed"] == 72
    rows = (copy / "results.jsonl").read_text().splitlines()
    assert rows[:100] == kept  # finished verdicts were kept, not redone
    assert len([r for r in rows if r.strip()]) == 165  # 100 kept + the cut line + 64 new


def test_other_settings_in_the_same_folder_are_refused(humaneval_run):
    out, _ = humaneval_run
    result = zhcoder("eval", "humaneval", "--samples", QWEN_HE, "--out", out, "--timeout", "1.5")
    assert result.returncode == 2 and "holds a run with other settings (limits)" in result.stderr


def test_bad_samples_file_is_reported_with_line_numbers(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "HumanEval/0", "completion": "    pass"}\n{oops\n{"task_id": "HumanEval/999", '
                   '"completion": "x"}\n')
    result = zhcoder("eval", "humaneval", "--samples", bad, "--out", tmp_path / "out")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "line 2: bad JSON" in result.stderr and "line 3: unknown task_id 'HumanEval/999'" in result.stderr
    assert not (tmp_path / "out" / "results.jsonl").exists()  # nothing scored


def test_leetcode_by_difficulty(tmp_path):
    samples = tmp_path / "lc.jsonl"
    rows = [json.loads(line) for line in (DATA / "leetcode" / "20240121-Jul.jsonl").read_text().splitlines()]
    samples.write_text("".join(json.dumps({"task_id": r["task_id"], "solution": "class Solution:\n    pass\n"}) + "\n"
                               for r in rows))
    result = zhcoder("eval", "leetcode", "--samples", samples, "--out", tmp_path / "lc", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["passed"] == 0 and summary["n_tasks"] == 180
    assert {k: v["n_tasks"] for k, v in summary["by_difficulty"].items()} == {"Easy": 45, "Medium": 91, "Hard": 44}


def test_report_renders_table_and_chart(humaneval_run, tmp_path):
    out, _ = humaneval_run
    codefuse = tmp_path / "codefuse"
    result = zhcoder("eval", "humaneval", "--samples", DATA / "samples" / "codefuse-13b-humaneval_result_python.jsonl",
                     "--out", codefuse, "--name", "CodeFuse-13B", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["passed"] == 61
    again = zhcoder("eval", "humaneval", "--samples", DATA / "samples" / "codefuse-13b-humaneval_result_python.jsonl",
                    "--out", codefuse)                   # a rerun without --name: the name stays, no 0/0 bar
    assert again.returncode == 0, again.stderr
    assert "already scored" in again.stdout and "0/0" not in again.stdout
    assert json.loads((codefuse / "summary.json").read_text())["name"] == "CodeFuse-13B"
    report = zhcoder("report", out, codefuse, "--md", tmp_path / "r.md", "--png", tmp_path / "r.png")
    assert report.returncode == 0, report.stderr
    assert "markdown:" not in report.stdout              # only the table and the chart were asked for
    table = (tmp_path / "r.md").read_text()
    assert "| humaneval-generated.jsonl | 43.9 |" in table
    assert "| CodeFuse-13B | 37.2 |" in table
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_local_model_subject_generates_and_resumes(tmp_path):
    model = tmp_path / "tiny"
    init = zhcoder("init", "--preset", "qwen3-0.6b", "--layers", "1", "--hidden", "32", "--intermediate", "64",
                   "--heads", "2", "--kv-heads", "1", "--head-dim", "16", "--dtype", "float32", model)
    assert init.returncode == 0, init.stderr
    out = tmp_path / "run"
    args = ["eval", "humaneval", "--model", model, "--limit", "3", "--max-new-tokens", "8", "--out", out, "--json"]
    result = zhcoder(*args)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["n_tasks"] == 3 and summary["passed"] == 0  # random weights write no working code
    generated = (out / "samples.jsonl").read_text().splitlines()
    assert [json.loads(line)["task_id"] for line in generated] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    again = zhcoder(*args)
    assert again.returncode == 0 and (out / "samples.jsonl").read_text().splitlines() == generated


def test_endpoint_subject_keeps_finished_work_when_the_endpoint_fails(server, tmp_path):
    from test_subjects import FakeOpenAI

    FakeOpenAI.state["fail_after"] = 3  # the endpoint breaks after three answers
    out = tmp_path / "endpoint"
    args = ["eval", "humaneval", "--endpoint", server, "--endpoint-model", "qwen", "--mode", "chat", "--limit", "6",
            "--concurrency", "1", "--retries", "1", "--out", out, "--json"]
    failed = zhcoder(*args)
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1
    assert "failed after 2 attempts" in failed.stderr
    kept = (out / "samples.jsonl").read_text().splitlines()
    assert len(kept) == 3 and not (out / "summary.json").exists()
    FakeOpenAI.state["fail_after"] = None  # the endpoint is back: the run resumes with the 3 missing samples
    before = len(FakeOpenAI.state["requests"])
    resumed = zhcoder(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert len(FakeOpenAI.state["requests"]) - before == 3
    summary = json.loads(resumed.stdout)
    assert summary["n_tasks"] == 6 and summary["name"] == "qwen"
    assert (out / "samples.jsonl").read_text().splitlines()[:3] == kept


def test_usage_errors(tmp_path):
    for args, message in [
        (["eval", "humaneval", "--samples", QWEN_HE, "--endpoint", "http://127.0.0.1:9/v1", "--out", tmp_path],
         "give one of --samples"),
        (["eval", "nosuchtask", "--samples", QWEN_HE, "--out", tmp_path], "unknown task"),
        (["eval", "humaneval", "--samples", QWEN_HE], "--out DIR is required"),
        (["eval", "humanevel", "--samples", QWEN_HE], "unknown task 'humanevel'; choose one of humaneval, mbpp"),
        (["report", tmp_path / "missing"], "no summary.json"),
        (["eval", "report", tmp_path], "is now `zhcoder report FOLDERS..."),
    ]:
        result = zhcoder(*args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)


def test_eval_help_names_every_task():
    import re

    from typer.testing import CliRunner

    from zhcoder.cli import app
    from zhcoder.eval.tasks import TASK_NAMES

    shown = re.sub(r"-\s+", "-", CliRunner().invoke(app, ["eval", "--help"]).output)   # names wrapped at hyphens
    assert [name for name in TASK_NAMES if name not in shown] == []
