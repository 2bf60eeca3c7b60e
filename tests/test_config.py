"""Config: published parameter counts, presets against transformers, both rope spellings, clear refusals."""

import pytest
import torch

from zhcoder.config import PRESETS, ConfigError, ModelConfig, preset

transformers = pytest.importorskip("transformers")


def test_published_totals():
    assert preset("qwen3-0.6b").num_parameters() == 596_049_920
    assert preset("qwen3-coder-30b-a3b").num_parameters() == 30_532_122_624


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_counts_like_transformers(name):
    """transformers builds each preset on the meta device (no memory); its parameter count must equal ours."""
    config = preset(name)
    values = config.to_hf_dict()
    hf_config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf_config)
    assert sum(p.numel() for p in model.parameters()) == config.num_parameters()


def test_moe_active_parameters():
    config = preset("qwen3-coder-30b-a3b")
    experts = 128 * 3 * 2048 * 768 * 48
    active_experts = 8 * 3 * 2048 * 768 * 48
    assert config.num_parameters() - config.num_parameters(active=True) == experts - active_experts


def base(**extra):
    return {**dict(model_type="qwen3", vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2), **extra}


def test_v4_and_v5_rope_keys_mean_the_same():
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    v4 = ModelConfig.from_hf_dict(base(rope_theta=1e6, rope_scaling=yarn))
    v5 = ModelConfig.from_hf_dict(base(rope_parameters={"rope_theta": 1e6, **yarn}))
    assert v4 == v5 and v4.rope_theta == 1e6 and v4.rope_scaling["factor"] == 4.0
    old_spelling = ModelConfig.from_hf_dict(base(rope_scaling={"type": "linear", "factor": 2.0}))
    assert old_spelling.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    assert ModelConfig.from_hf_dict(base(rope_parameters={"rope_type": "default", "rope_theta": 5.0})).rope_scaling is None


def test_unknown_keys_ignored_and_v5_moe_names_read():
    config = ModelConfig.from_hf_dict(base(some_future_key=[1, 2], quantization_config=None, head_dim=None))
    assert config.head_dim == 8
    moe = ModelConfig.from_hf_dict(base(model_type="qwen3_moe", num_local_experts=8, num_experts_per_tok=2,
                                        moe_intermediate_size=16, dtype="bfloat16"))
    assert moe.num_experts == 8 and moe.torch_dtype == "bfloat16"


@pytest.mark.parametrize("bad, message", [
    (base(model_type="llama"), "unsupported model_type 'llama'"),
    (base(rope_scaling={"rope_type": "longrope", "factor": 2.0}), "unsupported rope type 'longrope'"),
    (base(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}), "unsupported rope type"),
    (base(num_attention_heads=3), "multiple of num_key_value_heads"),
    ({"model_type": "qwen3", "hidden_size": 8}, "missing num_hidden_layers"),
    (base(model_type="qwen3_moe"), "num_experts"),
])
def test_unsupported_configs_are_refused_clearly(bad, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_hf_dict(bad)


def test_unknown_preset_lists_choices():
    with pytest.raises(ConfigError, match="qwen3-0.6b"):
        preset("qwen4-1b")


@pytest.mark.parametrize("text, problem", [
    ('{"model_type": "qwen3",', " is not valid JSON: Expecting property name enclosed in double quotes: "
                                "line 1 column 24 (char 23)"),
    ('{"model_type": "qwen3"}', ": missing hidden_size, num_hidden_layers, num_attention_heads, vocab_size, "
                                "intermediate_size"),
])
def test_a_bad_config_json_is_named_once_in_its_error(tmp_path, text, problem):
    """`zhcoder info DIR` (or any command loading DIR) says what is wrong with DIR/config.json, naming it once."""
    from zhcoder.checkpoint import CheckpointError, load_config

    (tmp_path / "config.json").write_text(text)
    with pytest.raises(CheckpointError) as error:
        load_config(tmp_path)
    assert str(error.value) == f"{tmp_path / 'config.json'}{problem}"
