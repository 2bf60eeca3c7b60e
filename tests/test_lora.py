"""LoRA through PEFT: zhcoder's adapters load in transformers + peft, theirs load in zhcoder, merging is exact."""

import json
import re
import subprocess
import sys

import pytest
import torch

from zhcoder.checkpoint import load_model, save_model
from zhcoder.config import ModelConfig
from zhcoder.engine import Engine, SamplingParams
from zhcoder.model import QwenForCausalLM, init_weights
from zhcoder.tokenizer import Tokenizer
from zhcoder.train.lora import DEFAULT_TARGETS, load_adapter

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def zhcoder(*args, ok=True):
    result = subprocess.run([sys.executable, "-m", "zhcoder.cli", *map(str, args)], capture_output=True, text=True,
                            timeout=600)
    assert (result.returncode == 0) == ok, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny random Qwen2 base (q/k/v biases) and a LoRA adapter trained on it by `zhcoder train sft --lora`."""
    root = tmp_path_factory.mktemp("lora")
    config = ModelConfig(model_type="qwen2", vocab_size=151936, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, attention_bias=True,
                         tie_word_embeddings=True, torch_dtype="float32")
    model = QwenForCausalLM(config)
    init_weights(model, std=0.05, seed=0)
    save_model(model, root / "base", tokenizer=Tokenizer.qwen())
    rows = [{"instruction": f"把 {i} 乘以二", "output": f"print({i} * 2)"} for i in range(8)]
    (root / "chat.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    zhcoder("data", "sft", root / "chat.jsonl", "--tokenizer", root / "base", "--out", root / "data", "--template",
            "qwen2.5", "--val-fraction", "0")
    run = zhcoder("train", "sft", "--model", root / "base", "--data", root / "data", "--out", root / "run", "--lora",
            "--lora-r", "4", "--lora-alpha", "8", "--steps", "4", "--lr", "2e-2", "--warmup-steps", "1",
            "--seq-len", "128", "--batch-size", "2", "--save-every", "2")          # two saves: the second
    assert sorted(p.name for p in (root / "run" / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    assert re.search(r"parameters \(LoRA: [\d,]+ trainable, \d+\.\d\d%\)", run.stdout), run.stdout   # the header
    modes = {p.name: p.stat().st_mode & 0o777 for p in (root / "run" / "checkpoints" / "step-0000004").iterdir()
             if p.is_file()}                       # adapter, optimizer and rng files: as readable as the JSON files
    assert "adapter_model.safetensors" in modes and len(set(modes.values())) == 1, modes
    return root


IDS = torch.tensor([[151644, 872, 198, 100431, 220, 16, 220, 105256, 99380, 151645, 198, 151644, 77091, 198]])


def hf_logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_zhcoder_adapter_loads_in_transformers_and_peft(trained):
    adapter = trained / "run" / "final"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8 and set(config["target_modules"]) == set(DEFAULT_TARGETS)
    ours = load_adapter(load_model(trained / "base", dtype="float32"), adapter).eval()
    base = transformers.AutoModelForCausalLM.from_pretrained(trained / "base", dtype=torch.float32)
    plain = hf_logits(base)
    theirs = peft.PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        mine = ours(IDS)
    torch.testing.assert_close(mine, hf_logits(theirs), atol=1e-5, rtol=1e-4)
    assert (mine - plain).abs().max() > 1e-3                      # the trained adapter changes the model


def test_transformers_peft_adapter_loads_in_zhcoder(trained, tmp_path):
    base = transformers.AutoModelForCausalLM.from_pretrained(trained / "base", dtype=torch.float32)
    lora = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                           init_lora_weights=False)                 # random A and B: a non-trivial adapter
    torch.manual_seed(0)
    theirs = peft.get_peft_model(base, lora).eval()
    theirs.save_pretrained(tmp_path / "hf-adapter")
    ours = load_adapter(load_model(trained / "base", dtype="float32"), tmp_path / "hf-adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(IDS), hf_logits(theirs), atol=1e-5, rtol=1e-4)


def test_merged_checkpoint_gives_the_adapter_on_logits(trained):
    merged = zhcoder("lora", "merge", trained / "base", trained / "run" / "final", trained / "merged", "--dtype",
                     "float32")
    assert f"wrote {trained / 'merged'}: " in merged.stdout and "model.safetensors" in merged.stdout
    assert "(float32 weights of" in merged.stdout                          # says what it wrote
    ours = load_adapter(load_model(trained / "base", dtype="float32"), trained / "run" / "final").eval()
    merged = load_model(trained / "merged", dtype="float32")
    with torch.no_grad():
        expected = ours(IDS)
        torch.testing.assert_close(merged(IDS), expected, atol=1e-5, rtol=1e-4)
    hf = transformers.AutoModelForCausalLM.from_pretrained(trained / "merged", dtype=torch.float32)
    torch.testing.assert_close(hf_logits(hf), expected, atol=1e-5, rtol=1e-4)
    assert not list(trained.joinpath("merged").glob("adapter_*"))
    from zhcoder.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match=r"holds a LoRA adapter, not a model: .*`zhcoder lora merge BASE "):
        load_model(trained / "run" / "final")                    # what `--model runs/sft/final` says


def test_an_adapter_folder_serves_as_a_model(trained, tmp_path):
    """`--model RUN/final`, a LoRA adapter folder: its base (recorded by training) with the adapter merged, the
    model that `lora merge` writes; the CLI completes with it. An adapter whose base is gone says to merge."""
    adapter = trained / "run" / "final"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((trained / "base").resolve())
    engine = Engine.from_dir(adapter, dtype="float32")
    ours = load_adapter(load_model(trained / "base", dtype="float32"), adapter).eval()
    with torch.no_grad():
        torch.testing.assert_close(engine.model(IDS), ours(IDS), atol=1e-5, rtol=1e-4)
    completed = json.loads(zhcoder("complete", "--model", adapter, "def f(x):", "-n", "4", "--json",
                                   "--dtype", "float32").stdout)
    assert completed["token_ids"] == engine.generate(["def f(x):"], SamplingParams(max_new_tokens=4,
                                                                                   token_healing=True))[0].token_ids
    moved = tmp_path / "adapter"
    moved.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (moved / name).write_bytes((adapter / name).read_bytes())
    (moved / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "gone/base"}))
    failed = zhcoder("complete", "--model", moved, "x", ok=False)
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1
    assert "holds a LoRA adapter whose base (gone/base) is not a checkpoint folder here" in failed.stderr
