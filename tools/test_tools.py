"""Checks of the GPU-session tooling in tools/, on CPU. Not part of the default test run (pytest collects tests/
only): run them before taking a script to a lent GPU.

    python -m pytest -q -n 0 tools/test_tools.py
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from zhcoder.checkpoint import EMBEDDED_MODEL, save_model
from zhcoder.code_bias import enable_code_aware_attention
from zhcoder.config import ModelConfig
from zhcoder.model import QwenForCausalLM, init_weights
from zhcoder.tokenizer import Tokenizer

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
CPU = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def tool(*args: object, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=check, env=CPU)


def test_the_suite_runs_every_part_tiny_and_goes_on_where_it_stopped(tmp_path):
    out = tmp_path / "suite.json"
    done = tool(TOOLS / "gpu_suite.py", "--tiny", "--out", out, "--compile-cache", tmp_path / "none-yet.bin",
                check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert {"copy_bandwidth", "decode", "prefill", "train", "profile"} <= {r["part"] for r in results}
    errors = [r["error"] for r in results if "error" in r]       # timing noise at tiny shapes is recorded, not fatal
    assert all(error.startswith("t(N tokens) <= t(1 token)") for error in errors), errors
    profile = next(r for r in results if r["part"] == "profile")
    assert profile["top"] and sum(k["share"] for k in profile["top"]) <= 1.0001 and profile["launches_per_token"] > 0
    decode = [r for r in results if r["part"] == "decode" and "tok_s" in r]
    assert {r["system"] for r in decode} >= {"zhcoder", "transformers eager", "transformers static", "zhcoder int8",
                                             "zhcoder cuBLAS", "zhcoder whole graph"}
    first = {r["system"]: r["first_tokens"] for r in decode if r["batch"] == 1 and "8b" in r["shape"]}
    assert first["zhcoder whole graph"] == first["zhcoder"]                 # greedy: the same tokens every way
    assert first["zhcoder"][:len(first["transformers eager"])] == first["transformers eager"]
    assert {r["system"] for r in results if r["part"] == "train"} == {"eager", "compiled per layer"}
    assert "| shape |" in done.stdout

    entries = tool(TOOLS / "gpu_suite.py", "--tiny", "--list", "--out", tmp_path / "unused.json").stdout.split("\n")
    assert entries[:3] == ["decode/qwen3-8b/zhcoder/1", "decode/qwen3-8b/transformers eager/1",
                           "decode/qwen3-8b/transformers static/1"]
    prewarm = tmp_path / "prewarm.json"                          # the first compiling entry, in a process of its own
    tool(TOOLS / "gpu_prewarm.py", "--jobs", "1", "--limit", "1", "--out", prewarm, "--tiny", timeout=120)
    [warmed] = json.loads(prewarm.read_text())["results"]
    assert warmed["entry"] == "decode/qwen3-8b/zhcoder/1" and warmed["rc"] == 0 and warmed["warmup_s"] is not None
    again = tmp_path / "again.json"                              # everything measured is skipped
    tool(TOOLS / "gpu_suite.py", "--tiny", "--out", again, "--skip-done", out, "--only", "decode/qwen3-8b/zhcoder/1",
         "prefill/qwen3-8b//1", "--prewarmed", prewarm, timeout=120)
    again = json.loads(again.read_text())
    assert again["meta"]["prewarmed"] == ["decode/qwen3-8b/zhcoder/1"]
    assert [(r["part"], r.get("skipped")) for r in again["results"]] == [("decode", "done in --skip-done"),
                                                                         ("prefill", "done in --skip-done")]


def test_an_arm_packed_there_unpacks_here_to_the_same_checkpoint(tmp_path, monkeypatch):
    """nano_pack.py (there) -> pieces -> --unpack (here): the bf16 weights bit for bit, the code-aware class buffer
    (uint8) as it was, the config and the runs' metrics; the pieces smaller than the device tool's files."""
    from safetensors.torch import load_file

    tokenizer = Tokenizer.from_dir(EMBEDDED_MODEL)
    model = QwenForCausalLM(ModelConfig(vocab_size=16512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                        tie_word_embeddings=True))
    init_weights(model, std=0.02, seed=1)
    enable_code_aware_attention(model, tokenizer)
    runs = tmp_path / "runs" / "bias"
    save_model(model, runs / "stage2" / "final", tokenizer=tokenizer)
    for stage in ("stage1", "stage2"):
        (runs / stage).mkdir(exist_ok=True)
        (runs / stage / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 9.7}) + "\n")
        (runs / stage / "config.json").write_text(json.dumps({"stage": stage}))
    spec = importlib.util.spec_from_file_location("nano_pack", TOOLS / "nano_pack.py")
    pack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pack)
    monkeypatch.setattr(pack, "PIECE", 256 * 1024)
    out = tmp_path / "out"
    out.mkdir()
    pack.pack(runs / "stage2" / "final", "bias", runs, out)
    pieces = sorted(out.iterdir())
    assert len(pieces) > 1 and all(piece.stat().st_size <= 256 * 1024 for piece in pieces)
    folder = pack.unpack(out, "bias", tmp_path / "here")
    original = load_file(runs / "stage2" / "final" / "model.safetensors")
    unpacked = load_file(folder / "model.safetensors")
    assert unpacked.keys() == original.keys()
    for name, tensor in original.items():
        expected = tensor.to(torch.bfloat16) if tensor.is_floating_point() else tensor
        assert unpacked[name].dtype == expected.dtype and torch.equal(unpacked[name], expected), name
    assert unpacked["model.code_token_class"].dtype == torch.uint8
    assert json.loads((folder / "config.json").read_text())["code_aware_attention"] is True
    assert (folder / "runs" / "stage1" / "metrics.jsonl").read_text() == (runs / "stage1" / "metrics.jsonl").read_text()
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "generation_config.json", "model.safetensors",
                                                        "packed_from.txt", "runs"]
    assert (folder / "packed_from.txt").read_text().strip() == str(runs / "stage2" / "final")   # which checkpoint
