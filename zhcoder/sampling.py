"""Sampling: next-token logits to token ids, on the device, each row with its own settings.

One sampler serves every caller (`Engine.generate`, the server's scheduler; eager on CPU, inside a CUDA graph on
GPU): `sample_rows` reads the per-row settings of a decode state (zhcoder.engine.DecodeState) and never syncs with
the host. Order: logit bias, repetition penalty (transformers' formula, over prompt and output), frequency and
presence penalties (OpenAI's, over the output), then temperature, top-k, top-p, min-p as transformers orders them;
a categorical draw by the Gumbel-max trick over counter-based hash noise (`gumbel_noise`, seeded per row by
`row_seed`). What a compiled step computes is fixed by a `SampleMode` (Python flags).

    python -m pytest tests/test_decode.py tests/test_engine.py
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch

M32 = 0xFFFFFFFF
TOP_LOGPROBS = 20            # alternatives reported per token at most (the OpenAI API's maximum)


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # transformers': divides positive logits of seen tokens (prompt and output)
    frequency_penalty: float = 0.0  # OpenAI's: minus this times the token's count in the output so far
    presence_penalty: float = 0.0  # OpenAI's: minus this once a token is in the output
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit
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
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (all(-100 <= b <= 100 for b in self.logit_bias.values()), "logit_bias values must be in [-100, 100]"),
            (all(self.stop), "stop strings must not be empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def seed_or_random(self) -> int:
        """The seed, or a fresh random one (drawn from torch's global generator, so torch.manual_seed fixes it)."""
        return self.seed if self.seed is not None else int(torch.randint(0, 2**62, ()))


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


def mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 over an int64 tensor of 32-bit values, on any device, compiled or not."""
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
    key = mix32(seed ^ mix32(counter))[:, None]
    ids = torch.arange(vocab, device=seed.device)[None, :]
    x = mix32(mix32(ids + key) ^ mix32(key ^ 0x5BD1E995))
    uniform = ((x >> 8).float() + 0.5) * (1.0 / 2**24)                    # in (0, 1), 24 random bits
    return -torch.log(-torch.log(uniform))


class SampleMode(NamedTuple):
    """What a decode step computes, fixed per compiled graph (Python flags, never tensor values): `sample` (some
    row has temperature > 0; else pure argmax), `filters` (some row uses top-k / top-p / min-p), `penalty` (some
    row has a repetition penalty), `frequency` (some row has a frequency or presence penalty), `bias` (some row
    has a logit bias), `logprobs` (report each token's logprob and its top alternatives), `logits` (return the
    step's logits, for tests and hooks)."""

    sample: bool = False
    filters: bool = False
    penalty: bool = False
    frequency: bool = False
    bias: bool = False
    logprobs: bool = False
    logits: bool = False

    @classmethod
    def of(cls, params: list[SamplingParams], logprobs: bool = False, logits: bool = False) -> "SampleMode":
        sampled = [p for p in params if p.temperature > 0]
        return cls(sample=bool(sampled),
                   filters=any(p.top_k > 0 or p.top_p < 1 or p.min_p > 0 for p in sampled),
                   penalty=any(p.repetition_penalty != 1.0 for p in params),
                   frequency=any(p.frequency_penalty or p.presence_penalty for p in params),
                   bias=any(p.logit_bias for p in params), logprobs=logprobs, logits=logits)

    def __or__(self, other: "SampleMode") -> "SampleMode":
        return SampleMode(*(a or b for a, b in zip(self, other)))


def top_filters(logits: torch.Tensor, state) -> torch.Tensor:
    """top-k, then top-p, then min-p with per-row settings (0 / 1.0 / 0 = off), as transformers' warpers do them,
    over one ascending sort: top-k's cut is the k-th largest value, top-p's cumulative sum runs over the same order."""
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


def penalised(logits: torch.Tensor, state, mode: SampleMode) -> torch.Tensor:
    """The logits after each row's logit bias, repetition penalty and frequency / presence penalties."""
    if mode.bias:
        logits = logits + state.bias
    if mode.penalty:
        penalty = state.penalty[:, None]
        logits = torch.where(state.seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)
    if mode.frequency:
        logits = logits - state.counts * state.frequency[:, None] - (state.counts > 0) * state.presence[:, None]
    return logits


def sample_rows(logits: torch.Tensor, state, mode: SampleMode) -> torch.Tensor:
    """(rows, vocab) fp32 logits -> (rows,) tokens, written to `state.tokens`, with each row's own settings, on the
    device, no host sync; updates what the penalties count and, with `mode.logprobs`, each token's logprob and its
    top alternatives (of the penalised logits, before temperature, as OpenAI's API reports them)."""
    logits = penalised(logits, state, mode)
    tokens = logits.argmax(dim=-1)
    if mode.sample:
        hot = state.temperature > 0
        scaled = logits / torch.where(hot, state.temperature, 1.0)[:, None]
        if mode.filters:
            scaled = top_filters(scaled, state)
        drawn = (scaled + gumbel_noise(state.seed, state.counter, logits.shape[-1])).argmax(dim=-1)
        tokens = torch.where(hot, drawn, tokens)
    if mode.penalty:
        state.seen.scatter_(1, tokens[:, None], True)
    if mode.frequency:
        state.counts.scatter_add_(1, tokens[:, None], state.active.float()[:, None])
    if mode.logprobs:
        log_probs = torch.log_softmax(logits, dim=-1)
        state.logprob.copy_(log_probs.gather(1, tokens[:, None])[:, 0])
        top = torch.topk(log_probs, TOP_LOGPROBS, dim=-1)
        state.top_logprobs.copy_(top.values)
        state.top_ids.copy_(top.indices)
    state.tokens.copy_(tokens[:, None])
    if mode.sample:                                # the noise's counter: a sampling row's tokens drawn so far
        state.counter.add_(state.active)
    return tokens
