"""Tests for zhcoder.tokenizer.train_tokenizer: a byte-level BPE learned from a small corpus (a few
Python standard-library files plus Chinese text) must round-trip any text, put the added tokens at
their documented ids, load identically in transformers, and be deterministic.

    pytest -q tests/test_tokenizer_train.py
"""

import json
import random
import sysconfig
import unicodedata
from pathlib import Path

import pytest

from zhcoder import tokenizer as tokenizer_module
from zhcoder.tokenizer import TRAINED_ADDED_TOKENS, Tokenizer, train_tokenizer

VOCAB_SIZE = 1000
STDLIB_FILES = ["json/decoder.py", "json/encoder.py", "textwrap.py", "argparse.py", "dataclasses.py"]
CHINESE_TEXT = """\
# 数据清洗：去掉重复的记录，并统计每个城市的用户数量。
def 统计用户(记录列表):
    \"\"\"返回一个字典：城市 → 用户数。\"\"\"
    结果 = {}
    for 记录 in 记录列表:
        城市 = 记录.get("城市", "未知")
        结果[城市] = 结果.get(城市, 0) + 1
    return 结果

# 注意：输入必须是列表；否则抛出异常！日志写入“处理完成”。
""" * 20
# Not in the corpus: other words, emoji (one a multi-codepoint flag), full-width digits, CRLF, tabs,
# and bytes the corpus never showed as pairs. NFC already (the normalizer is NFC, as Qwen's).
HELD_OUT = (
    "class 购物车:\r\n\tdef 结账(self, 优惠券=None):  # 支付成功🎉🇨🇳，共１２３元\r\n"
    "        return [x ** 2 for x in range(10) if x % 3 == 0]\n"
    "Ωμέγα — naïve café; Привет, мир! こんにちは世界 🤖🧑‍💻 \u00a0 \x01\x7f\n"
)
ADDED = [content for content, _ in TRAINED_ADDED_TOKENS]


def write_corpus(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [stdlib / name for name in STDLIB_FILES]
    chinese = folder / "中文.py"
    chinese.write_text(CHINESE_TEXT, encoding="utf-8")
    binary = folder / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    latin1 = folder / "latin1.txt"
    latin1.write_bytes("café crème brûlée\n".encode("latin-1"))
    return [*files, chinese, binary, latin1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, corpus) -> Path:
    folder = tmp_path_factory.mktemp("trained")
    train_tokenizer(corpus, VOCAB_SIZE, folder, show_progress=False)
    return folder


@pytest.fixture(scope="module")
def trained(trained_dir) -> Tokenizer:
    return Tokenizer.from_dir(trained_dir)


def test_held_out_text_round_trips_exactly(trained):
    ids = trained.encode(HELD_OUT)
    assert trained.decode(ids) == HELD_OUT
    assert max(ids) < VOCAB_SIZE  # plain text uses only learned tokens
    assert len(ids) < len(HELD_OUT.encode("utf-8"))  # and merges were learned, not just bytes
    with_markers = f"<|im_start|>user\n{HELD_OUT}<|im_end|>\n<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>"
    assert trained.decode(trained.encode(with_markers)) == with_markers


def test_learned_ids_then_added_tokens_at_fixed_ids(trained, trained_dir):
    learned = trained.backend.get_vocab(with_added_tokens=False)
    assert sorted(learned.values()) == list(range(VOCAB_SIZE))
    assert trained.vocab_size == VOCAB_SIZE + len(ADDED) == 1015
    added = trained.backend.get_added_tokens_decoder()
    qwen_flags = {content: special for _, content, special in tokenizer_module.QWEN_ADDED_TOKENS}
    for offset, content in enumerate(ADDED):
        token_id = VOCAB_SIZE + offset
        assert trained.token_to_id(content) == token_id
        assert added[token_id].content == content
        assert added[token_id].special == qwen_flags[content]
        assert trained.encode(content) == [token_id]
        assert trained.encode(f"x{content}y")[1:-1] == [token_id]  # whole, even inside text
    assert ADDED[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] and ADDED[-1] == "</think>"
    assert trained.eos_token_id == trained.pad_token_id == VOCAB_SIZE
    assert trained.stop_token_ids == [VOCAB_SIZE, VOCAB_SIZE + 2]
    config = json.loads((trained_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["eos_token"] == config["pad_token"] == "<|endoftext|>"


def test_same_layout_as_qwen(trained_dir):
    spec = json.loads((trained_dir / "tokenizer.json").read_text(encoding="utf-8"))
    qwen_layout = json.loads(tokenizer_module._byte_level_bpe_json({}, [], []))
    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        assert spec[key] == qwen_layout[key], key
    assert spec["model"]["type"] == "BPE" and not spec["model"]["byte_fallback"]


def test_transformers_and_from_dir_give_identical_ids(trained_dir, trained):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(trained_dir))
    text = f"<|im_start|>system\n你是一个编程助手。<|im_end|>\n<tool_call>{{\"name\": \"运行\"}}</tool_call>\n{HELD_OUT}<think>嗯</think>"
    ids = trained.encode(text)
    assert hf(text, add_special_tokens=False)["input_ids"] == ids
    assert hf.decode(ids) == text
    assert hf.eos_token == "<|endoftext|>" and hf.eos_token_id == VOCAB_SIZE
    assert len(hf) == trained.vocab_size


def test_token_bytes_concatenate_to_the_utf8_text(trained):
    ids = trained.encode(HELD_OUT)
    assert b"".join(trained.token_bytes(token_id) for token_id in ids) == HELD_OUT.encode("utf-8")
    single_bytes = {trained.token_bytes(token_id) for token_id in range(256)}
    assert single_bytes == {bytes([byte]) for byte in range(256)}  # the full byte alphabet comes first
    assert trained.token_bytes(VOCAB_SIZE + 13) == b"<think>"


def test_training_is_deterministic(tmp_path, corpus, trained_dir):
    again = train_tokenizer(corpus, VOCAB_SIZE, tmp_path / "again", show_progress=False)
    assert (tmp_path / "again" / "tokenizer.json").read_bytes() == (trained_dir / "tokenizer.json").read_bytes()
    assert (tmp_path / "again" / "tokenizer_config.json").read_bytes() == \
        (trained_dir / "tokenizer_config.json").read_bytes()
    assert again.training_stats.learned_vocab_size == VOCAB_SIZE


def test_binary_and_undecodable_files_are_skipped_and_counted(tmp_path, corpus):
    tokenizer = train_tokenizer(corpus, 300, tmp_path / "out", show_progress=False)
    stats = tokenizer.training_stats
    assert (stats.files_read, stats.files_skipped_binary, stats.files_skipped_undecodable) == (len(corpus) - 2, 1, 1)
    assert stats.bytes_read == sum(path.stat().st_size for path in corpus[:-2])
    assert stats.to_dict()["files_skipped"] == 2


def test_large_files_stream_to_the_same_result(tmp_path, corpus, monkeypatch):
    """Files above the whole-file limit are checked, then read in blocks cut at safe places:
    the tokenizer must be the same as when every file is read whole."""
    whole = train_tokenizer(corpus, 600, tmp_path / "whole", show_progress=False)
    monkeypatch.setattr(tokenizer_module, "_WHOLE_FILE_LIMIT", 1000)
    monkeypatch.setattr(tokenizer_module, "_READ_BLOCK", 997)  # odd size: cuts inside UTF-8 characters
    late_error = tmp_path / "late_error.txt"
    late_error.write_bytes(b"fine text\n" * 500 + b"\xff\xfe broken\n")
    streamed = train_tokenizer([*corpus, late_error], 600, tmp_path / "streamed", show_progress=False)
    assert streamed.training_stats.files_skipped_undecodable == 2
    assert streamed.training_stats.bytes_read == whole.training_stats.bytes_read
    assert streamed.backend.to_str() == whole.backend.to_str()


def test_streaming_cuts_never_change_pre_tokens():
    """_safe_cut's promise, checked on random text rich in line breaks and odd whitespace."""
    from tokenizers import Regex, pre_tokenizers

    split = pre_tokenizers.Split(Regex(tokenizer_module.QWEN_PATTERN), behavior="isolated")

    def pieces(text):
        return [piece for piece, _ in split.pre_tokenize_str(unicodedata.normalize("NFC", text))]

    alphabet = ["\n", "\r", " ", "\t", "a", ":", "中", "\u0301", "\x1c", "\x0b", "\u2028", "\xa0", "'s", "1", "\u3000"]
    rng, cuts = random.Random(0), 0
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        cut = tokenizer_module._safe_cut(text)
        if cut:
            cuts += 1
            assert pieces(text) == pieces(text[:cut]) + pieces(text[cut:]), repr(text)
    assert cuts > 300


def test_folders_are_read_recursively(tmp_path):
    (tmp_path / "src" / "deep").mkdir(parents=True)
    (tmp_path / "src" / "deep" / "a.py").write_text(CHINESE_TEXT, encoding="utf-8")
    (tmp_path / "src" / "b.bin").write_bytes(b"\x00\x01\x02")
    tokenizer = train_tokenizer([tmp_path / "src"], 260, tmp_path / "out", show_progress=False)
    assert (tokenizer.training_stats.files_read, tokenizer.training_stats.files_skipped_binary) == (1, 1)


def test_small_corpus_warns_and_added_tokens_follow_the_learned_vocabulary(tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("hello hello hello world\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="yields only"):
        tokenizer = train_tokenizer([small], 5000, tmp_path / "out", show_progress=False)
    learned = tokenizer.training_stats.learned_vocab_size
    assert 256 < learned < 5000
    assert tokenizer.token_to_id("<|endoftext|>") == learned
    assert tokenizer.decode(tokenizer.encode(HELD_OUT)) == HELD_OUT


@pytest.mark.parametrize("files, vocab_size, message", [
    ([], 1000, "no training files"),
    (["does/not/exist.txt"], 1000, "not found"),
    (None, 256, "at least 257"),
    (None, 1000.0, "integer"),
])
def test_bad_arguments_are_clear_errors(tmp_path, corpus, files, vocab_size, message):
    with pytest.raises(ValueError, match=message):
        train_tokenizer(corpus if files is None else files, vocab_size, tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists()


def test_no_text_at_all_is_a_clear_error(tmp_path, corpus):
    with pytest.raises(ValueError, match="none of the 2 training files is UTF-8 text"):
        train_tokenizer(corpus[-2:], 1000, tmp_path / "out", show_progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        train_tokenizer(corpus, 1000, tmp_path / "file", show_progress=False)
