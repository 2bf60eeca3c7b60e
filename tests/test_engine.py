"""The generation engine against transformers' generate() and against recomputation without a cache."""

import pytest
import torch

from conftest import VOCAB, check_sampling_contract, hf_model
from zhcoder.checkpoint import load_model
from zhcoder.config import ModelConfig
from zhcoder.engine import ContextLengthError, Engine, SamplingParams, TextStream
from zhcoder.model import QwenForCausalLM
from zhcoder.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def qwen_tokenizer():
    return Tokenizer.qwen()


def prompts(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]


def hf_greedy(hf, batch, n):
    """transformers' own greedy generate(), left-padded like every HF batch for a decoder."""
    longest = max(map(len, batch))
    ids = torch.tensor([[0] * (longest - len(p)) + p for p in batch])
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in batch])
    out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                      pad_token_id=0, eos_token_id=None)
    return out[:, longest:].tolist()


@pytest.mark.parametrize("family", ["qwen2-bias-tied", "qwen3-headdim-untied", "qwen3_moe"])
def test_greedy_matches_transformers_single_and_batched(family, tmp_path, qwen_tokenizer):
    hf = hf_model(family)
    hf.save_pretrained(tmp_path)
    engine = Engine(load_model(tmp_path, dtype="float32"), qwen_tokenizer)
    params = SamplingParams(max_new_tokens=32, stop_token_ids=[])
    batch = prompts([5, 13, 1, 9])
    ours = [c.token_ids for c in engine.generate(batch, params)]
    assert ours == hf_greedy(hf, batch, 32)  # batched, different lengths
    assert [c.token_ids for c in engine.generate(batch[1:2], params)] == hf_greedy(hf, batch[1:2], 32)
    assert ours[1] == engine.generate(batch[1:2], params)[0].token_ids  # batching does not change a row


def test_kv_cache_equals_recomputation(tmp_path, qwen_tokenizer):
    hf_model("qwen3_moe", seed=3).save_pretrained(tmp_path)
    model = load_model(tmp_path, dtype="float32")
    engine = Engine(model, qwen_tokenizer)
    prompt = prompts([11], seed=7)[0]
    cached = engine.generate([prompt], SamplingParams(max_new_tokens=24, stop_token_ids=[]))[0].token_ids
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(24):  # no cache: the whole sequence through the model at every step
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert cached == ids[len(prompt):]


class ScriptedModel(QwenForCausalLM):
    """A model that emits a fixed token script (one-hot logits, no head), to drive the engine to exact text."""

    def __init__(self, script, vocab_size):
        super().__init__(ModelConfig(model_type="qwen3", vocab_size=vocab_size, hidden_size=8, intermediate_size=8,
                                     num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1,
                                     max_position_embeddings=4096))
        self.script = script
        self.lm_head = torch.nn.Identity()

    def hidden_states(self, input_ids, position_ids=None, attention_mask=None, kv_cache=None, cache_position=None,
                      last_only=False, call_layer=None):
        B, T = input_ids.shape
        first = int(cache_position[0, 0])
        step = 0 if first == 0 else first - self.prompt_len + 1
        if first == 0:
            self.prompt_len = T
        logits = torch.full((B, 1, self.config.vocab_size), -10.0)
        logits[:, :, self.script[min(step, len(self.script) - 1)]] = 10.0
        return logits


CHINESE = "def 计算(数据):\n    # 返回「结果」，注意：龘𠮷字节跨越多个词元。\n    return 数据"


def test_streamed_pieces_concatenate_to_text_across_split_characters(qwen_tokenizer):
    ids = qwen_tokenizer.encode(CHINESE)
    assert any(not qwen_tokenizer.token_bytes(i).decode("utf-8", "ignore") for i in ids)  # some bytes span tokens
    engine = Engine(ScriptedModel(ids + [qwen_tokenizer.eos_token_id], 151936), qwen_tokenizer)
    events = list(engine.stream([1, 2, 3], SamplingParams(max_new_tokens=len(ids) + 5)))
    pieces = [e.text for e in events]
    final = events[-1].completion
    assert "".join(pieces) == final.text == CHINESE
    assert final.finish_reason == "stop" and final.token_ids[-1] == qwen_tokenizer.eos_token_id
    for piece in pieces:
        assert "\ufffd" not in piece  # never half a character


@pytest.mark.parametrize("stop", [["「结果」"], ["return"], ["龘𠮷"], ["注意：", "xyz"], ["数据):\n"]])
def test_stop_strings_cut_exactly_and_stream_consistently(qwen_tokenizer, stop):
    ids = qwen_tokenizer.encode(CHINESE)
    engine = Engine(ScriptedModel(ids, 151936), qwen_tokenizer)
    events = list(engine.stream([1, 2], SamplingParams(max_new_tokens=len(ids) + 5, stop=stop)))
    expected = CHINESE[: min(CHINESE.find(s) for s in stop if s in CHINESE)]
    assert events[-1].completion.text == expected
    assert "".join(e.text for e in events) == expected
    assert events[-1].completion.finish_reason == "stop"


def test_held_back_text_is_released_at_the_end():
    stream = TextStream(["</end>"])
    released = stream.push("ab</e".encode())
    assert released == "ab"  # "</e" could still become the stop string
    assert stream.finish() == "</e" and stream.text == "ab</e"


def test_length_finish_and_token_count(qwen_tokenizer):
    ids = qwen_tokenizer.encode(CHINESE)
    engine = Engine(ScriptedModel(ids, 151936), qwen_tokenizer)
    completion = engine.generate([[5, 6, 7]], SamplingParams(max_new_tokens=4))[0]
    assert completion.finish_reason == "length" and completion.token_ids == ids[:4]
    assert completion.prompt_tokens == 3


def test_sampling_is_seeded_and_filters_work(tmp_path, qwen_tokenizer):
    hf_model("qwen3-headdim-untied").save_pretrained(tmp_path)
    engine = Engine(load_model(tmp_path, dtype="float32"), qwen_tokenizer)
    batch = prompts([6, 3])
    run = lambda **kw: [c.token_ids for c in engine.generate(batch, SamplingParams(  # noqa: E731
        max_new_tokens=16, stop_token_ids=[], **kw))]
    check_sampling_contract(run)


def test_repetition_penalty_matches_transformers(tmp_path, qwen_tokenizer):
    hf = hf_model("qwen2-bias-tied", seed=2)
    hf.save_pretrained(tmp_path)
    engine = Engine(load_model(tmp_path, dtype="float32"), qwen_tokenizer)
    prompt = prompts([8], seed=9)
    ours = engine.generate(prompt, SamplingParams(max_new_tokens=20, repetition_penalty=1.3, stop_token_ids=[]))
    theirs = hf.generate(torch.tensor(prompt), max_new_tokens=20, min_new_tokens=20, do_sample=False,
                         repetition_penalty=1.3, eos_token_id=None, pad_token_id=0)
    assert ours[0].token_ids == theirs[0, 8:].tolist()


def test_context_overflow_is_a_clear_error(qwen_tokenizer):
    engine = Engine(ScriptedModel([1], 151936), qwen_tokenizer)
    with pytest.raises(ContextLengthError, match="exceeds the model's context of 4096"):
        engine.generate([[1] * 4000], SamplingParams(max_new_tokens=200))
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
