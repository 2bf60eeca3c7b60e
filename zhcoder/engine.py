"""Text generation: a preallocated KV cache, sampling, stop tokens and stop strings, streaming, batches.

One prefill over the (left-padded) prompts, then one decode step per token with the model's KV cache.
Sampling follows transformers' order: repetition penalty, temperature, top-k, top-p, min-p. Text is released
only at UTF-8 character boundaries, and text that could still become a stop string is held back until it
cannot, so streamed pieces always concatenate to the final text.

    zhcoder complete --model DIR "def quicksort(" --max-new-tokens 64
    python -m pytest tests/test_engine.py
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Iterator

import torch

from .model import KVCache, QwenForCausalLM


class ContextLengthError(ValueError):
    """The prompt plus the tokens asked for do not fit the model's context."""


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)  # stop strings: the text ends just before the first one
    stop_token_ids: list[int] | None = None  # None: the tokenizer's end-of-text / end-of-turn tokens

    def __post_init__(self):
        checks = [
            (self.max_new_tokens >= 1, "max_new_tokens must be at least 1"),
            (self.temperature >= 0, "temperature must be >= 0"),
            (self.top_k >= 0, "top_k must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (all(self.stop), "stop strings must not be empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class Completion:
    text: str
    token_ids: list[int]  # generated ids, including the stop token that ended the text, if any
    prompt_tokens: int
    finish_reason: str  # "stop" (stop token or stop string) or "length"


@dataclass
class Event:
    """One streamed piece of row `row`'s text; `completion` is set on the row's last event."""

    row: int
    text: str
    completion: Completion | None = None


class TextStream:
    """Bytes in, text out: releases whole UTF-8 characters, cuts at the first stop string, holds back
    any tail that is still the start of a stop string."""

    def __init__(self, stop: list[str]):
        self.stop = stop
        self.longest = max((len(s) for s in stop), default=0)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self.released = 0
        self.stopped = False

    def push(self, data: bytes, final: bool = False) -> str:
        if self.stopped:
            return ""
        before = len(self.text)
        self.text += self.decoder.decode(data, final=final)
        end = len(self.text)
        if self.stop:
            start = max(0, before - self.longest + 1)
            hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
            if hits:
                self.text, self.stopped = self.text[: min(hits)], True
                end = len(self.text)
            elif not final:
                end -= self._held_back()
        piece, self.released = self.text[self.released : end], max(self.released, end)
        return piece

    def _held_back(self) -> int:
        for k in range(min(self.longest - 1, len(self.text)), 0, -1):
            tail = self.text[-k:]
            if any(s.startswith(tail) for s in self.stop):
                return k
        return 0

    def finish(self) -> str:
        return self.push(b"", final=True)


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """(B, vocab) fp32 logits -> (B,) token ids."""
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / params.temperature
    if params.top_k > 0:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= 1 - params.top_p
        remove[:, -1] = False  # always keep the most likely token
        logits = logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    if params.min_p > 0:
        probs = logits.softmax(dim=-1)
        logits = logits.masked_fill(probs < params.min_p * probs.max(dim=-1, keepdim=True).values, float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


class Engine:
    """Generation over one model and its tokenizer.

    cpu_transposed_head: on CPU with fp32 weights, keep a (hidden, vocab) copy of the language-model head for
    single-sequence steps: the tall, narrow matrix-vector product runs 2-3x faster in that layout (measured in
    benchmarks/decode_cpu.py), at the cost of one more vocab x hidden matrix in memory.
    """

    def __init__(self, model: QwenForCausalLM, tokenizer, cpu_transposed_head: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self._bytes: dict[int, bytes] = {}
        weight = getattr(model.lm_head, "weight", None)
        use_transposed = (cpu_transposed_head and self.device.type == "cpu" and weight is not None
                          and weight.dtype == torch.float32)
        self._head_t = weight.detach().t().contiguous() if use_transposed else None

    def logits(self, *args, **kwargs) -> torch.Tensor:
        """The next-token logits (B, vocab) in fp32 after feeding a step to the model."""
        hidden = self.model.hidden_states(*args, last_only=True, **kwargs)[:, -1]
        if self._head_t is not None and hidden.shape[0] == 1:
            return (hidden @ self._head_t).float()
        return self.model.lm_head(hidden).float()

    @property
    def context_length(self) -> int:
        return self.model.config.max_position_embeddings

    def token_bytes(self, token_id: int) -> bytes:
        if token_id not in self._bytes:
            # ids past the tokenizer (padding rows of the embedding) stand for no text
            known = token_id < self.tokenizer.vocab_size
            self._bytes[token_id] = self.tokenizer.token_bytes(token_id) if known else b""
        return self._bytes[token_id]

    def encode(self, prompt: str | list[int]) -> list[int]:
        return list(prompt) if isinstance(prompt, (list, tuple)) else self.tokenizer.encode(prompt)

    def generate(self, prompts: list[str | list[int]], params: SamplingParams) -> list[Completion]:
        results: list[Completion | None] = [None] * len(prompts)
        for event in self.events(prompts, params):
            if event.completion is not None:
                results[event.row] = event.completion
        return results  # type: ignore[return-value]

    def stream(self, prompt: str | list[int], params: SamplingParams) -> Iterator[Event]:
        """The events of one prompt: text pieces as they become final; the last carries the completion."""
        return self.events([prompt], params)

    @torch.inference_mode()
    def events(self, prompts: list[str | list[int]], params: SamplingParams) -> Iterator[Event]:
        encoded = [self.encode(p) for p in prompts]
        if any(len(ids) == 0 for ids in encoded):
            raise ValueError("empty prompt: give at least one token")
        longest = max(len(ids) for ids in encoded)
        if longest + params.max_new_tokens > self.context_length:
            raise ContextLengthError(
                f"prompt ({longest} tokens) + max_new_tokens ({params.max_new_tokens}) exceeds the model's "
                f"context of {self.context_length} tokens"
            )
        stop_ids = set(self.tokenizer.stop_token_ids if params.stop_token_ids is None else params.stop_token_ids)
        streams = [TextStream(params.stop) for _ in encoded]
        generated: list[list[int]] = [[] for _ in encoded]
        finished = [False] * len(encoded)
        steps = self.decode_steps(encoded, params)
        for step, next_tokens in enumerate(steps):
            for row, token in enumerate(next_tokens.tolist()):
                if finished[row]:
                    continue
                generated[row].append(token)
                stream = streams[row]
                reason = None
                if token in stop_ids:
                    reason = "stop"
                    piece = stream.finish()
                else:
                    piece = stream.push(self.token_bytes(token))
                    if stream.stopped:
                        reason = "stop"
                    elif step + 1 == params.max_new_tokens:
                        reason = "length"
                        piece += stream.finish()
                completion = None
                if reason is not None:
                    finished[row] = True
                    completion = Completion(stream.text, generated[row], len(encoded[row]), reason)
                if piece or completion is not None:
                    yield Event(row, piece, completion)
            if all(finished):
                steps.close()
                return

    def decode_steps(self, prompts: list[list[int]], params: SamplingParams) -> Iterator[torch.Tensor]:
        """Yields the next token of every row, one step at a time; the caller stops when it has enough."""
        model, device = self.model, self.device
        B, longest = len(prompts), max(len(p) for p in prompts)
        total = longest + params.max_new_tokens
        dtype = model.model.embed_tokens.weight.dtype
        cache = KVCache(model.config, B, total, dtype, device)
        input_ids = torch.zeros(B, longest, dtype=torch.long, device=device)
        valid = torch.ones(B, total, dtype=torch.bool, device=device)  # which cache slots hold real tokens
        for row, ids in enumerate(prompts):
            input_ids[row, longest - len(ids) :] = torch.tensor(ids, device=device)
            valid[row, : longest - len(ids)] = False
        padded = not bool(valid.all())
        lengths = torch.tensor([len(p) for p in prompts], device=device)
        if padded:
            position_ids = (valid[:, :longest].long().cumsum(-1) - 1).clamp(min=0)
            causal = torch.ones(longest, longest, dtype=torch.bool, device=device).tril()
            eye = torch.eye(longest, dtype=torch.bool, device=device)
            mask = (causal & valid[:, None, None, :longest]) | eye  # padding attends to itself only
        else:
            position_ids, mask = None, None
        generator = None
        if params.seed is not None and params.temperature > 0:
            generator = torch.Generator(device=device).manual_seed(params.seed)
        seen = None
        if params.repetition_penalty != 1.0:
            seen = torch.zeros(B, model.config.vocab_size, dtype=torch.bool, device=device)
            seen.scatter_(1, input_ids, valid[:, :longest])
        logits = self.logits(input_ids, position_ids, mask, cache, 0)
        for step in range(params.max_new_tokens):
            if seen is not None:
                penalised = torch.where(logits < 0, logits * params.repetition_penalty, logits / params.repetition_penalty)
                logits = torch.where(seen, penalised, logits)
            next_tokens = sample(logits, params, generator)
            yield next_tokens
            if step + 1 == params.max_new_tokens:
                return
            if seen is not None:
                seen[torch.arange(B, device=device), next_tokens] = True
            pos = longest + step
            if padded:
                position_ids, mask = (lengths + step)[:, None], valid[:, None, None, : pos + 1]
            logits = self.logits(next_tokens[:, None], position_ids, mask, cache, pos)
