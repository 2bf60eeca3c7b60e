"""`zhcoder report`: a report card (Markdown, HTML, PNG) from eval folders and a tokenizer comparison."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = pytest.mark.skipif(not (DATA / "codexglue").exists(), reason="needs ../shared/data")


def zhcoder(*args):
    result = subprocess.run([sys.executable, "-m", "zhcoder.cli", *map(str, args)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_report_card_renders_from_result_folders(tmp_path):
    rows = (DATA / "samples" / "qwen2.5-coder-1.5b-base" / "humaneval-generated.jsonl").read_text().splitlines()
    (tmp_path / "he.jsonl").write_text("\n".join(rows[:20]) + "\n")
    zhcoder("eval", "humaneval", "--samples", tmp_path / "he.jsonl", "--limit", "20", "--out", tmp_path / "he",
            "--name", "Qwen-1.5B", "--data-dir", DATA)
    zhcoder("eval", "codexglue-java-cs", "--samples", DATA / "codexglue" / "java-cs-model1.output",
            "--out", tmp_path / "cxg", "--name", "RoBERTa baseline", "--data-dir", DATA)
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "cart.py").write_text("def 总价(购物车):\n    # 计算总价，含优惠券。\n    return sum(购物车)\n")
    tokens = zhcoder("tokens", "compare", tmp_path / "code", "--cost", "--json")
    (tmp_path / "tokens.json").write_text(tokens.stdout)
    zhcoder("report", tmp_path / "he", tmp_path / "cxg", tmp_path / "tokens.json", "--out", tmp_path / "card.md")
    card = (tmp_path / "card.md").read_text()
    he = json.loads((tmp_path / "he" / "summary.json").read_text())
    assert f"| Qwen-1.5B | {he['pass@1']:.1f} |" in card
    assert "| RoBERTa baseline | – | 77.5 | 81.9 | 56.1 |" in card
    assert "| o200k_base (GPT-4o) |" in card and "| GPT-4o | o200k |" in card
    assert "Settings behind each number" in card and "sha256:" in card
    page = (tmp_path / "card.html").read_text()
    assert "<table>" in page and "card-benchmarks.png" in page
    assert (tmp_path / "card-benchmarks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
