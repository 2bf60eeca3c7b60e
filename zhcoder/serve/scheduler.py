"""Continuous batching: concurrent requests share the model, one decode step for all of them at a time.

A scheduler thread owns the model and the engine's decode path (zhcoder.engine: DecodeState, admit, step,
Decoding). Requests wait in a bounded queue; between decode steps the thread admits waiting requests (a prefill of
each prompt into a free slot of one DecodeState of `max_batch` slots x `max_len` positions, which samples its first
token there) and drops finished or cancelled ones, so requests join and leave the batch at every step. A request
keeps its slot from prefill to finish; each step runs the slots in use together, each at its own position, with
each slot's own sampling settings on the device. Compiled (CUDA) the step runs every slot, the free ones masked,
so the captured graph is reused as requests come and go (one graph per attention window and SampleMode), and the
host reads step t's tokens after step t+1 is launched (a finished row is noticed one step late); eagerly (CPU) it
runs the slots up to the highest one in use and the tokens are read at once. `start(warmup=True)` compiles the
greedy step for every window before serving.

Events go to each request's `on_event` callback from the scheduler thread: {"text", "token", "logprob"?,
"top_logprobs"?} per token, then {"done": Completion}; {"error": message} if the step failed.

    python -m pytest tests/test_serve.py tests/test_decode.py
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Callable

import torch

from zhcoder.engine import MIN_WINDOW, Decoding, Engine, HostCopy, SamplingParams
from zhcoder.sampling import SampleMode


class QueueFull(RuntimeError):
    """More requests are waiting than the queue holds (the server answers 429)."""


class SchedulerStopped(RuntimeError):
    """The scheduler is shutting down or has stopped (the server answers 503)."""


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
    decoding: Decoding
    slot: int
    length: int                            # tokens in the slot's cache row
    steps_left: int                        # decode steps still to launch for it
    done: bool = False                     # finished (results of steps in flight are dropped)


class Scheduler:
    """Runs requests through one Engine with continuous batching (at most `max_batch` at once, `queue_size`
    waiting). `submit` is thread-safe; `start` / `stop` run and end the scheduler thread."""

    def __init__(self, engine: Engine, max_batch: int = 16, queue_size: int = 64, max_len: int | None = None):
        self.engine = engine
        self.max_len = min(max_len or engine.context_length, engine.context_length)
        self.state = engine.allocate_state(max_batch, self.max_len)
        self.slots: list[_Active | None] = [None] * max_batch
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
        self.engine.check([prompt_ids], params, self.max_len, where="the server's", limit="max_tokens")

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
        """Start the scheduler thread. `warmup` (compiled engines): first compile and capture the greedy decode step
        for every attention window (requests wait meanwhile), so no request pays a compile later unless it
        samples."""
        def run():
            if warmup and self.engine.compile:
                self.warm_up()
            self._loop()

        self.thread = threading.Thread(target=run, name="zhcoder-scheduler", daemon=True)
        self.thread.start()

    def warm_up(self, modes: tuple[SampleMode, ...] = (SampleMode(),)) -> None:
        """Run the step over the (empty, all inactive) slots for every window and mode: three times each (compile
        and warm up, capture the CUDA graph, replay). Call it from the thread that decodes: CUDA graph trees are per
        thread."""
        window = MIN_WINDOW
        with torch.inference_mode():
            while True:
                for mode in modes:
                    for _ in range(3):
                        self.engine.step(self.state, mode, min(window, self.max_len))
                if window >= self.max_len:
                    break
                window *= 2
            self.state.deactivate()

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
                    lag = self.engine.pipelined if running else 0
                    while len(in_flight) > lag:                     # compiled: read step t while step t+1 runs
                        copy, rows = in_flight.popleft()
                        values = copy.read()
                        for index, active in enumerate(rows):
                            self._deliver(active, values, index)
            except Exception as error:                   # never leave a client waiting forever
                for request in [a.request for a in self.active] + admitted:
                    request.on_event({"error": f"{type(error).__name__}: {error}"})
                self.active, self.slots = [], [None] * self.max_batch
                in_flight.clear()
                self.state.deactivate()

    def _start(self, request: Request) -> tuple[_Active, HostCopy] | None:
        """Prefill a request into a free slot and sample its first token there; None if it was cancelled."""
        if request.cancelled:
            request.on_event({"done": None, "cancelled": True})
            return None
        params = request.params
        slot = self.slots.index(None)
        row = self.state.view(slot, slot + 1)
        mode = SampleMode.of([params], logprobs=request.logprobs is not None)
        decoding = self.engine.admit(row, [request.prompt_ids], params, params.seed_or_random(), mode)[0]
        active = _Active(request, decoding, slot, length=decoding.fed_tokens, steps_left=params.max_new_tokens - 1)
        if active.steps_left == 0:
            self.state.active[slot] = False
        self.slots[slot] = active
        self.active.append(active)
        return active, self._copy(row, mode)

    @staticmethod
    def _copy(state, mode: SampleMode) -> HostCopy:
        if mode.logprobs:
            return HostCopy(state.tokens[:, 0], state.logprob, state.top_ids, state.top_logprobs)
        return HostCopy(state.tokens[:, 0])

    def _launch(self, running: list[_Active]) -> tuple[HostCopy, list]:
        """One decode step over the slots (the running rows advance, the rest are masked): every slot when compiled
        (a static shape), else the slots up to the highest one in use."""
        mode = SampleMode.of([a.request.params for a in running],
                             logprobs=any(a.request.logprobs is not None for a in running))
        used = self.max_batch if self.engine.compile else max(a.slot for a in running) + 1
        state = self.state.view(0, used)
        self.engine.step(state, mode, max(a.length for a in running) + 1, masked=used > 1)  # one row sees all keys
        copy = self._copy(state, mode)
        self.steps += 1
        self.batch_sizes[len(running)] += 1
        rows: list = [None] * used
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
        request = active.request
        if request.cancelled:
            request.on_event({"done": None, "cancelled": True})
            return self._free(active)
        token = values[0][index]
        piece, completion = active.decoding.add(token)
        event: dict = {"token": token, "text": piece}
        if request.logprobs is not None:
            event["logprob"] = values[1][index]
            if request.logprobs > 0:
                event["top_logprobs"] = list(zip(values[2][index], values[3][index]))[:request.logprobs]
        request.on_event(event)
        if completion is not None:
            request.on_event({"done": completion})
            self._free(active)

    def _free(self, active: _Active) -> None:
        active.done = True
        self.state.active[active.slot] = False
        self.slots[active.slot] = None
        self.active.remove(active)
