"""`zhcoder train` as a user runs it: data build -> pretrain -> data sft -> sft -> generate; exact resume after
SIGKILL; FSDP2 under torchrun (2 CPU processes, gloo) against one process; checkpoints and errors.

Tiny models over a tokenizer trained on the test corpus (a few hundred tokens), so each run takes seconds.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from zhcoder.chat import render_chat
from zhcoder.checkpoint import load_model
from zhcoder.engine import Engine, SamplingParams
from zhcoder.tokenizer import Tokenizer

TINY = """\
seq_len = 128
batch_size = 4
lr = 1e-2
warmup_steps = 4
eval_batches = 2

[model]
vocab_size = 448
hidden_size = 64
intermediate_size = 128
num_attention_heads = 4
num_key_value_heads = 2
head_dim = 16
num_hidden_layers = 2
"""
ANSWER = "def 加倍(数据):\n    return [x * 2 for x in 数据]"
QUESTION = "写一个函数，把列表里的每个数乘以二。"


def zhcoder(*args, timeout=600, **kwargs):
    return subprocess.run([sys.executable, "-m", "zhcoder.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "loss" in line
            and "val_loss" not in line]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    for i in range(30):
        functions = [f"def 函数_{i}_{j}(数据, factor={int(rng.integers(1, 9))}):\n"
                     f"    \"\"\"把数据乘以系数，返回列表。\"\"\"\n    return [x * factor for x in 数据]\n" for j in range(6)]
        path = root / "src" / f"m{i}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text("\n".join(functions), encoding="utf-8")
    ok(zhcoder("tokenizer", "train", root / "src", "--vocab-size", "400", "--out", root / "tok"))
    ok(zhcoder("data", "build", root / "src", "--tokenizer", root / "tok", "--out", root / "data", "--tasks", "2",
               "--no-decontaminate", "--no-dedup", "--validation-fraction", "0.1"))
    (root / "tiny.toml").write_text(TINY)
    return root


def pretrain(corpus, out, *extra, **kwargs):
    return zhcoder("train", "pretrain", "--data", corpus / "data", "--out", out, "--preset", "qwen3-0.6b",
                   "--tokenizer", corpus / "tok", "--config", corpus / "tiny.toml", *extra, **kwargs)


def test_pretrain_then_sft_then_generate(corpus, tmp_path):
    run = tmp_path / "pretrain"
    result = ok(pretrain(corpus, run, "--steps", "40", "--save-every", "20", "--eval-every", "20"))
    assert "step 40/40" in result.stdout
    losses = [m["loss"] for m in metrics(run)]
    assert len(losses) == 40 and losses[-1] < 0.25 * losses[0]                  # it learns the corpus
    config = json.loads((run / "config.json").read_text())
    assert config["lr"] == 1e-2 and config["model_overrides"]["hidden_size"] == 64 and config["stage"] == "pretrain"
    val = [json.loads(line)["val_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
           if "val_loss" in line]
    assert len(val) == 2 and val[-1] < val[0]
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"step-0000020", "step-0000040"}
    assert load_model(run / "final").config.num_hidden_layers == 2

    # SFT on chat data rendered with the ChatML template, loss on the answers only.
    rows = [{"messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]}] * 16
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    ok(zhcoder("data", "sft", tmp_path / "chat.jsonl", "--tokenizer", run / "final", "--out", tmp_path / "sft-data",
               "--template", "qwen3", "--val-fraction", "0"))
    sft = tmp_path / "sft"
    ok(zhcoder("train", "sft", "--data", tmp_path / "sft-data", "--model", run / "final", "--out", sft,
               "--seq-len", "256", "--batch-size", "2", "--steps", "40", "--lr", "5e-3", "--warmup-steps", "3",
               "--save-every", "40"))
    assert metrics(sft)[-1]["loss"] < 0.1 * metrics(sft)[0]["loss"]
    model, tokenizer = load_model(sft / "final", dtype="float32"), Tokenizer.from_dir(sft / "final")
    prompt = render_chat([{"role": "user", "content": QUESTION}], template="qwen3", add_generation_prompt=True,
                         enable_thinking=False)
    (completion,) = Engine(model, tokenizer).generate([prompt], SamplingParams(max_new_tokens=40))
    assert completion.text.strip() == ANSWER and completion.finish_reason == "stop"


def test_resume_after_sigkill_continues_exactly(corpus, tmp_path):
    args = ("--steps", "16", "--save-every", "3", "--eval-every", "100")
    # one thread: with two, the processes' gradients differed at step 1 by ~1e-5 (relative) on a loaded machine,
    # before any resume (likely a multithreaded reduction's order); bit-exactness is asserted across processes
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}
    ok(pretrain(corpus, tmp_path / "whole", *args, env=one_thread))
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "zhcoder.cli", "train", "pretrain", "--data", corpus / "data",
                                "--out", killed, "--preset", "qwen3-0.6b", "--tokenizer", corpus / "tok",
                                "--config", corpus / "tiny.toml", *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=one_thread)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if (killed / "metrics.jsonl").exists() and len(metrics(killed)) >= 8:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    stopped_at = len(metrics(killed))
    assert 8 <= stopped_at < 16, stopped_at
    result = ok(pretrain(corpus, killed, *args, "--resume", env=one_thread))
    assert "resumed from" in result.stdout
    whole, resumed = metrics(tmp_path / "whole"), metrics(killed)
    assert [m["step"] for m in resumed] == list(range(1, 17))
    assert [(m["loss"], m["grad_norm"], m["lr"]) for m in resumed] == [(m["loss"], m["grad_norm"], m["lr"])
                                                                       for m in whole]


def torchrun(corpus, out, *extra):
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "zhcoder.cli", "train", "pretrain", "--data", corpus / "data", "--out", out,
                             "--preset", "qwen3-0.6b", "--tokenizer", corpus / "tok", "--config", corpus / "tiny.toml",
                             *extra], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_fsdp2_under_torchrun_matches_one_process_and_resumes_from_shards(corpus, tmp_path):
    common = ("--steps", "6", "--save-every", "3", "--eval-every", "6")
    ok(pretrain(corpus, tmp_path / "one", *common, "--batch-size", "4"))
    torchrun(corpus, tmp_path / "two", *common, "--batch-size", "2")
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert len(one) == len(two) == 6
    for a, b in zip(one, two):
        assert a["tokens"] == b["tokens"]
        assert abs(a["loss"] - b["loss"]) < 1e-4 and abs(a["grad_norm"] - b["grad_norm"]) < 1e-3 * a["grad_norm"]
    # the sharded run's checkpoint is a whole HF model, the same as the single process's up to float noise
    import torch

    a, b = load_model(tmp_path / "one" / "final", dtype="float32"), load_model(tmp_path / "two" / "final",
                                                                                  dtype="float32")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-4), name
    # each process wrote its own shards; resuming from them (step 3) replays steps 4-6 exactly
    step3 = tmp_path / "two" / "checkpoints" / "step-0000003"
    assert len(list((step3 / "sharded").glob("*.safetensors"))) == 2
    assert len(list((step3 / "optimizer").glob("*.safetensors"))) == 2
    shutil.rmtree(tmp_path / "two" / "checkpoints" / "step-0000006")
    torchrun(corpus, tmp_path / "two", *common, "--batch-size", "2", "--resume")
    assert [(m["loss"], m["grad_norm"]) for m in metrics(tmp_path / "two")] == [(m["loss"], m["grad_norm"]) for m in two]


def test_a_time_limit_shortens_the_schedule_to_fit_then_stops_hard(corpus, tmp_path):
    fitted = tmp_path / "fitted"
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}   # a busy machine's cores slow 2 threads 50x, not 1
    result = ok(pretrain(corpus, fitted, "--steps", "100000", "--time-limit", "5", "--eval-every", "100000",
                         "--save-every", "100000", env=one_thread))
    assert "steps fit; the schedule now ends there" in result.stdout
    records = [json.loads(line) for line in (fitted / "metrics.jsonl").read_text().splitlines()]
    fit = next(r["steps_fitted"] for r in records if "steps_fitted" in r)
    steps = metrics(fitted)
    assert 20 < fit < 100000 and len(steps) <= fit
    assert steps[-1]["lr"] < 0.5 * 1e-2                  # the cosine ran (nearly) to its end, not cut at its peak
    assert load_model(fitted / "final").config.num_hidden_layers == 2
    stopped = tmp_path / "stopped"
    result = ok(pretrain(corpus, stopped, "--steps", "100000", "--time-limit", "0.001", "--save-every", "100000"))
    assert "time limit of 0 s reached at step 1 of 100000" in result.stdout and (stopped / "final").is_dir()
    records = [json.loads(line) for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 1, "stopped": "time_limit", "steps_planned": 100000} in records
    assert [r["step"] for r in records if "val_loss" in r] == [1] and len(metrics(stopped)) == 1
    assert pretrain(corpus, tmp_path / "bad", "--time-limit", "-1").stderr.count("time_limit must be") == 1


def test_a_validation_split_smaller_than_one_batch_is_still_scored(corpus, tmp_path):
    validation = json.loads((corpus / "data" / "validation" / "index.json").read_text())["n_tokens"]
    batch = 2 * validation // 128 + 1                    # one batch of 128-token rows holds the split twice over
    result = ok(pretrain(corpus, tmp_path / "run", "--steps", "2", "--batch-size", batch, "--eval-every", "2"))
    assert "step 2 | validation loss" in result.stdout
    assert "warning: --steps 2 ends inside the warm-up (--warmup-steps 4)" in result.stderr   # tiny.toml's warm-up


def test_code_aware_attention_trains_and_is_saved(corpus, tmp_path):
    run = tmp_path / "code"
    ok(pretrain(corpus, run, "--steps", "8", "--save-every", "8", "--code-aware-attention"))
    model = load_model(run / "final", dtype="float32")
    assert model.config.code_aware_attention
    assert any(layer.self_attn.code_bias.abs().sum() > 0 for layer in model.model.layers)
    assert int(model.model.code_token_class.max()) > 0


def test_a_corrupt_checkpoint_and_bad_inputs_get_one_error_line(corpus, tmp_path):
    run = tmp_path / "run"
    ok(pretrain(corpus, run, "--steps", "4", "--save-every", "2"))
    optimizer = run / "checkpoints" / "step-0000004" / "optimizer.safetensors"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    corrupt = pretrain(corpus, run, "--steps", "6", "--save-every", "2", "--resume")
    assert corrupt.returncode == 2 and corrupt.stderr.count("\n") == 1 and "corrupt" in corrupt.stderr
    again = pretrain(corpus, run, "--steps", "6")
    assert again.returncode == 2 and "--resume" in again.stderr
    nothing = pretrain(corpus, tmp_path / "none", "--resume")
    assert nothing.returncode == 2 and "nothing to resume" in nothing.stderr
    mismatch = zhcoder("train", "pretrain", "--data", corpus / "data", "--out", tmp_path / "qwen", "--preset",
                       "qwen3-0.6b", "--config", corpus / "tiny.toml")        # the Qwen tokenizer, not the data's
    assert mismatch.returncode == 2 and mismatch.stderr.count("\n") == 1 and "rebuild the data" in mismatch.stderr
    no_data = zhcoder("train", "sft", "--data", tmp_path / "missing", "--out", tmp_path / "x", "--model", run / "final")
    assert no_data.returncode == 2 and "data" in no_data.stderr


def test_selective_checkpointing_recomputes_no_matmul_and_changes_nothing():
    """Backward under each checkpointing mode: same loss and gradients; "full" recomputes the layers' matrix
    products and attention, "selective" recomputes only element-wise ops (the norms' rsqrt, SwiGLU's silu)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from zhcoder.config import ModelConfig
    from zhcoder.model import QwenForCausalLM, init_weights

    class CountOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.counts = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            self.counts[name] = self.counts.get(name, 0) + 1
            return func(*args, **(kwargs or {}))

    config = ModelConfig(model_type="qwen3", vocab_size=300, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    generator = torch.Generator().manual_seed(0)
    ids, labels = (torch.randint(0, 300, (2, 64), generator=generator) for _ in range(2))
    runs = {}
    for mode in (False, "selective", "full"):
        model = QwenForCausalLM(config)
        init_weights(model, seed=0)
        model.train().gradient_checkpointing = mode
        loss = model(ids, labels=labels)
        with CountOps() as ops:
            loss.backward()
        runs[mode] = loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()]), ops.counts
    (loss, grads, plain), (_, _, selective), (_, _, full) = runs[False], runs["selective"], runs["full"]
    for mode in ("selective", "full"):
        assert runs[mode][0] == loss and torch.equal(runs[mode][1], grads)
    attention = next(name for name in plain if name.startswith("_scaled_dot_product") and name.endswith("backward"))
    forward_attention = attention.removesuffix("_backward")
    assert selective["mm"] == plain["mm"] and forward_attention not in selective and "rsqrt" in selective
    assert full["mm"] > plain["mm"] and full[forward_attention] == config.num_hidden_layers
