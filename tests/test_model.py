"""Parity with transformers on every family: logits both ways (HF checkpoint -> zhcoder, zhcoder -> HF)."""

import json

import pytest
import torch

from conftest import FAMILIES, VOCAB, hf_model
from zhcoder.checkpoint import CheckpointError, load_model, save_model
from zhcoder.config import ModelConfig

transformers = pytest.importorskip("transformers")


def batch(seed=1, B=3, T=19):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (B, T), generator=g)


def test_logits_match_transformers(hf_checkpoint):
    family, hf, path = hf_checkpoint
    ours = load_model(path, dtype="float32")
    ids = batch()
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-4, family


def test_transformers_loads_what_we_save(hf_checkpoint, tmp_path):
    family, hf, path = hf_checkpoint
    ours = load_model(path, dtype="float32")
    save_model(ours, tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = batch(seed=2)
    with torch.no_grad():
        diff = (reloaded(ids).logits - ours(ids)).abs().max().item()
    assert diff <= 1e-4, family


def test_state_dict_names_are_huggingface_names(hf_checkpoint):
    family, hf, path = hf_checkpoint
    ours = load_model(path, dtype="float32")
    from safetensors import safe_open

    with safe_open(path / "model.safetensors", "pt") as f:
        saved = set(f.keys())
    names = set(ours.state_dict())
    if FAMILIES[family].get("tie_word_embeddings"):
        names.discard("lm_head.weight")
    assert names == saved


def test_config_round_trip_both_rope_spellings(hf_checkpoint):
    family, hf, path = hf_checkpoint
    v5 = json.loads((path / "config.json").read_text())
    config = ModelConfig.from_hf_dict(v5)
    v4 = config.to_hf_dict()
    assert "rope_parameters" not in v4
    again = ModelConfig.from_hf_dict(v4)
    assert again == config
    assert config.rope_theta == v5["rope_parameters"]["rope_theta"]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("family", ["qwen3-headdim-untied", "qwen3_moe"])
def test_half_precision_load_matches_transformers(family, dtype, tmp_path):
    hf_model(family).save_pretrained(tmp_path)
    path = tmp_path
    ours = load_model(path, dtype=dtype)
    assert all(p.dtype == dtype for p in ours.parameters())
    peer = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    ids = batch(seed=3, B=2, T=9)
    with torch.no_grad():
        a, b = ours(ids).float(), peer(ids).logits.float()
    # same arithmetic in the same dtype: agreement to a few half-precision ulps of the logits' scale
    assert (a - b).abs().max().item() <= 0.05 * b.abs().max().item()
    assert (a.argmax(-1) == b.argmax(-1)).float().mean().item() >= 0.9


def test_sharded_save_and_load(tmp_path):
    hf = hf_model("qwen3_moe", seed=5)
    hf.save_pretrained(tmp_path / "hf")
    ours = load_model(tmp_path / "hf", dtype="float32")
    save_model(ours, tmp_path / "sharded", max_shard_bytes=200_000)
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    again = load_model(tmp_path / "sharded", dtype="float32")
    peer = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "sharded", dtype=torch.float32).eval()
    ids = batch(seed=4, B=2, T=7)
    with torch.no_grad():
        # the same tensors; logits equal up to BLAS summation order (memory alignment differs per file)
        assert all(torch.equal(v, again.state_dict()[k]) for k, v in ours.state_dict().items())
        assert (again(ids) - ours(ids)).abs().max().item() <= 1e-5
        assert (peer(ids).logits - ours(ids)).abs().max().item() <= 1e-4


def test_saved_weights_are_as_readable_as_the_files_beside_them(tmp_path):
    """safetensors writes 0600; a saved checkpoint's weights, single or sharded, get the umask's mode like its JSON
    files, so another user (a server account, a shared model folder) can read the whole checkpoint."""
    import os
    import stat

    hf_model("qwen3_moe", seed=5).save_pretrained(tmp_path / "hf")
    model = load_model(tmp_path / "hf", dtype="float32")
    for umask in (0o022, 0o027):
        previous = os.umask(umask)
        try:
            for name, shard_bytes in (("single", 5 * 2**30), ("sharded", 200_000)):
                folder = save_model(model, tmp_path / f"{name}-{umask:o}", max_shard_bytes=shard_bytes)
                modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()}
                assert set(modes.values()) == {0o666 & ~umask}, modes
                assert "config.json" in modes and sum(n.endswith(".safetensors") for n in modes) == (
                    1 if name == "single" else len(modes) - 3)            # the shards beside config, generation, index
        finally:
            os.umask(previous)


def test_bad_checkpoints_are_refused_clearly(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nowhere")
    hf = hf_model("qwen2-bias-tied")
    hf.save_pretrained(tmp_path / "ok")
    good = tmp_path / "ok"

    (tmp_path / "pickle").mkdir()
    (tmp_path / "pickle" / "config.json").write_text((good / "config.json").read_text())
    (tmp_path / "pickle" / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(CheckpointError, match="never unpickles.*safe_serialization"):
        load_model(tmp_path / "pickle")

    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "config.json").write_text((good / "config.json").read_text())
    (tmp_path / "corrupt" / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="safetensors"):
        load_model(tmp_path / "corrupt")

    (tmp_path / "shape").mkdir()
    config = json.loads((good / "config.json").read_text())
    (tmp_path / "shape" / "config.json").write_text(json.dumps({**config, "intermediate_size": 100}))
    (tmp_path / "shape" / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_model(tmp_path / "shape")

    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(CheckpointError, match="unsupported model_type 'llama'"):
        load_model(tmp_path / "llama")

    (tmp_path / "rope").mkdir()
    rope = {**config, "rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}}
    (tmp_path / "rope" / "config.json").write_text(json.dumps(rope))
    with pytest.raises(CheckpointError, match="unsupported rope type 'dynamic'"):
        load_model(tmp_path / "rope")


MEMORY_PROBE = """
import sys, torch
from zhcoder.checkpoint import load_model
def status_mib(key):  # VmHWM, unlike ru_maxrss, is not inherited from the parent process
    return int(open('/proc/self/status').read().split(key + ':')[1].split()[0]) / 1024
before = status_mib('VmRSS')
model = load_model(sys.argv[1], dtype='float32')
with torch.no_grad():
    model(torch.tensor([[1, 2, 3]]))  # touches every weight
weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
peak = status_mib('VmHWM')
print(weights, peak - before)
"""


def test_loading_peak_memory_stays_close_to_weights(tmp_path):
    """Memory-mapped loading: the process grows by about the weights' size, not by two copies of them."""
    import subprocess
    import sys

    from zhcoder.config import preset
    from zhcoder.model import QwenForCausalLM, init_weights

    model = QwenForCausalLM(preset("qwen3-0.6b", num_hidden_layers=4))  # 834 MB of fp32 weights
    init_weights(model, seed=0)
    save_model(model, tmp_path)
    del model
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(tmp_path)], capture_output=True, text=True,
                         check=True).stdout.split()
    weights_mib, growth_mib = float(out[0]), float(out[1])
    assert weights_mib > 800
    # one copy of the weights plus a fixed allowance for torch's own start-up (thread pools, allocator)
    assert growth_mib <= 1.15 * weights_mib + 160


def test_loading_and_a_plain_generation_do_not_import_the_compiler():
    """Start-up of every command: torch imports torch._dynamo (a second on these cores) the first time it computes
    on the meta device, which loading must not do (the embedding's initialisation, the RoPE frequencies)."""
    import subprocess
    import sys

    from zhcoder.checkpoint import EMBEDDED_MODEL

    probe = ("import sys; from zhcoder.engine import Engine, SamplingParams; "
             "Engine.from_dir(sys.argv[1]).generate(['def f(x):'], SamplingParams(max_new_tokens=2)); "
             "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe, str(EMBEDDED_MODEL)], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False"]
