"""Subjects: samples-file validation, code extraction, and the OpenAI-compatible endpoint client against a
local HTTP server (retries, backoff, a clear failure)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from zhcoder.eval.subjects import Endpoint, EndpointError, GenerationSettings, SamplesError, extract_code, read_samples

IDS = ["HumanEval/0", "HumanEval/1", "HumanEval/2"]


def write(tmp_path, lines):
    path = tmp_path / "samples.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_samples_numbered_per_task_and_fields(tmp_path):
    path = write(tmp_path, [
        json.dumps({"task_id": "HumanEval/1", "completion": "    return 1\n"}),
        json.dumps({"task_id": "HumanEval/1", "solution": "def f():\n    return 2\n"}),
        json.dumps({"task_id": "HumanEval/0", "generation": "    pass\n"}),
    ])
    samples = read_samples(path, IDS)
    assert [(s.task_id, s.completion_id) for s in samples] == [("HumanEval/1", 0), ("HumanEval/1", 1), ("HumanEval/0", 0)]
    assert samples[1].solution and samples[1].completion is None
    assert samples[2].completion == "    pass\n"


def test_humaneval_x_ids_map_onto_the_task(tmp_path):
    path = write(tmp_path, [json.dumps({"task_id": f"Python/{i}", "generation": "x"}) for i in range(3)])
    assert [s.task_id for s in read_samples(path, IDS)] == IDS


def test_malformed_samples_are_reported_with_line_numbers_and_nothing_scored(tmp_path):
    path = write(tmp_path, [
        json.dumps({"task_id": "HumanEval/0", "completion": "ok"}),
        "{not json",
        json.dumps({"completion": "no id"}),
        json.dumps({"task_id": "HumanEval/1"}),
        json.dumps({"task_id": "Nope/7", "completion": "x"}),
    ])
    with pytest.raises(SamplesError) as error:
        read_samples(path, IDS)
    message = str(error.value)
    for expected in ("4 bad line(s)", "line 2: bad JSON", "line 3: no task_id", "line 4: no completion",
                     "line 5: unknown task_id 'Nope/7'"):
        assert expected in message
    assert "\n" not in message


def test_extract_code_prefers_python_fence():
    reply = "说明：\n```text\nnot code\n```\n下面是代码：\n```python\ndef f():\n    return 1\n```\n完毕"
    assert extract_code(reply) == "def f():\n    return 1\n"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    assert extract_code("no fences at all") == "no fences at all"
    assert extract_code("```python\nunclosed = True\n") == "unclosed = True\n"


class FakeOpenAI(BaseHTTPRequestHandler):
    """Just enough of the OpenAI API: fails the first `fail_first` requests with 503."""

    state = {"requests": [], "fail_first": 0, "fail_after": None}

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.state["requests"].append((self.path, body, self.headers.get("Authorization")))
        count, after = len(self.state["requests"]), self.state["fail_after"]
        if count <= self.state["fail_first"] or (after is not None and count > after):
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "busy", "type": "server_error", "code": 503}}')
            return
        if self.path.endswith("/chat/completions"):
            content = "好的：\n```python\ndef add(a, b):\n    return a + b\n```"
            choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            reply = {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"], "choices": [choice]}
        else:
            choice = {"index": 0, "text": "    return a + b\n\ndef other():\n", "finish_reason": "stop"}
            reply = {"id": "c", "object": "text_completion", "created": 0, "model": body["model"], "choices": [choice]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    FakeOpenAI.state = {"requests": [], "fail_first": 0, "fail_after": None}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


PROBLEM = SimpleNamespace(task_id="HumanEval/9", prompt="def add(a, b):\n", instruction="写一个加法函数",
                          stop=["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"])


def test_endpoint_base_mode_cuts_all_stop_strings(server, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-test")
    endpoint = Endpoint(server, "qwen", GenerationSettings(mode="base"), api_key_env="MY_KEY")
    [sample] = list(endpoint.generate([(PROBLEM, 0)]))
    assert sample.completion == "    return a + b\n"
    path, body, auth = FakeOpenAI.state["requests"][0]
    assert path == "/v1/completions" and body["prompt"] == PROBLEM.prompt and len(body["stop"]) == 4
    assert auth == "Bearer sk-test" and body["temperature"] == 0.0


def test_endpoint_chat_mode_retries_then_extracts_code(server):
    FakeOpenAI.state["fail_first"] = 2
    endpoint = Endpoint(server, "qwen", GenerationSettings(mode="chat"), retries=2)
    [sample] = list(endpoint.generate([(PROBLEM, 0)]))
    assert sample.solution == "def add(a, b):\n    return a + b\n"
    assert len(FakeOpenAI.state["requests"]) == 3
    assert FakeOpenAI.state["requests"][-1][1]["messages"] == [{"role": "user", "content": "写一个加法函数"}]


def test_unreachable_endpoint_fails_clearly_after_retries():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = Endpoint(f"http://127.0.0.1:{port}/v1", "qwen", GenerationSettings(), retries=1, timeout_s=5)
    with pytest.raises(EndpointError, match="failed after 2 attempts"):
        list(endpoint.generate([(PROBLEM, 0)]))


def test_local_model_scores_a_prompt_over_its_context_as_empty_and_goes_on(tmp_path):
    """A prompt that does not fit the model's context (with max_new_tokens) must not stop the run: that sample
    is empty (a failure), the others are generated exactly as the engine generates them."""
    import torch

    from zhcoder.checkpoint import save_model
    from zhcoder.config import ModelConfig
    from zhcoder.engine import Engine, SamplingParams
    from zhcoder.eval.subjects import LocalModel
    from zhcoder.eval.tasks import Problem
    from zhcoder.model import QwenForCausalLM, init_weights
    from zhcoder.tokenizer import Tokenizer

    config = ModelConfig(model_type="qwen3", vocab_size=151936, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                         max_position_embeddings=64, torch_dtype="float32")
    model = QwenForCausalLM(config)
    init_weights(model, std=0.2, seed=0)
    save_model(model, tmp_path / "m", tokenizer=Tokenizer.qwen())
    problems = [Problem(f"t/{i}", prompt, "", None, None, []) for i, prompt in
                enumerate(["def f(x):\n", "x = 1\n" * 40, "def g():\n"])]
    subject = LocalModel(str(tmp_path / "m"), GenerationSettings(max_new_tokens=8), batch_size=3)
    samples = list(subject.generate([(p, 0) for p in problems]))
    assert [s.task_id for s in samples] == ["t/0", "t/1", "t/2"] and subject.too_long == 1
    assert samples[1].completion == ""
    engine = Engine(model.eval(), Tokenizer.qwen())
    with torch.no_grad():
        expected = engine.generate(["def f(x):\n", "def g():\n"], SamplingParams(max_new_tokens=8))
    assert [samples[0].completion, samples[2].completion] == [c.text for c in expected]
