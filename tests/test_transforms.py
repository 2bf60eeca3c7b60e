"""Document transforms: each secret kind redacted and counted, ordinary code left byte-identical, FIM samples (PSM,
SPM, plain) decoding back to their document, the FIM and SPM rates honoured, seeds reproducible, repo-level samples
listing every file once and parsing back.

    pytest -q tests/test_transforms.py
"""

import numpy as np
import pytest

from zhcoder.chat import FILE_SEP, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, repo_prompt
from zhcoder.data.transforms import (
    END_OF_TEXT, PLACEHOLDERS, fim_format, fim_sample, fim_split, fim_unsplit, parse_repo_sample, redact,
    repo_files, repo_sample,
)

NONE_FOUND = dict.fromkeys(PLACEHOLDERS, 0)


def counts(**found):
    return {**NONE_FOUND, **found}


# ------------------------------------------------------------------------------------------------- redaction

PEM = ("-----BEGIN RSA PRIVATE KEY-----\n"
       "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
       "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
       "-----END RSA PRIVATE KEY-----")


@pytest.mark.parametrize("text, expected, found", [
    ("# 作者: li.si+dev@mail.tsinghua.edu.cn\n", "# 作者: <EMAIL>\n", counts(email=1)),
    ('host = "93.184.216.34"', 'host = "<IP_ADDRESS>"', counts(ip_address=1)),
    ("connect(2606:2800:220:1:248:1893:25c8:1946)", "connect(<IP_ADDRESS>)", counts(ip_address=1)),
    ("aws_id = AKIAIOSFODNN7EXAMPLE\n", "aws_id = <KEY>\n", counts(key=1)),
    ("GH=ghp_" + "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF2hJ4", "GH=<KEY>", counts(key=1)),
    ("t = 'github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEF'", "t = '<KEY>'", counts(key=1)),
    ("openai.api_key = 'sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12Mn34'", "openai.api_key = '<KEY>'", counts(key=1)),
    ("SLACK xoxb-1234567890-0987654321-AbCdEfGhIjKl end", "SLACK <KEY> end", counts(key=1)),
    ('url = "https://x.googleapis.com/?key=AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"',
     'url = "https://x.googleapis.com/?key=<KEY>"', counts(key=1)),
    ('client_secret: "a8F3kL0pQz7Xw2Rt"', 'client_secret: "<KEY>"', counts(key=1)),
    ('{"auth_token": "Zx9Qw8Er7Ty6Ui5Op4"}', '{"auth_token": "<KEY>"}', counts(key=1)),
    ("DB_PASSWORD=S3cr3tP4ssw0rdXy9z\n", "DB_PASSWORD=<PASSWORD>\n", counts(password=1)),
    ("export GITHUB_TOKEN=Zx9Qw8Er7Ty6Ui5Op4As\n", "export GITHUB_TOKEN=<KEY>\n", counts(key=1)),
    ("  api_key: q8Zr2LmX0vTnB4sK9wYp\n", "  api_key: <KEY>\n", counts(key=1)),
    ('HF = "hf_94wBhPGp6KrrTH3KDchhKpRxZwd6dmHWLL"', 'HF = "<KEY>"', counts(key=1)),
    ('password = "Tr0ub4dor&3"', 'password = "<PASSWORD>"', counts(password=1)),
    ("key = '''\n" + PEM + "\n'''", "key = '''\n<PRIVATE_KEY>\n'''", counts(private_key=1)),
])
def test_each_kind_is_redacted_and_counted(text, expected, found):
    assert redact(text) == (expected, found)


def test_counts_add_up_over_a_file_with_many_secrets():
    text = ("a@corp.io b@corp.io 8.8.8.8 5.9.27.14 9.10.11.12\n"
            "k1 = 'AKIAIOSFODNN7EXAMPLE'\nk2 = 'AKIAI44QH8DHBEXAMPLE'\n" + PEM + "\n")
    redacted, found = redact(text)
    assert found == counts(email=2, ip_address=2, key=2, private_key=1)
    assert redacted.count("<EMAIL>") == 2 and "8.8.8.8" in redacted and "AKIA" not in redacted


@pytest.mark.parametrize("text", [
    "class User:\n    @property\n    def name(self):\n        return self._name\n",
    "see user@property in the docs; ping admin@localhost",
    '__version__ = "1.2.3"\nrequires = "numpy>=1.26.4.0"\nversion: 2.0.1.7\nv1.2.3.4 and 1.3.6.1.4.1\n',
    "color: #ff00aa; background: #FFF;",
    'assert str(uid) == "123e4567-e89b-12d3-a456-426614174000"',
    'commit = "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"',
    "listen 127.0.0.1 10.0.0.8 192.168.1.1 172.16.0.1 0.0.0.0 ::1 fe80::1 and dns 8.8.8.8 2001:db8::1",
    "docs use 192.0.2.10 and 203.0.113.7",
    "# From the PDF specification, Section 8.4.3.5; RFC 5891 §4.2.3.2 and clause 12.4.3.11",
    '<img src="icon@2x.png"> npm i lodash@4.17.21 @babel/core; mail user@example.com',
    "std::vector<int> v; at 12:30:45; mac 00:1A:2B:3C:4D:5E; a::b",
    'password = "hunter"\ntoken = os.environ["TOKEN"]\napi_key = "${API_KEY}"\n',
    'tokenizer_path = "Qwen/Qwen2.5-Coder-7B-Instruct"\nmax_tokens = 1024\nsecret_file = "/etc/app/secret.key"\n',
    'API_KEY = "<your-api-key-here>"\nSECRET = "xxxxxxxxxxxxxxxx"\n',
    '        self.pad_token_id = config.t2u_pad_token_id2\n    "token2wav_config": Qwen2_5OmniToken2WavConfig,\n',
    '<assemblyIdentity name="Microsoft.VC90.CRT" publicKeyToken="1fc8b3b9a1e18e3b"/>',
    'if "-----BEGIN RSA PRIVATE KEY-----" in pem:\n    kind = "rsa"\n',
    "pip install scikit-learn  # sk-learn is not a key\n",
    "中文注释：联系我们，电话 010-12345678。\n",
])
def test_ordinary_code_is_untouched(text):
    assert redact(text) == (text, NONE_FOUND)


def test_redaction_is_idempotent():
    text = 'key = "AKIAIOSFODNN7EXAMPLE"\nmail = "x@corp.io"\npassword = "Tr0ub4dor&3"\n' + PEM
    once, _ = redact(text)
    assert redact(once) == (once, NONE_FOUND)


# ------------------------------------------------------------------------------------------------------- FIM

TEXTS = [
    "",
    "x",
    "def 加法(a, b):\n    \"\"\"返回两数之和。\"\"\"\n    return a + b\n",
    "第一行\r\n第二行\r\n\r\n  缩进\t制表符 😀 emoji\n",
    "for (int i = 0; i < n; ++i) {\n  sum += a[i];\n}\n" * 3,
]


@pytest.mark.parametrize("spm", [False, True])
def test_fim_samples_decode_back_exactly(spm):
    for text in TEXTS:
        for seed in range(200):
            rng = np.random.default_rng(seed)
            sample = fim_sample(text, rng, rate=1.0, spm_rate=1.0 if spm else 0.0)
            assert sample.endswith(END_OF_TEXT)
            assert sample.startswith(FIM_PREFIX + FIM_SUFFIX if spm else FIM_PREFIX)
            assert fim_unsplit(sample) == text


def test_fim_formats_match_the_documented_strings():
    assert fim_format("P", "M", "S") == f"{FIM_PREFIX}P{FIM_SUFFIX}S{FIM_MIDDLE}M{END_OF_TEXT}"
    assert fim_format("P", "M", "S", spm=True) == f"{FIM_PREFIX}{FIM_SUFFIX}S{FIM_MIDDLE}PM{END_OF_TEXT}"
    for prefix, middle, suffix in [("P", "M", "S"), ("", "M", "S"), ("P", "", ""), ("", "", "")]:
        for spm in (False, True):
            assert fim_unsplit(fim_format(prefix, middle, suffix, spm=spm)) == prefix + middle + suffix


def test_fim_split_covers_every_cut_pair_and_keeps_the_text():
    text = "ab"
    seen = set()
    for seed in range(300):
        prefix, middle, suffix = fim_split(text, np.random.default_rng(seed))
        assert prefix + middle + suffix == text
        seen.add((len(prefix), len(prefix) + len(middle)))
    assert seen == {(low, high) for low in range(3) for high in range(low, 3)}


def test_fim_and_spm_rates_are_honoured():
    rng = np.random.default_rng(1234)
    samples = [fim_sample(TEXTS[2], rng, rate=0.5, spm_rate=0.3) for _ in range(1000)]
    fim = [s for s in samples if s.startswith(FIM_PREFIX)]
    spm = [s for s in fim if s.startswith(FIM_PREFIX + FIM_SUFFIX)]
    assert 440 <= len(fim) <= 560                                   # binomial(1000, 0.5): sd ~ 16
    assert 0.22 <= len(spm) / len(fim) <= 0.38                      # binomial(~500, 0.3): sd ~ 0.02
    plain = [s for s in samples if not s.startswith(FIM_PREFIX)]
    assert all(s == TEXTS[2] + END_OF_TEXT for s in plain)
    assert all(fim_unsplit(s) == TEXTS[2] for s in samples)
    rng = np.random.default_rng(0)
    assert all(fim_sample("abc", rng, rate=0.0) == "abc" + END_OF_TEXT for _ in range(50))
    assert all(fim_sample("abc", rng, rate=1.0).startswith(FIM_PREFIX) for _ in range(50))


def test_fim_is_deterministic_for_a_seed():
    def run(seed):
        rng = np.random.default_rng(seed)
        return [fim_sample(text, rng) for text in TEXTS * 20]
    assert run(7) == run(7)
    assert run(7) != run(8)


def test_fim_refuses_documents_holding_sentinels_and_bad_rates():
    with pytest.raises(ValueError, match="special token"):
        fim_sample(f"print('{FIM_MIDDLE}')", np.random.default_rng(0))
    with pytest.raises(ValueError):
        fim_sample("x", np.random.default_rng(0), rate=1.5)


# ------------------------------------------------------------------------------------------------ repo level

FILES = [
    ("README.md", "# 演示仓库\n\n说明。\n"),
    ("src/app.py", "from src import util\n\nprint(util.加(1, 2))\n"),
    ("src/empty.py", ""),
    ("src/util.py", "def 加(a, b):\n    return a + b\n\n\n"),
    ("LICENSE", "MIT"),
]


def test_repo_sample_lists_every_file_once_and_round_trips():
    sample = repo_sample("zhcoder/demo", FILES)
    assert sample == repo_prompt("zhcoder/demo", FILES) + END_OF_TEXT      # one format with zhcoder.chat
    assert sample.startswith("<|repo_name|>zhcoder/demo\n<|file_sep|>README.md\n")
    assert sample.endswith("<|file_sep|>LICENSE\nMIT" + END_OF_TEXT)
    assert sample.count(FILE_SEP) == len(FILES)
    for path, _ in FILES:
        assert sample.count(f"{FILE_SEP}{path}\n") == 1
    assert repo_files(sample) == FILES
    assert parse_repo_sample(sample) == ("zhcoder/demo", FILES)


def test_repo_sample_edge_cases():
    assert repo_files(repo_sample("empty", [])) == []
    assert repo_files(repo_sample("one", [("a.py", "\n")])) == [("a.py", "\n")]
    with pytest.raises(ValueError, match="twice"):
        repo_sample("dup", [("a.py", "1"), ("a.py", "2")])
    with pytest.raises(ValueError, match="special token"):
        repo_sample("bad", [("a.py", f"s = '{FILE_SEP}'")])
    with pytest.raises(ValueError):
        repo_sample("bad", [("a\nb.py", "")])
