"""Continuous batching: concurrent requests share the model, one decode step for all of them at a time.

A scheduler thread owns the model. Requests wait in a bounded queue; between decode steps the thread admits
waiting requests (a prefill of each prompt into a free row of the slot KV cache, which samples its first token)
and drops finished or cancelled ones, so requests join and leave the batch at every step. Rows stay packed: the
active requests use rows 0..n-1 (a finished row is refilled by moving the last one into it), and one decode step
runs the n rows together, each at its own position, with a mask that lets each row see only its own cache.

On the engine's fast path (`Engine(fast=True)`, the default on CUDA) the rows are static instead: a DecodeState
of `max_batch` slots x `max_len` positions is allocated once, a request keeps its slot from prefill to finish,
and every step runs all slots with the inactive ones masked, so the compiled, CUDA-graph-captured step is reused
as requests come and go (one graph per attention window -- a power of two >= the longest active row -- and
SampleMode). Sampling runs on the device with each slot's own settings, and the host reads step t's tokens after
step t+1 is launched, so streaming and stop checks overlap the GPU; a finished row is noticed one step late.
`start(warmup=True)` compiles the greedy step for every window before serving.

Sampling per request is the engine's (zhcoder.sampling: sample on the plain path, sample_rows on the fast path:
repetition penalty, temperature, top-k, top-p, min-p, a per-request seed), and so is the text: a TextStream per
request releases whole UTF-8 characters and holds back possible stop strings. Events go to each request's
`on_event` callback from the scheduler thread: {"text", "token", "logprob"?, "top_logprobs"?} per token, then
{"done": Completion}.

    python -m pytest tests/test_serve.py tests/test_fast_decode.py
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from typing import Callable

import torch

from zhcoder.engine import (MIN_WINDOW, Completion, ContextLengthError, Engine, HostCopy, SamplingParams, TextStream,
                            _bucket)
from zhcoder.sampling import SampleMode, row_seed, sample, sample_rows
from zhcoder.model import KVCache


class QueueFull(RuntimeError):
    """More requests are waiting than the queue holds (the server answers 429)."""


class SchedulerStopped(RuntimeError):
    """The scheduler is shutting down or has stopped (the server answers 503)."""


class SlotCache(KVCache):
    """A KV cache of `slots` rows for continuous batching; row r's first `length` positions hold its tokens.

    For a decode step over rows 0..n-1, `begin_step` sets the window to the longest row: each row's new key goes to
    its own position and the step attends to those rows' keys up to there (the attention mask hides what each row
    lacks)."""

    def __init__(self, config, slots: int, max_len: int, dtype: torch.dtype, device):
        super().__init__(config, slots, max_len, dtype, device)
        self.slots = slots

    def row(self, r: int) -> KVCache:
        """A KVCache over row r alone (views: writes land in this cache), for a prefill."""
        return self.rows(r, r + 1)

    def begin_step(self, positions: torch.Tensor) -> None:
        self.window = int(positions.max()) + 1

    def move(self, source: int, target: int, length: int) -> None:
        """Copy row `source`'s first `length` positions into row `target`."""
        for tensors in (self.keys, self.values):
            for t in tensors:
                t[target, :, :length] = t[source, :, :length]
        if self.key_classes is not None:
            self.key_classes[target, :length] = self.key_classes[source, :length]


@dataclass
class Request:
    """One generation: prompt ids, sampling, and where its events go (called from the scheduler thread)."""

    prompt_ids: list[int]
    params: SamplingParams
    on_event: Callable[[dict], None]
    logprobs: int | None = None            # per token: its logprob and this many top alternatives
    cancelled: bool = False                # set by the client side (disconnect); the row is freed next step

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class _Active:
    request: Request
    stream: TextStream
    generator: torch.Generator | None
    seen: torch.Tensor | None
    stop_ids: set
    length: int = 0                        # tokens in the cache row
    last: int = 0                          # the token to feed next
    generated: list = field(default_factory=list)
    slot: int = -1                         # fast path: the request's row of the DecodeState
    steps_left: int = 0                    # fast path: decode steps still to launch for it
    done: bool = False                     # fast path: finished (results of steps in flight are dropped)


class Scheduler:
    """Runs requests through one Engine with continuous batching (at most `max_batch` at once, `queue_size`
    waiting). `submit` is thread-safe; `start` / `stop` run and end the scheduler thread."""

    def __init__(self, engine: Engine, max_batch: int = 16, queue_size: int = 64, max_len: int | None = None):
        self.engine = engine
        model = engine.model
        self.max_len = min(max_len or engine.context_length, engine.context_length)
        self.fast = engine.fast
        if self.fast:                          # static slots: one DecodeState, a request keeps its row
            self.state = engine.allocate_state(max_batch, self.max_len)
            self.slots: list[_Active | None] = [None] * max_batch
        else:
            dtype = model.model.embed_tokens.weight.dtype
            self.cache = SlotCache(model.config, max_batch, self.max_len, dtype, engine.device)
        self.max_batch, self.queue_size = max_batch, queue_size
        self.waiting: collections.deque[Request] = collections.deque()
        self.active: list[_Active] = []
        self.condition = threading.Condition()
        self.thread: threading.Thread | None = None
        self.stopping = False
        self.steps = 0                         # decode steps run (for stats and tests)
        self.batch_sizes = collections.Counter()

    # -- client side ----------------------------------------------------------------------------------------
    def check(self, prompt_ids: list[int], params: SamplingParams) -> None:
        if not prompt_ids:
            raise ValueError("empty prompt: give at least one token")
        if len(prompt_ids) + params.max_new_tokens > self.max_len:
            raise ContextLengthError(f"prompt ({len(prompt_ids)} tokens) + max_tokens ({params.max_new_tokens}) "
                                     f"exceeds the server's context of {self.max_len} tokens")

    def submit(self, request: Request) -> None:
        self.check(request.prompt_ids, request.params)
        with self.condition:
            if self.stopping or self.thread is None:
                raise SchedulerStopped("the server is shutting down")
            if len(self.waiting) >= self.queue_size:
                raise QueueFull(f"{len(self.waiting)} requests are already waiting; try again later")
            self.waiting.append(request)
            self.condition.notify()

    @property
    def load(self) -> dict:
        return {"active": len(self.active), "waiting": len(self.waiting), "max_batch": self.max_batch,
                "queue_size": self.queue_size, "decode_steps": self.steps}

    def start(self, warmup: bool = False) -> None:
        """Start the scheduler thread. `warmup` (fast path): first compile and capture the greedy decode step for
        every attention window (requests wait meanwhile), so no request pays a compile later unless it samples."""
        def run():
            if warmup and self.fast:
                self.warm_up()
            self._loop()

        self.thread = threading.Thread(target=run, name="zhcoder-scheduler", daemon=True)
        self.thread.start()

    def warm_up(self, modes: tuple[SampleMode, ...] = (SampleMode(),)) -> None:
        """Run the fast path's step over the (empty, all inactive) slots for every window and mode: three times
        each (compile and warm up, capture the CUDA graph, replay). Call it from the thread that decodes: CUDA
        graph trees are per thread."""
        window = MIN_WINDOW
        with torch.inference_mode():
            while True:
                self.state.cache.window = min(window, self.max_len)
                for mode in modes:
                    for _ in range(3):
                        self.engine.step(self.state, mode)
                if window >= self.max_len:
                    break
                window *= 2
            self.state.active.fill_(False)
            self.state.position.zero_()

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse new requests, let running ones finish for up to `timeout` seconds, cancel the rest."""
        with self.condition:
            self.stopping = True
            self.condition.notify()
        if self.thread is not None:
            self.thread.join(timeout)
            if self.thread.is_alive():
                with self.condition:
                    for request in [a.request for a in self.active] + list(self.waiting):
                        request.cancel()
                    self.condition.notify()
                self.thread.join(timeout)

    # -- the scheduler thread ---------------------------------------------------------------------------------
    def _admit(self, busy: bool) -> list[Request] | None:
        """Wait until there is work (waiting or active requests, or `busy`: steps still in flight); the waiting
        requests that fit the batch now, or None once stopping with nothing left."""
        with self.condition:
            while not self.waiting and not self.active and not busy and not self.stopping:
                self.condition.wait()
            if self.stopping and not self.waiting and not self.active and not busy:
                return None
            admitted = []
            while self.waiting and len(self.active) + len(admitted) < self.max_batch:
                admitted.append(self.waiting.popleft())
            return admitted

    def _loop(self) -> None:
        if self.fast:
            return self._loop_fast()
        while True:
            admitted = self._admit(busy=False)
            if admitted is None:
                return
            try:
                with torch.inference_mode():
                    for request in admitted:
                        self._prefill(request)
                    if self.active:
                        self._decode()
            except Exception as error:                   # never leave a client waiting forever
                for active in self.active:
                    self._fail(active.request, error)
                self.active = []
                for request in admitted:
                    self._fail(request, error)

    @staticmethod
    def _fail(request: Request, error: Exception) -> None:
        request.on_event({"error": f"{type(error).__name__}: {error}"})

    def _prefill(self, request: Request) -> None:
        if request.cancelled:
            request.on_event({"done": None, "cancelled": True})
            return
        params, engine = request.params, self.engine
        row = len(self.active)
        fed, tails = engine.heal([request.prompt_ids], params)
        ids = torch.tensor(fed, device=engine.device)
        generator = None
        if params.seed is not None and params.temperature > 0:
            generator = torch.Generator(device=engine.device).manual_seed(params.seed)
        seen = None
        if params.repetition_penalty != 1.0:
            seen = torch.zeros(engine.model.config.vocab_size, dtype=torch.bool, device=engine.device)
            seen[ids[0]] = True
        stop_ids = set(engine.tokenizer.stop_token_ids if params.stop_token_ids is None else params.stop_token_ids)
        active = _Active(request, TextStream(params.stop, tails[0]), generator, seen, stop_ids, length=len(fed[0]))
        logits = engine.logits(ids, None, None, self.cache.row(row), 0)[0]
        mask = engine.first_token_mask(tails)     # token healing: the tokens the first sample may take
        if mask is not None:
            logits = logits.masked_fill(~mask[0], float("-inf"))
        if not self._next(active, logits):
            self.active.append(active)

    def _decode(self) -> None:
        device = self.engine.device
        n = len(self.active)
        tokens = torch.tensor([[a.last] for a in self.active], device=device)
        positions = torch.tensor([a.length for a in self.active], device=device)
        self.cache.begin_step(positions)
        end = int(positions.max()) + 1
        mask = (torch.arange(end, device=device)[None, :] <= positions[:, None])[:, None, None, :]
        logits = self.engine.logits(tokens, positions[:, None], mask, self.cache, positions)
        self.steps += 1
        self.batch_sizes[n] += 1
        finished = []
        for row, active in enumerate(self.active):
            active.length += 1
            if self._next(active, logits[row]):
                finished.append(row)
        for row in reversed(finished):                  # keep rows packed: the last active row fills the hole
            last = len(self.active) - 1
            if row != last:
                self.cache.move(last, row, self.active[last].length)
                self.active[row] = self.active[last]
            self.active.pop()

    def _next(self, active: _Active, logits: torch.Tensor) -> bool:
        """Sample the next token of one request from its logits (vocab,) and report it; True when it is done."""
        request, params = active.request, active.request.params
        if request.cancelled:
            request.on_event({"done": None, "cancelled": True})
            return True
        if active.seen is not None:
            penalised = torch.where(logits < 0, logits * params.repetition_penalty, logits / params.repetition_penalty)
            logits = torch.where(active.seen, penalised, logits)
        token = int(sample(logits[None], params, active.generator)[0])
        logprob = top = None
        if request.logprobs is not None:
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            logprob = float(log_probs[token])
            if request.logprobs > 0:
                found = torch.topk(log_probs, request.logprobs)
                top = list(zip(found.indices.tolist(), found.values.tolist()))
        if active.seen is not None:
            active.seen[token] = True
        return self._emit(active, token, logprob, top)

    def _emit(self, active: _Active, token: int, logprob: float | None = None, top: list | None = None) -> bool:
        """Report one sampled token of a request (text, stop checks); True when the request is done."""
        request, params = active.request, active.request.params
        if request.cancelled:
            request.on_event({"done": None, "cancelled": True})
            return True
        event: dict = {"token": token}
        if request.logprobs is not None:
            event["logprob"] = logprob
            if request.logprobs > 0:
                event["top_logprobs"] = top
        active.generated.append(token)
        active.last = token
        stream, reason = active.stream, None
        if token in active.stop_ids and not stream.respells(self.engine.token_bytes(token)):
            reason, piece = "stop", stream.finish()
        else:
            piece = stream.push(self.engine.token_bytes(token))
            if stream.stopped:
                reason = "stop"
            elif len(active.generated) == params.max_new_tokens:
                reason = "length"
                piece += stream.finish()
        event["text"] = piece
        request.on_event(event)
        if reason is not None:
            request.on_event({"done": Completion(stream.text, active.generated, len(request.prompt_ids), reason)})
            return True
        return False

    # -- the fast path: static slots, one step in flight ------------------------------------------------------
    def _loop_fast(self) -> None:
        in_flight: collections.deque = collections.deque()   # launched steps: (HostCopy, rows), oldest first
        while True:
            admitted = self._admit(busy=bool(in_flight))
            if admitted is None:
                return
            try:
                with torch.inference_mode():
                    started = []
                    while admitted:
                        begun = self._start(admitted[0])
                        admitted.pop(0)
                        if begun is not None:
                            started.append(begun)
                    running = [a for a in self.active if a.steps_left > 0]
                    if running:
                        in_flight.append(self._launch(running))
                    for active, first in started:                   # first tokens, sampled at prefill
                        self._deliver(active, first.read(), 0)
                    while len(in_flight) > (1 if running else 0):   # read step t while step t+1 runs
                        copy, rows = in_flight.popleft()
                        values = copy.read()
                        for index, active in enumerate(rows):
                            self._deliver(active, values, index)
            except Exception as error:                   # never leave a client waiting forever
                for active in self.active:
                    self._fail(active.request, error)
                for request in admitted:
                    self._fail(request, error)
                self.active, self.slots = [], [None] * self.max_batch
                in_flight.clear()
                self.state.active.fill_(False)

    def _start(self, request: Request) -> tuple[_Active, HostCopy] | None:
        """Prefill a request into a free slot and sample its first token there; None if it was cancelled."""
        if request.cancelled:
            request.on_event({"done": None, "cancelled": True})
            return None
        params, engine = request.params, self.engine
        slot = self.slots.index(None)
        row = self.state.view(slot, slot + 1)
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, ()))
        row.configure(params, [row_seed(seed, 0)])
        mode = SampleMode.of([params], logprobs=request.logprobs is not None)
        fed, tails = engine.heal([request.prompt_ids], params)
        logits = engine.prefill(row, fed, seen=mode.penalty)
        mask = engine.first_token_mask(tails)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        sample_rows(logits, row, mode)
        stop_ids = set(engine.tokenizer.stop_token_ids if params.stop_token_ids is None else params.stop_token_ids)
        active = _Active(request, TextStream(params.stop, tails[0]), None, None, stop_ids, length=len(fed[0]),
                         slot=slot, steps_left=params.max_new_tokens - 1)
        if active.steps_left == 0:
            self.state.active[slot] = False
        self.slots[slot] = active
        self.active.append(active)
        return active, self._copy(row, mode)

    def _copy(self, state, mode: SampleMode) -> HostCopy:
        if mode.logprobs:
            return HostCopy(state.tokens[:, 0], state.logprob, state.top_ids, state.top_logprobs)
        return HostCopy(state.tokens[:, 0])

    def _launch(self, running: list[_Active]) -> tuple[HostCopy, list]:
        """One decode step over all slots (the running rows advance, the rest are masked)."""
        window = min(self.max_len, _bucket(max(a.length for a in running) + 1, MIN_WINDOW))
        self.state.cache.window = window
        mode = SampleMode.of([a.request.params for a in running],
                             logprobs=any(a.request.logprobs is not None for a in running))
        self.engine.step(self.state, mode)
        copy = self._copy(self.state, mode)
        self.steps += 1
        self.batch_sizes[len(running)] += 1
        rows: list = [None] * self.max_batch
        for active in running:
            rows[active.slot] = active
            active.length += 1
            active.steps_left -= 1
            if active.steps_left == 0:                    # its last token is in flight: stop advancing the row
                self.state.active[active.slot] = False
        return copy, rows

    def _deliver(self, active: _Active | None, values: list, index: int) -> None:
        """Report the token (and logprobs) at `index` of a step's host copy to the request that ran there."""
        if active is None or active.done:
            return
        token = values[0][index]
        logprob = top = None
        if active.request.logprobs is not None:
            logprob = values[1][index]
            top = list(zip(values[2][index], values[3][index]))[:active.request.logprobs]
        if self._emit(active, token, logprob, top):
            active.done = True
            self.state.active[active.slot] = False
            self.slots[active.slot] = None
            self.active.remove(active)
