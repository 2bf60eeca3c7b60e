"""Tests for zhcoder/tokenizer.py against its peers: tiktoken on the same ranks, transformers'
AutoTokenizer on the saved folder, and token ids published with Qwen.

    pytest -q tests/test_tokenizer.py
"""

import json
import sysconfig
import unicodedata
from pathlib import Path

import pytest
import tiktoken

from zhcoder.tokenizer import (
    QWEN_ADDED_TOKENS,
    QWEN_PATTERN,
    Tokenizer,
    build_qwen_tokenizer,
    cache_path,
    read_quicktok_ranks,
)

CHINESE_CODE = """\
# -*- coding: utf-8 -*-
\"\"\"订单处理模块：计算总价、折扣和税费。作者：张伟（zhang.wei@example.com）\"\"\"
from dataclasses import dataclass


@dataclass
class 订单:
    编号: str
    单价: float  # 单位：元／件
    数量: int = 1

    def 总价(self) -> float:
        \"\"\"返回「单价 × 数量」，保留两位小数。\"\"\"
        return round(self.单价 * self.数量, 2)


def 打折(价格, 折扣=0.85):
    # 注意：折扣必须在（0，1］之间；否则抛出异常！
    if not 0 < 折扣 <= 1:
        raise ValueError(f"折扣无效：{折扣}")
    return 价格 * 折扣


用户列表 = ["李雷", "韩梅梅", "王小明"]
for 序号, 名字 in enumerate(用户列表, start=1):
    print(f"第{序号}位用户：{名字}，欢迎回来😀🎉")

// JavaScript：处理中文输入
const 问候 = (名字) => `你好，${名字}！今天是2024年10月1日，国庆节快乐🇨🇳。`;
console.log(问候("世界"));   /* 输出：你好，世界！ */

/* C 语言注释：缓冲区大小为１０２４字节（全角数字） */
int main(void) { printf("数据处理完成；共%d条记录。\\n", 42); return 0; }

-- SQL：查询上海的客户
SELECT 姓名, 城市 FROM 客户 WHERE 城市 = '上海' AND 年龄 >= 18;

中文段落：机器学习是人工智能的一个分支。它研究计算机怎样模拟或实现人类的学习行为，
以获取新的知识或技能，重新组织已有的知识结构使之不断改善自身的性能。“深度学习”
则是其中最受关注的方向——例如卷积神经网络、循环神经网络与Transformer模型……
标点测试：，。；：（）「」『』【】《》〈〉！？、·～——……％＃＆＊＠
混合文本：Python3.12版本发布了，性能提升约5%～15%；API变化见PEP 695。I'm sure it's fine, DON'T worry.
数字：3.14159，1,000,000，0x1F，１２３４５，Ⅻ，½，①②③
罕见字：龘靐麤鱻癵驫𠀋𪚥猋；繁體字：資料庫連線逾時，請稍後再試。日本語：こんにちは、カタカナ。한국어: 안녕하세요
Emoji：👨‍👩‍👧‍👦 👍🏽 ❤️ 🚀✨ ✅❌
Combining (NFD): Cafe\u0301 re\u0301sume\u0301 n\u0303 A\u030a
Whitespace:\ttab\r\nCRLF line\r\n  trailing spaces   \n\n\n    indented\u3000全角空格\u00a0nbsp
"""

ADDED_TOKEN_TEXT = (
    "<|im_start|>system\n你是一个编程助手。<|im_end|>\n<|im_start|>user\n<|fim_prefix|>def 加(a, b):\n"
    "<|fim_suffix|>\n<|fim_middle|>    return a + b<|endoftext|><tool_call>{}</tool_call>"
    "<tool_response>ok</tool_response><think>想一想</think><|repo_name|>demo\n<|file_sep|>a.py\n"
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """Build into a fresh cache, so the tests exercise the build and never a stale user cache."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def qwen(cache_dir):
    return Tokenizer.qwen()


@pytest.fixture(scope="module")
def reference():
    """tiktoken with the same ranks, Qwen's regex and the added tokens as special tokens."""
    return tiktoken.Encoding(
        "qwen",
        pat_str=QWEN_PATTERN,
        mergeable_ranks=read_quicktok_ranks(),
        special_tokens={content: token_id for token_id, content, _ in QWEN_ADDED_TOKENS},
    )


@pytest.fixture(scope="module")
def corpus():
    """At least 1 MB: a deterministic sorted subset of the standard library plus Chinese code."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    documents, size = [], 0
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        documents.append((path.name, text))
        size += len(text.encode("utf-8"))
        if size >= 1_000_000:
            break
    assert size >= 1_000_000, f"only {size} bytes of stdlib source found in {stdlib}"
    documents.append(("chinese", CHINESE_CODE))
    documents.append(("chinese-added-tokens-as-text", ADDED_TOKEN_TEXT + CHINESE_CODE))
    return [(name, unicodedata.normalize("NFC", text)) for name, text in documents]


@pytest.fixture(scope="module")
def encoded(qwen, corpus):
    return qwen.encode_batch([text for _, text in corpus])


def test_ids_match_tiktoken_on_a_megabyte_of_mixed_code(corpus, encoded, reference):
    expected = reference.encode_batch([text for _, text in corpus], allowed_special="all")
    for (name, _), ours, theirs in zip(corpus, encoded, expected):
        if ours != theirs:
            first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            pytest.fail(f"{name}: ids differ from token {first}: {ours[first:first + 8]} vs {theirs[first:first + 8]}")


def test_decode_round_trips_exactly(corpus, encoded, qwen):
    for (name, text), ids in zip(corpus, encoded):
        assert qwen.decode(ids) == text, name


def test_ids_published_with_qwen(qwen):
    # From Qwen's own chat examples (same ranks since Qwen-7B): ChatML prompt with a Chinese question.
    prompt = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
              "浙江的省会在哪里？<|im_end|>\n<|im_start|>assistant\n")
    assert qwen.encode(prompt) == [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198,
                                   151644, 872, 198, 101211, 9370, 65770, 105542, 101314, 11319, 151645,
                                   198, 151644, 77091, 198]


def test_added_tokens_encode_to_their_ids_only_when_special(qwen, reference):
    for token_id, content, _ in QWEN_ADDED_TOKENS:
        assert qwen.encode(content) == [token_id]
        assert qwen.token_to_id(content) == token_id
        plain = qwen.encode(content, special=False)
        assert token_id not in plain and plain == reference.encode_ordinary(content)
    text = unicodedata.normalize("NFC", ADDED_TOKEN_TEXT + CHINESE_CODE)
    assert qwen.encode(text, special=False) == reference.encode_ordinary(text)
    assert qwen.encode_batch([text], special=False) == [reference.encode_ordinary(text)]


def test_qwen_facts(qwen):
    assert qwen.vocab_size == 151_669
    assert qwen.eos_token_id == qwen.pad_token_id == 151643
    assert qwen.stop_token_ids == [151643, 151645]
    assert qwen.chat_template is None
    # decode(skip_special) drops only the tokens Qwen marks special; FIM/think markers stay.
    ids = qwen.encode("<|im_start|>答<think>嗯</think><|im_end|><|fim_prefix|>")
    assert qwen.decode(ids, skip_special=True) == "答<think>嗯</think><|fim_prefix|>"


def test_token_bytes_concatenate_to_the_utf8_text(corpus, encoded, qwen):
    for (name, text), ids in list(zip(corpus, encoded))[-3:]:
        assert b"".join(qwen.token_bytes(i) for i in ids) == text.encode("utf-8"), name
    ids = qwen.encode("龘")  # a rare character: its 3 UTF-8 bytes fall into two tokens
    pieces = [qwen.token_bytes(i) for i in ids]
    assert len(pieces) == 2 and b"".join(pieces) == "龘".encode("utf-8")
    with pytest.raises(UnicodeDecodeError):
        pieces[0].decode("utf-8")
    assert qwen.token_bytes(151645) == b"<|im_end|>"
    assert qwen.token_bytes(qwen.encode(" ")[0]) == b" "


def test_saved_folder_loads_in_transformers_with_identical_ids(tmp_path, corpus, encoded, qwen):
    transformers = pytest.importorskip("transformers")
    template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    qwen.save(tmp_path, chat_template=template, eos_token="<|im_end|>")
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    for (name, text), ids in list(zip(corpus, encoded))[-12:]:
        assert hf.encode(text, add_special_tokens=False) == ids, name
    for token_id, content, special in QWEN_ADDED_TOKENS:
        assert hf.convert_tokens_to_ids(content) == token_id
        assert hf.added_tokens_decoder[token_id].special == special, content
    assert (hf.eos_token, hf.eos_token_id, hf.pad_token_id, hf.bos_token) == ("<|im_end|>", 151645, 151643, None)
    assert hf.chat_template == template
    ids = qwen.encode(ADDED_TOKEN_TEXT)
    assert hf.decode(ids, skip_special_tokens=True) == qwen.decode(ids, skip_special=True)
    rendered = hf.apply_chat_template([{"role": "user", "content": "你好"}], tokenize=False)
    assert rendered == "<|im_start|>user\n你好<|im_end|>\n"


def test_from_dir_round_trip(tmp_path, qwen):
    qwen.save(tmp_path, chat_template="{{ messages }}", eos_token="<|im_end|>")
    loaded = Tokenizer.from_dir(tmp_path)
    text = ADDED_TOKEN_TEXT + CHINESE_CODE
    assert loaded.encode(text) == qwen.encode(text)
    assert loaded.encode(text, special=False) == qwen.encode(text, special=False)
    assert (loaded.eos_token_id, loaded.pad_token_id, loaded.chat_template) == (151645, 151643, "{{ messages }}")
    assert loaded.stop_token_ids == [151645, 151643]
    assert loaded.vocab_size == qwen.vocab_size
    assert [loaded.token_bytes(i) for i in range(0, 151669, 997)] == [qwen.token_bytes(i) for i in range(0, 151669, 997)]


def test_build_is_cached_and_survives_a_damaged_cache(cache_dir, qwen):
    (cache_file,) = (cache_dir / "zhcoder").glob("*.json")
    assert cache_file == cache_path()                                # $XDG_CACHE_HOME/zhcoder
    assert build_qwen_tokenizer().to_str() == qwen.backend.to_str()  # read back from the cache
    cache_file.write_text('{"truncated": ', encoding="utf-8")
    assert build_qwen_tokenizer().to_str() == qwen.backend.to_str()  # rebuilt
    assert json.loads(cache_file.read_text(encoding="utf-8"))["model"]["type"] == "BPE"  # and repaired
    assert not list((cache_dir / "zhcoder").glob("*.tmp"))


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer.json in"):
        Tokenizer.from_dir(tmp_path / "does-not-exist")


def test_corrupt_files_are_a_clear_error(tmp_path, qwen):
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": ', encoding="utf-8")
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        Tokenizer.from_dir(tmp_path)
    qwen.save(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="tokenizer_config.json is not valid JSON"):
        Tokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"eos_token": "<|no_such|>"}', encoding="utf-8")
    with pytest.raises(ValueError, match="eos_token '<\\|no_such\\|>' is not in the vocabulary"):
        Tokenizer.from_dir(tmp_path)
