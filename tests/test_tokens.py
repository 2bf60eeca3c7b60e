"""`zhcoder tokens compare`: o200k / cl100k verified against OpenAI's hashes and equal to tiktoken; counts,
Chinese lines, ratios and costs through the CLI."""

import inspect
import json
import re
import subprocess
import sys

import pytest

from zhcoder.eval.tokens import (DEFAULT_PRICES, OPENAI, chinese_lines, compare, costs, load_prices, markdown,
                                 openai_ranks, openai_tokenizer, tiktoken_file)
from zhcoder.tokenizer import Tokenizer

tiktoken = pytest.importorskip("tiktoken")

SAMPLE = (
    "def 计算购物车总价(商品列表, 优惠券=None):\n"
    "    \"\"\"遍历商品，累加价格；再减去优惠券的金额。\"\"\"\n"
    "    total = sum(item.price * item.quantity for item in 商品列表)  # 单位：元\n"
    "    return max(total - (优惠券.金额 if 优惠券 else 0), 0)\n\n"
    "public class OrderService {\n    // 查询订单状态\n    public String status(long id) { return \"已发货\"; }\n}\n"
    "SELECT * FROM orders WHERE id = 1024;  -- it's 3.14159 HELLO World's\r\n\t\t  x = 'a'+\"b\"  <|endoftext|>\n"
)


def tiktoken_encoding(name: str):
    """tiktoken's own Encoding for `name`, on our ranks (no download): its pattern from tiktoken_ext."""
    import tiktoken_ext.openai_public as public

    source = inspect.getsource(public.o200k_base if name == "o200k" else public.cl100k_base)
    if name == "cl100k":
        pattern = re.search(r'"pat_str": r"""(.*?)"""', source).group(1)
    else:
        pattern = "|".join(re.findall(r'r"""(.*?)"""', source))
    return tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=openai_ranks(name), special_tokens={})


@pytest.mark.parametrize("name", ["o200k", "cl100k"])
def test_openai_vocabularies_hash_to_the_published_sha256_and_match_tiktoken(name):
    import hashlib

    import tiktoken_ext.openai_public as public

    published = re.search(r'expected_hash="([0-9a-f]{64})"',
                          inspect.getsource(public.o200k_base if name == "o200k" else public.cl100k_base)).group(1)
    assert OPENAI[name][2] == published
    assert hashlib.sha256(tiktoken_file(openai_ranks(name))).hexdigest() == published
    text = SAMPLE * 3 + open(__file__, encoding="utf-8").read()
    ours = openai_tokenizer(name).encode(text, add_special_tokens=False).ids
    assert ours == tiktoken_encoding(name).encode_ordinary(text)


def test_compare_counts_ratios_chinese_lines_and_costs(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "cart.py").write_text(SAMPLE, encoding="utf-8")
    (tmp_path / "src" / "notes.md").write_text("# 说明\nplain English line\n订单、购物车、优惠券\n", encoding="utf-8")
    (tmp_path / "src" / "blob.bin").write_bytes(b"\x00\x01\x02")
    result = subprocess.run([sys.executable, "-m", "zhcoder.cli", "tokens", "compare", tmp_path / "src",
                             "--tokenizers", "qwen,o200k,cl100k", "--baseline", "o200k", "--cost", "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    files = {path.rsplit("/", 1)[-1]: row for path, row in report["files"].items()}
    assert set(files) == {"cart.py", "notes.md"}                        # the binary is skipped
    qwen = Tokenizer.qwen()
    o200k, cl100k = tiktoken_encoding("o200k"), tiktoken_encoding("cl100k")
    for name, text in (("cart.py", SAMPLE), ("notes.md", (tmp_path / "src" / "notes.md").read_text())):
        assert files[name] == {"qwen": len(qwen.encode(text, special=False)),
                               "o200k": len(o200k.encode_ordinary(text)), "cl100k": len(cl100k.encode_ordinary(text))}
    chinese = "\n".join(filter(None, [chinese_lines(SAMPLE), chinese_lines((tmp_path / "src" / "notes.md").read_text())]))
    assert "plain English line" not in chinese and "已发货" in chinese
    assert report["chinese_lines"]["cl100k"] == len(cl100k.encode_ordinary(chinese))
    assert report["ratio"]["o200k"] == 1.0
    assert report["ratio"]["cl100k"] == round(report["total"]["cl100k"] / report["total"]["o200k"], 4)
    gpt4o = next(row for row in report["costs"] if row["model"] == "GPT-4o")
    assert gpt4o["tokens"] == report["total"]["o200k"] and gpt4o["input_usd"] == round(gpt4o["tokens"] / 1e6 * 2.5, 6)
    assert gpt4o["source"] == "https://developers.openai.com/api/docs/pricing" and gpt4o["stand_in"] is None
    claude = next(row for row in report["costs"] if row["model"].startswith("Claude"))
    assert claude["tokens"] == report["total"]["cl100k"]
    assert claude["stand_in"] == "cl100k as a stand-in; Claude's tokenizer is not public"
    bad = subprocess.run([sys.executable, "-m", "zhcoder.cli", "tokens", "compare", tmp_path / "src",
                          "--tokenizers", "qwen,nonsense"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown tokenizer" in bad.stderr


def test_each_price_says_where_and_when_it_was_read_and_a_stand_in_tokenizer_says_so(tmp_path):
    """The table a user quotes carries each price's source and date, and marks cl100k standing in for Claude's
    tokenizer; a price table of one's own is named as the source and its date as unverified."""
    for row in DEFAULT_PRICES.values():
        assert row["source"].startswith("https://") and re.fullmatch(r"\d{4}-\d\d-\d\d", row["read"])
    (tmp_path / "code.py").write_text(SAMPLE, encoding="utf-8")
    result = compare([str(tmp_path / "code.py")], ["o200k", "cl100k"])
    table = markdown(result, costs(result, DEFAULT_PRICES))
    claude = next(line for line in table.splitlines() if line.startswith("| Claude"))
    assert "| cl100k (cl100k as a stand-in; Claude's tokenizer is not public) |" in claude
    assert f"| {DEFAULT_PRICES['GPT-4o']['source']} ({DEFAULT_PRICES['GPT-4o']['read']}) |" in table
    assert "| 2.5 / 10 |" in table

    own = tmp_path / "prices.json"
    own.write_text(json.dumps({"Mine": {"input": 1.0, "output": 4.0, "tokenizer": "o200k"}}))
    [row] = costs(result, load_prices(str(own)))
    assert (row["source"], row["read"], row["stand_in"]) == (f"--prices {own}", "unverified", None)
    assert row["output_usd"] == round(result["total"]["o200k"] / 1e6 * 4.0, 6)
