"""The `zhcoder` command as a user runs it: a real subprocess per call."""

import json
import subprocess
import sys

import pytest
import torch

from zhcoder.checkpoint import load_model
from zhcoder.engine import Engine, SamplingParams
from zhcoder.tokenizer import Tokenizer

TINY = ["--layers", "2", "--hidden", "64", "--intermediate", "96", "--heads", "4", "--kv-heads", "2",
        "--head-dim", "16"]


def zhcoder(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "zhcoder.cli", *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "tiny"
    result = zhcoder("init", "--preset", "qwen3-0.6b", *TINY, "--dtype", "float32", path)
    assert result.returncode == 0, result.stderr
    return path


def test_init_writes_a_checkpoint_transformers_loads(tiny):
    transformers = pytest.importorskip("transformers")
    peer = transformers.AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    ours = load_model(tiny, dtype="float32")
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert (peer(ids).logits - ours(ids)).abs().max().item() <= 1e-4
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny)
    assert tokenizer("你好，世界")["input_ids"] == Tokenizer.from_dir(tiny).encode("你好，世界")
    assert peer.config.num_hidden_layers == 2 and peer.config.vocab_size == 151936


def test_info_reports_published_parameter_counts():
    result = zhcoder("info", "qwen3-coder-30b-a3b", "--json")
    facts = json.loads(result.stdout)
    assert facts["parameters"] == 30_532_122_624
    assert facts["family"] == "qwen3_moe" and facts["experts"] == 128
    assert facts["active_parameters"] < facts["parameters"] // 8
    assert json.loads(zhcoder("info", "qwen3-0.6b", "--json").stdout)["parameters"] == 596_049_920


def test_complete_json_matches_the_engine(tiny):
    prompt = "def 加法(a, b):\n    "
    result = zhcoder("complete", "--model", tiny, prompt, "-n", "12", "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1  # exactly one JSON object
    out = json.loads(lines[0])
    assert set(out) == {"text", "token_ids", "prompt_tokens", "finish_reason"}
    tokenizer = Tokenizer.from_dir(tiny)
    engine = Engine(load_model(tiny, dtype="float32"), tokenizer)
    expected = engine.generate([prompt], SamplingParams(max_new_tokens=12, token_healing=True))[0]  # the default
    assert out["token_ids"] == expected.token_ids
    assert out["prompt_tokens"] == len(tokenizer.encode(prompt))
    assert out["finish_reason"] == expected.finish_reason
    stop_ids = set(tokenizer.stop_token_ids)
    healed = tokenizer.decode(tokenizer.encode(prompt)[-1:])        # the prompt's last token, which the text omits
    generated = [t for t in out["token_ids"] if t not in stop_ids and t < tokenizer.vocab_size]
    assert healed + out["text"] == tokenizer.decode(generated)
    literal = zhcoder("complete", "--model", tiny, prompt, "-n", "12", "--json", "--no-token-healing")
    literal = json.loads(literal.stdout)
    assert literal["token_ids"] == engine.generate([prompt], SamplingParams(max_new_tokens=12))[0].token_ids
    assert literal["text"] == tokenizer.decode([t for t in literal["token_ids"] if t not in stop_ids
                                                and t < tokenizer.vocab_size])


def test_complete_decode_paths_and_quantize(tiny):
    """--decode fast gives the plain path's greedy tokens; --quantize int8 runs the engine over zhcoder.quant's
    int8 model, exactly as the library would."""
    from zhcoder.quant import quantize_model

    prompt = "def 加法(a, b):\n    "
    runs = {}
    for flags in (["--decode", "plain"], ["--decode", "fast", "--no-compile"], ["--quantize", "int8"]):
        result = zhcoder("complete", "--model", tiny, prompt, "-n", "8", "--json", "--dtype", "float32", *flags)
        assert result.returncode == 0, result.stderr
        runs[flags[-1]] = json.loads(result.stdout)["token_ids"]
    assert runs["--no-compile"] == runs["plain"]
    engine = Engine(quantize_model(load_model(tiny, dtype="float32"), "int8"), Tokenizer.from_dir(tiny))
    assert runs["int8"] == engine.generate([prompt], SamplingParams(max_new_tokens=8, token_healing=True))[0].token_ids


def test_complete_reads_file_and_stdin_and_streams(tiny, tmp_path):
    file = tmp_path / "prompt.py"
    file.write_text("import os\n")
    by_file = json.loads(zhcoder("complete", "--model", tiny, "--file", file, "-n", "5", "--json").stdout)
    by_stdin = json.loads(zhcoder("complete", "--model", tiny, "-n", "5", "--json", stdin="import os\n").stdout)
    assert by_file == by_stdin
    streamed = zhcoder("complete", "--model", tiny, "-n", "5", stdin="import os\n")
    assert streamed.returncode == 0 and streamed.stdout == by_file["text"] + "\n"


def test_fim_uses_qwen_fim_tokens(tiny):
    out = json.loads(zhcoder("fim", "--model", tiny, "--prefix", "def f(x):\n    ", "--suffix", "\n    return y",
                             "-n", "4", "--json").stdout)
    tokenizer = Tokenizer.from_dir(tiny)
    prompt = "<|fim_prefix|>def f(x):\n    <|fim_suffix|>\n    return y<|fim_middle|>"
    assert out["prompt_tokens"] == len(tokenizer.encode(prompt))
    assert tokenizer.encode(prompt)[0] == 151659


def test_chat_streams_and_handles_commands(tiny):
    result = zhcoder("chat", "--model", tiny, "-n", "4", stdin="你好\n/system 你是助手\n写个函数\n/reset\n/exit\n")
    assert result.returncode == 0, result.stderr
    assert "(system prompt set; conversation cleared)" in result.stdout
    assert "(conversation cleared)" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["complete", "--model", "/nonexistent", "x"], "model folder not found"),
    (["complete", "--model", "TINY", "x", "--temperature", "-1"], "temperature must be >= 0"),
    (["complete", "--model", "TINY", "x", "-n", "100000"], "exceeds the model's context"),
    (["complete", "--bogus"], "No such option: --bogus"),
    (["fim", "--model", "TINY"], "fim needs --prefix"),
    (["init", "--preset", "qwen9-1b", "OUT"], "unknown preset 'qwen9-1b'"),
    (["info", "/nonexistent"], "model folder not found"),
])
def test_user_errors_are_one_line_exit_2(tiny, tmp_path, args, message):
    args = [str(tiny) if a == "TINY" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    result = zhcoder(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("zhcoder: error: ")
    assert message in result.stderr and "Traceback" not in result.stderr


def test_corrupt_weights_are_one_line(tiny, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((tiny / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    result = zhcoder("complete", "--model", broken, "x")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "not a readable safetensors file" in result.stderr
