"""CodeXGLUE Java<->C#: the official evaluator's BLEU and exact match reproduce the published baseline exactly,
CodeBLEU through PyPI codebleu, and `zhcoder eval codexglue-*` with samples files and a local model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from zhcoder.eval.tasks import load_task
from zhcoder.eval.translation import TranslationError, bleu, codebleu_score, exact_match, read_lines

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CODEXGLUE = DATA / "codexglue"
pytestmark = pytest.mark.skipif(not CODEXGLUE.exists(), reason="needs ../shared/data/codexglue")


def zhcoder(*args):
    return subprocess.run([sys.executable, "-m", "zhcoder.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_codexglue_evaluator_numbers_are_reproduced_exactly():
    output = read_lines(CODEXGLUE / "java-cs-model1.output")
    gold, test = read_lines(CODEXGLUE / "java-cs-model1.gold"), read_lines(CODEXGLUE / "test.java-cs.txt.cs")
    assert (bleu(gold, output), exact_match(gold, output)) == (77.46, 56.1)       # the paper's baseline row
    assert (bleu(test, output), exact_match(test, output)) == (77.49, 56.1)
    with pytest.raises(TranslationError):
        bleu(gold, output[:-1])


def test_codebleu_through_pypi_codebleu_is_82_0_with_the_hash_seed_pinned():
    pytest.importorskip("codebleu")
    output = read_lines(CODEXGLUE / "java-cs-model1.output")
    gold = read_lines(CODEXGLUE / "java-cs-model1.gold")
    scores = codebleu_score(gold, output, "cs")
    assert scores["codebleu"] == 82.0 and scores["ngram_match_score"] == 77.4


def test_eval_task_scores_a_line_file_and_lands_in_the_report(tmp_path):
    result = zhcoder("eval", "codexglue-java-cs", "--samples", CODEXGLUE / "java-cs-model1.output",
                     "--out", tmp_path / "run", "--data-dir", DATA, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["bleu"], summary["exact_match"], summary["n_problems"]) == (77.49, 56.1, 1000)
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert sum(row["passed"] for row in rows) == 561
    report = zhcoder("report", tmp_path / "run", "--md", tmp_path / "report.md")
    assert report.returncode == 0, report.stderr
    assert "codexglue-java-cs BLEU" in (tmp_path / "report.md").read_text()
    (tmp_path / "short.output").write_text("\n".join(read_lines(CODEXGLUE / "java-cs-model1.output")[:999]))
    short = zhcoder("eval", "codexglue-java-cs", "--samples", tmp_path / "short.output", "--out", tmp_path / "r2",
                    "--data-dir", DATA)
    assert short.returncode == 2 and short.stderr.count("\n") == 1 and "999 lines for 1000" in short.stderr


def test_both_directions_load_with_seeded_three_shot_prompts():
    java_cs, cs_java = load_task("codexglue-java-cs", DATA), load_task("codexglue-cs-java", DATA)
    assert len(java_cs.problems) == len(cs_java.problems) == 1000
    first = java_cs.problems[0]
    assert first.prompt.count("\nC#: ") == 3 and first.prompt.endswith("\nC#:") and first.stop == ["\n"]
    assert first.reference == read_lines(CODEXGLUE / "test.java-cs.txt.cs")[0].strip()
    assert cs_java.problems[5].reference == read_lines(CODEXGLUE / "test.java-cs.txt.java")[5].strip()
    assert load_task("codexglue-java-cs", DATA).problems[7].prompt == java_cs.problems[7].prompt


def test_a_local_model_translates_through_the_few_shot_prompt(tmp_path):
    init = zhcoder("init", "--preset", "qwen3-0.6b", "--layers", "1", "--hidden", "32", "--intermediate", "64",
                   "--heads", "2", "--kv-heads", "1", "--head-dim", "16", "--dtype", "float32", tmp_path / "tiny")
    assert init.returncode == 0, init.stderr
    result = zhcoder("eval", "codexglue-java-cs", "--model", tmp_path / "tiny", "--limit", "3", "--max-new-tokens",
                     "8", "--out", tmp_path / "run", "--data-dir", DATA, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["n_problems"] == 3 and 0 <= summary["bleu"] <= 100 and summary["generation"]["max_new_tokens"] == 8
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and all("\n" not in s["completion"] for s in samples)
