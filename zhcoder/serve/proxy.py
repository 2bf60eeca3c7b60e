"""`zhcoder serve --upstream URL`: the same API in front of any OpenAI-compatible server (vLLM, SGLang, ...),
adding what those lack for code assistants:

- `/v1/completions` with `suffix`: rewritten into a Qwen FIM prompt (`<|fim_prefix|>…<|fim_suffix|>…<|fim_middle|>`)
  without `suffix`, which vLLM and llama.cpp refuse;
- `/infill` (llama.cpp's), served through the upstream's `/v1/completions`;
  both add Qwen's FIM control tokens to `stop` (up to 16 stop strings in all), as the local server stops on
  them: an upstream that prints special tokens would otherwise go on past the middle (vLLM, which leaves them out
  of its text, stops at the model's end-of-text token anyway);
- Qwen3-Coder tool calls: when the upstream returns the raw `<tool_call>` XML (or JSON) as text, it is parsed into
  OpenAI `tool_calls`, also while streaming.

Everything else is passed through, errors included. The API key, body cap and error format are the local
server's (zhcoder.serve.app.install_common).

    zhcoder serve --upstream http://gpu-node:8000/v1 --upstream-key $VLLM_KEY --port 8001
"""

from __future__ import annotations

import contextlib
import json

import httpx
from fastapi import FastAPI, Request as HTTPRequest
from fastapi.responses import JSONResponse, StreamingResponse

from zhcoder.chat import fim_prompt, parse_tool_calls
from zhcoder.serve.app import (
    FIM_STOP_TOKENS, MAX_STOP, APIError, InfillRequest, ToolCallFilter, infill_prompt, install_common, sse,
)


class Upstream:
    def __init__(self, url: str, api_key: str | None = None, timeout: float = 600.0):
        self.url = url.rstrip("/")
        if not self.url.endswith("/v1"):
            self.url += "/v1"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)

    async def post(self, path: str, body: dict) -> dict:
        try:
            response = await self.client.post(path, json=body)
        except httpx.HTTPError as error:
            raise APIError(502, f"upstream {self.url} unreachable: {type(error).__name__}", type_="server_error",
                           code="upstream_error") from None
        if response.status_code >= 400:
            raise _upstream_error(response.status_code, response.content)
        return response.json()

    @contextlib.asynccontextmanager
    async def stream(self, path: str, body: dict):
        """The upstream's SSE `data:` payloads (parsed JSON), until [DONE]."""
        try:
            async with self.client.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    raise _upstream_error(response.status_code, await response.aread())

                async def events():
                    async for line in response.aiter_lines():
                        if line.startswith("data:"):
                            data = line[5:].strip()
                            if data == "[DONE]":
                                return
                            yield json.loads(data)
                yield events()
        except httpx.HTTPError as error:
            raise APIError(502, f"upstream {self.url} failed: {type(error).__name__}", type_="server_error",
                           code="upstream_error") from None


def _upstream_error(status: int, content: bytes) -> APIError:
    try:
        error = json.loads(content)["error"]
        return APIError(status, str(error.get("message", "upstream error")), error.get("type", "upstream_error"),
                        error.get("code"), error.get("param"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return APIError(status, content[:300].decode("utf-8", "replace") or "upstream error", code="upstream_error")


def _parse_message(message: dict, tools) -> tuple[dict, bool]:
    """Turn tool-call text in an upstream message into OpenAI tool_calls (when the upstream did not)."""
    content = message.get("content") or ""
    if message.get("tool_calls") or "<tool_call>" not in content:
        return message, False
    parsed = parse_tool_calls(content, tools)
    if not parsed.tool_calls:
        return message, False
    return {**message, "content": parsed.content or None,
            "tool_calls": [call.to_openai() for call in parsed.tool_calls]}, True


def create_proxy_app(upstream_url: str, *, api_key: str | None = None, upstream_key: str | None = None,
                     max_body_bytes: int = 4 * 2**20) -> FastAPI:
    upstream = Upstream(upstream_url, upstream_key)

    @contextlib.asynccontextmanager
    async def lifespan(_):
        yield
        await upstream.client.aclose()

    app = FastAPI(title="zhcoder proxy", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    install_common(app, api_key, max_body_bytes)

    async def body_of(request: HTTPRequest) -> dict:
        try:
            body = json.loads(await request.body())
        except (ValueError, RecursionError):
            raise APIError(400, "the body is not valid JSON", code="invalid_json") from None
        if not isinstance(body, dict):
            raise APIError(400, "the body must be a JSON object", code="invalid_json")
        return body

    async def relay(path: str, body: dict, convert) -> StreamingResponse:
        """The upstream's stream at `path`, each parsed event turned into SSE lines by `convert(events)`; upstream
        errors surface before the response starts."""
        context = upstream.stream(path, body)
        events = await context.__aenter__()

        async def stream():
            try:
                async for line in convert(events):
                    yield line
            finally:
                await context.__aexit__(None, None, None)

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/health")
    async def health():
        return {"status": "ok", "upstream": upstream.url}

    @app.get("/v1/models")
    async def models():
        try:
            response = await upstream.client.get("/models")
        except httpx.HTTPError as error:
            raise APIError(502, f"upstream unreachable: {type(error).__name__}", code="upstream_error") from None
        return JSONResponse(response.json(), status_code=response.status_code)

    @app.post("/v1/chat/completions")
    async def chat(request: HTTPRequest):
        body = await body_of(request)
        tools = body.get("tools")
        if not body.get("stream"):
            reply = await upstream.post("/chat/completions", body)
            if tools:
                for choice in reply.get("choices", []):
                    choice["message"], called = _parse_message(choice.get("message", {}), tools)
                    if called:
                        choice["finish_reason"] = "tool_calls"
            return reply

        async def convert(events):
            filters, texts = {}, {}
            async for chunk in events:
                for choice in chunk.get("choices", []):
                    index, delta = choice.get("index", 0), choice.get("delta", {})
                    if tools and isinstance(delta.get("content"), str):
                        texts[index] = texts.get(index, "") + delta["content"]
                        delta["content"] = filters.setdefault(index, ToolCallFilter(True)).push(delta["content"])
                    if tools and choice.get("finish_reason") and index in filters:
                        parsed = parse_tool_calls(texts[index], tools)
                        if parsed.tool_calls:
                            calls = [{"index": k, **c.to_openai()} for k, c in enumerate(parsed.tool_calls)]
                            yield sse({**chunk, "choices": [{"index": index, "delta": {"tool_calls": calls},
                                                             "finish_reason": None}]})
                            choice["finish_reason"] = "tool_calls"
                        elif filters[index].buffer:
                            delta["content"] = (delta.get("content") or "") + filters[index].buffer
                yield sse(chunk)
            yield "data: [DONE]\n\n"

        return await relay("/chat/completions", body, convert)

    @app.post("/v1/completions")
    async def completions(request: HTTPRequest):
        body = await body_of(request)
        suffix = body.pop("suffix", None)
        if suffix is not None:
            if not isinstance(suffix, str) or not isinstance(body.get("prompt"), str):
                raise APIError(400, "suffix (fill-in-the-middle) needs a string prompt and a string suffix",
                               param="suffix")
            if body.get("echo"):
                raise APIError(400, "echo cannot be combined with suffix", param="echo")
            body["prompt"] = fim_prompt(body["prompt"], suffix)
            body["stop"] = with_fim_stops(body.get("stop"))
        if not body.get("stream"):
            return await upstream.post("/completions", body)
        async def convert(events):
            async for chunk in events:
                yield sse(chunk)
            yield "data: [DONE]\n\n"

        return await relay("/completions", body, convert)

    @app.post("/infill")
    async def infill(body: InfillRequest):
        models = (await upstream.client.get("/models")).json().get("data", [])
        request = {"model": models[0]["id"] if models else "default", "prompt": infill_prompt(body),
                   "max_tokens": body.n_predict if body.n_predict > 0 else 512, "temperature": body.temperature,
                   "top_p": body.top_p, "stop": with_fim_stops(body.stop), "stream": body.stream}
        if body.seed is not None:
            request["seed"] = body.seed
        if not body.stream:
            reply = await upstream.post("/completions", request)
            choice = reply["choices"][0]
            usage = reply.get("usage") or {}
            return {"content": choice["text"], "stop": True, "model": reply.get("model"),
                    "tokens_predicted": usage.get("completion_tokens"), "tokens_evaluated": usage.get("prompt_tokens"),
                    "stop_type": "limit" if choice.get("finish_reason") == "length" else "eos"}
        async def convert(events):
            async for chunk in events:
                for choice in chunk.get("choices", []):
                    if choice.get("text"):
                        yield sse({"content": choice["text"], "stop": False})
            yield sse({"content": "", "stop": True})

        return await relay("/completions", request, convert)

    return app


def with_fim_stops(stop):
    """A request's `stop` (None, a string or a list) plus Qwen's FIM control tokens, as many as fit in MAX_STOP
    stop strings; any other value goes to the upstream as it is, to be refused there."""
    if stop is not None and not isinstance(stop, (str, list)):
        return stop
    stop = [] if stop is None else [stop] if isinstance(stop, str) else list(stop)
    return stop + [token for token in FIM_STOP_TOKENS if token not in stop][:max(MAX_STOP - len(stop), 0)]
