"""Document-aware attention for packed sequences, and the code-aware attention bias (zhcoder/code_bias.py)."""

import json

import pytest
import torch
import torch.nn.functional as F

from zhcoder.checkpoint import load_model, save_model
from zhcoder.code_bias import enable_code_aware_attention, token_class, token_classes
from zhcoder.config import CODE_CLASSES, ModelConfig
from zhcoder.model import KVCache, QwenForCausalLM, document_block_mask, document_causal_mask, init_weights
from zhcoder.tokenizer import Tokenizer

SHAPES = {
    "qwen2": dict(model_type="qwen2", attention_bias=True, tie_word_embeddings=True),
    "qwen3": dict(model_type="qwen3", head_dim=24, tie_word_embeddings=False),
    "qwen3_moe": dict(model_type="qwen3_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32),
}
SEGMENTS = [(0, 5), (5, 8), (8, 17), (17, 20)]      # four documents packed into one sequence of 20


def tiny(family: str, vocab: int = 400, seed: int = 0) -> QwenForCausalLM:
    config = ModelConfig(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, **SHAPES[family])
    model = QwenForCausalLM(config)
    init_weights(model, seed=seed)
    return model.eval()


def packed_inputs(vocab: int, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (2, SEGMENTS[-1][1]), generator=generator)
    position_ids = torch.cat([torch.arange(end - start) for start, end in SEGMENTS]).expand(2, -1)
    return ids, position_ids


@pytest.mark.parametrize("family", SHAPES)
@pytest.mark.parametrize("flex", [False, True], ids=["sdpa-mask", "flex"])
def test_packed_sequence_gives_each_document_its_own_logits(family, flex):
    model = tiny(family)
    ids, position_ids = packed_inputs(400)
    mask = document_block_mask(position_ids) if flex else document_causal_mask(position_ids)
    with torch.no_grad():
        packed = model(ids, position_ids=position_ids, attention_mask=mask)
        alone = torch.cat([model(ids[:, start:end]) for start, end in SEGMENTS], dim=1)
        plain = model(ids)                                                   # no mask: documents see each other
    torch.testing.assert_close(packed, alone, atol=2e-5, rtol=1e-5)
    assert (plain[:, 5:] - alone[:, 5:]).abs().max() > 1e-3


@pytest.mark.parametrize("longest", [3, 128, 300, 2000], ids=["tiny-docs", "block-sized", "mixed", "one-doc"])
def test_block_mask_from_document_ranges_equals_create_block_mask(longest):
    from torch.nn.attention.flex_attention import create_block_mask

    from zhcoder.model import document_ids
    generator = torch.Generator().manual_seed(longest)
    rows = []
    for _ in range(3):
        positions = []
        while len(positions) < 512:
            positions += range(int(torch.randint(1, longest + 1, (1,), generator=generator)))
        rows.append(positions[:512])
    position_ids = torch.tensor(rows)
    position_ids[0, 128:256] = torch.arange(128)                          # a document exactly one block long
    doc = document_ids(position_ids)
    reference = create_block_mask(lambda b, h, q, k: (doc[b, q] == doc[b, k]) & (k <= q), 3, None, 512, 512)
    mask = document_block_mask(position_ids)
    assert torch.equal(mask.to_dense(), reference.to_dense())
    assert torch.equal(mask.full_kv_num_blocks, reference.full_kv_num_blocks)   # full blocks found as full
    assert torch.equal(mask.kv_num_blocks, reference.kv_num_blocks)


def test_token_classes_follow_the_rules():
    assert [token_class(t) for t in ("\n", "    ", "\t", " ", "):\n", "，", "（", "{", "])", ";", ", ", "x", "")] == \
        [1, 1, 1, 0, 1, 4, 4, 2, 2, 3, 3, 0, 0]
    tokenizer = Tokenizer.qwen()
    table = token_classes(tokenizer, 151936)
    assert table.shape == (151936,) and table.dtype.name == "uint8"
    for text, name in (("\n", "newline_indent"), ("    ", "newline_indent"), ("{", "bracket"), (";", "separator"),
                       ("，", "cjk_punctuation"), ("。", "cjk_punctuation"), ("def", "other")):
        (token_id,) = tokenizer.encode(text)
        assert CODE_CLASSES[table[token_id]] == name, text
    assert (table[tokenizer.vocab_size:] == 0).all()


def code_model(family="qwen3", vocab=151936, nonzero=True):
    config = ModelConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, **SHAPES[family])
    model = QwenForCausalLM(config)
    init_weights(model, std=0.05, seed=3)
    plain = QwenForCausalLM(ModelConfig(**{**config.__dict__}))
    plain.load_state_dict(model.state_dict())
    enable_code_aware_attention(model, Tokenizer.qwen())
    if nonzero:
        generator = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.code_bias.copy_(torch.randn(layer.self_attn.code_bias.shape, generator=generator) * 2)
    return model.eval(), plain.eval()


CODE = "def 求和(数据):\n    总数 = 0\n    for x in 数据:\n        总数 += x；\n    return {总数: [1, 2]}  # 完成。\n"


def test_zero_bias_is_exactly_plain_qwen_and_a_bias_changes_attention():
    model, plain = code_model(nonzero=False)
    ids = torch.tensor([Tokenizer.qwen().encode(CODE)])
    with torch.no_grad():
        torch.testing.assert_close(model(ids), plain(ids), atol=0, rtol=0)
        model.model.layers[0].self_attn.code_bias[:, CODE_CLASSES.index("newline_indent")] = 3.0
        assert (model(ids) - plain(ids)).abs().max() > 1e-3


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_kv_cache_decoding_with_the_bias_equals_recomputation(family):
    model, _ = code_model(family)
    prompt = torch.tensor([Tokenizer.qwen().encode(CODE)])
    with torch.no_grad():
        cache = KVCache(model.config, 1, prompt.shape[1] + 12, torch.float32)
        cache.window = prompt.shape[1]                     # the keys a step attends to: those written so far
        logits = model(prompt, kv_cache=cache, cache_position=torch.arange(prompt.shape[1])[None], last_only=True)
        sequence = prompt
        for step in range(12):
            token = logits[:, -1].argmax(-1, keepdim=True)
            full = model(torch.cat([sequence, token], 1))[:, -1]
            cache.window = sequence.shape[1] + 1
            logits = model(token, kv_cache=cache, cache_position=torch.tensor([[sequence.shape[1]]]))
            sequence = torch.cat([sequence, token], 1)
            torch.testing.assert_close(logits[:, -1], full, atol=2e-5, rtol=1e-5)


def test_packed_documents_with_the_bias_and_flex_match_sdpa():
    model, _ = code_model()
    ids = torch.tensor([Tokenizer.qwen().encode(CODE)[:20]])
    _, position_ids = packed_inputs(10)
    position_ids = position_ids[:1]
    with torch.no_grad():
        sdpa = model(ids, position_ids=position_ids, attention_mask=document_causal_mask(position_ids))
        flex = model(ids, position_ids=position_ids, attention_mask=document_block_mask(position_ids))
        alone = torch.cat([model(ids[:, start:end]) for start, end in SEGMENTS], dim=1)
    torch.testing.assert_close(sdpa, alone, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(flex, alone, atol=2e-5, rtol=1e-5)


def test_bias_is_saved_and_loaded_with_the_checkpoint(tmp_path):
    model, _ = code_model()
    save_model(model, tmp_path / "ckpt", tokenizer=Tokenizer.qwen())
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["code_aware_attention"] is True and saved["torch_dtype"] == "float32"   # not the uint8 class buffer
    loaded = load_model(tmp_path / "ckpt", dtype="float32")
    assert loaded.config.code_aware_attention
    ids = torch.tensor([Tokenizer.qwen().encode(CODE)])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids), atol=0, rtol=0)
    assert torch.equal(loaded.model.code_token_class, model.model.code_token_class)
    assert loaded.config.num_parameters() == sum(p.numel() for p in loaded.parameters())


def test_gradients_reach_the_bias():
    model, _ = code_model(nonzero=False)
    model.train()
    ids = torch.tensor([Tokenizer.qwen().encode(CODE)])
    model(ids).logsumexp(-1).mean().backward()
    assert all(layer.self_attn.code_bias.grad.abs().sum() > 0 for layer in model.model.layers)


def test_the_bias_as_value_weights_has_the_gradients_of_the_additive_mask():
    """The packed training path on GPUs gives FlexAttention the bias as weights on the values. Its algebra (forward
    and backward; CPU FlexAttention has no backward, so dense attention stands in for the kernel, whose forward
    the test above checks) against the bias added to the scores: same output, same gradients for q, k, v, bias."""
    from zhcoder.model import _flex_with_key_bias

    torch.manual_seed(0)
    B, H, KV, T, D, C = 2, 4, 2, 12, 8, 5
    q, k, v = (torch.randn(B, heads, T, D, dtype=torch.float64, requires_grad=True) for heads in (H, KV, KV))
    bias = (2 * torch.randn(H, C, dtype=torch.float64)).requires_grad_()
    classes = torch.randint(0, C, (B, T))
    causal = torch.ones(T, T, dtype=torch.bool).tril()

    def dense(q, k, v, block_mask):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=block_mask)

    added = bias[:, classes].permute(1, 0, 2)[:, :, None, :].masked_fill(~causal, float("-inf"))   # (B, H, T, T)
    outputs = [dense(q, k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1), added),
               _flex_with_key_bias(dense, q, k, v, causal, bias, classes)]
    upstream = torch.randn_like(outputs[0])
    grads = [torch.autograd.grad((out * upstream).sum(), (q, k, v, bias)) for out in outputs]
    torch.testing.assert_close(outputs[1], outputs[0])
    for name, reference, weighted in zip("qkv", *grads):
        torch.testing.assert_close(weighted, reference, msg=name)
    assert grads[0][3].abs().sum() > 0
    torch.testing.assert_close(grads[1][3], grads[0][3], msg="bias")
