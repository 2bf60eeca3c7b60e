"""`zhcoder serve` through the official openai client and raw HTTP: chat, FIM completions, /infill, stop strings,
errors, 200+ hostile requests, 32 concurrent streams vs one-by-one, disconnects, a full queue."""

import json
import socket
import threading
import time

import httpx
import pytest

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from zhcoder.chat import fim_prompt, render_chat  # noqa: E402
from zhcoder.checkpoint import save_model  # noqa: E402
from zhcoder.config import ModelConfig  # noqa: E402
from zhcoder.engine import Engine, SamplingParams  # noqa: E402
from zhcoder.model import QwenForCausalLM, init_weights  # noqa: E402
from zhcoder.serve.app import build  # noqa: E402
from zhcoder.tokenizer import Tokenizer  # noqa: E402

KEY = "sk-zhcoder-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """An in-process uvicorn server on a free port (zhcoder serve over `model_dir`, or the given `app`)."""

    def __init__(self, model_dir=None, app=None, key=KEY, **options):
        if app is None:
            app, self.scheduler = build(str(model_dir), model_name="tiny", api_key=key, dtype="float32", **options)
        self.app, self.port = app, free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key=key or "none", max_retries=0, timeout=60)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = ModelConfig(model_type="qwen3", vocab_size=151936, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         torch_dtype="float32")
    model = QwenForCausalLM(config)
    init_weights(model, std=0.2, seed=0)                    # a large std: varied, non-repeating greedy text
    folder = tmp_path_factory.mktemp("serve") / "tiny"
    save_model(model, folder, tokenizer=Tokenizer.qwen())
    return folder


@pytest.fixture(scope="module")
def served(checkpoint):
    running = Running(checkpoint, max_batch=8, queue_size=64)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def engine(checkpoint):
    from zhcoder.checkpoint import load_model

    return Engine(load_model(checkpoint, dtype="float32"), Tokenizer.qwen())


MESSAGES = [{"role": "user", "content": "写一个计算购物车总价的函数"}]


def test_chat_plain_and_streamed_agree_with_the_engine(served, engine):
    reply = served.client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=20, temperature=0)
    prompt = render_chat(MESSAGES, template="qwen3")
    expected = engine.generate([prompt], SamplingParams(max_new_tokens=20))[0]
    assert reply.choices[0].message.content == expected.text
    assert reply.choices[0].finish_reason == expected.finish_reason
    assert reply.usage.prompt_tokens == len(Tokenizer.qwen().encode(prompt))
    assert reply.usage.completion_tokens == len(expected.token_ids)
    chunks = list(served.client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=20,
                                                         temperature=0, stream=True,
                                                         stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
    assert chunks[-1].usage.completion_tokens == len(expected.token_ids) and not chunks[-1].choices
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == expected.finish_reason
    several = served.client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, temperature=1.0,
                                                    seed=3, n=3)
    assert [c.index for c in several.choices] == [0, 1, 2]


def test_completions_with_suffix_are_fill_in_the_middle(served, engine):
    prefix, suffix = "def 优惠券折扣(价格, 折扣):\n    ", "\n    return 结果\n"
    reply = served.client.completions.create(model="tiny", prompt=prefix, suffix=suffix, max_tokens=12,
                                             temperature=0, logprobs=2)
    fim_stops = [Tokenizer.qwen().token_to_id(t) for t in ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>",
                                                            "<|repo_name|>", "<|fim_prefix|>", "<|fim_suffix|>",
                                                            "<|fim_middle|>", "<|im_end|>")]
    expected = engine.generate([fim_prompt(prefix, suffix)], SamplingParams(max_new_tokens=12,
                                                                            stop_token_ids=fim_stops))[0]
    assert reply.choices[0].text == expected.text
    logprobs = reply.choices[0].logprobs
    assert len(logprobs.tokens) == len(expected.token_ids) and all(lp <= 0 for lp in logprobs.token_logprobs)
    assert all(len(top) <= 2 for top in logprobs.top_logprobs)
    echoed = served.client.completions.create(model="tiny", prompt="import os\n", max_tokens=5, temperature=0,
                                              echo=True)
    assert echoed.choices[0].text.startswith("import os\n")
    infill = httpx.post(served.url + "/infill", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                        json={"input_prefix": prefix, "input_suffix": suffix, "n_predict": 12}).json()
    assert infill["content"] == expected.text and infill["stop"] is True
    extra = httpx.post(served.url + "/infill", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                       json={"input_prefix": prefix, "input_suffix": suffix, "n_predict": 4,
                             "input_extra": [{"filename": "cart.py", "text": "class 购物车: pass\n"}]}).json()
    assert extra["tokens_evaluated"] > infill["tokens_evaluated"]


def test_token_healing_is_an_extra_field_of_completions(served, engine):
    """`extra_body={"token_healing": true}`: the engine's healed completion, whole and streamed; refused with a suffix
    or logprobs, whose token offsets it would break."""
    prompt = "def 计算订单总价(订单列表):"
    expected = engine.generate([prompt], SamplingParams(max_new_tokens=10, token_healing=True))[0]
    heal = {"token_healing": True}
    reply = served.client.completions.create(model="tiny", prompt=prompt, max_tokens=10, temperature=0,
                                             extra_body=heal)
    assert reply.choices[0].text == expected.text and reply.usage.completion_tokens == len(expected.token_ids)
    chunks = served.client.completions.create(model="tiny", prompt=prompt, max_tokens=10, temperature=0,
                                              extra_body=heal, stream=True)
    assert "".join(c.choices[0].text for c in chunks) == expected.text
    for refused in ({"suffix": "\n    return 0\n"}, {"logprobs": 1}):
        with pytest.raises(openai.BadRequestError) as error:
            served.client.completions.create(model="tiny", prompt=prompt, max_tokens=4, extra_body=heal, **refused)
        assert error.value.body["param"] == "token_healing"


def test_penalties_logit_bias_and_chat_logprobs_are_applied_not_ignored(served, engine):
    """frequency_penalty, presence_penalty and logit_bias (chat and completions alike) give the engine's tokens under
    the same settings; chat's logprobs / top_logprobs come back in OpenAI's shape, whole and streamed; a bad
    logit_bias is the same 400 on both routes."""
    bias = {"11": 8.0, "12": -100.0}
    settings = dict(frequency_penalty=1.2, presence_penalty=0.5, logit_bias=bias)
    expected = engine.generate(["订单状态"], SamplingParams(
        max_new_tokens=12, temperature=0, frequency_penalty=1.2, presence_penalty=0.5,
        logit_bias={11: 8.0, 12: -100.0}))[0]
    reply = served.client.completions.create(model="tiny", prompt="订单状态", max_tokens=12, temperature=0, **settings)
    assert reply.choices[0].text == expected.text
    assert expected.text != engine.generate(["订单状态"], SamplingParams(max_new_tokens=12))[0].text
    prompt = render_chat(MESSAGES, template="qwen3")
    expected = engine.generate([prompt], SamplingParams(max_new_tokens=10, frequency_penalty=1.2,
                                                        presence_penalty=0.5, logit_bias={11: 8.0, 12: -100.0}))[0]
    chat = served.client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=10, temperature=0,
                                                 logprobs=True, top_logprobs=3, **settings)
    assert chat.choices[0].message.content == expected.text
    content = chat.choices[0].logprobs.content
    assert [list(e.bytes) for e in content] == [list(engine.token_bytes(t)) for t in expected.token_ids]
    assert all(e.logprob <= 0 and len(e.top_logprobs) == 3 and e.top_logprobs[0].logprob >= e.logprob
               for e in content)
    chunks = served.client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=10, temperature=0,
                                                   logprobs=True, top_logprobs=3, stream=True, **settings)
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in content]
    assert served.client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2).choices[0].logprobs \
        is None
    for create, prompt_field in ((served.client.completions.create, {"prompt": "x"}),
                                 (served.client.chat.completions.create, {"messages": MESSAGES})):
        for bad in ({"logit_bias": {"word": 1}}, {"logit_bias": {"5": 500}}, {"logit_bias": {"99999999": 1}}):
            with pytest.raises(openai.BadRequestError) as error:
                create(model="tiny", max_tokens=2, **prompt_field, **bad)
            assert error.value.body["param"] == "logit_bias"
    with pytest.raises(openai.BadRequestError) as error:
        served.client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2, top_logprobs=2)
    assert error.value.body["param"] == "top_logprobs"
    with pytest.raises(openai.BadRequestError) as error:
        served.client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2,
                                              response_format={"type": "json_object"})
    assert error.value.body["param"] == "response_format"


def test_stop_strings_cut_the_text_also_when_streaming(served):
    free = served.client.completions.create(model="tiny", prompt="订单状态", max_tokens=24, temperature=0).choices[0]
    assert len(free.text) >= 6
    stop = free.text[3:5]
    cut = served.client.completions.create(model="tiny", prompt="订单状态", max_tokens=24, temperature=0,
                                           stop=[stop, "never-appears"]).choices[0]
    assert cut.text == free.text[:free.text.index(stop)] and cut.finish_reason == "stop"
    pieces = served.client.completions.create(model="tiny", prompt="订单状态", max_tokens=24, temperature=0,
                                              stop=[stop], stream=True)
    assert "".join(p.choices[0].text for p in pieces if p.choices) == cut.text


def test_errors_are_openai_errors(served):
    client = served.client
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=MESSAGES)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served.url + "/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError) as too_long:
        client.completions.create(model="tiny", prompt="代码 " * 3000, max_tokens=8)
    assert too_long.value.code == "context_length_exceeded" and too_long.value.param == "prompt"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "代码 " * 3000}])
    assert too_long.value.code == "context_length_exceeded" and too_long.value.param == "messages"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=10**6)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=MESSAGES, stop=[f"s{i}" for i in range(17)])
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=-1)
    assert httpx.get(served.url + "/health").json()["status"] == "ok"


HOSTILE = [
    b"", b"{", b"[]", b"null", b"42", b'"text"', b"\xff\xfe\x00garbage", b'{"model": "tiny"}',
    b'{"model": "tiny", "messages": []}', b'{"model": "tiny", "messages": "hi"}',
    b'{"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": 5}]}',
    b'{"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}',
    b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}',
    b'{"model": "tiny", "prompt": ""}', b'{"model": "tiny", "prompt": [[1, 2]]}', b'{"model": "tiny", "prompt": [-5]}',
    b'{"model": "tiny", "prompt": [99999999]}', b'{"model": "tiny", "prompt": "x", "suffix": 3}',
    b'{"model": "tiny", "prompt": ["a", "b"]}', b'{"model": "tiny", "prompt": "x", "echo": true, "suffix": "y"}',
    b'{"model": "tiny", "prompt": "x", "best_of": 3}', b'{"model": "tiny", "prompt": "x", "stop": [""]}',
    b'{"model": "tiny", "prompt": "x", "stop": 5}', b'{"model": "tiny", "prompt": "x", "n": 0}',
    b'{"model": "tiny", "prompt": "x", "n": 100}', b'{"model": "tiny", "prompt": "x", "logprobs": 99}',
    b'{"model": "tiny", "prompt": "x", "seed": -1}', b'{"model": "tiny", "prompt": "x", "top_p": 0}',
    b'{"model": "tiny", "prompt": "x", "temperature": "hot"}', b'{"model": "tiny", "prompt": "x", "stream": "yes"}',
    b'{"model": "tiny", "prompt": "x", "max_tokens": 1e308}', b'{"model": "tiny", "prompt": "x", "max_tokens": NaN}',
    b'{"model": "tiny", "prompt": "x", "unknown_field": 1}', b'{"model": "tiny", "prompt": "x", "max_tokens": 0}',
]
NUMBERS = ["-5", "1e309", "-1e309", "99999999999999999999999", '"three"', "[]", "{}", "[1]"]
BAD_MESSAGES = [
    '[{"content": "x"}]', '[{"role": "user"}, 5]', '[{"role": "user", "content": "x", "extra": 1}]',
    '[{"role": "tool", "content": {"a": 1}}]', '[{"role": "assistant", "tool_calls": "call"}]',
    '[{"role": "user", "content": [{"type": "text"}]}]', '[{"role": "user", "content": [{"type": "text", "text": 5}]}]',
    '[{"role": "user", "content": [5]}]', '[{"role": ["user"], "content": "x"}]', '[null]', '[[]]', '{"role": "user"}',
    '[{"role": "user", "content": "x", "name": 5}]', '[{"role": "system", "content": null}]',
]
BAD_TOOLS = ['"tools": "x"', '"tools": [1, 2]', '"tools": {}', '"tool_choice": 5', '"tools": [null]',
             '"chat_template_kwargs": "x"', '"stream_options": 5', '"response_format": "json"',
             '"parallel_tool_calls": "maybe"', '"top_logprobs": 50', '"max_completion_tokens": 0', '"n": 1.5']
AUTH = ["", "Bearer", f"bearer {KEY}", f"Bearer {KEY}x", "Basic abc", "Bearer wrong", f"Token {KEY}", f"{KEY}"]
FIELDS = ["max_tokens", "temperature", "top_p", "top_k", "n", "seed", "logprobs", "min_p", "repetition_penalty",
          "presence_penalty", "frequency_penalty"]


def hostile_requests():
    for body in HOSTILE:
        for path in ("/v1/chat/completions", "/v1/completions"):
            yield "POST", path, body, True
    for field in FIELDS:
        for value in NUMBERS:
            body = f'{{"model": "tiny", "prompt": "x", "{field}": {value}}}'.encode()
            yield "POST", "/v1/completions", body, True
    for messages in BAD_MESSAGES:
        yield "POST", "/v1/chat/completions", f'{{"model": "tiny", "messages": {messages}}}'.encode(), True
    for tools in BAD_TOOLS:
        yield "POST", "/v1/chat/completions", \
            f'{{"model": "tiny", "messages": [{{"role": "user", "content": "x"}}], {tools}}}'.encode(), True
    for header in AUTH:
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"),
                             ("POST", "/infill")):
            yield method, path, b'{"model": "tiny", "prompt": "x"}', header
    yield "POST", "/v1/completions", b"[" * 100000 + b"]" * 100000, True          # deeply nested
    yield "POST", "/v1/completions", b'{"model": "tiny", "prompt": [' + b"1," * 1000000 + b'1]}', True
    yield "POST", "/v1/completions", b'{"model": "tiny", "prompt": "x", "stop": ' + \
        json.dumps([f"s{i}" for i in range(17)]).encode() + b"}", True
    for path in ("/v1/nothing", "/v2/chat", "/admin", "/v1/models/tiny/delete", "/../etc/passwd"):
        yield "GET", path, b"", True
    yield "GET", "/v1/chat/completions", b"", True
    yield "DELETE", "/v1/models", b"", True
    yield "POST", "/v1/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}]}', False
    yield "POST", "/v1/completions", b'{"model": "tiny", "prompt": "' + b"a" * (5 * 2**20) + b'"}', True
    yield "POST", "/infill", b'{"n_predict": 999999999}', True
    yield "POST", "/infill", b'{"input_prefix": 5}', True
    yield "POST", "/infill", b'{"stop": [""]}', True


def test_hostile_requests_all_get_4xx_json_and_the_server_survives(served):
    requests = list(hostile_requests())
    assert len(requests) >= 200
    statuses = []
    with httpx.Client(base_url=served.url, timeout=60) as http:
        for method, path, body, auth in requests:
            header = f"Bearer {KEY}" if auth is True else auth or None
            headers = {"Authorization": header} if header else {}
            response = http.request(method, path, content=body, headers=headers)
            if response.status_code == 200:                   # a value that is odd but valid (e.g. top_k 1e22)
                continue
            assert 400 <= response.status_code < 500, (path, body[:80], response.status_code, response.text[:200])
            error = response.json()["error"]
            assert error["message"] and error["type"], (path, body[:80])
            statuses.append(response.status_code)
    assert {400, 401, 404, 405, 413, 422} <= set(statuses)
    assert len(statuses) >= 200
    ok = served.client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4, temperature=0)
    assert ok.choices[0].finish_reason in ("length", "stop")


def test_32_concurrent_streams_equal_one_by_one(served):
    prompts = [f"# 订单 {i}\ndef 处理订单_{i}(订单):\n" for i in range(32)]
    sequential = [served.client.completions.create(model="tiny", prompt=p, max_tokens=16, temperature=0)
                  .choices[0].text for p in prompts]
    steps_before = served.scheduler.steps
    batched_before = sum(count for size, count in served.scheduler.batch_sizes.items() if size > 1)
    results: list = [None] * len(prompts)

    def client(i):
        stream = served.client.completions.create(model="tiny", prompt=prompts[i], max_tokens=16, temperature=0,
                                                  stream=True)
        results[i] = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    elapsed = time.time() - start
    assert results == sequential
    batched = sum(count for size, count in served.scheduler.batch_sizes.items() if size > 1) - batched_before
    assert batched > 0 and served.scheduler.steps - steps_before < 32 * 15     # decode steps were shared
    print(f"32 streams x 16 tokens in {elapsed:.2f} s ({32 * 16 / elapsed:.0f} tokens/s)")


def test_a_disconnected_client_stops_its_generation(served):
    with httpx.Client(base_url=served.url, timeout=60) as http:
        with http.stream("POST", "/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
                         json={"model": "tiny", "prompt": "def f():", "max_tokens": 3000, "temperature": 0,
                               "stream": True}) as response:
            lines = response.iter_lines()
            next(lines), next(lines)
    deadline = time.time() + 20
    while time.time() < deadline and served.scheduler.load["active"]:
        time.sleep(0.05)
    assert served.scheduler.load["active"] == 0


def test_upstream_proxy_adds_fim_and_infill(served, engine):
    from zhcoder.serve.app import FIM_STOP_TOKENS
    from zhcoder.serve.proxy import create_proxy_app

    proxy = Running(app=create_proxy_app(served.url + "/v1", upstream_key=KEY), key=None)
    try:
        client = proxy.client
        prefix, suffix = "def 库存检查(商品):\n    ", "\n    return 充足\n"
        fim_ids = [engine.tokenizer.token_to_id(token) for token in FIM_STOP_TOKENS]
        fim_stops = SamplingParams(max_new_tokens=10, stop_token_ids=[i for i in fim_ids if i is not None])
        expected = engine.generate([fim_prompt(prefix, suffix)], fim_stops)[0].text   # as the local server stops
        reply = client.completions.create(model="tiny", prompt=prefix, suffix=suffix, max_tokens=10, temperature=0)
        assert reply.choices[0].text == expected
        streamed = client.completions.create(model="tiny", prompt=prefix, suffix=suffix, max_tokens=10,
                                             temperature=0, stream=True)
        assert "".join(c.choices[0].text for c in streamed if c.choices) == expected
        infill = httpx.post(proxy.url + "/infill", timeout=60,
                            json={"input_prefix": prefix, "input_suffix": suffix, "n_predict": 10}).json()
        assert infill["content"] == expected
        direct = served.client.completions.create(model="tiny", prompt=prefix, suffix=suffix, max_tokens=10,
                                                  temperature=0)
        assert direct.choices[0].text == expected
        chat = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0)
        direct = served.client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0)
        assert chat.choices[0].message.content == direct.choices[0].message.content
        with pytest.raises(openai.NotFoundError):                # the upstream's errors come through
            client.chat.completions.create(model="other", messages=MESSAGES)
    finally:
        proxy.stop()


def test_upstream_proxy_sends_fim_control_tokens_as_stop_strings():
    """An upstream that prints special tokens (as zhcoder's own /v1/completions does) must stop where the middle
    ends: the proxy adds Qwen's FIM control tokens, after the caller's own, to the `stop` of the FIM requests it
    makes for `suffix` and for /infill."""
    from fastapi import FastAPI, Request

    from zhcoder.serve.app import FIM_STOP_TOKENS
    from zhcoder.serve.proxy import create_proxy_app

    seen = []
    upstream = FastAPI()

    @upstream.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "test"}]}

    @upstream.post("/v1/completions")
    async def completions(request: Request):
        seen.append(await request.json())
        return {"id": "c", "object": "text_completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "text": "x", "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    fake = Running(app=upstream, key=None)
    proxy = Running(app=create_proxy_app(fake.url + "/v1"), key=None)
    try:
        proxy.client.completions.create(model="m", prompt="a", suffix="b", stop="\n\n", max_tokens=4)
        httpx.post(proxy.url + "/infill", json={"input_prefix": "a", "input_suffix": "b", "stop": ["END"]}, timeout=30)
        nine = [f"s{i}" for i in range(9)]                         # 16 stop strings at most: 9 + 7 FIM tokens
        proxy.client.completions.create(model="m", prompt="a", suffix="b", stop=nine, max_tokens=4)
        assert [request["stop"] for request in seen] == [["\n\n", *FIM_STOP_TOKENS], ["END", *FIM_STOP_TOKENS],
                                                         nine + list(FIM_STOP_TOKENS[:7])]
        assert seen[0]["prompt"] == fim_prompt("a", "b") and "suffix" not in seen[0]
        httpx.post(proxy.url + "/v1/completions", json={"model": "m", "prompt": "a", "suffix": "b", "stop": 5})
        assert seen[-1]["stop"] == 5                              # not ours to judge: the upstream refuses it
    finally:
        proxy.stop()
        fake.stop()


def test_a_full_queue_answers_429(checkpoint):
    running = Running(checkpoint, max_batch=1, queue_size=1)
    try:
        codes = []

        def call():
            response = httpx.post(running.url + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
                                  json={"model": "tiny", "prompt": "x", "max_tokens": 200, "temperature": 0},
                                  timeout=60)
            codes.append(response.status_code)
            if response.status_code == 429:
                assert response.json()["error"]["code"] == "queue_full"

        threads = [threading.Thread(target=call) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert 429 in codes and 200 in codes
    finally:
        running.stop()


# The class names vLLM's model registry maps these model types to (vllm/model_executor/models/registry.py).
VLLM_ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM"}


def test_checkpoints_name_the_architecture_vllm_expects(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["model_type"] == "qwen3"
    assert (checkpoint / "tokenizer.json").is_file() and (checkpoint / "model.safetensors").is_file()
    for model_type, architecture in VLLM_ARCHITECTURES.items():
        extra = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 8} if model_type == "qwen3_moe" else {}
        hf = ModelConfig(model_type=model_type, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, vocab_size=64, **extra).to_hf_dict()
        assert hf["architectures"] == [architecture] and "torch_dtype" in hf and "rope_theta" in hf


TOOLS = [{"type": "function", "function": {
    "name": "get_order", "description": "查询订单状态",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"]}}}]
ASK = [{"role": "user", "content": "查询订单 1024 的状态"}]
CALL = {"role": "assistant", "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "get_order", "arguments": {"order_id": 1024}}}]}


@pytest.fixture(scope="module")
def tool_model(tmp_path_factory):
    """A tiny model taught (by `zhcoder train sft`) to answer ASK with a Qwen3-Coder XML call of get_order."""
    import subprocess
    import sys

    from zhcoder.chat import builtin_template

    root = tmp_path_factory.mktemp("tools")
    rendered = render_chat(ASK + [CALL], template="qwen3-coder", tools=TOOLS, add_generation_prompt=False)
    (root / "corpus.txt").write_text(rendered * 20)          # a tokenizer that packs this conversation tightly

    def run(*args):
        result = subprocess.run([sys.executable, "-m", "zhcoder.cli", *map(str, args)], capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]

    run("tokenizer", "train", root / "corpus.txt", "--vocab-size", "600", "--out", root / "tok")
    tokenizer = Tokenizer.from_dir(root / "tok")
    config = ModelConfig(model_type="qwen3", vocab_size=640, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         torch_dtype="float32", eos_token_id=tokenizer.token_to_id("<|im_end|>"))
    model = QwenForCausalLM(config)
    init_weights(model, seed=0)
    save_model(model, root / "base", tokenizer=tokenizer, chat_template=builtin_template("qwen3-coder"))
    row = {"messages": ASK + [CALL], "tools": TOOLS}
    (root / "chat.jsonl").write_text((json.dumps(row, ensure_ascii=False) + "\n") * 8)
    run("data", "sft", root / "chat.jsonl", "--tokenizer", root / "base", "--out", root / "data", "--val-fraction", "0")
    run("train", "sft", "--model", root / "base", "--data", root / "data", "--out", root / "run", "--steps", "60",
        "--lr", "5e-3", "--warmup-steps", "3", "--seq-len", "512", "--batch-size", "2", "--save-every", "60")
    running = Running(root / "run" / "final", max_batch=4)
    yield running
    running.stop()


def test_tool_call_round_trip(tool_model):
    client = tool_model.client
    reply = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, temperature=0, max_tokens=80)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_order"
    assert json.loads(call.function.arguments) == {"order_id": 1024} and call.id.startswith("call_")
    chunks = list(client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, temperature=0,
                                                 max_tokens=80, stream=True))
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert [(d.function.name, json.loads(d.function.arguments)) for d in deltas] == [("get_order", {"order_id": 1024})]
    assert "<tool_call>" not in "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # the client runs the tool and sends its result back; the server renders it into the next turn
    follow = client.chat.completions.create(model="tiny", temperature=0, max_tokens=8, tools=TOOLS, messages=ASK + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"status": "已发货"}, ensure_ascii=False)}])
    assert follow.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert follow.usage.prompt_tokens > reply.usage.prompt_tokens
