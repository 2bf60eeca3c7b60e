"""The measurements of tools/gpu_suite.py (issue 9), one function or method each: the device's copy
bandwidth; for one model shape (`Shape`) zhcoder's decode, transformers' eager and static-cache decode, prefill,
int8 and other ways to compile the batch-1 step, each followed by a torch.profiler breakdown; and the Trainer's
step (`train`). Each records its rows through the suite (`suite.record`); the suite decides what runs.

    python tools/gpu_suite.py --tiny --out /tmp/suite.json      # every part, tiny shapes, CPU
"""

from __future__ import annotations

import copy
import math
import time

import torch

from zhcoder.config import ModelConfig, preset
from zhcoder.engine import Engine, SamplingParams
from zhcoder.model import QwenForCausalLM

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
def copy_bandwidth(suite, device: torch.device) -> float:
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

    def __init__(self, suite, name: str, config: ModelConfig, device, dtype):
        self.suite, self.name, self.config, self.device, self.dtype = suite, name, config, device, dtype
        args = suite.args
        self.model = build_model(config, device, dtype)
        self.reuse_layer = not args.whole_graph
        self.engine = self.new_engine(self.model)                     # compiled on CUDA, eager on CPU
        self.hf = None
        self.weights = weight_bytes(self.model)
        self.eager_t1: dict[int, float] = {}
        self.prompt_len, self.new_tokens = args.prompt_len, args.new_tokens
        self.eager_tokens = args.eager_new_tokens
        suite.record(part="model", shape=name, parameters=sum(p.numel() for p in self.model.parameters()),
                     weight_bytes_per_step=self.weights, compile=self.engine.compile,
                     dtype=str(dtype).removeprefix("torch."))

    def new_engine(self, model: QwenForCausalLM, reuse_layer: bool | None = None, **options) -> Engine:
        """An engine over `model` (compiled on CUDA), its decoder layer reused across layers unless --whole-graph."""
        reuse_layer = self.reuse_layer if reuse_layer is None else reuse_layer
        return Engine(model, StubTokenizer(self.config.vocab_size), reuse_layer=reuse_layer, **options)

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
        options = {"coordinate_descent_tuning": False} if system == "zhcoder cuBLAS" else None
        engine = self.new_engine(self.model, compile_options=options,
                                 reuse_layer=self.reuse_layer and system != "zhcoder whole graph")
        try:
            self.ours(1, engine, system=system)
        finally:
            del engine

    def int8(self) -> None:
        from zhcoder.quant import quantize_model

        start = time.perf_counter()
        copy = copy_module(self.model)                                # quantize_model works in place
        quantized = quantize_model(copy, mode="int8") or copy
        seconds = time.perf_counter() - start
        engine = self.new_engine(quantized)
        try:
            self.ours(1, engine, system="zhcoder int8", weights=weight_bytes(quantized), quantize_s=seconds)
        finally:
            del engine, quantized, copy


def train(suite, device: torch.device, compiled: bool = False) -> None:
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
