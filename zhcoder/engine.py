"""Text generation: one decode path for `Engine.generate` / `stream` and the server's continuous batching.

The pieces (each written once; the server's scheduler, zhcoder/serve/scheduler.py, drives the same ones):
- `DecodeState`: a KV cache of rows x max_len and, per row, the token to feed next, its cache position, where its
  tokens start (left padding before), whether it is active, its sampling settings (on the device) and what the
  penalties count. Allocated once and updated in place.
- `Engine.admit`: prefill prompts into rows of a state (chunked, through the same cache) and sample each row's
  first token there; returns a `Decoding` per row.
- `Engine.step`: one decode step over the rows: each row's key is written at its own position (an indexed write),
  attention covers the first `window` keys under the mask `start <= key <= position`, sampling
  (zhcoder.sampling.sample_rows) runs on the device. Positions are tensors, so no shape depends on them: on CUDA the
  step is `torch.compile`d (fullgraph, CUDA graphs via mode "reduce-overhead"-style inductor options) and the
  window is a power of two (one graph per window and SampleMode); on CPU it runs eagerly over exactly the keys
  written so far.
- `Decoding`: a row's tokens to text: UTF-8 character boundaries, stop tokens and stop strings (text that could
  still become one is held back), the length limit, so streamed pieces always concatenate to the final text.
- `HostCopy`: on CUDA the host reads step t's tokens while step t+1 runs (an asynchronous copy into pinned memory).

Ideas from pytorch-labs/gpt-fast (static cache written by index, compiled step, sampling without host syncs) and
karpathy/nanochat (one generation loop, a small per-row state).

    zhcoder complete --model DIR "def quicksort(" --max-new-tokens 64
    python -m pytest tests/test_engine.py tests/test_decode.py
"""

from __future__ import annotations

import codecs
import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from .model import KVCache, QwenForCausalLM
from .sampling import TOP_LOGPROBS, SampleMode, SamplingParams, row_seed, sample_rows

__all__ = ["ContextLengthError", "SamplingParams", "Completion", "Event", "TextStream", "Decoding", "DecodeState",
           "Engine", "HostCopy", "bucket"]

MIN_WINDOW = 256             # smallest attention window of a compiled decode step (windows are powers of two)
# Inductor options of the compiled decode step on CUDA (besides CUDA graphs). Coordinate-descent tuning makes
# inductor turn batch-1 matrix-vector products into tuned Triton reductions: per its own comment the way they reach
# peak bandwidth (gpt-fast sets it too); it costs compile time.
CUDA_COMPILE_OPTIONS = {"coordinate_descent_tuning": True, "triton.cudagraphs": True}


class ContextLengthError(ValueError):
    """The prompt plus the tokens asked for do not fit the model's context."""


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


class Decoding:
    """One row's generation on the host: its tokens so far and their text (`add` one token at a time until it
    returns a Completion: a stop token that does not only re-spell a healed prompt, a stop string, or the length)."""

    def __init__(self, engine: "Engine", params: SamplingParams, healed: bytes, prompt_tokens: int):
        self.token_bytes = engine.token_bytes
        self.stop_ids = set(engine.tokenizer.stop_token_ids if params.stop_token_ids is None
                            else params.stop_token_ids)
        self.stream = TextStream(params.stop, healed)
        self.max_new_tokens, self.prompt_tokens = params.max_new_tokens, prompt_tokens
        self.fed_tokens = prompt_tokens - bool(healed)      # healing feeds the prompt less its last token
        self.token_ids: list[int] = []
        self.done = False

    def add(self, token: int) -> tuple[str, Completion | None]:
        """The text this token releases, and the completion if it ends the row."""
        self.token_ids.append(token)
        stream, data, reason = self.stream, self.token_bytes(token), None
        if token in self.stop_ids and not stream.respells(data):
            reason, piece = "stop", stream.finish()
        else:
            piece = stream.push(data)
            if stream.stopped:
                reason = "stop"
            elif len(self.token_ids) == self.max_new_tokens:
                reason = "length"
                piece += stream.finish()
        if reason is None:
            return piece, None
        self.done = True
        return piece, Completion(stream.text, self.token_ids, self.prompt_tokens, reason)


class DecodeState:
    """The device state of `rows` sequences: a KVCache of rows x max_len and per row the token to feed next, the
    cache position it goes to, where the row's tokens start (left padding before), whether it is active (inactive
    rows are computed but masked and never advance), its sampling settings, what the penalties count (tokens seen in
    prompt and output, output counts) and its random stream (seed key, tokens sampled so far). Allocated once and
    updated in place: a CUDA graph replays over the same addresses."""

    FIELDS = ("tokens", "position", "start", "active", "counter", "seed", "temperature", "top_k", "cut_p", "min_p",
              "penalty", "frequency", "presence", "seen", "counts", "bias", "logprob", "top_ids", "top_logprobs")

    def __init__(self, config, rows: int, max_len: int, dtype: torch.dtype, device):
        self.cache = KVCache(config, rows, max_len, dtype, device)
        self.rows, self.max_len = rows, max_len
        vocab, top = config.vocab_size, min(TOP_LOGPROBS, config.vocab_size)
        shapes = {"tokens": (rows, 1), "seen": (rows, vocab), "counts": (rows, vocab), "bias": (rows, vocab),
                  "top_ids": (rows, top), "top_logprobs": (rows, top)}
        floats = {"temperature", "cut_p", "min_p", "penalty", "frequency", "presence", "counts", "bias", "logprob",
                  "top_logprobs"}
        for name in self.FIELDS:
            dtype_ = torch.bool if name in ("active", "seen") else torch.float32 if name in floats else torch.long
            setattr(self, name, torch.zeros(shapes.get(name, (rows,)), dtype=dtype_, device=device))
        self.penalty.fill_(1.0)
        self._views: dict[tuple[int, int], DecodeState] = {}
        if torch.device(device).type == "cuda":
            for t in self.tensors():
                torch._dynamo.mark_static_address(t)

    def tensors(self) -> list[torch.Tensor]:
        return self.cache.tensors() + [getattr(self, name) for name in self.FIELDS]

    def view(self, first: int, stop: int) -> "DecodeState":
        """Rows first..stop-1 (views: writes land in this state); the same object for the same rows."""
        if (first, stop) == (0, self.rows):
            return self
        if (first, stop) not in self._views:
            view = DecodeState.__new__(DecodeState)
            view.cache, view.rows, view.max_len, view._views = self.cache.rows(first, stop), stop - first, \
                self.max_len, {}
            for name in self.FIELDS:
                setattr(view, name, getattr(self, name)[first:stop])
            self._views[(first, stop)] = view
        return self._views[(first, stop)]

    def configure(self, params: SamplingParams, seeds: list[int]) -> None:
        """Every row of this state (or view) samples with `params`; row i's random stream is `seeds[i]`."""
        self.temperature.fill_(params.temperature)
        self.top_k.fill_(min(params.top_k, self.bias.shape[1]))            # a top-k past the vocabulary is off
        self.cut_p.fill_(1 - params.top_p)
        self.min_p.fill_(params.min_p)
        self.penalty.fill_(params.repetition_penalty)
        self.frequency.fill_(params.frequency_penalty)
        self.presence.fill_(params.presence_penalty)
        self.counts.zero_()
        self.bias.zero_()
        if params.logit_bias:
            ids = [i for i in params.logit_bias if 0 <= i < self.bias.shape[1]]
            self.bias[:, ids] = _to_device([params.logit_bias[i] for i in ids], torch.float32, self.bias.device)
        self.seed.copy_(_to_device(seeds, torch.long, self.seed.device))
        self.counter.zero_()

    def deactivate(self) -> None:
        """Every row inactive, at position 0 (computed and masked, never advancing)."""
        self.active.fill_(False)
        self.position.zero_()
        self.start.zero_()


def _to_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small host list on the device without stalling it (pinned staging, asynchronous copy on CUDA)."""
    host = torch.tensor(values, dtype=dtype)
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def _call_layer(layer, *args):
    return layer(*args)


class Engine:
    """Generation over one model and its tokenizer, through one decode path (see the module docstring).

    compile (default: on CUDA for dense models; MoE layers route through host-side expert lists): the decode step
    is `torch.compile(fullgraph=True, dynamic=False)` with `compile_backend` and options (on CUDA inductor's CUDA
    graphs and coordinate-descent tuning, CUDA_COMPILE_OPTIONS; `compile_options` adds or overrides), captured
    once per (rows, cache length, window, SampleMode); the first call of each pays the compile. With `reuse_layer`
    (torch >= 2.8) the decoder layer is traced once and reused for every layer (a nested compile region): on CPU a
    36-layer step's first compile took 46 s instead of 134 s; False traces all layers into one graph.
    Eagerly (compile off) a step runs only the rows in use and attends to exactly the keys written so far.

    Calls to `generate` reuse a DecodeState per batch bucket (rows rounded up to a power of two, length to a power
    of two >= `min_cache`; at most `max_states` kept, least recently used dropped). Prompts are prefilled in chunks of
    `prefill_chunk` tokens over all rows (prefill_chunk // rows per row): the prefill runs eagerly, so each chunk's
    kernel launches cost host time (on the H200 a 2,048-token prompt ran 2.1x faster in one chunk than in four of
    512 on the 8B shape). Seeded sampling is reproducible, and equal between `generate` and the server for one
    prompt (a row's draws depend on its seed, its row in the call and its logits).

    cpu_transposed_head: on CPU with fp32 weights, keep a (hidden, vocab) copy of the language-model head for
    single-sequence steps: the tall, narrow matrix-vector product runs 2-3x faster in that layout (measured in
    benchmarks/decode_cpu.py), at the cost of one more vocab x hidden matrix in memory.

    logits_hook: when set, called as hook(step, logits) with the (B, vocab) fp32 logits each step produces, before
    the penalties (step 0 = the prefill's); for tests and debugging.
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

    def __init__(self, model: QwenForCausalLM, tokenizer, compile: bool | None = None, prefill_chunk: int = 4096,
                 compile_backend: str = "inductor", compile_options: dict | None = None, reuse_layer: bool = True,
                 max_states: int = 4, min_cache: int = 1024, cpu_transposed_head: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self._bytes: dict[int, bytes] = {}
        weight = getattr(model.lm_head, "weight", None)
        use_transposed = (cpu_transposed_head and self.device.type == "cpu" and weight is not None
                          and weight.dtype == torch.float32)
        self._head_t = weight.detach().t().contiguous() if use_transposed else None
        config = model.config
        dense = not any(config.is_moe_layer(i) for i in range(config.num_hidden_layers))
        cuda = self.device.type == "cuda"
        self.compile = (cuda and dense) if compile is None else compile
        self.pipelined = cuda                 # the host reads step t's tokens while step t+1 runs
        if prefill_chunk < 1:
            raise ValueError("prefill_chunk must be at least 1")
        self.prefill_chunk, self.compile_backend = prefill_chunk, compile_backend
        self.max_states, self.min_cache = max_states, min_cache
        self.compile_options = dict(compile_options or {})
        self.reuse_layer = reuse_layer and hasattr(torch.compiler, "nested_compile_region")
        self.logits_hook = None
        self._states: collections.OrderedDict[int, DecodeState] = collections.OrderedDict()
        self._compiled_step = None
        self._healer = None

    # ----- prompts ----------------------------------------------------------------------------------------
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

    def check(self, prompts: list[list[int]], params: SamplingParams, context: int | None = None,
              where: str = "the model's", limit: str = "max_new_tokens") -> None:
        """Refuse empty prompts and prompts that do not fit `context` (default: the model's) with what they ask
        (`limit`: the name the caller gives max_new_tokens)."""
        if any(len(ids) == 0 for ids in prompts):
            raise ValueError("empty prompt: give at least one token")
        longest, context = max(len(ids) for ids in prompts), context or self.context_length
        if longest + params.max_new_tokens > context:
            raise ContextLengthError(f"prompt ({longest} tokens) + {limit} ({params.max_new_tokens}) exceeds "
                                     f"{where} context of {context} tokens")

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

    # ----- generation -------------------------------------------------------------------------------------
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
        """Text pieces of every row as they become final; each row's last event carries its completion."""
        encoded = [self.encode(p) for p in prompts]
        self.check(encoded, params)
        B = len(encoded)
        state = self._state_for(B, max(len(ids) for ids in encoded) + params.max_new_tokens)
        state.deactivate()                          # rows past the batch: computed when compiled, never advancing
        rows = state.view(0, B)
        mode = SampleMode.of([params], logits=self.logits_hook is not None)
        decodings = self.admit(rows, encoded, params, params.seed_or_random(), mode)
        stepped = state if self.compile else rows   # compiled: the bucket's static shape; eager: the rows in use
        fed = {d.fed_tokens for d in decodings}
        longest, masked = max(fed), self.compile or len(fed) > 1    # rows of one length see every key: no mask
        pending = collections.deque([HostCopy(rows.tokens[:, 0])])
        for step in range(params.max_new_tokens):
            if step + 1 < params.max_new_tokens:
                while len(pending) > self.pipelined:    # on CPU the tokens are read before the next step
                    yield from self._deliver(decodings, pending.popleft().read()[0])
                if all(d.done for d in decodings):
                    return
                logits = self.step(stepped, mode, longest + step + 1, masked)
                if self.logits_hook is not None:
                    self.logits_hook(step + 1, logits[:B].clone())
                pending.append(HostCopy(rows.tokens[:, 0]))
        while pending:
            yield from self._deliver(decodings, pending.popleft().read()[0])

    @staticmethod
    def _deliver(decodings: list[Decoding], tokens: list[int]) -> Iterator[Event]:
        for row, (decoding, token) in enumerate(zip(decodings, tokens)):
            if not decoding.done:
                piece, completion = decoding.add(token)
                if piece or completion is not None:
                    yield Event(row, piece, completion)

    # ----- the decode path: state, prefill, step ----------------------------------------------------------
    def allocate_state(self, rows: int, max_len: int) -> DecodeState:
        """A DecodeState of `rows` x `max_len` for this model (the server keeps one for its slots)."""
        return DecodeState(self.model.config, rows, max_len, self.model.model.embed_tokens.weight.dtype, self.device)

    def _state_for(self, batch: int, total: int) -> DecodeState:
        """The reusable state of this batch size's bucket, grown when a call needs a longer cache."""
        rows = bucket(batch)
        state = self._states.pop(rows, None)
        if state is None or state.max_len < total:
            del state                                    # free the old cache before allocating the new one
            while len(self._states) >= self.max_states:
                self._states.popitem(last=False)
            max_len = min(max(bucket(total), self.min_cache), max(self.context_length, total))
            state = self.allocate_state(rows, max_len)
        self._states[rows] = state
        return state

    def admit(self, rows: DecodeState, prompts: list[list[int]], params: SamplingParams, seed: int,
              mode: SampleMode) -> list[Decoding]:
        """Start a generation in each row of `rows` (a state or view of len(prompts) rows): configure its sampling
        (row i's random stream: row_seed(seed, i)), heal and prefill its prompt, sample its first token (a healed
        row's first token must extend the prompt's last one). Returns each row's Decoding."""
        fed, tails = self.heal(prompts, params)
        rows.configure(params, [row_seed(seed, row) for row in range(len(prompts))])
        logits = self.prefill(rows, fed, seen=mode.penalty)
        if self.logits_hook is not None:
            self.logits_hook(0, logits)
        if any(tails):
            allowed = self._healer.mask(tails, self.model.config.vocab_size, self.device)
            logits = logits.masked_fill(~allowed, float("-inf"))
        sample_rows(logits, rows, mode)
        return [Decoding(self, params, tail, len(ids)) for tail, ids in zip(tails, prompts)]

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
            state.cache.window = stop
            hidden = self.model.hidden_states(input_ids[:, first:stop], position_ids, mask, state.cache,
                                              queries.expand(len(prompts), -1), last_only=True)
        state.start.copy_(start)
        state.position.fill_(longest)
        state.active.fill_(True)
        if seen:
            valid = torch.arange(longest, device=device)[None, :] >= start[:, None]
            state.seen.zero_()
            state.seen.scatter_(1, torch.where(valid, input_ids, input_ids[:, -1:]), True)
        return self._head(hidden[:, -1])

    def window(self, keys: int, max_len: int) -> int:
        """How many cache positions a step attends to when its longest row needs `keys`: exactly those eagerly; a
        power of two >= MIN_WINDOW when compiled (one graph per window), at most `max_len`."""
        return min(max_len, bucket(keys, MIN_WINDOW) if self.compile else keys)

    def step(self, state: DecodeState, mode: SampleMode, keys: int, masked: bool = True) -> torch.Tensor | None:
        """Launch one decode step over every row of `state` (compiled when `compile`), attending to the window that
        `keys` positions need; returns the logits when `mode.logits` (else None: a CUDA graph's outputs live only
        until its next replay). `masked=False` (eager only): every row is at position keys - 1 with no padding, so
        each sees every key and attention needs no mask."""
        state.cache.window = self.window(keys, state.max_len)
        if not self.compile:
            return self._step(state, mode, masked)
        if self._compiled_step is None:
            self._compiled_step = self._compile()
        if self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        return self._compiled_step(state, mode)

    def _compile(self):
        import torch._dynamo

        config = torch._dynamo.config          # one graph per (state shape, window, SampleMode): more than 8
        config.recompile_limit = max(config.recompile_limit, 64)
        config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 1024)
        if self.reuse_layer:
            self._layer = torch.compiler.nested_compile_region(_call_layer)
        options = None
        if self.compile_backend == "inductor":
            options = {**(CUDA_COMPILE_OPTIONS if self.device.type == "cuda" else {}), **self.compile_options}
        return torch.compile(self._step, backend=self.compile_backend, fullgraph=True, dynamic=False,
                             options=options)

    _layer = None                              # how a compiled step calls each decoder layer (reuse_layer)

    def _step(self, state: DecodeState, mode: SampleMode, masked: bool = True) -> torch.Tensor | None:
        cache, position, mask = state.cache, state.position, None
        if masked:
            keys = torch.arange(cache.window, device=position.device)[None, :]
            mask = ((keys >= state.start[:, None]) & (keys <= position[:, None]))[:, None, None, :]
        hidden = self.model.hidden_states(state.tokens, (position - state.start)[:, None], mask, cache,
                                          position[:, None], call_layer=self._layer)
        logits = self._head(hidden[:, -1])
        sample_rows(logits, state, mode)
        position.add_(state.active).clamp_(max=cache.max_len - 1)
        return logits if mode.logits else None

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        if self._head_t is not None and hidden.shape[0] == 1:
            return (hidden @ self._head_t).float()
        return self.model.lm_head(hidden).float()


def bucket(n: int, minimum: int = 1) -> int:
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
