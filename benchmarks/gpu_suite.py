"""One GPU session's measurements (issue 9): zhcoder's fast decode path against transformers, the bandwidth it
reaches, prefill, int8 decode, and training speed. Made to run once inside a ~9-minute device call.

    python benchmarks/gpu_suite.py --out $OUT/gpu_suite.json            # CUDA, bf16, Qwen3-8B and -0.6B shapes
    python benchmarks/gpu_suite.py --tiny --out /tmp/suite.json          # every part, tiny shapes, CPU, < 1 min
    python benchmarks/gpu_suite.py --list --out /tmp/unused.json         # the plan's entries, in priority order
    python benchmarks/gpu_suite.py --out $OUT/s.json --prewarmed P.json  # after gpu_prewarm.py compiled ahead
    python benchmarks/gpu_suite.py --out $OUT/s2.json --skip-done $OUT/s.json   # go on where a run stopped

Same run, same random weights (bf16, normal std 0.02; transformers' Qwen3ForCausalLM shares zhcoder's weight
tensors, so nothing is copied and both compute on the same numbers; a logits check opens each shape):

- copy bandwidth: a large device-to-device copy (read + write bytes / time): the measured memory bandwidth.
- decode tok/s at batch 1, 8, 32, greedy, prompt --prompt-len, --new-tokens tokens: zhcoder's `Engine` (fast path:
  static cache, compiled CUDA-graph step, device sampling), transformers `generate()` eager (dynamic cache), and
  transformers `generate(cache_implementation="static")` (which compiles its forward with mode="reduce-overhead"
  on CUDA). Decode tok/s = batch x (N - 1) / (t(N tokens) - t(1 token)); transformers-static's t(1) is taken from
  its eager run (its prefill is the same eager forward, and a 1-token static generate would compile new shapes).
  Compile / warm-up time is reported separately. Achieved GB/s = (weight bytes + KV bytes read per step) /
  step time, KV at the mean context of the run; its share of the measured copy bandwidth.
- prefill tok/s: one --prefill-len prompt (zhcoder in chunks of 512 through its static cache; transformers eager).
- where the decode step's time goes: after each zhcoder decode measurement, one --profile-tokens generation under
  torch.profiler; the kernels (CPU ops on CPU) with the most device time, their count and share, and kernels per
  step -- what the bandwidth left on the table is spent on (launch-bound small kernels or slow matrix-vector ones).
- int8 decode, batch 1: when `zhcoder.quant.quantize_model` is importable (on a copy of the model).
- two other ways to compile the batch-1 step, last in the plan: "zhcoder whole graph" (every layer traced) and
  "zhcoder cuBLAS" (no coordinate-descent tuning).
- training tok/s and MFU, Qwen3-0.6B shape, seq 2048: the Trainer's step (bf16 autocast over fp32 weights,
  FlexAttention document masks, the chunked loss, fused AdamW, clipping), timed directly on synthetic packed
  documents -- benchmarks/train_speed.py runs the full Trainer, which needs a tokenizer folder on the machine.

Compile time: every zhcoder batch size compiles its decode step (~1 minute on the 8B shape with the decoder layer
compiled once; ~2 minutes as one graph of all 36 layers). --compile-cache FILE loads torch.compile's portable caches
(`torch.compiler.load_cache_artifacts`) when the file exists, and after every part the suite writes what it has
compiled or looked up to compile_cache.bin beside --out (if at most 15 MiB; what this run did not use is not in
it), to carry into the next call on the same card and torch. On CPU it took a 36-layer step's first compile in a
fresh cache folder from 75 s to 20 s. On the machine itself, benchmarks/gpu_prewarm.py runs the compiling entries
ahead (while the GPU trains in gpu_run.sh, or first, several at a time, in gpu_session.sh); --prewarmed then
budgets the entries it did not finish as compiles from scratch.

Parts run in priority order against a --budget (seconds); a part whose estimate no longer fits is recorded as
skipped. The order: the first shape at the first batch (zhcoder, transformers eager, static), then prefill and
training (seconds each, where every new zhcoder batch size compiles for ~2 minutes on the 8B shape), zhcoder and
eager at the second batch, the second shape's first batch, int8, and the rest (--list names them; --only runs
some, --skip-done skips those an earlier --out measured). Every measurement is appended to --out as it completes
(a timeout leaves the parts done so far). A markdown table is printed at the end.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zhcoder.config import ModelConfig, preset  # noqa: E402
from zhcoder.engine import Engine, SamplingParams  # noqa: E402
from zhcoder.model import QwenForCausalLM  # noqa: E402

from gpu_prewarm import compiles  # noqa: E402

TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16)


VARIANTS = ("zhcoder cuBLAS", "zhcoder whole graph")     # batch-1 decode compiled otherwise (Shape.variant)


class StubTokenizer:
    """What the engine needs of a tokenizer when prompts are token ids and no stop token is asked for."""

    stop_token_ids: list[int] = []

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def token_bytes(self, token_id: int) -> bytes:
        return b""


class Suite:
    def __init__(self, args):
        self.args = args
        self.start = time.perf_counter()
        self.results: list[dict] = []
        self.meta: dict = {}
        self.estimates = {"compile": 60.0 if not args.tiny else 5.0}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.args.budget - self.elapsed()

    def log(self, message: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {message}", flush=True)

    def record(self, **row) -> dict:
        row["at_s"] = round(self.elapsed(), 1)
        self.results.append(row)
        self.flush()
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k != "traceback"}
        self.log(f"result {shown}")
        return row

    def save_compile_cache(self) -> None:
        """What torch.compile has built so far, as one portable file beside --out (at most 15 MiB: a returned file)."""
        saved = torch.compiler.save_cache_artifacts()
        if saved is None:
            return
        blob = saved[0]
        if len(blob) <= 15 * 2**20:
            path = Path(self.args.out).parent / "compile_cache.bin"
            path.with_suffix(".tmp").write_bytes(blob)
            os.replace(path.with_suffix(".tmp"), path)               # a timeout never leaves half a file
        self.meta["compile_cache_MiB"] = round(len(blob) / 2**20, 2)

    def flush(self) -> None:
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps({"meta": self.meta, "results": self.results}, indent=1) + "\n")
        os.replace(tmp, out)

    def part(self, name: str, estimate: float, fn, **labels) -> None:
        """Run one measurement if its estimated seconds fit the budget; record errors and skips."""
        if self.left() < estimate:
            self.record(part=name, skipped=f"estimate {estimate:.0f}s > {self.left():.0f}s left", **labels)
            return
        self.log(f"{name} {labels} (estimate {estimate:.0f}s, {self.left():.0f}s left)")
        try:
            fn()
        except Exception as error:                                   # keep going: later parts may still work
            self.record(part=name, error=f"{type(error).__name__}: {error}"[:500],
                        traceback=traceback.format_exc()[-2000:], **labels)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        try:
            self.save_compile_cache()
        except Exception as error:                                   # the measurements stand without it
            self.log(f"compile cache not saved: {type(error).__name__}: {error}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def kernel_profile(fn, device: torch.device, top: int = 12) -> dict:
    """Run `fn` under torch.profiler: its `top` kernels by device time (on CPU: operators by self CPU time), each
    with its count and share of the total, and the number of device events (kernel launches, memory copies and
    sets; on CPU operator calls)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    if cuda:
        rows = [(e.key, e.count, e.self_device_time_total) for e in prof.key_averages()
                if e.device_type == torch.autograd.DeviceType.CUDA and e.self_device_time_total > 0]
    else:
        rows = [(e.key, e.count, e.self_cpu_time_total) for e in prof.key_averages() if e.self_cpu_time_total > 0]
    rows.sort(key=lambda row: -row[2])
    total = sum(us for _, _, us in rows) or 1.0
    return {"total_us": total, "launches": sum(count for _, count, _ in rows),
            "top": [{"name": name[:120], "count": count, "us": round(us, 1), "share": round(us / total, 4)}
                    for name, count, us in rows[:top]]}


def timed(fn, device, repeats: int = 1) -> float:
    best = math.inf
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


# ----- models ----------------------------------------------------------------------------------------------
def build_model(config: ModelConfig, device: torch.device, dtype: torch.dtype, seed: int = 0) -> QwenForCausalLM:
    """Random weights, allocated directly on the device in `dtype` (normal 0.02, unit norms)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = QwenForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.to_empty(device=device)
    model.tie_weights()
    model.model.rotary_emb.reset_parameters()
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02)
    return model.eval()


def transformers_model(model: QwenForCausalLM):
    """transformers' Qwen3ForCausalLM over the same weight tensors (built on the meta device, then assigned)."""
    import transformers

    hf_dict = model.config.to_hf_dict()
    config_class = transformers.AutoConfig.for_model(hf_dict["model_type"]).__class__
    hf_config = config_class.from_dict(hf_dict)
    hf_config._attn_implementation = "sdpa"
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            hf = transformers.AutoModelForCausalLM.from_config(hf_config)
    finally:
        torch.set_default_dtype(default)
    state = model.state_dict()
    missing, unexpected = hf.load_state_dict(state, strict=False, assign=True)
    tied = hf_config.tie_word_embeddings
    missing = [k for k in missing if "rotary" not in k and not (k == "lm_head.weight" and tied)]
    if missing or unexpected:
        raise RuntimeError(f"weights do not match transformers' names: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    with torch.device(device):                                # non-persistent buffers: recomputed on the device
        hf.model.rotary_emb = type(hf.model.rotary_emb)(config=hf_config)
    if hf_config.tie_word_embeddings:
        hf.lm_head.weight = hf.model.embed_tokens.weight
    for name, t in list(hf.named_parameters()) + list(hf.named_buffers()):
        if t.is_meta:
            raise RuntimeError(f"{name} is still on the meta device")
    hf.generation_config.pad_token_id = 0
    return hf.eval()


def copy_module(model: QwenForCausalLM) -> QwenForCausalLM:
    duplicate = copy.deepcopy(model)
    duplicate.tie_weights()
    return duplicate


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes a decode step reads of the weights: every parameter and buffer once, except an untied embedding
    table (a step reads only its batch's rows of it)."""
    seen, total = set(), 0
    embed = model.model.embed_tokens.weight
    lm_head = getattr(model.lm_head, "weight", None)
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        if t is embed and (lm_head is None or lm_head.data_ptr() != embed.data_ptr()):
            continue
        total += t.numel() * t.element_size()
    return total


# ----- parts -----------------------------------------------------------------------------------------------
def copy_bandwidth(suite: Suite, device: torch.device) -> float:
    size = (2**30 if device.type == "cuda" else 2**24) // 2
    src = torch.empty(size, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    repeats = 20 if device.type == "cuda" else 5

    def copies():
        for _ in range(repeats):
            dst.copy_(src)

    seconds = timed(copies, device, repeats=3) / repeats
    moved = 2 * src.numel() * src.element_size()
    suite.record(part="copy_bandwidth", bytes=moved, GB_s=moved / seconds / 1e9)
    return moved / seconds / 1e9


class Shape:
    """One model shape's models, engine and measurements."""

    def __init__(self, suite: Suite, name: str, config: ModelConfig, device, dtype):
        self.suite, self.name, self.config, self.device, self.dtype = suite, name, config, device, dtype
        args = suite.args
        self.model = build_model(config, device, dtype)
        self.engine = Engine(self.model, StubTokenizer(config.vocab_size), fast=True)   # compiled on CUDA
        self.hf = None
        self.weights = weight_bytes(self.model)
        self.eager_t1: dict[int, float] = {}
        self.prompt_len, self.new_tokens = args.prompt_len, args.new_tokens
        self.eager_tokens = args.eager_new_tokens
        suite.record(part="model", shape=name, parameters=sum(p.numel() for p in self.model.parameters()),
                     weight_bytes_per_step=self.weights, fast=self.engine.fast, compile=self.engine.compile,
                     dtype=str(dtype).removeprefix("torch."))

    def prompts(self, batch: int, length: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(batch * 1000 + length)
        return torch.randint(0, self.config.vocab_size, (batch, length), generator=g)

    def kv_bytes(self, batch: int, tokens: int) -> int:
        kv = 2 * self.config.num_hidden_layers * self.config.num_key_value_heads * self.config.head_dim
        return batch * kv * torch.tensor([], dtype=self.dtype).element_size() * (self.prompt_len + tokens // 2)

    def decode_row(self, system: str, batch: int, t1: float, tn: float, tokens: int, warmup: float, **extra):
        suite = self.suite
        if tn <= t1:                                                 # noise (tiny shapes on a busy CPU)
            return suite.record(part="decode", shape=self.name, system=system, batch=batch, t1_s=t1, tn_s=tn,
                                error="t(N tokens) <= t(1 token): no decode time to measure")
        tok_s = batch * (tokens - 1) / (tn - t1)
        step_s = batch / tok_s
        weights = extra.pop("weights", self.weights)
        moved = weights + self.kv_bytes(batch, tokens)
        gbps = moved / step_s / 1e9
        copy = suite.meta.get("copy_GB_s")
        return suite.record(part="decode", shape=self.name, system=system, batch=batch, tok_s=tok_s,
                            ms_per_step=step_s * 1e3, GB_s=gbps, bandwidth_share=gbps / copy if copy else None,
                            floor_tok_s=batch * copy * 1e9 / moved if copy else None, new_tokens=tokens,
                            warmup_s=warmup, **extra)

    def ours(self, batch: int, engine: Engine | None = None, system: str = "zhcoder", **extra) -> None:
        engine = engine or self.engine
        prompts = self.prompts(batch, self.prompt_len).tolist()
        n = self.new_tokens

        def go(tokens):
            return lambda: engine.generate(prompts, SamplingParams(max_new_tokens=tokens, stop_token_ids=[]))

        start = time.perf_counter()
        out = go(n)()
        go(n)()                                                     # the second run records the CUDA graph
        sync(self.device)
        warmup = time.perf_counter() - start
        if engine.compile and system == "zhcoder":
            self.suite.estimates["compile"] = max(warmup, 5.0)
        t1 = timed(go(1), self.device, self.suite.args.repeats)
        tn = timed(go(n), self.device, self.suite.args.repeats)
        self.decode_row(system, batch, t1, tn, n, warmup, first_tokens=out[0].token_ids[:8], **extra)
        tokens = self.suite.args.profile_tokens
        if tokens:                           # where a step's time goes (the prefill is in it too, once)
            labels = dict(part="profile", shape=self.name, system=system, batch=batch, tokens=tokens)
            try:
                found = kernel_profile(go(tokens), self.device)
            except Exception as error:                              # the measurement above stands
                self.suite.record(**labels, error=f"{type(error).__name__}: {error}"[:500])
                return
            self.suite.record(**labels, launches_per_token=found["launches"] / tokens,
                              device_us_per_token=found["total_us"] / tokens, top=found["top"])

    def hf_generate(self, ids, tokens: int, static: bool):
        kwargs = dict(cache_implementation="static") if static else dict(disable_compile=True)
        return self.hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                min_new_tokens=tokens, do_sample=False, pad_token_id=0, eos_token_id=None, **kwargs)

    def ensure_hf(self) -> None:
        if self.hf is None:
            self.hf = transformers_model(self.model)
            ids = self.prompts(1, 16).to(self.device)
            with torch.inference_mode():
                ours = self.model(ids).float()
                theirs = self.hf(ids).logits.float()
            self.suite.record(part="parity", shape=self.name, max_abs_logit_diff=float((ours - theirs).abs().max()),
                              max_abs_logit=float(ours.abs().max()),
                              argmax_agree=float((ours.argmax(-1) == theirs.argmax(-1)).float().mean()))

    def theirs(self, batch: int, static: bool) -> None:
        self.ensure_hf()
        ids = self.prompts(batch, self.prompt_len).to(self.device)
        n = self.new_tokens if static else self.eager_tokens
        system = "transformers static" if static else "transformers eager"
        with torch.inference_mode():
            start = time.perf_counter()
            out = self.hf_generate(ids, n, static)
            self.hf_generate(ids, n, static)
            sync(self.device)
            warmup = time.perf_counter() - start
            if batch not in self.eager_t1:
                self.eager_t1[batch] = timed(lambda: self.hf_generate(ids, 1, False), self.device,
                                             self.suite.args.repeats)
            tn = timed(lambda: self.hf_generate(ids, n, static), self.device, self.suite.args.repeats)
        self.decode_row(system, batch, self.eager_t1[batch], tn, n, warmup,
                        first_tokens=out[0, self.prompt_len:self.prompt_len + 8].tolist())

    def prefill(self) -> None:
        """One --prefill-len prompt: zhcoder in its default chunk and in chunks of 512 (its default until the fourth
        GPU session), transformers eager; then where the default-chunk prefill's time goes."""
        length, engine = self.suite.args.prefill_len, self.engine
        ids = self.prompts(1, length)
        prompt = ids.tolist()
        run = lambda: engine.generate(prompt, SamplingParams(max_new_tokens=1, stop_token_ids=[]))  # noqa: E731
        chunk = engine.prefill_chunk
        seconds = {}
        for engine.prefill_chunk in (512, chunk):
            run()
            seconds[engine.prefill_chunk] = timed(run, self.device, self.suite.args.repeats)
        self.ensure_hf()
        ids = ids.to(self.device)
        with torch.inference_mode():
            self.hf_generate(ids, 1, False)
            theirs = timed(lambda: self.hf_generate(ids, 1, False), self.device, self.suite.args.repeats)
        ours = seconds[chunk]
        self.suite.record(part="prefill", shape=self.name, prompt_len=length, zhcoder_tok_s=length / ours,
                          transformers_tok_s=length / theirs, ratio=theirs / ours, chunk=chunk,
                          chunk_512_tok_s=length / seconds[512])
        found = kernel_profile(run, self.device)
        self.suite.record(part="profile", shape=self.name, system="zhcoder prefill", batch=1, tokens=length,
                          launches_per_token=found["launches"] / length,
                          device_us_per_token=found["total_us"] / length, top=found["top"])

    def variant(self, system: str) -> None:
        """zhcoder at batch 1 compiled another way: "zhcoder whole graph" (every layer traced: no reused decoder
        layer) or "zhcoder cuBLAS" (no coordinate-descent tuning: inductor keeps batch-1 matrix products as cuBLAS
        calls instead of tuned Triton reductions)."""
        import zhcoder.model

        options = {"coordinate_descent_tuning": False} if system == "zhcoder cuBLAS" else None
        engine = Engine(self.model, StubTokenizer(self.config.vocab_size), fast=True, compile_options=options)
        reuse = zhcoder.model.REUSE_DECODE_LAYER
        zhcoder.model.REUSE_DECODE_LAYER = reuse and system != "zhcoder whole graph"
        try:
            self.ours(1, engine, system=system)
        finally:
            zhcoder.model.REUSE_DECODE_LAYER = reuse
            del engine

    def int8(self) -> None:
        from zhcoder.quant import quantize_model

        start = time.perf_counter()
        copy = copy_module(self.model)                                # quantize_model works in place
        quantized = quantize_model(copy, mode="int8") or copy
        seconds = time.perf_counter() - start
        engine = Engine(quantized, StubTokenizer(self.config.vocab_size), fast=True)
        try:
            self.ours(1, engine, system="zhcoder int8", weights=weight_bytes(quantized), quantize_s=seconds)
        finally:
            del engine, quantized, copy


def train(suite: Suite, device: torch.device, compiled: bool = False) -> None:
    """Training tok/s and MFU: the Trainer's step on the given shape, timed directly; `compiled`: each decoder layer
    torch.compile'd, as the Trainer does with `compile = true`."""
    from zhcoder.model import init_weights
    from zhcoder.train.loop import attention_mask, flops_per_token, peak_flops

    args = suite.args
    config = preset("qwen3-0.6b", **(TINY if args.tiny else {}))
    seq, batch = (64, 2) if args.tiny else (args.train_seq, args.train_batch)
    model = QwenForCausalLM(config)
    init_weights(model, seed=0)
    model = model.to(device).train()
    if compiled:                                         # on CPU (--tiny) dynamo alone: the path, not the speed
        for layer in model.model.layers:
            layer.compile(backend="inductor" if device.type == "cuda" else "eager")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                  fused=device.type == "cuda")
    g = torch.Generator().manual_seed(0)

    def packed():
        positions = []
        while len(positions) < seq:
            positions += range(int(min(max(torch.empty(()).log_normal_(6.4, 1.0, generator=g), 16), 16384)))
        position_ids = torch.tensor(positions[:seq]).expand(batch, seq).contiguous()
        ids = torch.randint(0, config.vocab_size, (batch, seq), generator=g)
        return ids.to(device), position_ids.to(device)

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else \
        torch.autocast("cpu", enabled=False)
    losses = []

    def step():
        ids, position_ids = packed()
        labels = torch.roll(ids, -1, dims=1)
        with autocast:
            loss = model(ids, position_ids=position_ids, attention_mask=attention_mask(position_ids), labels=labels)
        (loss / labels.numel()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()) / labels.numel())

    times = [timed(step, device) for _ in range(2 + (2 if args.tiny else args.train_steps))]
    timed_steps = sorted(times[2:])
    seconds = timed_steps[len(timed_steps) // 2]
    tok_s = batch * seq / seconds
    peak = peak_flops(device, None)
    mfu = flops_per_token(config, seq) * tok_s / peak if peak else None
    system = "compiled per layer" if compiled else "eager"
    name = "qwen3-0.6b" if not args.tiny else "tiny (qwen3-0.6b)"
    suite.record(part="train", shape=name, system=system, seq_len=seq, batch=batch, tok_s=tok_s,
                 first_step_s=times[0], mfu=mfu, step_s=seconds, loss_first=losses[0], loss_last=losses[-1],
                 attention="flex document mask" if device.type == "cuda" else "sdpa document mask")
    if compiled:                                                    # where a training step's time goes
        found = kernel_profile(step, device)
        suite.record(part="profile", shape=name, system=f"training ({system})", batch=batch, tokens=batch * seq,
                     launches_per_token=found["launches"] / (batch * seq),
                     device_us_per_token=found["total_us"] / (batch * seq), top=found["top"])


# ----- the run ---------------------------------------------------------------------------------------------
def label(part: str, shape: str, system: str, batch: int) -> str:
    """A plan entry's name for --list, --only and --skip-done (int8 results are decode rows)."""
    shape = shape.removeprefix("tiny (").removesuffix(")")
    return f"{'decode' if part == 'int8' else part}/{shape}/{system}/{batch}"


def table(suite: Suite) -> str:
    rows = ["| shape | system | batch | decode tok/s | ms/step | GB/s | share of copy bw | vs transformers eager "
            "| vs transformers static |", "|---|---|---|---|---|---|---|---|---|"]
    decode = [r for r in suite.results if r.get("part") == "decode" and "tok_s" in r]
    by = {(r["shape"], r["system"], r["batch"]): r for r in decode}
    for r in decode:
        eager = by.get((r["shape"], "transformers eager", r["batch"]))
        static = by.get((r["shape"], "transformers static", r["batch"]))
        share = f"{r['bandwidth_share']:.0%}" if r.get("bandwidth_share") else "-"
        versus = [f"{r['tok_s'] / peer['tok_s']:.2f}x" if peer else "-" for peer in (eager, static)]
        rows.append(f"| {r['shape']} | {r['system']} | {r['batch']} | {r['tok_s']:.1f} | {r['ms_per_step']:.2f} "
                    f"| {r['GB_s']:.1f} | {share} | {versus[0]} | {versus[1]} |")
    for r in suite.results:
        if r.get("part") == "prefill" and "zhcoder_tok_s" in r:
            rows.append(f"\nprefill {r['shape']} ({r['prompt_len']} tokens): zhcoder {r['zhcoder_tok_s']:,.0f} tok/s "
                        f"(chunk {r['chunk']}; chunks of 512: {r['chunk_512_tok_s']:,.0f}), "
                        f"transformers {r['transformers_tok_s']:,.0f} tok/s ({r['ratio']:.2f}x)")
        if r.get("part") == "train" and "tok_s" in r:
            mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "-"
            rows.append(f"\ntraining {r['shape']} ({r.get('system', 'eager')}) seq {r['seq_len']} x {r['batch']}: "
                        f"{r['tok_s']:,.0f} tok/s, MFU {mfu}")
        if r.get("part") == "profile" and r.get("top"):
            heaviest = "; ".join(f"{k['name'][:60]} {k['share']:.0%} (x{k['count']})" for k in r["top"][:4])
            rows.append(f"\nprofile {r['shape']} {r['system']} batch {r['batch']}: {r['launches_per_token']:.0f} "
                        f"launches and {r['device_us_per_token']:,.0f} us per token; heaviest: {heaviest}")
        if r.get("part") == "copy_bandwidth":
            rows.append(f"\nmeasured copy bandwidth: {r['GB_s']:.0f} GB/s")
    skipped = [f"{r['part']} {r.get('shape', '')} {r.get('system', '')} {r.get('batch', '')}".strip()
               for r in suite.results if "skipped" in r]
    errors = [f"{r['part']} {r.get('shape', '')}: {r['error']}" for r in suite.results if "error" in r]
    if skipped:
        rows.append("\nskipped (budget): " + "; ".join(skipped))
    if errors:
        rows.append("\nerrors: " + "; ".join(errors))
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on CPU: check that every part runs")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 510; tiny 120)")
    parser.add_argument("--shapes", nargs="+", default=["qwen3-8b", "qwen3-0.6b"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 8], help="in priority order")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--eager-new-tokens", type=int, default=32, help="transformers eager is slow: fewer tokens")
    parser.add_argument("--prefill-len", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-seq", type=int, default=2048)
    parser.add_argument("--train-batch", type=int, default=8, help="the issue's transformers figure: batch 8")
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--no-transformers-static", action="store_true")
    parser.add_argument("--whole-graph", action="store_true", help="compile zhcoder's decode steps as one graph of "
                        "all layers (zhcoder.model.REUSE_DECODE_LAYER off)")
    parser.add_argument("--compile-cache", help="torch.compile caches to load first (a compile_cache.bin "
                        "an earlier run wrote beside its --out)")
    parser.add_argument("--list", action="store_true", help="print the plan's entries in priority order and exit")
    parser.add_argument("--only", nargs="+", help="run only these entries (as --list names them)")
    parser.add_argument("--skip-done", nargs="+", metavar="JSON", help="skip the entries measured in these earlier "
                        "--out files (a later call on the same warm machine goes on where one stopped)")
    parser.add_argument("--prewarmed", nargs="+", metavar="JSON", help="the --out of gpu_prewarm.py: the "
                        "entries it did not finish are budgeted as compiles from scratch")
    parser.add_argument("--profile-tokens", type=int, default=32, help="profile a generation of this many tokens "
                        "after each zhcoder decode measurement (0: off)")
    args = parser.parse_args()
    if args.tiny:
        args.prompt_len, args.new_tokens, args.eager_new_tokens, args.prefill_len = 8, 6, 4, 40
        args.batches, args.repeats, args.profile_tokens = [1, 2], 1, min(args.profile_tokens, 4)
    args.budget = args.budget or (120.0 if args.tiny else 510.0)
    suite = Suite(args)
    import zhcoder.model

    zhcoder.model.REUSE_DECODE_LAYER &= not args.whole_graph
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    import transformers

    suite.meta = {"torch": torch.__version__, "transformers": transformers.__version__,
                  "python": platform.python_version(),
                  "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
                  "tiny": args.tiny, "args": vars(args), "reuse_decode_layer": zhcoder.model.REUSE_DECODE_LAYER,
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if device.type == "cuda":
        suite.meta["gpu_memory_GiB"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        torch.backends.cuda.matmul.allow_tf32 = True
    if not args.list:
        suite.log(f"{suite.meta['device']}, torch {torch.__version__}, transformers {transformers.__version__}, "
                  f"budget {args.budget:.0f}s")
    if args.compile_cache and Path(args.compile_cache).is_file():
        torch.compiler.load_cache_artifacts(Path(args.compile_cache).read_bytes())
        suite.meta["compile_cache_loaded"] = args.compile_cache
        suite.log(f"loaded torch.compile caches from {args.compile_cache}")
    shapes: dict[str, Shape] = {}

    def shape(name: str) -> Shape:
        if name not in shapes:
            config = preset(name, **(TINY if args.tiny else {}))
            shapes[name] = Shape(suite, name if not args.tiny else f"tiny ({name})", config, device, dtype)
        return shapes[name]

    compile_cost = lambda: suite.estimates["compile"]  # noqa: E731
    try:
        from zhcoder.quant import quantize_model
        quant = callable(quantize_model)
    except ImportError as error:
        quant = False
        suite.record(part="int8", skipped=f"zhcoder.quant not importable: {error}")

    def decode(name, batch, system):
        if system == "zhcoder":
            return ("decode", name, system, batch, lambda: shape(name).ours(batch), compile_cost)
        if system in VARIANTS:
            return ("decode", name, system, batch, lambda: shape(name).variant(system), compile_cost)
        static = system == "transformers static"
        return ("decode", name, system, batch, lambda: shape(name).theirs(batch, static=static),
                (lambda: 1.5 * suite.estimates["compile"]) if static else (lambda: 10.0))

    big, small, batches = args.shapes[0], args.shapes[1:], args.batches
    ours_eager = ("zhcoder", "transformers eager")
    static = () if args.no_transformers_static else ("transformers static",)
    plan = [decode(big, batches[0], system) for system in ours_eager + static]      # the headline numbers first
    plan += [("prefill", big, "", 1, lambda: shape(big).prefill(), lambda: 10.0)]   # cheap: before a new compile
    plan += [("train", "qwen3-0.6b", system, args.train_batch, lambda c=compiled: train(suite, device, c),
              lambda c=compiled: 40.0 + compile_cost() * c)
             for system, compiled in (("eager", False), ("compiled per layer", True))]
    plan += [decode(big, batch, system) for batch in batches[1:2] for system in ours_eager]
    plan += [decode(name, batches[0], system) for name in small for system in ours_eager]
    if quant:
        plan.append(("int8", big, "zhcoder int8", 1, lambda: shape(big).int8(), compile_cost))
    plan += [decode(big, batch, system) for batch in batches[2:] for system in ours_eager]
    plan += [decode(big, batch, system) for batch in batches[1:] for system in static]
    plan += [decode(name, batch, system) for name in small for batch in batches[1:] for system in ours_eager]
    plan += [decode(name, batches[0], system) for name in small for system in static]
    plan += [("prefill", name, "", 1, lambda n=name: shape(n).prefill(), lambda: 10.0) for name in small]
    plan += [decode(name, batch, system) for name in small for batch in batches[1:] for system in static]
    if quant:
        plan += [("int8", name, "zhcoder int8", 1, lambda n=name: shape(n).int8(), compile_cost) for name in small]
    plan += [decode(big, batches[0], system) for system in VARIANTS]          # how else it could be compiled
    if args.list:
        print("\n".join(label(*entry[:4]) for entry in plan))
        return
    if args.only:
        plan = [entry for entry in plan if label(*entry[:4]) in args.only]
    done = set()
    for path in args.skip_done or []:
        done |= {label(r["part"], r["shape"], r.get("system", ""), r.get("batch", 1))
                 for r in json.loads(Path(path).read_text())["results"]
                 if r.get("part") in ("decode", "prefill", "train", "int8") and "error" not in r
                 and "skipped" not in r and "shape" in r}
    warm, cold = set(), 0.0          # the compiles --prewarmed finished, and the longest of them alone on the GPU:
    for path in args.prewarmed or []:                # 0.8 x as long as while sharing it (the 8B step on the H200:
        rows = [r for r in json.loads(Path(path).read_text())["results"] if r.get("part") == "prewarm"]   # 135/167 s)
        warm |= {r["entry"] for r in rows if r.get("rc") == 0 and not r.get("error")}
        cold = max([cold] + [0.8 * r["warmup_s"] for r in rows if r.get("rc") == 0 and r.get("warmup_s")])
    if args.prewarmed:
        suite.meta["prewarmed"] = sorted(warm)
    if not args.only:
        suite.part("copy_bandwidth", 5, lambda: suite.meta.update(copy_GB_s=copy_bandwidth(suite, device)))
    for part, name, system, batch, fn, estimate in plan:
        entry = label(part, name, system, batch)
        if entry in done:
            suite.record(part=part, shape=name, system=system, batch=batch, skipped="done in --skip-done")
            continue
        if args.prewarmed and compiles(entry) and entry not in warm:
            estimate = (lambda e=estimate: max(e(), cold))          # a compile from scratch
        if name not in shapes and part != "train":
            build = 20.0 if not args.tiny else 1.0
            if suite.left() < build + estimate():
                suite.record(part=part, shape=name, system=system, batch=batch, skipped="budget")
                continue
        suite.part(part, estimate(), fn, shape=name, system=system, batch=batch)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    suite.meta["wall_s"] = round(suite.elapsed(), 1)
    suite.flush()
    print(table(suite), flush=True)


if __name__ == "__main__":
    main()
