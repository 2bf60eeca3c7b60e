"""Shared fixtures: small random Hugging Face checkpoints of each family, written by transformers itself."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

VOCAB = 512

# Each family in a small shape that still exercises its particular traits.
FAMILIES = {
    "qwen2-bias-tied": dict(
        model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True, rope_theta=10000.0,
    ),
    "qwen3-headdim-untied": dict(
        model_type="qwen3", hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=24, tie_word_embeddings=False, rope_theta=1_000_000.0,
    ),
    "qwen3-yarn-tied": dict(
        model_type="qwen3", hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, tie_word_embeddings=True, max_position_embeddings=64,
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
    ),
    "qwen3-linear": dict(
        model_type="qwen3", hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, head_dim=32, tie_word_embeddings=False,
        rope_scaling={"rope_type": "linear", "factor": 2.0},
    ),
    "qwen3_moe": dict(
        model_type="qwen3_moe", hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=6,
        num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[2],
        tie_word_embeddings=False,
    ),
    "qwen3_moe-sparse2-unnormed": dict(
        model_type="qwen3_moe", hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4, head_dim=8, num_experts=4,
        num_experts_per_tok=3, norm_topk_prob=False, decoder_sparse_step=2, tie_word_embeddings=True,
    ),
}


def hf_config(family: str):
    values = dict(FAMILIES[family])
    model_type = values.pop("model_type")
    scaling = values.pop("rope_scaling", None)
    theta = values.pop("rope_theta", 10000.0)
    rope = {"rope_type": "default", "rope_theta": theta, **(scaling or {})}
    cls = transformers.AutoConfig.for_model(model_type).__class__
    return cls(vocab_size=VOCAB, rope_parameters=rope, **values)


def hf_model(family: str, seed: int = 0):
    """A transformers model with random weights (biases and norms randomised too, so they are exercised)."""
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(hf_config(family), dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p) if name.endswith("norm.weight") else 0.1 * torch.randn_like(p))
            else:
                p.normal_(0, 0.08)
    return model.eval()


@pytest.fixture(scope="session", params=list(FAMILIES))
def hf_checkpoint(request, tmp_path_factory):
    """(family, transformers model, folder written by its save_pretrained)."""
    family = request.param
    model = hf_model(family)
    path = tmp_path_factory.mktemp(family)
    model.save_pretrained(path)
    return family, model, path


def check_sampling_contract(run, **penalty) -> None:
    """What both decode paths promise of sampling; run(**SamplingParams fields) -> token ids per prompt. The
    repetition-penalty check runs with `penalty` added (e.g. a temperature and seed)."""
    greedy = run()
    assert run(temperature=1.0, seed=1) == run(temperature=1.0, seed=1)
    assert run(temperature=1.0, seed=1) != run(temperature=1.0, seed=2)
    assert run(temperature=0.7, top_k=1, seed=3) == greedy              # top-k 1 is greedy
    assert run(temperature=0.7, top_p=1e-6, seed=4) == greedy           # top-p keeps only the best token
    assert run(temperature=0.7, min_p=1.0, seed=5) == greedy
    penalised = run(repetition_penalty=50.0, **penalty)
    assert all(len(set(row)) == len(row) for row in penalised)          # a huge penalty never repeats a token
