"""The embedded default model, zhcoder-nano (models/zhcoder-nano): every model command uses it when no --model is
given (from a clone and from an installed wheel), transformers loads it and gives the same logits, and greedy
completion of a function prompt parses."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
import torch

from zhcoder.chat import builtin_template, render_chat
from zhcoder.checkpoint import EMBEDDED_MODEL, load_model
from zhcoder.tokenizer import Tokenizer

ENV = {k: v for k, v in os.environ.items() if k != "ZHCODER_MODEL"}      # a fresh machine: nothing configured
ROOT = Path(__file__).resolve().parents[1]
PROMPT = "def 计算订单总价(订单列表):"


def zhcoder(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "zhcoder.cli", *map(str, args)], input=stdin, capture_output=True,
                          text=True, timeout=300, env=ENV)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, seconds: float = 120) -> bytes:
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert process.poll() is None, process.stderr.read()
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {seconds} s")


def test_the_embedded_model_is_small_and_in_hf_layout():
    names = {p.name for p in EMBEDDED_MODEL.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"} <= names
    assert (EMBEDDED_MODEL / "model.safetensors").stat().st_size <= 40 * 10**6          # bf16 weights <= 40 MB
    config = json.loads((EMBEDDED_MODEL / "config.json").read_text())
    assert config["model_type"] == "qwen3" and config["torch_dtype"] == "bfloat16"


def test_model_commands_run_without_model_flag(tmp_path):
    info = zhcoder("info", "--json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["model"] == str(EMBEDDED_MODEL)
    complete = zhcoder("complete", PROMPT, "-n", "24", "--json")
    assert complete.returncode == 0, complete.stderr
    assert json.loads(complete.stdout)["text"].startswith("\n")        # healed by default: no "):" repeated
    fim = zhcoder("fim", "--prefix", "def 加法(a, b):\n    ", "--suffix", "\n    return c\n", "-n", "12", "--json")
    assert fim.returncode == 0 and json.loads(fim.stdout)["prompt_tokens"] > 0, fim.stderr
    chat = zhcoder("chat", "-n", "12", stdin="写一个加法函数\n")
    assert chat.returncode == 0 and chat.stdout.strip(), chat.stderr
    evaluated = zhcoder("eval", "humaneval", "--limit", "2", "--max-new-tokens", "48", "--out", tmp_path / "he",
                        "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    summary = json.loads(evaluated.stdout)
    assert summary["n_tasks"] == 2 and "zhcoder-nano" in summary["subject"]


def test_an_installed_wheel_carries_the_embedded_model(tmp_path):
    """`pip install .` (not editable) puts zhcoder-nano under <prefix>/share/zhcoder, and the commands find it."""
    source = tmp_path / "src"                       # built from a copy: pip builds in the tree it is given
    for name in ("zhcoder", "models"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", tmp_path / "wheel", source], check=True, timeout=300)
    wheel = next((tmp_path / "wheel").glob("zhcoder-*.whl"))
    with zipfile.ZipFile(wheel) as archive:         # `pip install 'zhcoder[all]'` installs every other user extra
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    [everything] = re.findall(r'^Requires-Dist: zhcoder\[([^\]]+)\]; extra == "all"$', metadata, re.M)
    assert set(everything.split(",")) == set(re.findall(r"^Provides-Extra: (\S+)$", metadata, re.M)) - {"all", "test"}
    subprocess.run([*pip, "install", "--no-deps", "--ignore-installed", "--prefix", tmp_path / "prefix", wheel],
                   check=True, timeout=300)                 # into the empty prefix, whatever else is installed
    site = next((tmp_path / "prefix").glob("lib/python*/site-packages"))
    env = ENV | {"PYTHONPATH": str(site)}
    run = lambda *args: subprocess.run([sys.executable, "-m", "zhcoder.cli", *args], capture_output=True, text=True,
                                       timeout=300, env=env, cwd=tmp_path)
    info = run("info", "--json")
    assert info.returncode == 0, info.stderr
    installed = tmp_path / "prefix" / "share" / "zhcoder" / "models" / "zhcoder-nano"
    assert json.loads(info.stdout)["model"] == str(installed.resolve())
    assert {p.name for p in installed.iterdir()} == {p.name for p in EMBEDDED_MODEL.iterdir()}
    complete = run("complete", PROMPT, "-n", "8", "--json")
    assert complete.returncode == 0 and json.loads(complete.stdout)["text"], complete.stderr


def test_serve_and_demo_run_without_model_flag():
    import openai

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "zhcoder.cli", "serve", "--port", str(port)], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", server)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["zhcoder-nano"]
        reply = client.completions.create(model="zhcoder-nano", prompt=PROMPT, max_tokens=8, temperature=0)
        assert reply.usage.completion_tokens >= 1
    finally:
        server.terminate()
        server.wait(30)
    port = free_port()
    demo = subprocess.Popen([sys.executable, "-m", "zhcoder.cli", "demo", "--port", str(port)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        page = wait_for(f"http://127.0.0.1:{port}/", demo).decode("utf-8", "replace")
        assert "gradio" in page.lower()                  # it loaded the model (else it exits with an error) and serves
    finally:
        demo.terminate()
        demo.wait(30)


def test_transformers_loads_it_with_the_same_logits_and_tokens():
    transformers = pytest.importorskip("transformers")
    text = "def 计算订单总价(订单列表):\n    总价 = 0\n    for 订单 in 订单列表:\n        总价 += 订单['价格']  # 累加，返回。\n"
    peer_tokenizer = transformers.AutoTokenizer.from_pretrained(EMBEDDED_MODEL)
    ours_tokenizer = Tokenizer.from_dir(EMBEDDED_MODEL)
    ids = ours_tokenizer.encode(text)
    assert peer_tokenizer(text)["input_ids"] == ids
    # its chat template is the one its SFT data was rendered with (recipes/nano/build_corpus.py: qwen3), and
    # transformers renders a conversation with it as zhcoder does
    assert ours_tokenizer.chat_template == builtin_template("qwen3")
    messages = [{"role": "user", "content": "写一个加法函数"}]
    assert peer_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
        render_chat(messages, template=ours_tokenizer.chat_template)
    peer = transformers.AutoModelForCausalLM.from_pretrained(EMBEDDED_MODEL, dtype=torch.float32).eval()
    ours = load_model(EMBEDDED_MODEL, dtype="float32")
    with torch.no_grad():
        # transformers 5.24's first forward after from_pretrained, on CPU, now and then (3 of 12 runs of this
        # file, 1 of 20 bare processes with our model loaded too) differs from its later ones by ~2e-3 from layer 0
        # on; ours equals the later ones, so the comparison is with transformers' second call
        peer(torch.tensor([ids]))
        expected, got = peer(torch.tensor([ids])).logits, ours(torch.tensor([ids]))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


INTERIM = "**Interim weights.**" in (EMBEDDED_MODEL / "README.md").read_text(encoding="utf-8")


@pytest.mark.xfail(INTERIM, strict=True, reason="the card says these are interim weights, shipped although they fail "
                   "this test; weights shipped as final must pass it, and an interim model that passes (XPASS) fails")
def test_greedy_completion_of_a_function_prompt_parses():
    """recipes/nano/smoke.py: greedy completions of a bare Chinese `def` and of a documented `add` stop by themselves
    (HumanEval's stop strings, 128 tokens) and parse with their prompts."""
    for prompt, text, problem in recipe("smoke").check(EMBEDDED_MODEL):
        assert problem is None, f"{problem}:\n{prompt}{text}"


def recipe(name: str):
    """A script of recipes/nano as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "recipes" / "nano" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_recipe_mines_chat_pairs_and_plain_completions():
    """synth_sft.py turns a documented function into a fenced chat answer and two unfenced prompt-completion rows
    that put the function back together (one group, so one split), so SFT does not teach fences to plain
    completion; multi-line signatures, decorators, CRLF files and form feeds cut at the right lines."""
    synth_sft = recipe("synth_sft")
    function = ('def 合计(订单列表, 折扣=1.0):\n    """计算订单列表的总价，再乘以折扣。\n\n    订单是 (单价, 数量) 元组。\n    """\n'
                '    总价 = sum(单价 * 数量 for 单价, 数量 in 订单列表)\n    return 总价 * 折扣\n')
    rows = list(synth_sft.rows_of(Path("shop.py"), "import math\n\n\n" + function + "\n\ndef _private():\n    pass\n"))
    chat, *completions = rows
    assert chat["lang"] == "zh" and chat["messages"][1]["content"] == f"```python\n{function.rstrip()}\n```"
    assert "`def 合计(订单列表, 折扣=1.0)`" in chat["messages"][0]["content"]
    assert [row["prompt"] + row["completion"] for row in completions] == [function, function]
    assert [row["prompt"] for row in completions] == [function[:function.index("    总价")], function.split("\n")[0] + "\n"]
    assert not any("```" in row["completion"] for row in completions)
    assert {row["group"] for row in rows} == {"shop.py:4"}

    signature = "@cache\ndef scale(values,\n          factor=2):\n"
    docstring = '    """Multiply every value by the factor,\f keeping their order."""\n'
    body = "    result = [v * factor for v in values]\n    return result\n"
    only_doc = 'def documented_only(x):\n    """Only a docstring here,\n\n    nothing else at all.\n    """\n'
    text = (signature + docstring + body + "\n\n" + only_doc).replace("\n", "\r\n")
    rows = list(synth_sft.rows_of(Path("lib.py"), text))
    assert [("messages" in row, row["id"]) for row in rows] == [
        (True, "lib.py:2"), (False, "lib.py:2:body"), (False, "lib.py:2:docstring+body"), (True, "lib.py:9")]
    assert [(row["prompt"], row["completion"]) for row in rows[1:3]] == [
        (signature[7:] + docstring, body), (signature[7:], docstring + body)]
