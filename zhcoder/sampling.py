"""Sampling: next-token logits to token ids, as transformers orders it (repetition penalty, temperature, top-k,
top-p, min-p).

- `sample`: the plain decode path's, one SamplingParams for the batch, a torch.Generator for seeded draws.
- `sample_rows`: the fast path's, on the device without a host sync (a CUDA graph replays it): each row of a
  DecodeState with its own settings, a categorical draw by the Gumbel-max trick over counter-based hash noise
  (`gumbel_noise`, seeded per row by `row_seed`), what to compute fixed per compiled graph by a `SampleMode`.

    python -m pytest tests/test_fast_decode.py tests/test_engine.py
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

if TYPE_CHECKING:
    from .engine import DecodeState, SamplingParams

M32 = 0xFFFFFFFF
TOP_LOGPROBS = 20            # alternatives the fast path can report per token (the OpenAI API's maximum)


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


def _mix32_int(x: int) -> int:
    """lowbias32 (Chris Wellons' hash-prospector): a bijection of 32-bit integers, host side."""
    x &= M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for 0 <= x < 2**32 in int64 without overflowing it (16-bit halves)."""
    return ((x & 0xFFFF) * c + ((((x >> 16) * c) & 0xFFFF) << 16)) & M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """`_mix32_int` over an int64 tensor of 32-bit values, on any device, compiled or not."""
    x = x & M32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def row_seed(seed: int, row: int = 0) -> int:
    """The 32-bit key of row `row`'s random stream under `seed`: a request's tokens depend only on its seed, its
    row in the call and its logits, so the server (each request a row 0) and `Engine.generate` agree."""
    return _mix32_int(_mix32_int(_mix32_int(seed) ^ ((seed >> 32) & M32)) ^ row)


def gumbel_noise(seed: torch.Tensor, counter: torch.Tensor, vocab: int) -> torch.Tensor:
    """(rows, vocab) fp32 Gumbel(0, 1) noise from a counter-based hash of (row key, token counter, token id): no
    generator state, no host sync, the same random bits on every device, eager or inside a CUDA graph."""
    key = _mix32(seed ^ _mix32(counter))[:, None]
    ids = torch.arange(vocab, device=seed.device)[None, :]
    x = _mix32(_mix32(ids + key) ^ _mix32(key ^ 0x5BD1E995))
    uniform = ((x >> 8).float() + 0.5) * (1.0 / 2**24)                    # in (0, 1), 24 random bits
    return -torch.log(-torch.log(uniform))


class SampleMode(NamedTuple):
    """What a decode step computes, fixed per compiled graph (Python flags, never tensor values): `sample` (some
    row has temperature > 0; else pure argmax), `filters` (some row uses top-k / top-p / min-p), `penalty` (some
    row has a repetition penalty), `logprobs` (report each token's logprob and its top alternatives), `logits`
    (return the step's logits, for tests and hooks)."""

    sample: bool = False
    filters: bool = False
    penalty: bool = False
    logprobs: bool = False
    logits: bool = False

    @classmethod
    def of(cls, params: list[SamplingParams], logprobs: bool = False, logits: bool = False) -> "SampleMode":
        sampled = [p for p in params if p.temperature > 0]
        return cls(sample=bool(sampled),
                   filters=any(p.top_k > 0 or p.top_p < 1 or p.min_p > 0 for p in sampled),
                   penalty=any(p.repetition_penalty != 1.0 for p in params), logprobs=logprobs, logits=logits)


def _filter(logits: torch.Tensor, state: DecodeState) -> torch.Tensor:
    """top-k, then top-p, then min-p with per-row settings (0 / 1.0 / 0 = off), as `sample` does them, over one
    ascending sort: top-k's cut is the k-th largest value, top-p's cumulative sum runs over the same order."""
    vocab = logits.shape[-1]
    ordered, order = torch.sort(logits, dim=-1)
    k = torch.where(state.top_k > 0, state.top_k.clamp(max=vocab), vocab)
    kth = ordered.gather(1, (vocab - k)[:, None])
    ordered = ordered.masked_fill(ordered < kth, float("-inf"))
    cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
    last = torch.arange(vocab, device=logits.device)[None, :] == vocab - 1      # always keep the most likely token
    remove = (cumulative <= state.cut_p[:, None]) & (state.cut_p[:, None] > 0) & ~last
    ordered = ordered.masked_fill(remove, float("-inf"))
    probs = ordered.softmax(dim=-1)
    ordered = ordered.masked_fill(probs < state.min_p[:, None] * probs[:, -1:], float("-inf"))
    return torch.empty_like(logits).scatter_(1, order, ordered)


def sample_rows(logits: torch.Tensor, state: DecodeState, mode: SampleMode) -> torch.Tensor:
    """The fast path's `sample`: (rows, vocab) fp32 logits -> (rows,) tokens, written to `state.tokens`, with each
    row's own settings, on the device, no host sync. Repetition penalty, temperature, top-k, top-p, min-p as
    transformers orders them; a categorical draw by the Gumbel-max trick over `gumbel_noise` (seeded per row)."""
    if mode.penalty:
        penalty = state.penalty[:, None]
        penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
        logits = torch.where(state.seen, penalised, logits)
    tokens = logits.argmax(dim=-1)
    if mode.sample:
        hot = state.temperature > 0
        scaled = logits / torch.where(hot, state.temperature, 1.0)[:, None]
        if mode.filters:
            scaled = _filter(scaled, state)
        drawn = (scaled + gumbel_noise(state.seed, state.counter, logits.shape[-1])).argmax(dim=-1)
        tokens = torch.where(hot, drawn, tokens)
    if mode.penalty:
        state.seen.scatter_(1, tokens[:, None], True)
    if mode.logprobs:          # of the penalised logits, before temperature (as the server reports them)
        log_probs = torch.log_softmax(logits, dim=-1)
        state.logprob.copy_(log_probs.gather(1, tokens[:, None])[:, 0])
        top = torch.topk(log_probs, TOP_LOGPROBS, dim=-1)
        state.top_logprobs.copy_(top.values)
        state.top_ids.copy_(top.indices)
    state.tokens.copy_(tokens[:, None])
    state.counter.add_(state.active.long())
    return tokens
