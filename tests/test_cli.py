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


def test_complete_no_compile_and_quantize(tiny):
    """--no-compile runs the one decode path eagerly, with the library's greedy tokens; --quantize int8 runs the
    engine over zhcoder.quant's int8 model, exactly as the library would."""
    from zhcoder.quant import quantize_model

    prompt = "def 加法(a, b):\n    "
    runs = {}
    for flags in (["--no-compile"], ["--quantize", "int8"]):
        result = zhcoder("complete", "--model", tiny, prompt, "-n", "8", "--json", "--dtype", "float32", *flags)
        assert result.returncode == 0, result.stderr
        runs[flags[-1]] = json.loads(result.stdout)["token_ids"]
    params = SamplingParams(max_new_tokens=8, token_healing=True)
    engine = Engine(load_model(tiny, dtype="float32"), Tokenizer.from_dir(tiny))
    assert runs["--no-compile"] == engine.generate([prompt], params)[0].token_ids
    engine = Engine(quantize_model(load_model(tiny, dtype="float32"), "int8"), Tokenizer.from_dir(tiny))
    assert runs["int8"] == engine.generate([prompt], params)[0].token_ids
    gone = zhcoder("complete", "--model", tiny, prompt, "--decode", "plain")          # one decode path: no choice
    assert gone.returncode == 2 and "No such option: --decode" in gone.stderr


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


def test_chat_refuses_an_unknown_template_before_the_first_message(tiny):
    result = zhcoder("chat", "--model", tiny, "--template", "qwen9", stdin="")     # no message is ever sent
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--template must be one of qwen2.5, qwen3, qwen3-coder, not 'qwen9'" in result.stderr


def test_serve_on_a_port_in_use_is_one_line_exit_2():
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = zhcoder("serve", "--model", "/nonexistent", "--port", port)       # refused before any loading
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"zhcoder: error: port {port} on 127.0.0.1 is in use")


def help_text(*verb) -> str:
    from typer.testing import CliRunner

    from zhcoder.cli import app

    result = CliRunner().invoke(app, [*verb, "--help"], terminal_width=400)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_settings_options_are_every_field_with_its_default():
    """A setting is declared once, as a dataclass field: `train pretrain` and `data build` offer each field as an
    option, with its help and its default."""
    import dataclasses

    from zhcoder.data.config import BuildConfig, RunConfig
    from zhcoder.data.filters import FilterConfig
    from zhcoder.train.config import TrainConfig

    train = help_text("train", "pretrain")
    for field in dataclasses.fields(TrainConfig):
        if field.metadata.get("cli") is False:
            continue
        flag = field.metadata.get("flag", "--" + field.name.replace("_", "-")).split("/")[0]
        assert flag in train and field.metadata["help"].split(" (")[0] in train, field.name
    for shown in ("--seq-len <int> tokens per packed sequence [default: 2048]", "[default: 0.95]",
                  "--lora / --full", "[default: full]", "--lr <float> peak learning rate [default: (stage default: "
                  "pretrain 0.0003, sft 2e-05)]", "--config", "--resume-from", "--selective-checkpointing"):
        assert shown in train, shown
    build = help_text("data", "build")
    for cls in (BuildConfig, FilterConfig, RunConfig):
        for field in dataclasses.fields(cls):
            if field.metadata.get("cli") is not False:
                assert field.metadata.get("flag", "--" + field.name.replace("_", "-")) in build, field.name
    for shown in ("--time <str> Slurm time limit per task [default: 04:00:00]", "--max-line-length <int> longest "
                  "line allowed, in characters (0: off) [default: 1000]", "--validation-fraction <float>",
                  "[default: 0.005]", "--no-decontaminate"):
        assert shown in build, shown


def test_a_toml_setting_is_kept_unless_a_flag_is_given(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import zhcoder.train.loop
    from zhcoder.cli import app

    seen = []
    monkeypatch.setattr(zhcoder.train.loop, "train", lambda config, resume: seen.append(config) or {})
    (tmp_path / "run.toml").write_text("steps = 7\nlr = 0.5\nlora_targets = [\"q_proj\"]\n[model]\nhidden_size = 64\n")
    base = ["train", "sft", "--data", "d", "--out", "o", "--model", "m", "--config", str(tmp_path / "run.toml")]
    for extra in ([], ["--lr", "0.25"], ["--lora-targets", "q_proj,v_proj", "--lora"]):
        result = CliRunner().invoke(app, base + extra)
        assert result.exit_code == 0, result.output
    first, flagged, listed = seen
    assert (first.steps, first.lr, first.lora_targets, first.stage) == (7, 0.5, ["q_proj"], "sft")
    assert first.model_overrides == {"hidden_size": 64} and first.batch_size == 8        # the field's default
    assert (flagged.steps, flagged.lr) == (7, 0.25)                                     # the flag wins
    assert listed.lora_targets == ["q_proj", "v_proj"] and listed.lora and not first.lora


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
