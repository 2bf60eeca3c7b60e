"""Text generation: a preallocated KV cache, sampling, stop tokens and stop strings, streaming, batches.

One prefill over the (left-padded) prompts, then one decode step per token with the model's KV cache.
Sampling (zhcoder.sampling) follows transformers' order: repetition penalty, temperature, top-k, top-p, min-p.
Text is released only at UTF-8 character boundaries, and text that could still become a stop string is held back
until it cannot, so streamed pieces always concatenate to the final text.

Two decode paths (see `Engine`): the plain one (CPU default) and the fast one (CUDA default: a static KV cache,
a compiled CUDA-graph decode step, sampling on the device, host reads one step behind the GPU). Ideas from
pytorch-labs/gpt-fast (static cache, mode="reduce-overhead", sampling without host syncs).

    zhcoder complete --model DIR "def quicksort(" --max-new-tokens 64
    python -m pytest tests/test_engine.py tests/test_fast_decode.py
"""

from __future__ import annotations

import codecs
import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from .model import KVCache, QwenForCausalLM
from .sampling import TOP_LOGPROBS, SampleMode, row_seed, sample, sample_rows


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
    token_healing: bool = False  # back up over the prompt's last token; the first token must start with it (healing.py)

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
    """One prompt's result. With token healing, the first of `token_ids` also spells the prompt's last token,
    whose bytes `text` leaves out, and `prompt_tokens` counts the prompt as given."""

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
    any tail that is still the start of a stop string. `healed`: the prompt's bytes a healed prompt's first token
    repeats (zhcoder.healing), dropped from the front of the first bytes pushed."""

    def __init__(self, stop: list[str], healed: bytes = b""):
        self.stop = stop
        self.healed = healed
        self.longest = max((len(s) for s in stop), default=0)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self.released = 0
        self.stopped = False

    def respells(self, data: bytes) -> bool:
        """Whether `data` (the first token's bytes) only spells the healed prompt's last token again: such a token
        is no stop token, whatever the stop ids say (a prompt ending in a newline, with the newline as a stop)."""
        return bool(self.healed) and data == self.healed

    def push(self, data: bytes, final: bool = False) -> str:
        if self.stopped:
            return ""
        if self.healed:
            data, self.healed = data[len(self.healed):] if data.startswith(self.healed) else data, b""
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


# ----- the fast path: a static decode state ----------------------------------------------------------------

MIN_WINDOW = 256             # smallest attention window of a static decode step (windows are powers of two)
MIN_CACHE = 1024             # smallest static cache length (grown by powers of two when a call needs more)
# Inductor options of the compiled decode step (besides CUDA graphs). Coordinate-descent tuning makes inductor
# turn batch-1 matrix-vector products into tuned Triton reductions: per its own comment the way they reach peak
# bandwidth (gpt-fast sets it too); it costs compile time.
COMPILE_OPTIONS = {"coordinate_descent_tuning": True}


class DecodeState:
    """The fast path's device state for `rows` sequences: a KVCache of rows x max_len and per row the token to feed
    next, the cache position it goes to, where the row's tokens start (left padding before), whether it is active
    (inactive rows are computed but masked and never advance), its sampling settings, the tokens it has seen
    (repetition penalty) and its random stream (seed key, tokens sampled so far). Allocated once and updated in
    place: a CUDA graph replays over the same addresses."""

    def __init__(self, config, rows: int, max_len: int, dtype: torch.dtype, device):
        self.cache = KVCache(config, rows, max_len, dtype, device)
        self.rows, self.max_len = rows, max_len

        def zeros(*shape, dtype=torch.long):
            return torch.zeros(*shape, dtype=dtype, device=device)

        self.tokens = zeros(rows, 1)
        self.position = zeros(rows)
        self.start = zeros(rows)
        self.active = zeros(rows, dtype=torch.bool)
        self.counter = zeros(rows)
        self.seed = zeros(rows)
        self.temperature = zeros(rows, dtype=torch.float32)
        self.top_k = zeros(rows)
        self.cut_p = zeros(rows, dtype=torch.float32)              # 1 - top_p (computed on the host, like `sample`)
        self.min_p = zeros(rows, dtype=torch.float32)
        self.penalty = torch.ones(rows, dtype=torch.float32, device=device)
        self.seen = zeros(rows, config.vocab_size, dtype=torch.bool)
        self.logprob = zeros(rows, dtype=torch.float32)
        self.top_ids = zeros(rows, TOP_LOGPROBS)
        self.top_logprobs = zeros(rows, TOP_LOGPROBS, dtype=torch.float32)
        if torch.device(device).type == "cuda":
            for t in self.tensors():
                torch._dynamo.mark_static_address(t)

    FIELDS = ("tokens", "position", "start", "active", "counter", "seed", "temperature", "top_k", "cut_p", "min_p",
              "penalty", "seen", "logprob", "top_ids", "top_logprobs")

    def tensors(self) -> list[torch.Tensor]:
        return self.cache.tensors() + [getattr(self, name) for name in self.FIELDS]

    def view(self, first: int, stop: int) -> "DecodeState":
        """Rows first..stop-1 (views: writes land in this state)."""
        view = DecodeState.__new__(DecodeState)
        view.cache, view.rows, view.max_len = self.cache.rows(first, stop), stop - first, self.max_len
        for name in self.FIELDS:
            setattr(view, name, getattr(self, name)[first:stop])
        return view

    def configure(self, params: SamplingParams, seeds: list[int]) -> None:
        """Every row of this state (or view) samples with `params`; row i's random stream is `seeds[i]`."""
        self.temperature.fill_(params.temperature)
        self.top_k.fill_(params.top_k)
        self.cut_p.fill_(1 - params.top_p)
        self.min_p.fill_(params.min_p)
        self.penalty.fill_(params.repetition_penalty)
        self.seed.copy_(_to_device(seeds, torch.long, self.seed.device))
        self.counter.zero_()


def _to_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small host list on the device without stalling it (pinned staging, asynchronous copy on CUDA)."""
    host = torch.tensor(values, dtype=dtype)
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


class Engine:
    """Generation over one model and its tokenizer.

    Two decode paths with the same results (greedy tokens identical, logits equal within float tolerance):

    - plain (the default on CPU): a KV cache sized for each call, one step per token sliced to the tokens so far,
      sampling by `sample` with a torch.Generator; each token is read on the host before the next step.
    - fast (`fast=True`, the default on CUDA): a static decode step. A `DecodeState` (KV cache + per-row state) is
      allocated once per batch bucket (rows rounded up to a power of two, length to a power of two >= MIN_CACHE)
      and reused across calls; the step writes each row's key at its own position (an indexed write) and attends
      to a fixed window (a power of two >= the call's prompt + new tokens) under the mask `start <= key <= position`,
      so no shape changes from step to step. Sampling runs on the device (`sample_rows`: per-row settings,
      counter-based seeded noise, no host sync), and the host reads step t's tokens only after step t+1 is
      launched (asynchronous copy into pinned memory), so streaming and stop checks overlap the GPU. Prompts are
      prefilled through the same cache in chunks of `prefill_chunk` tokens over all rows (prefill_chunk // rows
      per row). The prefill runs eagerly, so each chunk's kernel launches cost host time: on the H200 a
      2,048-token prompt ran 2.1x faster in one chunk than in four chunks of 512 on the 8B shape, and 4.5x
      faster on the 0.6B. With `compile` (the default on CUDA for dense models; MoE layers route through
      host-side expert lists) the step is `torch.compile(fullgraph=True, dynamic=False)` with inductor's CUDA
      graphs (mode="reduce-overhead") and COMPILE_OPTIONS (+ `compile_options`), captured once per (batch
      bucket, cache length, window, SampleMode). The first call of each pays the compile, in which the decoder
      layer is traced once and reused for every layer (zhcoder.model.REUSE_DECODE_LAYER). Seeded sampling is
      reproducible on the fast path (and equal between `generate` and the server for one prompt), but draws
      other numbers than the plain path's torch.Generator.
      At most `max_states` batch buckets keep their state (least recently used dropped).

    cpu_transposed_head: on CPU with fp32 weights, keep a (hidden, vocab) copy of the language-model head for
    single-sequence steps: the tall, narrow matrix-vector product runs 2-3x faster in that layout (measured in
    benchmarks/decode_cpu.py), at the cost of one more vocab x hidden matrix in memory.

    logits_hook: when set, called as hook(step, logits) with the (B, vocab) fp32 logits each step produces, before
    the repetition penalty (step 0 = the prefill's); for tests and debugging.
    """

    @classmethod
    def from_dir(cls, model_dir, dtype: str = "auto", device: str = "cpu", quantize: str | None = None,
                 **options) -> "Engine":
        """An engine over a checkpoint folder (weights and tokenizer), or a PEFT LoRA adapter folder (merged into
        its base when loaded), its linear layers optionally quantized ("int8" / "int4", zhcoder.quant); `options`
        go to the constructor."""
        from .checkpoint import adapter_base, load_model
        from .tokenizer import Tokenizer

        base = adapter_base(model_dir)
        if base is None:
            model, tokenizer_dir = load_model(model_dir, dtype=dtype, device=device), model_dir
        else:
            from .train.lora import merged_model

            model = merged_model(base, model_dir, dtype, device)
            tokenizer_dir = model_dir if Path(model_dir, "tokenizer.json").is_file() else base
        tokenizer = Tokenizer.from_dir(tokenizer_dir)
        if quantize:
            from .quant import quantize_model

            quantize_model(model, mode=quantize)
        return cls(model, tokenizer, **options)

    def __init__(self, model: QwenForCausalLM, tokenizer, cpu_transposed_head: bool = True, fast: bool | None = None,
                 compile: bool | None = None, prefill_chunk: int = 4096, compile_backend: str = "inductor",
                 compile_options: dict | None = None, max_states: int = 4):
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self._bytes: dict[int, bytes] = {}
        weight = getattr(model.lm_head, "weight", None)
        use_transposed = (cpu_transposed_head and self.device.type == "cpu" and weight is not None
                          and weight.dtype == torch.float32)
        self._head_t = weight.detach().t().contiguous() if use_transposed else None
        cuda = self.device.type == "cuda"
        self.fast = cuda if fast is None else fast
        config = model.config
        dense = not any(config.is_moe_layer(i) for i in range(config.num_hidden_layers))
        self.compile = (self.fast and cuda and dense) if compile is None else compile
        if self.compile and not self.fast:
            raise ValueError("compile=True needs the fast decode path (fast=True)")
        if prefill_chunk < 1:
            raise ValueError("prefill_chunk must be at least 1")
        self.prefill_chunk, self.compile_backend, self.max_states = prefill_chunk, compile_backend, max_states
        self.compile_options = dict(compile_options or {})
        self.logits_hook = None
        self._states: collections.OrderedDict[int, DecodeState] = collections.OrderedDict()
        self._compiled_step = None
        self._healer = None

    def heal(self, prompts: list[list[int]], params: SamplingParams) -> tuple[list[list[int]], list[bytes]]:
        """With `params.token_healing`, each prompt less its last token and that token's bytes (zhcoder.healing);
        else the prompts as they are and no bytes."""
        if not params.token_healing:
            return prompts, [b""] * len(prompts)
        if self._healer is None:
            from .healing import TokenHealer

            self._healer = TokenHealer(self.tokenizer)
        healed = [self._healer.heal(ids) for ids in prompts]
        return [ids for ids, _ in healed], [tail for _, tail in healed]

    def first_token_mask(self, tails: list[bytes]) -> torch.Tensor | None:
        """(rows, vocab) bool: the first tokens each row may take after `heal` (None: any)."""
        if not any(tails):
            return None
        return self._healer.mask(tails, self.model.config.vocab_size, self.device)

    def logits(self, *args, **kwargs) -> torch.Tensor:
        """The next-token logits (B, vocab) in fp32 after feeding a step to the model."""
        hidden = self.model.hidden_states(*args, last_only=True, **kwargs)[:, -1]
        return self._head(hidden)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
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
        fed, tails = self.heal(encoded, params)
        longest = max(len(ids) for ids in encoded)
        if longest + params.max_new_tokens > self.context_length:
            raise ContextLengthError(
                f"prompt ({longest} tokens) + max_new_tokens ({params.max_new_tokens}) exceeds the model's "
                f"context of {self.context_length} tokens"
            )
        stop_ids = set(self.tokenizer.stop_token_ids if params.stop_token_ids is None else params.stop_token_ids)
        streams = [TextStream(params.stop, tail) for tail in tails]
        generated: list[list[int]] = [[] for _ in encoded]
        finished = [False] * len(encoded)
        steps = self.decode_steps(fed, params, self.first_token_mask(tails))
        for step, next_tokens in enumerate(steps):
            for row, token in enumerate(next_tokens):
                if finished[row]:
                    continue
                generated[row].append(token)
                stream = streams[row]
                reason = None
                if token in stop_ids and not stream.respells(self.token_bytes(token)):
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

    def decode_steps(self, prompts: list[list[int]], params: SamplingParams,
                     first_mask: torch.Tensor | None = None) -> Iterator[list[int]]:
        """Yields the next token of every row, one step at a time; the caller stops when it has enough.
        `first_mask` (rows, vocab) bool: the tokens each row's first sample may take (token healing)."""
        if self.fast:
            return self._fast_decode_steps(prompts, params, first_mask)
        return self._plain_decode_steps(prompts, params, first_mask)

    def _plain_decode_steps(self, prompts: list[list[int]], params: SamplingParams,
                            first_mask: torch.Tensor | None) -> Iterator[list[int]]:
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
            seen.scatter_(1, _prompt_ids_only(input_ids, longest - lengths), True)
        logits = self.logits(input_ids, position_ids, mask, cache, 0)
        for step in range(params.max_new_tokens):
            if self.logits_hook is not None:
                self.logits_hook(step, logits)
            if seen is not None:
                penalised = torch.where(logits < 0, logits * params.repetition_penalty, logits / params.repetition_penalty)
                logits = torch.where(seen, penalised, logits)
            if step == 0 and first_mask is not None:
                logits = logits.masked_fill(~first_mask, float("-inf"))
            next_tokens = sample(logits, params, generator)
            yield next_tokens.tolist()
            if step + 1 == params.max_new_tokens:
                return
            if seen is not None:
                seen[torch.arange(B, device=device), next_tokens] = True
            pos = longest + step
            if padded:
                position_ids, mask = (lengths + step)[:, None], valid[:, None, None, : pos + 1]
            logits = self.logits(next_tokens[:, None], position_ids, mask, cache, pos)

    # ----- the fast path ---------------------------------------------------------------------------------
    def allocate_state(self, rows: int, max_len: int) -> DecodeState:
        """A DecodeState of `rows` x `max_len` for this model (the server keeps one for its slots)."""
        return DecodeState(self.model.config, rows, max_len, self.model.model.embed_tokens.weight.dtype, self.device)

    def _state_for(self, batch: int, total: int) -> DecodeState:
        """The reusable state of this batch size's bucket, grown when a call needs a longer cache."""
        rows = _bucket(batch)
        state = self._states.pop(rows, None)
        if state is None or state.max_len < total:
            del state                                    # free the old cache before allocating the new one
            while len(self._states) >= self.max_states:
                self._states.popitem(last=False)
            max_len = min(max(_bucket(total), MIN_CACHE), max(self.context_length, total))
            state = self.allocate_state(rows, max_len)
        self._states[rows] = state
        return state

    def prefill(self, state: DecodeState, prompts: list[list[int]], seen: bool = False) -> torch.Tensor:
        """Left-pad `prompts` into the rows of `state` (a view of as many rows), run them through its cache in
        chunks of `prefill_chunk` tokens over all rows (the same logits as one pass, up to float rounding), make the
        rows active at the end of the prompt (with `seen`, also mark the prompt's tokens for the repetition penalty).
        Returns the last position's logits (B, vocab), fp32."""
        device, chunk = self.device, max(1, self.prefill_chunk // len(prompts))
        longest = max(len(p) for p in prompts)
        starts = [longest - len(p) for p in prompts]
        input_ids = _to_device([[0] * s + list(p) for s, p in zip(starts, prompts)], torch.long, device)
        start = _to_device(starts, torch.long, device)
        padded = any(starts)
        hidden = None
        for first in range(0, longest, chunk):
            stop = min(first + chunk, longest)
            queries = torch.arange(first, stop, device=device)
            position_ids = (queries[None, :] - start[:, None]).clamp(min=0)
            mask = None
            if padded or first > 0:                                  # causal, no padding; padding sees itself
                keys = torch.arange(stop, device=device)[None, None, :]
                mask = ((keys <= queries[None, :, None]) & (keys >= start[:, None, None])) | \
                    (keys == queries[None, :, None])
                mask = mask[:, None]
            hidden = self.model.hidden_states(input_ids[:, first:stop], position_ids, mask, state.cache, first,
                                              last_only=True)
        state.start.copy_(start)
        state.position.fill_(longest)
        state.active.fill_(True)
        if seen:
            state.seen.zero_()
            state.seen.scatter_(1, _prompt_ids_only(input_ids, start), True)
        return self._head(hidden[:, -1])

    def step(self, state: DecodeState, mode: SampleMode) -> torch.Tensor | None:
        """Launch one decode step over every row of `state` (compiled when `compile`); returns the logits when
        `mode.logits` (else None: a CUDA graph's outputs live only until its next replay)."""
        if not self.compile:
            return self._step(state, mode)
        if self._compiled_step is None:
            self._compiled_step = self._compile(self._step)
        if self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        return self._compiled_step(state, mode)

    def _compile(self, fn):
        import torch._dynamo

        config = torch._dynamo.config          # one graph per (state shape, window, SampleMode): more than 8
        config.recompile_limit = max(config.recompile_limit, 64)
        config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 1024)
        options = None
        if self.compile_backend == "inductor":  # mode="reduce-overhead" (CUDA graphs) + COMPILE_OPTIONS
            options = {**COMPILE_OPTIONS, "triton.cudagraphs": self.device.type == "cuda", **self.compile_options}
        return torch.compile(fn, backend=self.compile_backend, fullgraph=True, dynamic=False, options=options)

    def _step(self, state: DecodeState, mode: SampleMode) -> torch.Tensor | None:
        cache, position = state.cache, state.position
        keys = torch.arange(cache.window, device=position.device)[None, :]
        mask = ((keys >= state.start[:, None]) & (keys <= position[:, None]))[:, None, None, :]
        hidden = self.model.hidden_states(state.tokens, (position - state.start)[:, None], mask, cache, position)
        logits = self._head(hidden[:, -1])
        sample_rows(logits, state, mode)
        state.position.copy_((position + state.active.long()).clamp(max=cache.max_len - 1))
        return logits if mode.logits else None

    def _fast_decode_steps(self, prompts: list[list[int]], params: SamplingParams,
                           first_mask: torch.Tensor | None) -> Iterator[list[int]]:
        B, longest = len(prompts), max(len(p) for p in prompts)
        total = longest + params.max_new_tokens
        full = self._state_for(B, total)
        full.cache.window = min(full.max_len, _bucket(total, MIN_WINDOW))
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, ()))
        full.configure(params, [row_seed(seed, row) for row in range(full.rows)])
        full.active.fill_(False)                         # rows past the batch: computed, masked, never advancing
        full.position.zero_()
        full.start.zero_()
        state = full.view(0, B)
        mode = SampleMode.of([params], logits=self.logits_hook is not None)
        logits = self.prefill(state, prompts, seen=mode.penalty)
        if self.logits_hook is not None:
            self.logits_hook(0, logits)
        if first_mask is not None:
            logits = logits.masked_fill(~first_mask, float("-inf"))
        sample_rows(logits, state, mode)
        tokens = full.tokens[:B, 0]
        previous = HostCopy(tokens)
        for step in range(1, params.max_new_tokens):
            logits = self.step(full, mode)
            if self.logits_hook is not None:
                self.logits_hook(step, logits[:B].clone())
            current = HostCopy(tokens)
            yield previous.read()[0]                     # step - 1's tokens, while this step runs
            previous = current
        yield previous.read()[0]


def _prompt_ids_only(input_ids: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Left-padded (B, T) ids with each padding id replaced by the row's last token (for marking seen tokens)."""
    valid = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :] >= start[:, None]
    return torch.where(valid, input_ids, input_ids[:, -1:])


def _bucket(n: int, minimum: int = 1) -> int:
    """The smallest power of two >= max(n, minimum)."""
    return 1 << (max(n, minimum) - 1).bit_length()


class HostCopy:
    """Host copies of device tensors, taken now and read later: on CUDA an asynchronous copy into pinned memory,
    ordered after the work queued so far, so the host can read step t's tokens while step t+1 runs."""

    def __init__(self, *tensors: torch.Tensor):
        self.values: list | None = None
        if tensors[0].device.type != "cuda":
            self.values = [t.tolist() for t in tensors]
            return
        self.host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
        for host, t in zip(self.host, tensors):
            host.copy_(t, non_blocking=True)
        self.done = torch.cuda.Event()
        self.done.record()

    def read(self) -> list:
        """The tensors' values as (nested) lists, waiting for the copy if it has not finished."""
        if self.values is None:
            self.done.synchronize()
            self.values = [host.tolist() for host in self.host]
        return self.values
