"""`zhcoder export gguf` (zhcoder/export.py), read back with the gguf package's own GGUFReader.

Each family is exported once from a tiny random checkpoint (2 layers, hidden 64) with the full Qwen vocabulary
(151,936 rows, the real tokenizer): qwen3 with a head_dim of its own and an untied head in f32, qwen2 with q/k/v
biases and a tied head in f16, qwen3 MoE (4 experts) in q8_0. The expected llama.cpp names below are written out
by hand (from llama.cpp's loaders), independently of the gguf name map the exporter uses.

    pytest -q tests/test_export.py
"""

import json
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from test_attention import SHAPES, tiny
from zhcoder.chat import builtin_template
from zhcoder.checkpoint import EMBEDDED_MODEL, load_model, save_model
from zhcoder.code_bias import enable_code_aware_attention
from zhcoder.config import ModelConfig
from zhcoder.model import QwenForCausalLM
from zhcoder.tokenizer import Tokenizer

gguf = pytest.importorskip("gguf")
from zhcoder.export import (check_llamacpp_can_run, expected_shapes, export_gguf,  # noqa: E402
                            open_weights, plan_tensors)

VOCAB = 151936
EXPORT_DTYPE = {"qwen3": "f32", "qwen2": "f16", "qwen3_moe": "q8_0"}
ARCH = {"qwen3": "qwen3", "qwen2": "qwen2", "qwen3_moe": "qwen3moe"}
TEMPLATE = {"qwen3": "qwen3", "qwen2": "qwen2.5", "qwen3_moe": "qwen3-coder"}
EOS = {"qwen3": 151645, "qwen2": 151643, "qwen3_moe": 151645}   # as `zhcoder init` sets them
Q = gguf.GGMLQuantizationType
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5               # llama.cpp's token types

def read_gguf(path) -> "gguf.GGUFReader":
    """gguf's own GGUFReader, over the file's bytes in memory instead of a numpy.memmap: the same parser, but the
    memmap's per-slice overhead doubles the time it takes over the ~446,000 tokenizer strings (10 s -> 5 s)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gguf.gguf_reader.np, "memmap", lambda file, mode="r": np.fromfile(file, dtype=np.uint8))
        return gguf.GGUFReader(path)


class Exports:
    """Each family's checkpoint, its GGUF and the GGUF read back, made once for the module and only when asked."""

    def __init__(self, tmp_path_factory):
        self.tmp_path_factory, self.made, self.readers = tmp_path_factory, {}, {}

    def __call__(self, family: str):
        """(config, checkpoint tensors, checkpoint folder, gguf path)."""
        if family not in self.made:
            model = tiny(family, vocab=VOCAB)
            generator = torch.Generator().manual_seed(7)
            with torch.no_grad():                # biases and norms random too, so that their mapping is exercised
                for name, p in model.named_parameters():
                    if name.endswith(".bias") or name.endswith("norm.weight"):
                        p.copy_(1.0 * name.endswith("norm.weight") + 0.1 * torch.randn(p.shape, generator=generator))
            model.config.eos_token_id = EOS[family]
            folder = self.tmp_path_factory.mktemp(family) / "tiny"
            save_model(model, folder, tokenizer=Tokenizer.qwen(), chat_template=builtin_template(TEMPLATE[family]))
            out = export_gguf(folder, folder.parent / "tiny.gguf", dtype=EXPORT_DTYPE[family])
            self.made[family] = (model.config, load_file(folder / "model.safetensors"), folder, out)
        return self.made[family]

    def reader(self, family: str):
        if family not in self.readers:
            self.readers[family] = read_gguf(self(family)[3])
        return self.readers[family]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return Exports(tmp_path_factory)


@pytest.fixture(scope="module", params=list(EXPORT_DTYPE))
def exported(request, exports):
    """(family, config, checkpoint tensors, checkpoint folder, GGUFReader) per family."""
    config, state, folder, _ = exports(request.param)
    return request.param, config, state, folder, exports.reader(request.param)


def llamacpp_tensors(config, state) -> dict[str, torch.Tensor]:
    """The tensors llama.cpp's qwen2 / qwen3 / qwen3moe loaders ask for, by their names, in PyTorch order."""
    tensors = {"token_embd.weight": state["model.embed_tokens.weight"],
               "output_norm.weight": state["model.norm.weight"]}
    if not config.tie_word_embeddings:
        tensors["output.weight"] = state["lm_head.weight"]
    for i in range(config.num_hidden_layers):
        hf, blk = f"model.layers.{i}.", f"blk.{i}."
        tensors[blk + "attn_norm.weight"] = state[hf + "input_layernorm.weight"]
        tensors[blk + "ffn_norm.weight"] = state[hf + "post_attention_layernorm.weight"]
        for ours, theirs in (("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"),
                             ("o_proj", "attn_output")):
            tensors[f"{blk}{theirs}.weight"] = state[f"{hf}self_attn.{ours}.weight"]
            if config.attention_bias and ours != "o_proj":
                tensors[f"{blk}{theirs}.bias"] = state[f"{hf}self_attn.{ours}.bias"]
        if config.model_type != "qwen2":
            tensors[blk + "attn_q_norm.weight"] = state[hf + "self_attn.q_norm.weight"]
            tensors[blk + "attn_k_norm.weight"] = state[hf + "self_attn.k_norm.weight"]
        if config.model_type == "qwen3_moe":
            tensors[blk + "ffn_gate_inp.weight"] = state[hf + "mlp.gate.weight"]
            for ours, theirs in (("gate_proj", "ffn_gate_exps"), ("up_proj", "ffn_up_exps"),
                                 ("down_proj", "ffn_down_exps")):
                tensors[f"{blk}{theirs}.weight"] = torch.stack(
                    [state[f"{hf}mlp.experts.{e}.{ours}.weight"] for e in range(config.num_experts)])
        else:
            for ours, theirs in (("gate_proj", "ffn_gate"), ("up_proj", "ffn_up"), ("down_proj", "ffn_down")):
                tensors[f"{blk}{theirs}.weight"] = state[f"{hf}mlp.{ours}.weight"]
    return tensors


def field(reader, key):
    return reader.fields[key].contents()


def test_every_tensor_llamacpp_loads_is_there_with_its_shape_type_and_values(exported):
    family, config, state, _, reader = exported
    expected = llamacpp_tensors(config, state)
    written = {t.name: t for t in reader.tensors}
    assert set(written) == set(expected)
    assert ("output.weight" in written) == (not config.tie_word_embeddings)
    dtype = EXPORT_DTYPE[family]
    target = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0}[dtype]
    for name, want in expected.items():
        t, want = written[name], want.numpy()
        assert list(t.shape) == list(reversed(want.shape)), name            # GGUF lists dimensions innermost first
        keep_f32 = want.ndim == 1 or "ffn_gate_inp" in name
        assert t.tensor_type == (Q.F32 if keep_f32 else target), name
        got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(want.shape)
        if t.tensor_type == Q.F32:
            np.testing.assert_array_equal(got, want, err_msg=name)
        elif t.tensor_type == Q.F16:
            np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32), err_msg=name)
        else:   # Q8_0: blocks of 32, step d = max|x| / 127 stored in f16: |error| <= d/2 + 127 d 2^-11 < 0.57 d
            blocks = want.reshape(-1, 32)
            step = np.abs(blocks).max(axis=1, keepdims=True) / 127
            assert (np.abs(got.reshape(-1, 32) - blocks) <= 0.57 * step).all(), name
            assert np.abs(got - want).max() > 0, name                       # really quantized


def test_hyperparameters_under_llamacpp_keys(exported):
    family, config, _, _, reader = exported
    arch = ARCH[family]
    assert field(reader, "general.architecture") == arch
    assert field(reader, "general.name") == "tiny"
    assert field(reader, "general.file_type") == {"f32": 0, "f16": 1, "q8_0": 7}[EXPORT_DTYPE[family]]
    expected = {
        "context_length": config.max_position_embeddings, "embedding_length": 64, "block_count": 2,
        "feed_forward_length": 96, "attention.head_count": 4, "attention.head_count_kv": 2,
        "attention.key_length": config.head_dim, "attention.value_length": config.head_dim,
    }
    if family == "qwen3_moe":
        expected.update({"expert_count": 4, "expert_used_count": 2, "expert_feed_forward_length": 32})
    for key, value in expected.items():
        assert field(reader, f"{arch}.{key}") == value, key
    assert field(reader, f"{arch}.rope.freq_base") == pytest.approx(config.rope_theta)
    assert field(reader, f"{arch}.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6)
    assert (f"{arch}.expert_count" in reader.fields) == (family == "qwen3_moe")
    assert config.head_dim == (24 if family == "qwen3" else 16)


def test_special_tokens_and_chat_template(exported):
    family, _, _, _, reader = exported
    assert field(reader, "tokenizer.ggml.bos_token_id") == 151643          # <|endoftext|>, and never added
    assert field(reader, "tokenizer.ggml.add_bos_token") is False
    assert field(reader, "tokenizer.ggml.eos_token_id") == EOS[family]     # as generation_config.json says
    assert field(reader, "tokenizer.ggml.padding_token_id") == 151643
    assert field(reader, "tokenizer.chat_template") == builtin_template(TEMPLATE[family])


def test_the_embedded_model_exports_with_its_chat_template(tmp_path):
    """zhcoder-nano's GGUF carries the chat template its SFT rendered conversations with, so llama.cpp and Ollama
    chat with it as zhcoder does."""
    out = export_gguf(EMBEDDED_MODEL, tmp_path / "nano.gguf", dtype="q8_0")
    reader = read_gguf(out)
    assert field(reader, "tokenizer.chat_template") == builtin_template("qwen3")
    assert field(reader, "tokenizer.ggml.eos_token_id") == Tokenizer.from_dir(EMBEDDED_MODEL).eos_token_id


def test_tokenizer_metadata_is_qwens_vocabulary(exports):
    folder, reader = exports("qwen3")[2], exports.reader("qwen3")      # the same vocabulary code for every family
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.pre") == "qwen2"
    tokens, types = field(reader, "tokenizer.ggml.tokens"), field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == VOCAB
    by_id = {token_id: text for text, token_id in spec["model"]["vocab"].items()}
    by_id.update((t["id"], t["content"]) for t in spec["added_tokens"])
    assert tokens == [by_id.get(i, f"[PAD{i}]") for i in range(VOCAB)]
    assert tokens[151643:151646] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    hello = Tokenizer.from_dir(folder).encode(" hello")
    assert [tokens[i] for i in hello] == ["Ġhello"]
    assert tokens[151669] == "[PAD151669]" and tokens[-1] == "[PAD151935]"
    assert set(types[:151643]) == {NORMAL}
    assert set(types[151669:]) == {UNUSED}
    control = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
               "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<|vision_pad|>"}
    user_defined = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"}
    for token_id in range(151643, 151669):
        assert types[token_id] == (USER_DEFINED if tokens[token_id] in user_defined else CONTROL), tokens[token_id]
    assert control <= set(tokens[151643:151669])
    merges = reader.fields["tokenizer.ggml.merges"]
    assert len(merges.data) == len(spec["model"]["merges"])
    assert merges.contents(0) == " ".join(spec["model"]["merges"][0])


def test_bf16_and_q8_0_fallback_follow_llamacpps_converter(exports):
    config, state, folder, _ = exports("qwen3")
    with open_weights(folder) as (shapes, read):
        plan = {t.name: t for t in plan_tensors(config, shapes, read, "bf16")}
        q = plan["blk.0.attn_q.weight"]
        got = gguf.quants.dequantize(q.produce(), Q.BF16)
    assert q.qtype == Q.BF16 and plan["blk.0.attn_q_norm.weight"].qtype == Q.F32
    want = state["model.layers.0.self_attn.q_proj.weight"].bfloat16().float()
    torch.testing.assert_close(torch.from_numpy(got), want, atol=0, rtol=0)
    # rows of 48 values are no whole number of Q8_0 blocks: those tensors fall back to F16, as llama.cpp's does
    odd = ModelConfig(model_type="qwen3", vocab_size=400, hidden_size=48, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    shapes = expected_shapes(odd)
    plan = {t.name: t for t in plan_tensors(odd, shapes, lambda name: torch.zeros(shapes[name]), "q8_0")}
    assert plan["blk.0.attn_q.weight"].qtype == Q.F16           # (64, 48): rows of 48
    assert plan["blk.0.attn_output.weight"].qtype == Q.Q8_0     # (48, 64): rows of 64
    assert plan["blk.0.ffn_down.weight"].qtype == Q.Q8_0


@pytest.mark.parametrize("family", list(SHAPES))
def test_expected_shapes_are_the_models(family):
    for code_aware in (False, True):
        config = tiny(family).config
        config.code_aware_attention = code_aware
        model = QwenForCausalLM(config)
        shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
        if config.tie_word_embeddings:
            shapes.pop("lm_head.weight")
        assert expected_shapes(config) == shapes


def test_configurations_llamacpp_computes_differently_are_refused():
    moe = dict(model_type="qwen3_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)
    for config, words in (
        (ModelConfig(model_type="qwen2", hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=24),
         "head_dim"),
        (ModelConfig(**moe, mlp_only_layers=[1]), "dense"),
        (ModelConfig(**moe, norm_topk_prob=False), "norm_topk_prob"),
        (ModelConfig(rope_scaling={"rope_type": "yarn", "factor": 4.0, "truncate": False}), "truncate"),
    ):
        with pytest.raises(ValueError, match=words):
            check_llamacpp_can_run(config)
    check_llamacpp_can_run(ModelConfig(**moe))


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`zhcoder ARGS` through the console script's entry point, in process."""
    from zhcoder.cli import main

    monkeypatch.setattr(sys, "argv", ["zhcoder", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
        sys.exit(0)
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err


def test_code_bias_is_refused_and_dropped_on_request(exports, tmp_path, monkeypatch, capsys):
    _, _, folder, plain_gguf = exports("qwen3")
    model = load_model(folder, dtype="float32")
    enable_code_aware_attention(model, Tokenizer.qwen())
    with torch.no_grad():
        model.model.layers[1].self_attn.code_bias[2, 1] = 0.5
    biased = tmp_path / "with_bias" / "tiny"                 # same folder name: same general.name
    save_model(model, biased, tokenizer=Tokenizer.qwen(), chat_template=builtin_template("qwen3"))
    out = tmp_path / "out.gguf"

    status, _, err = run_cli(monkeypatch, capsys, "export", "gguf", biased, "--out", out)
    assert status == 2 and err.count("\n") == 1 and err.startswith("zhcoder: error: ")
    assert "--drop-code-bias" in err
    assert not out.exists() and not out.with_name("out.gguf.partial").exists()

    status, printed, _ = run_cli(monkeypatch, capsys, "export", "gguf", biased, "--out", out, "--dtype", "f32",
                                 "--drop-code-bias")
    assert status == 0 and printed.startswith(f"wrote {out} (") and "MiB" in printed
    assert out.read_bytes() == plain_gguf.read_bytes()      # exactly the plain model's GGUF


def test_cli_error_on_a_missing_folder_is_one_line(tmp_path, monkeypatch, capsys):
    status, printed, err = run_cli(monkeypatch, capsys, "export", "gguf", tmp_path / "nowhere",
                                   "--out", tmp_path / "x.gguf")
    assert status == 2 and printed == ""
    assert err.count("\n") == 1 and err.startswith("zhcoder: error: model folder not found")
    status, _, err = run_cli(monkeypatch, capsys, "export", "gguf", tmp_path, "--out", tmp_path / "x.gguf",
                             "--dtype", "q4")
    assert status == 2 and err.count("\n") == 1
