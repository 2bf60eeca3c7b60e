"""The one decode path (zhcoder/engine.py, zhcoder/sampling.py, zhcoder/serve/scheduler.py) against peers: generation
recomputed without a cache, transformers' logits processors and warpers, and the OpenAI penalty formulas; the compiled
step (dynamo + AOT autograd on CPU: the graph CUDA compiles) against the eager one; the server's scheduler against
`Engine.generate`."""

import threading

import pytest
import torch
from transformers.generation.logits_process import (MinPLogitsWarper, RepetitionPenaltyLogitsProcessor,
                                                    TopKLogitsWarper, TopPLogitsWarper)

from conftest import check_sampling_contract
from zhcoder.config import ModelConfig
from zhcoder.engine import Engine, SamplingParams
from zhcoder.model import QwenForCausalLM, init_weights
from zhcoder.sampling import SampleMode, _mix32_int, gumbel_noise, mix32, row_seed, sample_rows, top_filters
from zhcoder.serve.scheduler import Request, Scheduler

VOCAB = 300


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine OpenMP's spinning workers can make
    these steps 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class StubTokenizer:
    vocab_size = VOCAB
    stop_token_ids: list[int] = []

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([97 + token_id % 26])


def model(family: str = "qwen3", code_bias: bool = False, seed: int = 0) -> QwenForCausalLM:
    shapes = {"qwen2": dict(model_type="qwen2", attention_bias=True, tie_word_embeddings=True),
              "qwen3": dict(model_type="qwen3", head_dim=24, tie_word_embeddings=False),
              "qwen3_moe": dict(model_type="qwen3_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)}
    config = ModelConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, code_aware_attention=code_bias,
                         **shapes[family])
    m = QwenForCausalLM(config)
    init_weights(m, std=0.15, seed=seed)                       # a large std: confident, varied greedy tokens
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias") or name.endswith("code_bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
        if code_bias:
            m.model.code_token_class.copy_(torch.randint(0, 5, (VOCAB,), generator=g, dtype=torch.uint8))
    return m.eval()


def prompts(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]


def run(engine, batch, **params):
    """Tokens of every row, and the logits of every step (B, vocab)."""
    logits = []
    engine.logits_hook = lambda step, x: logits.append(x.clone())
    out = [c.token_ids for c in engine.generate(batch, SamplingParams(stop_token_ids=[], **params))]
    engine.logits_hook = None
    return out, torch.stack(logits)


@torch.no_grad()
def recomputed(m, prompt, n, process=lambda ids, logits: logits):
    """Greedy generation of one prompt with no cache: the whole sequence through the model at every step, the
    logits (before `process(ids, logits)`, a logits processor) of each step."""
    ids, steps = list(prompt), []
    for _ in range(n):
        logits = m(torch.tensor([ids]))[:, -1].float()
        steps.append(logits[0])
        ids.append(int(process(torch.tensor([ids]), logits).argmax()))
    return ids[len(prompt):], torch.stack(steps)


@pytest.mark.parametrize("family,code_bias", [("qwen3", False), ("qwen2", False), ("qwen3", True),
                                              ("qwen3_moe", False)])
def test_decoding_equals_recomputation_alone_and_left_padded(family, code_bias):
    m = model(family, code_bias)
    engine = Engine(m, StubTokenizer(), prefill_chunk=4)                          # chunks < every long prompt
    n = 6 if family == "qwen3_moe" else 14                                        # eager MoE is slow
    for batch in (prompts([11]), prompts([5, 13, 1], seed=1)):                    # alone; left-padded
        tokens, logits = run(engine, batch, max_new_tokens=n)
        for row, prompt in enumerate(batch):
            expected, expected_logits = recomputed(m, prompt, n)
            assert tokens[row] == expected
            torch.testing.assert_close(logits[:, row], expected_logits, atol=2e-4, rtol=1e-4)
    assert len({tuple(t) for t in tokens}) == 3                                   # the rows differ
    penalty = RepetitionPenaltyLogitsProcessor(1.6)                               # transformers' own
    penalised = run(engine, batch, max_new_tokens=n, repetition_penalty=1.6)[0]
    assert penalised == [recomputed(m, p, n, penalty)[0] for p in batch] and penalised != tokens


def test_frequency_presence_penalties_and_logit_bias_follow_openai():
    """OpenAI's definitions: logit - count * frequency_penalty - (count > 0) * presence_penalty over the tokens
    generated so far (the prompt's do not count), plus each token's logit_bias."""
    m = model("qwen3", seed=4)
    engine = Engine(m, StubTokenizer())
    batch = prompts([7, 12], seed=8)
    bias = {3: 6.0, 17: -100.0}
    params = dict(frequency_penalty=1.5, presence_penalty=0.7, logit_bias=bias)

    def openai(prompt_length):
        def process(ids, logits):
            counts = torch.bincount(ids[0, prompt_length:], minlength=VOCAB).float()
            logits = logits + torch.tensor([bias.get(i, 0.0) for i in range(VOCAB)])
            return logits - counts * 1.5 - (counts > 0) * 0.7
        return process

    tokens = run(engine, batch, max_new_tokens=16, **params)[0]
    assert tokens == [recomputed(m, p, 16, openai(len(p)))[0] for p in batch]
    assert 17 not in sum(tokens, []) and tokens != run(engine, batch, max_new_tokens=16)[0]
    with pytest.raises(ValueError, match="frequency_penalty"):
        SamplingParams(frequency_penalty=3)


def test_chunked_prefill_equals_one_pass_and_the_state_is_reused():
    m = model("qwen3", code_bias=True)
    batch = prompts([40, 23, 7], seed=2)
    one = Engine(m, StubTokenizer(), prefill_chunk=512)
    tokens, logits = run(one, batch, max_new_tokens=8)
    for chunk in (3, 16):
        chunked = Engine(m, StubTokenizer(), prefill_chunk=chunk)
        chunked_tokens, chunked_logits = run(chunked, batch, max_new_tokens=8)
        assert chunked_tokens == tokens
        torch.testing.assert_close(chunked_logits, logits, atol=2e-4, rtol=1e-4)
    state = one._states[4]                                          # 3 rows: the bucket of 4
    assert run(one, batch, max_new_tokens=8)[0] == tokens          # again through the same (dirty) state
    assert one._states[4] is state and state.max_len == 1024
    small = Engine(m, StubTokenizer(), prefill_chunk=16, min_cache=16)
    assert run(small, batch, max_new_tokens=8)[0] == tokens
    assert small._states[4].max_len == 64
    longer = run(small, batch, max_new_tokens=30)[0]                # a longer call grows the cache
    assert small._states[4].max_len == 128 and [t[:8] for t in longer] == tokens
    # eager steps attend to exactly the keys written; compiled ones to a power of two (one graph per window)
    assert small.window(47, 128) == 47 and Engine(m, StubTokenizer(), compile=True).window(47, 4096) == 256


def test_seeded_sampling():
    m = model("qwen3")
    engine = Engine(m, StubTokenizer())
    batch = prompts([6, 3], seed=3)
    go = lambda **kw: [c.token_ids for c in engine.generate(batch, SamplingParams(  # noqa: E731
        max_new_tokens=12, stop_token_ids=[], **kw))]
    check_sampling_contract(go, temperature=0.5, seed=6)
    alone = engine.generate(batch[:1], SamplingParams(max_new_tokens=12, stop_token_ids=[], temperature=1.0, seed=7))
    assert alone[0].token_ids == go(temperature=1.0, seed=7)[0]         # a row's stream: its seed and row only


def test_hash_noise_and_filters_follow_transformers_warpers():
    values = torch.tensor([0, 1, 2**31 - 1, 2**31, 2**32 - 1, 123456789])
    assert mix32(values).tolist() == [_mix32_int(v) for v in values.tolist()]
    noise = gumbel_noise(torch.tensor([row_seed(1), row_seed(2)]), torch.tensor([0, 5]), 50_000)
    assert noise.isfinite().all() and abs(float(noise.mean()) - 0.5772) < 0.02         # Euler-Mascheroni
    assert abs(float(torch.corrcoef(noise)[0, 1])) < 0.03

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 40, generator=g) * 2
    settings = [(0, 1.0, 0.0), (3, 1.0, 0.0), (0, 0.8, 0.0), (0, 1.0, 0.1), (5, 0.9, 0.05), (1, 0.5, 0.0)]
    state = Engine(model(), StubTokenizer()).allocate_state(6, 8)
    expected = []
    for row, (k, p, min_p) in enumerate(settings):
        state.view(row, row + 1).configure(SamplingParams(temperature=1.0, top_k=k, top_p=p, min_p=min_p), [row])
        warped = logits[row:row + 1]
        for warper, on in ((TopKLogitsWarper(max(k, 1)), k > 0), (TopPLogitsWarper(p), p < 1),
                           (MinPLogitsWarper(max(min_p, 1e-9)), min_p > 0)):
            warped = warper(None, warped) if on else warped
        expected.append(warped.softmax(-1))
    torch.testing.assert_close(top_filters(logits, state).softmax(-1), torch.cat(expected), atol=1e-6, rtol=0)

    # the Gumbel-max draw is a draw from those probabilities: 4000 rows, each its own stream
    rows = 4000
    big = Engine(model(), StubTokenizer()).allocate_state(rows, 8)
    big.configure(SamplingParams(temperature=0.5, top_k=4), [row_seed(9, r) for r in range(rows)])
    big.active.fill_(True)
    tokens = sample_rows(logits[1:2].expand(rows, -1), big, SampleMode(sample=True, filters=True))
    frequency = torch.bincount(tokens, minlength=40).float() / rows
    probs = top_filters(logits[1:2] / 0.5, big.view(0, 1)).softmax(-1)[0]
    assert (frequency - probs).abs().max() < 0.03 and int((frequency > 0).sum()) == 4
    assert big.counter.eq(1).all()


def test_compiled_step_is_one_graph():
    """fullgraph tracing of every branch of the step (dynamo + AOT autograd, no inductor: fast on CPU)."""
    m = model("qwen3", code_bias=True)
    batch = prompts([9, 4], seed=4)
    params = dict(max_new_tokens=5, temperature=0.8, top_k=20, top_p=0.9, min_p=0.01, repetition_penalty=1.2, seed=1,
                  frequency_penalty=0.5, presence_penalty=0.2, logit_bias={5: 2.0})
    compiled = Engine(m, StubTokenizer(), compile=True, compile_backend="aot_eager")
    eager = Engine(m, StubTokenizer())
    tokens, logits = run(compiled, batch, **params)
    eager_tokens, eager_logits = run(eager, batch, **params)
    assert tokens == eager_tokens
    torch.testing.assert_close(logits, eager_logits, atol=1e-4, rtol=1e-4)
    # the server's step, warmed up, with logprobs (one more graph)
    scheduler = Scheduler(compiled, max_batch=2, max_len=256)
    events = []
    done = threading.Event()

    def on_event(event):
        events.append(event)
        if "done" in event:
            done.set()

    scheduler.start(warmup=True)
    single = SamplingParams(stop_token_ids=[], **params)
    scheduler.submit(Request(batch[0], single, on_event, logprobs=2))
    assert done.wait(60)
    scheduler.stop()
    expected = eager.generate(batch[:1], single)[0].token_ids
    assert [e["token"] for e in events if "token" in e] == expected == events[-1]["done"].token_ids
    assert all(len(e["top_logprobs"]) == 2 and e["logprob"] <= 0 for e in events if "token" in e)


@pytest.mark.skipif(not hasattr(torch.compiler, "nested_compile_region"), reason="torch < 2.8")
def test_compiled_step_traces_the_decoder_layer_once():
    """The compiled step calls one traced decoder layer for every layer (a nested compile region), so compile time
    does not grow with depth: no layer-specific constant (its index, its own cache list) reaches the layer's code.
    With reuse_layer=False, every layer is traced into one graph, with the same tokens."""
    graphs = []

    def backend(gm, inputs):
        graphs.append(gm)
        return gm.forward

    def subgraph_calls():
        return [n.args[1] for n in graphs[-1].graph.nodes
                if n.op == "call_function" and "invoke_subgraph" in str(n.target)]

    batch = prompts([5, 3])
    for code_bias in (False, True):
        m = model("qwen3", code_bias=code_bias)
        tokens = run(Engine(m, StubTokenizer(), compile=True, compile_backend=backend), batch, max_new_tokens=3)[0]
        assert subgraph_calls() == ["subgraph_0"] * m.config.num_hidden_layers
    whole = run(Engine(m, StubTokenizer(), compile=True, compile_backend=backend, reuse_layer=False), batch,
                max_new_tokens=3)[0]
    assert subgraph_calls() == [] and whole == tokens


def serve(engine, batch, params, logprobs=None, max_batch=3):
    scheduler = Scheduler(engine, max_batch=max_batch, max_len=256)
    scheduler.start()
    results, events, done = {}, {i: [] for i in range(len(batch))}, threading.Event()

    def deliver(i):
        def on_event(event):
            events[i].append(event)
            if "done" in event:
                results[i] = event["done"]
                if len(results) == len(batch):
                    done.set()
        return on_event

    for i, (ids, p) in enumerate(zip(batch, params)):
        scheduler.submit(Request(ids, p, deliver(i), logprobs=logprobs[i] if logprobs else None))
    assert done.wait(60)
    scheduler.stop()
    return results, events, scheduler


@pytest.mark.parametrize("compiled", [False, True])
def test_the_scheduler_equals_the_engine(compiled):
    """Requests joining and leaving a shared batch get the tokens `generate` gives each alone, eagerly (the slots in
    use) and compiled (every slot, read one step behind as on CUDA), with logprobs of the step's logits."""
    m = model("qwen3", code_bias=True)
    engine = Engine(m, StubTokenizer())
    served = Engine(m, StubTokenizer(), compile=True, compile_backend="aot_eager") if compiled else engine
    served.pipelined = compiled
    batch = prompts([5, 13, 1, 9, 30, 2], seed=5)
    params = [SamplingParams(max_new_tokens=n, stop_token_ids=[]) for n in (20, 7, 1, 25, 12, 5)]
    params[1] = SamplingParams(max_new_tokens=7, stop_token_ids=[], temperature=0.9, seed=5, top_p=0.8)
    params[3] = SamplingParams(max_new_tokens=25, stop_token_ids=[], repetition_penalty=1.5)
    params[4] = SamplingParams(max_new_tokens=12, stop_token_ids=[], frequency_penalty=1.0, logit_bias={7: 3.0})
    results, events, scheduler = serve(served, batch, params, logprobs=[2, None, None, 0, None, None])
    assert scheduler.steps < sum(p.max_new_tokens for p in params)
    assert sum(n for size, n in scheduler.batch_sizes.items() if size > 1) > 0      # requests shared steps
    for i, (ids, p) in enumerate(zip(batch, params)):
        expected = engine.generate([ids], p)[0]
        assert results[i].token_ids == expected.token_ids and results[i].text == expected.text
    tokens = [e for e in events[0] if "token" in e]
    assert [e["token"] for e in tokens] == results[0].token_ids and all(len(e["top_logprobs"]) == 2 for e in tokens)
    assert tokens[0]["top_logprobs"][0][0] == tokens[0]["token"]                   # greedy: the best is the token
    log_probs = torch.log_softmax(run(engine, [batch[0]], max_new_tokens=20)[1][:, 0], -1)
    ours = torch.tensor([e["logprob"] for e in tokens])
    torch.testing.assert_close(ours, log_probs.gather(1, torch.tensor(results[0].token_ids)[:, None])[:, 0],
                               atol=1e-4, rtol=1e-4)
    assert "top_logprobs" not in [e for e in events[3] if "token" in e][0]
