"""Token healing (zhcoder/healing.py) on the embedded zhcoder-nano, whose vocabulary, like Qwen's, holds "):\\n" as one
token: the engine's healed completions (alone, batched, the server's scheduler, the OpenAI API, the CLI's
default) equal healing done from its definition, a scan of the whole vocabulary."""

import bisect
import time

import pytest
import torch

from zhcoder.chat import fim_prompt
from zhcoder.checkpoint import EMBEDDED_MODEL, load_model
from zhcoder.engine import Engine, SamplingParams
from zhcoder.healing import TokenHealer
from zhcoder.serve.scheduler import Request, Scheduler
from zhcoder.tokenizer import Tokenizer

PROMPTS = ["def 计算订单总价(订单列表):", "def add(a, b):", "import os\nfor name in os.listdir(path",
           "x = [1, 2, 3]\ny = ", fim_prompt("def f(x):\n    ", "\n    return y\n")]
NEW = 20


@pytest.fixture(scope="module")
def nano():
    torch.set_num_threads(1)
    return load_model(EMBEDDED_MODEL, dtype="float32").eval(), Tokenizer.from_dir(EMBEDDED_MODEL)


def reference(model, tokenizer, prompt: str, new: int = NEW) -> tuple[list[int], str]:
    """Greedy healing by its definition: drop the prompt's last token unless it is an added token (or the only one);
    the first token must be one whose bytes start with the dropped token's; the text leaves those bytes out."""
    added = set(tokenizer.backend.get_added_tokens_decoder())
    ids, tail = tokenizer.encode(prompt), b""
    if len(ids) > 1 and ids[-1] not in added:
        ids, tail = ids[:-1], tokenizer.token_bytes(ids[-1])
    vocab = model.config.vocab_size
    allowed = torch.tensor([i < tokenizer.vocab_size and i not in added and tokenizer.token_bytes(i).startswith(tail)
                            for i in range(vocab)])
    out = []
    with torch.no_grad():
        for step in range(new):
            logits = model(torch.tensor([ids]))[0, -1]
            if step == 0:
                logits = logits.masked_fill(~allowed, float("-inf"))
            token = int(logits.argmax())
            out.append(token)
            if token in tokenizer.stop_token_ids:
                break
            ids.append(token)
    text = b"".join(tokenizer.token_bytes(t) for t in out if t not in tokenizer.stop_token_ids)
    return out, text[len(tail):].decode("utf-8", errors="replace")


def test_the_tokens_that_extend_a_tail_are_those_that_start_with_it(nano):
    _, tokenizer = nano
    healer = TokenHealer(tokenizer)
    added = set(tokenizer.backend.get_added_tokens_decoder())
    normal = [i for i in range(tokenizer.vocab_size) if i not in added]
    tails = [bytes([b]) for b in range(256)] + [b"):", b"):\n", b"    ", "订单".encode()[:4], b"\xff\xff", b"zzzz"]
    for tail in tails:
        expected = sorted(i for i in normal if tokenizer.token_bytes(i).startswith(tail))
        assert sorted(healer.extensions(tail)) == expected, tail
    assert healer.heal(tokenizer.encode("def add(a, b):")) == (tokenizer.encode("def add(a, b"), b"):")
    fim = tokenizer.encode(fim_prompt("a", "b"))
    assert healer.heal(fim) == (fim, b"")                                   # ends with <|fim_middle|>: as it is
    assert healer.heal(tokenizer.encode("def")) == (tokenizer.encode("def"), b"")   # one token: nothing to back up
    assert bisect.bisect_left(healer.keys, b"") == 0 and healer.keys == sorted(healer.keys)


def test_healed_completions_equal_the_definition_alone_and_batched(nano):
    model, tokenizer = nano
    engine = Engine(model, tokenizer)
    params = SamplingParams(max_new_tokens=NEW, token_healing=True)
    expected = [reference(model, tokenizer, prompt) for prompt in PROMPTS]
    for prompt, (ids, text) in zip(PROMPTS, expected):
        pieces, completion = [], None
        for event in engine.stream(prompt, params):
            pieces.append(event.text)
            completion = event.completion or completion
        assert (completion.token_ids, completion.text) == (ids, text), prompt
        assert "".join(pieces) == text and completion.prompt_tokens == len(tokenizer.encode(prompt))
    batched = engine.generate(PROMPTS, params)                              # left-padded, one tail per row
    assert [c.token_ids for c in batched] == [ids for ids, _ in expected]
    assert [c.text for c in batched] == [text for _, text in expected]
    plain = engine.generate(PROMPTS[:2], SamplingParams(max_new_tokens=NEW))  # healing is off unless asked for
    assert [c.token_ids for c in plain] != [ids for ids, _ in expected[:2]]


def test_a_healed_function_prompt_goes_on_to_its_body(nano):
    """What healing is for: "def add(a, b):" ends on the token "):", which the training text follows with a
    newline almost never ("):\\n" is its own token); healed, the completion starts the body on the next line."""
    model, tokenizer = nano
    engine = Engine(model, tokenizer)
    for prompt in PROMPTS[:2]:
        healed = engine.generate([prompt], SamplingParams(max_new_tokens=8, token_healing=True))[0]
        assert healed.text.startswith("\n"), healed.text
        assert tokenizer.encode(prompt + healed.text)[:len(tokenizer.encode(prompt)) - 1] == \
            tokenizer.encode(prompt)[:-1]


def test_the_servers_scheduler_heals_as_the_engine_does(nano):
    import threading

    model, tokenizer = nano
    engine = Engine(model, tokenizer)
    scheduler = Scheduler(engine, max_batch=4, max_len=256)
    scheduler.start()
    results, done = {}, threading.Event()

    def deliver(i):
        def on_event(event):
            if "done" in event:
                results[i] = event["done"]
                if len(results) == len(PROMPTS):
                    done.set()
        return on_event

    params = SamplingParams(max_new_tokens=NEW, token_healing=True)
    try:
        for i, prompt in enumerate(PROMPTS):
            scheduler.submit(Request(tokenizer.encode(prompt), params, deliver(i)))
        assert done.wait(120)
    finally:
        scheduler.stop()
    for i, prompt in enumerate(PROMPTS):
        ids, text = reference(model, tokenizer, prompt)
        assert (results[i].token_ids, results[i].text) == (ids, text), prompt


def test_a_first_token_that_respells_the_prompt_is_no_stop(nano):
    """A prompt ending in a newline, with the newline token among the stop ids (a stop-at-end-of-line setup): the
    healed first token often is that very newline again, which must not end the completion at once."""
    model, tokenizer = nano
    prompt = "import os\n"
    newline = tokenizer.encode(prompt)[-1]
    ids, _ = reference(model, tokenizer, prompt)
    assert tokenizer.token_bytes(newline) == b"\n" and ids[0] == newline      # the case this is about
    later = next(i for i, t in enumerate(ids) if i > 0 and (t == newline or t in tokenizer.stop_token_ids))
    params = SamplingParams(max_new_tokens=NEW, token_healing=True,
                            stop_token_ids=[newline, *tokenizer.stop_token_ids])
    engine = Engine(model, tokenizer)
    completion = engine.generate([prompt], params)[0]
    expected = b"".join(tokenizer.token_bytes(t) for t in ids[:later])[1:].decode("utf-8", errors="replace")
    assert (completion.token_ids, completion.text, completion.finish_reason) == (ids[:later + 1], expected, "stop")
    scheduler = Scheduler(engine, max_batch=2, max_len=256)
    scheduler.start()
    done = []
    try:
        scheduler.submit(Request(tokenizer.encode(prompt), params, lambda e: "done" in e and done.append(e["done"])))
        for _ in range(600):
            if done:
                break
            time.sleep(0.05)
    finally:
        scheduler.stop()
    assert (done[0].token_ids, done[0].text) == (ids[:later + 1], expected)
