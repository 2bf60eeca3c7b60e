"""`zhcoder tokenizer train` and `zhcoder data sft` as a user runs them (subprocesses)."""

import json
import subprocess
import sys

from zhcoder.data.shards import TokenDataset
from zhcoder.tokenizer import Tokenizer

CORPUS = "def 计算(数据):\n    return sum(数据)  # 求和，返回结果。\n" * 50 + "class Queue:\n    pass\n" * 30


def zhcoder(*args):
    return subprocess.run([sys.executable, "-m", "zhcoder.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_tokenizer_train_writes_a_loadable_tokenizer(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.py").write_text(CORPUS, encoding="utf-8")
    (tmp_path / "corpus" / "b.bin").write_bytes(b"\x00\x01binary")
    result = zhcoder("tokenizer", "train", tmp_path / "corpus", "--vocab-size", "300", "--out", tmp_path / "tok")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    assert stats["files_read"] == 1 and stats["files_skipped_binary"] == 1
    tokenizer = Tokenizer.from_dir(tmp_path / "tok")
    text = "def 计算(数据):\n    return 数据<|im_end|>"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.encode("<|im_end|>") == [tokenizer.token_to_id("<|im_end|>")]
    bad = zhcoder("tokenizer", "train", tmp_path / "missing.txt", "--vocab-size", "300", "--out", tmp_path / "t2")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_data_sft_builds_masked_shards(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "写一个加法函数"}, {"role": "assistant", "content": "def add(a, b):\n    return a + b"}]},
        {"instruction": "Reverse a string", "input": "", "output": "s[::-1]"},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "你好"}]},
        "not json",
    ]
    data = tmp_path / "sft.jsonl"
    data.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows) + "\n",
                    encoding="utf-8")
    Tokenizer.qwen().save(tmp_path / "tok", chat_template=None)
    result = zhcoder("data", "sft", data, "--tokenizer", tmp_path / "tok", "--out", tmp_path / "out",
                     "--template", "qwen2.5", "--val-fraction", "0")
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["kept"] == 3 and stats["malformed"] == 1
    dataset = TokenDataset(tmp_path / "out" / "train")
    tokenizer = Tokenizer.from_dir(tmp_path / "tok")
    trained = set()
    for i in range(len(dataset)):
        tokens, mask = dataset[i]
        trained.add(tokenizer.decode([t for t, m in zip(tokens, mask) if m]))
    assert trained == {"def add(a, b):\n    return a + b<|im_end|>", "s[::-1]<|im_end|>", "你好<|im_end|>"}


def test_data_sft_warns_of_an_empty_validation_split(tmp_path):
    rows = [{"instruction": f"把 {i} 乘以二", "output": f"print({i} * 2)"} for i in range(5)]
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    Tokenizer.qwen().save(tmp_path / "tok", chat_template=None)
    result = zhcoder("data", "sft", data, "--tokenizer", tmp_path / "tok", "--out", tmp_path / "out",
                     "--template", "qwen2.5", "--validation-fraction", "0.01")    # the same flag as `data build`
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["validation_samples"] == 0
    assert "zhcoder: warning: the validation split is empty: 5 kept rows" in result.stderr
    assert "raise --validation-fraction" in result.stderr
