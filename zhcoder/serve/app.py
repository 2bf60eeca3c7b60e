"""The OpenAI-compatible HTTP API over the continuous-batching scheduler (FastAPI).

    zhcoder serve --model DIR [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--max-batch 16]

Endpoints
    GET  /health                    {"status": "ok", "active", "waiting", ...} (no key needed)
    GET  /v1/models                 the one served model
    POST /v1/chat/completions       messages (chat template), stream (SSE, `data: [DONE]`), max_tokens, temperature,
                                    top_p, seed, stop (<= 16), n, frequency/presence_penalty, logit_bias, logprobs /
                                    top_logprobs (0-20), tools / tool_choice -> tool_calls (Qwen3-Coder XML
                                    or Qwen2.5 JSON parsed into OpenAI calls; streamed as tool_call deltas), usage
                                    (also in a last chunk with stream_options.include_usage)
    POST /v1/completions            prompt, suffix -> fill-in-the-middle with Qwen's FIM tokens, stream, echo,
                                    logprobs (0-5), stop, max_tokens; token_healing (an extra field: back up over
                                    the prompt's last token, zhcoder.healing; not with suffix or logprobs)
    POST /infill                    llama.cpp's: input_prefix, input_suffix, input_extra (repo-level context:
                                    [{"filename", "text"}]), prompt, n_predict, stream

Errors are OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`: 400 bad JSON / bad values / context
too long, 401 missing or wrong API key, 404 unknown route or model, 405 wrong method, 413 body too large,
422 wrong types or unknown fields, 429 queue full, 503 shutting down, 500 anything unexpected (never a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any, Literal, Union

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from zhcoder.chat import (ChatTemplateError, TOOL_CALL_OPEN, fim_prompt, parse_tool_calls, render_chat,
                          repo_prompt)
from zhcoder.engine import ContextLengthError, SamplingParams
from zhcoder.serve.scheduler import QueueFull, Request, Scheduler, SchedulerStopped

MAX_STOP = 16
FIM_STOP_TOKENS = ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|fim_prefix|>",
                   "<|fim_suffix|>", "<|fim_middle|>", "<|im_end|>")


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param


def error_response(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                   param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}}, status_code=status)


# ------------------------------------------------------------------------------------------------- requests

Stop = Union[str, list[str], None]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Sampling(Strict):
    model: str
    stream: bool = False
    stream_options: dict | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=10)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: Stop = None
    n: int = Field(1, ge=1, le=8)
    user: str | None = None


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[dict], None] = None
    name: str | None = None
    tool_calls: list[dict] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[dict] | None = None
    tool_choice: Union[str, dict, None] = None
    parallel_tool_calls: bool | None = None
    response_format: dict | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    chat_template_kwargs: dict | None = None


class CompletionRequest(Sampling):
    prompt: Union[str, list[str], list[int]]
    suffix: str | None = None
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)
    best_of: int | None = Field(None, ge=1, le=1)
    token_healing: bool = False


class Extra(BaseModel):
    filename: str = ""
    text: str = ""


class InfillRequest(BaseModel):                       # llama.cpp's /infill (lenient, as llama.cpp is)
    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: list[Extra] = []
    prompt: str = ""
    filename: str | None = None
    n_predict: int = Field(-1, ge=-1)
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: list[str] = []
    stream: bool = False


# --------------------------------------------------------------------------------------------------- server


def infill_prompt(body: InfillRequest) -> str:
    """llama.cpp's infill request as Qwen's FIM prompt; `input_extra` files become repo-level context."""
    prefix = body.input_prefix + body.prompt
    if body.input_extra:
        files = [(extra.filename or f"file{i}", extra.text) for i, extra in enumerate(body.input_extra)]
        return repo_prompt("project", files, prefix=prefix, suffix=body.input_suffix, path=body.filename or "untitled")
    return fim_prompt(prefix, body.input_suffix)


class Server:
    """What the routes share: the scheduler, the tokenizer, the served name and the limits."""

    def __init__(self, scheduler: Scheduler, model_name: str, api_key: str | None = None,
                 max_tokens_cap: int = 4096, default_max_tokens: int = 512, chat_template: str | None = None):
        self.scheduler, self.engine = scheduler, scheduler.engine
        self.tokenizer = self.engine.tokenizer
        self.model_name, self.api_key = model_name, api_key
        self.max_tokens_cap, self.default_max_tokens = max_tokens_cap, default_max_tokens
        self.chat_template = chat_template or self.tokenizer.chat_template or "qwen3"
        self.created = int(time.time())
        self.warmup = False                    # compile the decode steps before serving (see build)
        self.fim_stop_ids = [i for i in (self.tokenizer.token_to_id(t) for t in FIM_STOP_TOKENS) if i is not None]

    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise APIError(404, f"The model `{name}` does not exist; this server serves `{self.model_name}`",
                           code="model_not_found", param="model")

    def params(self, body: Sampling, max_tokens: int | None, default_max: int, stop_token_ids=None,
               seed_offset: int = 0, token_healing: bool = False) -> SamplingParams:
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stops) > MAX_STOP:
            raise APIError(400, f"at most {MAX_STOP} stop sequences are allowed", param="stop")
        if any(not s for s in stops):
            raise APIError(400, "stop sequences must not be empty", param="stop")
        wanted = max_tokens or default_max
        if wanted > self.max_tokens_cap:
            raise APIError(400, f"max_tokens is {wanted}; this server allows at most {self.max_tokens_cap}",
                           param="max_tokens")
        return SamplingParams(
            max_new_tokens=wanted, temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p, top_k=body.top_k or 0, min_p=body.min_p or 0.0,
            repetition_penalty=body.repetition_penalty or 1.0, frequency_penalty=body.frequency_penalty or 0.0,
            presence_penalty=body.presence_penalty or 0.0, logit_bias=self.logit_bias(body.logit_bias),
            seed=None if body.seed is None else body.seed + seed_offset, stop=stops, stop_token_ids=stop_token_ids,
            token_healing=token_healing)

    def logit_bias(self, bias: dict[str, float] | None) -> dict[int, float]:
        """OpenAI's logit_bias ({"token id": bias in [-100, 100]}) with integer keys, checked."""
        vocab, out = self.engine.model.config.vocab_size, {}
        for key, value in (bias or {}).items():
            if not key.strip().isdigit() or int(key) >= vocab:
                raise APIError(400, f"logit_bias keys are token ids below {vocab}; got {key!r}", param="logit_bias")
            if not -100 <= value <= 100:
                raise APIError(400, f"logit_bias values lie in [-100, 100]; got {value}", param="logit_bias")
            out[int(key)] = float(value)
        return out

    def chat_logprobs(self, event: dict) -> dict:
        """One token's entry of a chat completion's `logprobs.content` (OpenAI's shape)."""
        def entry(token: int, logprob: float) -> dict:
            data = self.engine.token_bytes(token)
            return {"token": data.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(data)}
        return {**entry(event["token"], event["logprob"]),
                "top_logprobs": [entry(t, lp) for t, lp in event.get("top_logprobs", [])]}

    def encode(self, prompt: Any) -> list[int]:
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            if any(t < 0 or t >= self.engine.model.config.vocab_size for t in prompt):
                raise APIError(400, "prompt token ids must lie in the vocabulary", param="prompt")
            return list(prompt)
        if isinstance(prompt, list):
            if len(prompt) != 1 or not isinstance(prompt[0], str):
                raise APIError(400, "give one prompt (a string, or a list of one string or of token ids)",
                               param="prompt")
            prompt = prompt[0]
        ids = self.tokenizer.encode(prompt, special=True)
        if not ids:
            raise APIError(400, "the prompt is empty", param="prompt")
        return ids

    async def run(self, prompt_ids: list[int], params: list[SamplingParams], http: HTTPRequest,
                  logprobs: int | None = None, prompt_param: str = "messages"):
        """Submit one request per choice; yields (choice, event) as the scheduler produces them. `prompt_param`
        names the field that made the prompt, for a context_length_exceeded error."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        requests = []
        for index, choice_params in enumerate(params):
            def deliver(event, index=index):
                loop.call_soon_threadsafe(queue.put_nowait, (index, event))
            requests.append(Request(prompt_ids, choice_params, deliver, logprobs=logprobs))
        try:
            for request in requests:
                self.scheduler.submit(request)
        except ContextLengthError as error:
            raise APIError(400, str(error), code="context_length_exceeded", param=prompt_param) from None
        except QueueFull as error:
            raise APIError(429, f"server busy: {error}", type_="rate_limit_error", code="queue_full") from None
        except SchedulerStopped as error:
            raise APIError(503, str(error), type_="server_error", code="shutting_down") from None
        remaining = len(requests)
        try:
            while remaining:
                try:
                    index, event = await asyncio.wait_for(queue.get(), timeout=1.0)
                except asyncio.TimeoutError:
                    if await http.is_disconnected():
                        return
                    continue
                if "error" in event:
                    raise APIError(500, f"generation failed: {event['error']}", type_="server_error")
                if "done" in event:
                    remaining -= 1
                yield index, event
        finally:
            for request in requests:                      # a client that went away stops its generation
                request.cancel()


def sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


class ToolCallFilter:
    """Streams content up to a `<tool_call>` marker and holds back the rest (parsed at the end)."""

    def __init__(self, active: bool):
        self.active, self.buffer, self.stopped = active, "", False

    def push(self, piece: str) -> str:
        if not self.active:
            return piece
        if self.stopped:
            self.buffer += piece
            return ""
        self.buffer += piece
        at = self.buffer.find(TOOL_CALL_OPEN)
        if at >= 0:
            out, self.buffer, self.stopped = self.buffer[:at], self.buffer[at:], True
            return out
        keep = next((k for k in range(min(len(TOOL_CALL_OPEN) - 1, len(self.buffer)), 0, -1)
                     if TOOL_CALL_OPEN.startswith(self.buffer[-k:])), 0)
        out, self.buffer = self.buffer[:len(self.buffer) - keep], self.buffer[len(self.buffer) - keep:]
        return out


def usage(prompt_tokens: int, completions: list) -> dict:
    generated = sum(len(c.token_ids) for c in completions if c is not None)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": generated, "total_tokens": prompt_tokens + generated}


def install_common(app: FastAPI, api_key: str | None, max_body_bytes: int) -> None:
    """OpenAI-style errors for everything, the API key check, the body size cap and UTF-8 check."""
    @app.exception_handler(APIError)
    async def api_error(_, error: APIError):
        return error_response(error.status, error.message, error.type, error.code, error.param)

    @app.exception_handler(RequestValidationError)
    async def invalid(_, error: RequestValidationError):
        problems = error.errors()
        first = problems[0] if problems else {}
        if first.get("type") == "json_invalid":
            return error_response(400, f"the body is not valid JSON ({first.get('ctx', {}).get('error', '')})",
                                  code="invalid_json")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_response(422, f"{where or 'body'}: {first.get('msg', 'invalid')}", param=where or None,
                              code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_, error: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
        return error_response(error.status_code, str(error.detail), code=kind)

    @app.exception_handler(Exception)
    async def unexpected(_, error: Exception):
        return error_response(500, f"internal error: {type(error).__name__}", type_="server_error")

    @app.middleware("http")
    async def guard(request: HTTPRequest, call_next):
        if api_key and request.url.path != "/health":
            header = request.headers.get("authorization", "")
            if header != f"Bearer {api_key}":
                return error_response(401, "missing or invalid API key (Authorization: Bearer KEY)",
                                      code="invalid_api_key")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            return error_response(413, f"the request body is larger than {max_body_bytes} bytes",
                                  code="request_too_large")
        if request.method == "POST":
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_body_bytes:
                    return error_response(413, f"the request body is larger than {max_body_bytes} bytes",
                                          code="request_too_large")
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                return error_response(400, "the body is not valid UTF-8", code="invalid_encoding")
            request._body = body                           # starlette reads it again from here
            # bodies are JSON whatever the client's Content-Type says (curl sends form-urlencoded by default)
            request.scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"] + \
                [(b"content-type", b"application/json")]
        return await call_next(request)


def create_app(server: Server, max_body_bytes: int = 4 * 2**20) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_):
        server.scheduler.start(warmup=server.warmup)
        yield
        await asyncio.to_thread(server.scheduler.stop, 10.0)   # graceful: finish (or, after 10 s, cancel) work

    app = FastAPI(title="zhcoder", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.server = server

    install_common(app, server.api_key, max_body_bytes)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": server.model_name, **server.scheduler.load}

    @app.get("/v1/models")
    async def models():
        config = server.engine.model.config
        return {"object": "list", "data": [{"id": server.model_name, "object": "model", "created": server.created,
                                            "owned_by": "zhcoder", "max_model_len": server.scheduler.max_len,
                                            "model_type": config.model_type, "hidden_size": config.hidden_size,
                                            "num_hidden_layers": config.num_hidden_layers,
                                            "num_parameters": config.num_parameters()}]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, http: HTTPRequest):
        server.check_model(body.model)
        messages = [m.model_dump(exclude_none=True) for m in body.messages]
        for message in messages:
            if isinstance(message.get("content"), list):       # OpenAI content parts: text only
                parts = message["content"]
                if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                           for p in parts):
                    raise APIError(400, "only text content parts are supported", param="messages")
                message["content"] = "".join(p["text"] for p in parts)
        tools = body.tools if body.tool_choice != "none" else None
        try:
            prompt = render_chat(messages, template=server.chat_template, tools=tools,
                                 **(body.chat_template_kwargs or {}))
        except (ChatTemplateError, TypeError, ValueError) as error:
            raise APIError(400, f"cannot render these messages: {error}", param="messages") from None
        if body.top_logprobs is not None and not body.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        if (body.response_format or {}).get("type", "text") != "text":
            raise APIError(400, f"response_format {body.response_format.get('type')!r} is not supported yet (only "
                                "'text'): this server does not constrain output to JSON", param="response_format")
        prompt_ids = server.encode(prompt)
        params = [server.params(body, body.max_completion_tokens or body.max_tokens, server.default_max_tokens,
                                seed_offset=i) for i in range(body.n)]
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        events = server.run(prompt_ids, params, http, logprobs=logprobs)
        head = {"id": ident, "created": created, "model": server.model_name}

        def message_of(text: str) -> tuple[dict, str | None]:
            parsed = parse_tool_calls(text, tools if tools is not None else [])   # no tools: no calls
            message: dict = {"role": "assistant", "content": parsed.content if not parsed.tool_calls else
                             (parsed.content or None)}
            if parsed.reasoning is not None:
                message["reasoning_content"] = parsed.reasoning
            if parsed.tool_calls:
                message["tool_calls"] = [call.to_openai() for call in parsed.tool_calls]
                return message, "tool_calls"
            return message, None

        if not body.stream:
            completions, records = [None] * body.n, [[] for _ in range(body.n)]
            async for index, event in events:
                if "token" in event and logprobs is not None:
                    records[index].append(server.chat_logprobs(event))
                if event.get("done") is not None:
                    completions[index] = event["done"]
            choices = []
            for index, completion in enumerate(completions):
                message, reason = message_of(completion.text)
                choices.append({"index": index, "message": message,
                                "logprobs": {"content": records[index]} if logprobs is not None else None,
                                "finish_reason": reason or completion.finish_reason})
            return {**head, "object": "chat.completion", "choices": choices,
                    "usage": usage(len(prompt_ids), completions)}

        include_usage = bool((body.stream_options or {}).get("include_usage"))
        events = await started(events)

        async def stream():
            filters = [ToolCallFilter(tools is not None) for _ in range(body.n)]
            completions = [None] * body.n
            chunk = {**head, "object": "chat.completion.chunk"}
            for index in range(body.n):
                yield sse({**chunk, "choices": [{"index": index, "delta": {"role": "assistant", "content": ""},
                                                 "finish_reason": None}]})
            async for index, event in events:
                piece = filters[index].push(event.get("text", ""))
                if "token" in event and logprobs is not None:       # one chunk per token, with its logprobs
                    yield sse({**chunk, "choices": [{"index": index, "delta": {"content": piece}, "finish_reason":
                                                     None, "logprobs": {"content": [server.chat_logprobs(event)]}}]})
                elif piece:
                    yield sse({**chunk, "choices": [{"index": index, "delta": {"content": piece},
                                                     "finish_reason": None}]})
                if event.get("done") is not None:
                    completion = completions[index] = event["done"]
                    _, reason = message_of(completion.text) if tools is not None else (None, None)
                    if reason == "tool_calls":
                        calls = parse_tool_calls(completion.text, tools).tool_calls
                        deltas = [{"index": k, **call.to_openai()} for k, call in enumerate(calls)]
                        yield sse({**chunk, "choices": [{"index": index, "delta": {"tool_calls": deltas},
                                                         "finish_reason": None}]})
                    elif filters[index].buffer:
                        yield sse({**chunk, "choices": [{"index": index, "delta": {"content": filters[index].buffer},
                                                         "finish_reason": None}]})
                    yield sse({**chunk, "choices": [{"index": index, "delta": {},
                                                     "finish_reason": reason or completion.finish_reason}]})
            if include_usage:
                yield sse({**chunk, "choices": [], "usage": usage(len(prompt_ids), completions)})
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, http: HTTPRequest):
        server.check_model(body.model)
        if body.token_healing and (body.suffix is not None or body.logprobs is not None):
            raise APIError(400, "token_healing applies to a plain prompt without logprobs (not with suffix or "
                                "logprobs)", param="token_healing")
        if body.suffix is not None:
            if not isinstance(body.prompt, str):
                raise APIError(400, "suffix (fill-in-the-middle) needs a string prompt", param="suffix")
            if body.echo:
                raise APIError(400, "echo cannot be combined with suffix", param="echo")
            prompt_text = fim_prompt(body.prompt, body.suffix)
            stop_ids = server.fim_stop_ids
        else:
            prompt_text, stop_ids = body.prompt, None
        if body.echo and body.logprobs is not None:
            raise APIError(400, "echo with logprobs is not supported", param="echo")
        prompt_ids = server.encode(prompt_text)
        echo = server.tokenizer.decode(prompt_ids) if body.echo else ""
        params = [server.params(body, body.max_tokens, 16, stop_token_ids=stop_ids, seed_offset=i,
                                token_healing=body.token_healing) for i in range(body.n)]
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": ident, "object": "text_completion", "created": created, "model": server.model_name}
        events = server.run(prompt_ids, params, http, logprobs=body.logprobs, prompt_param="prompt")

        def token_logprobs(event, offset: int) -> dict:
            piece = server.engine.token_bytes(event["token"]).decode("utf-8", errors="replace")
            top = {server.engine.token_bytes(t).decode("utf-8", errors="replace"): lp
                   for t, lp in event.get("top_logprobs", [])}
            return {"tokens": [piece], "token_logprobs": [event["logprob"]], "top_logprobs": [top],
                    "text_offset": [offset]}

        if not body.stream:
            texts = [""] * body.n
            records = [{"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
                       for _ in range(body.n)]
            offsets = [len(echo)] * body.n
            finished = [None] * body.n
            async for index, event in events:
                if "token" in event and body.logprobs is not None:
                    for key, value in token_logprobs(event, offsets[index]).items():
                        records[index][key] += value
                    offsets[index] += len(records[index]["tokens"][-1])
                if event.get("done") is not None:
                    finished[index] = event["done"]
                    texts[index] = event["done"].text
            choices = [{"index": i, "text": echo + texts[i], "finish_reason": finished[i].finish_reason,
                        "logprobs": records[i] if body.logprobs is not None else None} for i in range(body.n)]
            return {**head, "choices": choices, "usage": usage(len(prompt_ids), finished)}

        include_usage = bool((body.stream_options or {}).get("include_usage"))
        events = await started(events)

        async def stream():
            finished = [None] * body.n
            if echo:
                for index in range(body.n):
                    yield sse({**head, "choices": [{"index": index, "text": echo, "finish_reason": None,
                                                    "logprobs": None}]})
            offsets = [len(echo)] * body.n
            async for index, event in events:
                done = event.get("done")
                if event.get("text") or done is not None:
                    logprobs = token_logprobs(event, offsets[index]) if body.logprobs is not None and \
                        "token" in event else None
                    offsets[index] += len(event.get("text", ""))
                    yield sse({**head, "choices": [{"index": index, "text": event.get("text", ""),
                                                    "finish_reason": done.finish_reason if done else None,
                                                    "logprobs": logprobs}]})
                if done is not None:
                    finished[index] = done
            if include_usage:
                yield sse({**head, "choices": [], "usage": usage(len(prompt_ids), finished)})
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.post("/infill")
    async def infill(body: InfillRequest, http: HTTPRequest):
        prompt_ids = server.encode(infill_prompt(body))
        wanted = server.default_max_tokens if body.n_predict < 0 else max(body.n_predict, 1)
        if wanted > server.max_tokens_cap:
            raise APIError(400, f"n_predict is {wanted}; this server allows at most {server.max_tokens_cap}",
                           param="n_predict")
        if len(body.stop) > MAX_STOP or any(not s for s in body.stop):
            raise APIError(400, f"stop: at most {MAX_STOP} non-empty strings", param="stop")
        params = SamplingParams(max_new_tokens=wanted, temperature=body.temperature, top_p=body.top_p,
                                top_k=body.top_k, seed=body.seed, stop=body.stop, stop_token_ids=server.fim_stop_ids)
        events = server.run(prompt_ids, [params], http, prompt_param="input_prefix")
        if not body.stream:
            done = None
            async for _, event in events:
                done = event.get("done") or done
            return {"content": done.text, "stop": True, "model": server.model_name,
                    "tokens_predicted": len(done.token_ids), "tokens_evaluated": len(prompt_ids),
                    "stop_type": "limit" if done.finish_reason == "length" else "eos"}
        events = await started(events)

        async def stream():
            async for _, event in events:
                done = event.get("done")
                if event.get("text"):
                    yield sse({"content": event["text"], "stop": False})
                if done is not None:
                    yield sse({"content": "", "stop": True, "tokens_predicted": len(done.token_ids),
                               "tokens_evaluated": len(prompt_ids)})

        return StreamingResponse(stream(), media_type="text/event-stream")

    return app


async def started(events):
    """`events` with its first event already awaited, before the response starts, so that queue-full or context
    errors become a proper HTTP error rather than a broken stream."""
    try:
        first = await events.__anext__()
    except StopAsyncIteration:
        first = None

    async def replay():
        if first is not None:
            yield first
        async for item in events:
            yield item
    return replay()


def build(model_dir: str, *, model_name: str | None = None, api_key: str | None = None, max_batch: int = 16,
          queue_size: int = 64, max_model_len: int | None = 4096, max_tokens_cap: int = 4096,
          max_body_bytes: int = 4 * 2**20, dtype: str = "auto", device: str = "cpu",
          compile: bool | None = None, warmup: bool = False, quantize: str | None = None) -> tuple[FastAPI, Scheduler]:
    """Load a checkpoint; the app and its scheduler (started and stopped with the app's lifespan). compile: the
    engine's decode step (default: compiled on CUDA); warmup: compile before the first request;
    quantize: "int8" or "int4" weight-only linear layers."""
    from pathlib import Path

    from zhcoder.engine import Engine

    engine = Engine.from_dir(model_dir, dtype=dtype, device=device, quantize=quantize, compile=compile)
    scheduler = Scheduler(engine, max_batch=max_batch, queue_size=queue_size, max_len=max_model_len)
    server = Server(scheduler, model_name or Path(model_dir).resolve().name, api_key=api_key,
                    max_tokens_cap=max_tokens_cap)
    server.warmup = warmup
    return create_app(server, max_body_bytes=max_body_bytes), scheduler
