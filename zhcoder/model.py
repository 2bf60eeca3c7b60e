"""The Qwen decoder-only transformer: Qwen2 (QKV bias), Qwen3 (QK-norm) and Qwen3-MoE (sparse experts).

Pre-norm decoder blocks: RMSNorm (fp32) -> grouped-query attention with RoPE (fp32 tables; default, linear
or YaRN scaling) through `scaled_dot_product_attention` -> residual -> RMSNorm -> SwiGLU MLP or a top-k MoE
block -> residual. Module and parameter names are exactly Hugging Face's (`model.layers.0.self_attn.q_proj.weight`,
`model.layers.0.mlp.experts.3.up_proj.weight`, ...), so a checkpoint's state dict loads with no mapping table.
References: Qwen2/Qwen3 technical reports; transformers' modeling_qwen2/qwen3/qwen3_moe (the parity peer).

Training additions: packed sequences attend per document (`document_causal_mask` for SDPA, `document_block_mask`
for FlexAttention, compiled on GPU); `forward(..., labels=...)` returns the summed cross-entropy computed in
chunks with in-pass gradients (`chunked_cross_entropy`); `gradient_checkpointing` recomputes each layer in backward
(all of it, or selectively: all but the matrix products and attention); the optional code-aware attention bias (zhcoder/code_bias.py) adds a learned per-head bias per key class.

    python -m pytest tests/test_model.py tests/test_attention.py
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from .config import CODE_CLASSES, ModelConfig

try:                                          # FlexAttention: the GPU path for packed (document-masked) training
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:                           # pragma: no cover - torch < 2.5
    BlockMask = create_block_mask = flex_attention = None


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_inverse_frequencies(config: ModelConfig) -> tuple[torch.Tensor, float]:
    """RoPE inverse frequencies (fp32, on the CPU whatever the default device) and the attention scaling factor, for
    default, linear and YaRN rope."""
    dim, base = config.head_dim, config.rope_theta
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").float() / dim))
    scaling = config.rope_scaling or {}
    kind, factor = scaling.get("rope_type", "default"), scaling.get("factor", 1.0)
    if kind == "linear":
        return inv_freq / factor, 1.0
    if kind != "yarn":
        return inv_freq, 1.0
    # YaRN (Peng et al. 2023, arXiv:2309.00071): keep high frequencies, interpolate low ones, ramp between.
    original = scaling.get("original_max_position_embeddings", config.max_position_embeddings)
    beta_fast, beta_slow = scaling.get("beta_fast") or 32, scaling.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32, device="cpu") - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp  # 1 where frequencies are extrapolated (kept), 0 where interpolated
    pos_freqs = base ** (torch.arange(0, dim, 2, device="cpu").float() / dim)
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - keep) + (1.0 / pos_freqs) * keep
    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0
    return inv_freq, float(attention_factor)


class RotaryEmbedding(nn.Module):
    """cos/sin for given positions, computed in fp32 and cast to the activations' dtype."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        # computed on the CPU, then moved: on the meta device (checkpoint loading) torch would import torch._dynamo
        # for the arithmetic, a second of every command's start-up
        inv_freq, self.attention_scaling = rope_inverse_frequencies(config)
        self.register_buffer("inv_freq", inv_freq.to(torch.empty(0).device), persistent=False)
        self._config = config

    def reset_parameters(self) -> None:
        """Recompute the (non-persistent) frequencies, e.g. after building the model on the meta device."""
        self.inv_freq = rope_inverse_frequencies(self._config)[0].to(self.inv_freq.device)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.float()  # (B, T, dim/2), fp32
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.attention_scaling).to(dtype), (emb.sin() * self.attention_scaling).to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


@functools.cache
def _compiled_flex_attention():
    return torch.compile(flex_attention, dynamic=False)


def _flex_with_key_bias(attend, q, k, v, block_mask, bias: torch.Tensor, key_classes: torch.Tensor):
    """softmax(scores + bias[head, class of the key]) @ v through plain FlexAttention, as weights on the values:
    with w = exp(bias - max) per key, the output is (P @ (w * v)) / (P @ w), P the unbiased attention. A score_mod
    would add the bias inside the kernel, but its gradient then lands on a heads x classes tensor by atomic adds
    from every score (on an H200, 47x slower steps); here it flows through w by ordinary autograd."""
    groups = q.shape[1] // k.shape[1]
    w = torch.exp(bias - bias.amax(dim=1, keepdim=True))[:, key_classes].permute(1, 0, 2)[..., None]  # (B, H, S, 1)
    w = w.to(v.dtype)
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)   # w differs per query head
    D = v.shape[-1]
    padding = torch.zeros(*w.shape[:-1], D - 1, dtype=v.dtype, device=v.device)    # a power-of-two head dim
    out = attend(q, k, torch.cat([v * w, w, padding], dim=-1), block_mask=block_mask)
    return out[..., :D] / out[..., D:D + 1]


class LayerCache:
    """One layer's cached keys and values, (batch, kv_heads, max_len, head_dim) each (views into a KVCache), and how
    a step writes them: the step's tokens of every row go to their cache positions (an indexed write, the same for
    a prefill chunk and a decode step) and the first `length` positions are returned. No shape
    depends on the positions, so one compiled, CUDA-graph-captured decode step serves every position (the mask
    hides what a row has not written). It holds only tensors and an int, the same for every layer, so a compiled
    step traces one layer and reuses it for the rest (`hidden_states`' call_layer)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int, row_ids: torch.Tensor):
        self.keys, self.values, self.length, self.row_ids = keys, values, length, row_ids

    def update(self, cache_position: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """cache_position (batch, T): where each of the step's tokens goes; k, v (batch, kv_heads, T, head_dim)."""
        rows = self.row_ids                     # index_put_, not scatter_: inductor writes it in place, where a
        self.keys[rows, :, cache_position] = k.transpose(1, 2)      # scatter_ copied the whole cache twice per
        self.values[rows, :, cache_position] = v.transpose(1, 2)    # layer and step
        return self.keys[:, :, :self.length], self.values[:, :, :self.length]


class KVCache:
    """Preallocated keys and values for every layer: (batch, kv_heads, max_len, head_dim) each; with the
    code-aware bias also the token class of every cached key, (batch, max_len). `layer(i)` is what layer i writes
    (LayerCache); a step attends to the first `window` positions, which its caller sets (a prefill chunk: up to its
    end; a decode step: a fixed size when compiled, a static shape)."""

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int, dtype: torch.dtype, device=None):
        shape = (batch_size, config.num_key_value_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.key_classes = torch.zeros(batch_size, max_len, dtype=torch.long, device=device) \
            if config.code_aware_attention else None
        self.row_ids = torch.arange(batch_size, device=device)[:, None]     # the row index of the indexed writes
        self.max_len = max_len
        self.window = max_len

    def tensors(self) -> list[torch.Tensor]:
        return self.keys + self.values + [self.row_ids] + ([self.key_classes] if self.key_classes is not None else [])

    def rows(self, start: int, stop: int) -> "KVCache":
        """A KVCache over rows start..stop-1 (views: writes land in this cache), e.g. for one row's prefill."""
        view = KVCache.__new__(KVCache)
        view.keys = [k[start:stop] for k in self.keys]
        view.values = [v[start:stop] for v in self.values]
        view.key_classes = self.key_classes[start:stop] if self.key_classes is not None else None
        view.row_ids, view.max_len, view.window = self.row_ids[:stop - start], self.max_len, self.window
        return view

    def layer(self, i: int) -> LayerCache:
        return LayerCache(self.keys[i], self.values[i], self.window, self.row_ids)

    def update_classes(self, cache_position: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Record the token classes of this step's keys (code-aware bias); the classes of the first `window`."""
        self.key_classes[self.row_ids, cache_position] = classes
        return self.key_classes[:, :self.window]


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        h, q, kv = config.hidden_size, config.num_attention_heads * config.head_dim, self.num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(h, q, bias=config.attention_bias)
        self.k_proj = nn.Linear(h, kv, bias=config.attention_bias)
        self.v_proj = nn.Linear(h, kv, bias=config.attention_bias)
        self.o_proj = nn.Linear(q, h, bias=False)
        if config.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        if config.code_aware_attention:      # one bias per head and key class, zero: starts as plain Qwen
            self.code_bias = nn.Parameter(torch.zeros(config.num_attention_heads, len(CODE_CLASSES)))

    def _code_bias_mask(self, mask, key_classes, T: int, S: int, dtype) -> torch.Tensor:
        """The additive float mask (B, H, T, S) of SDPA: the class bias of each key where attending is allowed
        (`mask`, or causal aligned to the end of the keys), -inf elsewhere."""
        bias = self.code_bias.to(dtype)[:, key_classes].permute(1, 0, 2)[:, :, None, :]       # (B, H, 1, S)
        if mask is None:
            mask = torch.ones(T, S, dtype=torch.bool, device=bias.device).tril(S - T)
        return bias.masked_fill(~mask, float("-inf"))

    def _single_query_attention(self, q, k, v, mask, key_classes) -> torch.Tensor:
        """One query per row against (B, kv_heads, S, D) keys, written out: the query heads that share a key head
        become that head's query rows, so grouped-query attention reads each cached key once and never expands the
        cache (SDPA's GQA fallbacks repeat it); softmax in fp32. mask: (B, 1, 1, S) boolean or None. -> (B, 1, H*D)"""
        B, H, _, D = q.shape
        groups = H // self.num_kv_heads
        q = q.reshape(B, self.num_kv_heads, groups, D) * D**-0.5    # head h = kv * groups + g, as repeat_interleave
        scores = torch.matmul(q, k.transpose(-1, -2)).float()     # (B, kv_heads, groups, S)
        if key_classes is not None:
            bias = self.code_bias.float()[:, key_classes].permute(1, 0, 2)            # (B, H, S)
            scores = scores + bias.reshape(B, self.num_kv_heads, groups, -1)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        y = torch.matmul(scores.softmax(dim=-1).to(v.dtype), v)  # (B, kv_heads, groups, D)
        return y.reshape(B, 1, H * D)

    def forward(self, x, cos, sin, mask=None, kv_cache: LayerCache | None = None,
                cache_position: torch.Tensor | None = None, key_classes: torch.Tensor | None = None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
        q = apply_rope(q.transpose(1, 2), cos, sin)
        k = apply_rope(k.transpose(1, 2), cos, sin)
        v = v.transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.update(cache_position, k, v)
            if T == 1 and (mask is not None or key_classes is not None):   # a masked decode step: see above;
                return self.o_proj(self._single_query_attention(q, k, v, mask, key_classes).reshape(B, T, -1))
            # unmasked (every row sees all keys, as eager steps of rows at one position): SDPA's one kernel
        gqa = self.num_heads != self.num_kv_heads
        if BlockMask is not None and isinstance(mask, BlockMask):
            attend = _compiled_flex_attention() if q.is_cuda else flex_attention   # eager flex is unfused
            if key_classes is None:
                y = attend(q, k, v, block_mask=mask, enable_gqa=gqa)
            else:
                y = _flex_with_key_bias(attend, q, k, v, mask, self.code_bias.float(), key_classes)
            return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))
        if key_classes is not None:
            mask = self._code_bias_mask(mask, key_classes, T, k.shape[2], q.dtype)
        # no mask: plain causal when queries and keys start together; a lone query sees every cached key
        is_causal = mask is None and T > 1
        if is_causal and k.shape[2] != T:
            raise ValueError("a multi-token step after the first needs an explicit mask")
        if gqa and mask is not None:       # no fused kernel takes both a mask and GQA (flash: no mask; efficient: no
            groups = self.num_heads // self.num_kv_heads      # GQA): SDPA would fall back to its unfused math path
            k, v, gqa = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1), False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=gqa)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class SparseMoeBlock(nn.Module):
    """Qwen3-MoE: softmax router -> top-k experts -> (renormalised) weighted sum; no shared expert."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.top_k, self.norm_topk_prob = config.num_experts_per_tok, config.norm_topk_prob
        self.gate = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        self.experts = nn.ModuleList(
            MLP(config.hidden_size, config.moe_intermediate_size) for _ in range(config.num_experts)
        )

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        router_logits = self.gate(x)
        probs = F.softmax(router_logits, dim=-1, dtype=torch.float)
        weights, chosen = torch.topk(probs, self.top_k, dim=-1)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        weights = weights.to(x.dtype)
        out = torch.zeros_like(x)
        for expert_idx in chosen.unique().tolist():
            token_idx, slot = torch.where(chosen == expert_idx)
            y = self.experts[expert_idx](x[token_idx]) * weights[token_idx, slot, None]
            out.index_add_(0, token_idx, y.to(out.dtype))
        return out.reshape(shape)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.self_attn = Attention(config)
        if config.is_moe_layer(layer_idx):
            self.mlp = SparseMoeBlock(config)
        else:
            self.mlp = MLP(config.hidden_size, config.intermediate_size)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x, cos, sin, mask=None, kv_cache=None, cache_position=None, key_classes=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache, cache_position, key_classes)
        return x + self.mlp(self.post_attention_layernorm(x))


class QwenModel(nn.Module):
    """The decoder stack (HF's `model.` prefix): embeddings, layers, final norm."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = _embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config)
        if config.code_aware_attention:      # token id -> class (zhcoder.code_bias.token_classes); saved with it
            self.register_buffer("code_token_class", torch.zeros(config.vocab_size, dtype=torch.uint8))


class QwenForCausalLM(nn.Module):
    """The full model with its language-model head; `forward` returns logits."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = QwenModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # training only: True / "full" recomputes each decoder layer in backward; "selective" keeps the matrix
        # products' and attention's outputs and recomputes only the cheap element-wise ops (norms, RoPE, SwiGLU)
        self.gradient_checkpointing: bool | str = False

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        cache_position: torch.Tensor | None = None,
        last_only: bool = False,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, vocab), or (B, 1, vocab) with `last_only`; with `labels` (B, T), the
        training loss instead: the fp32 SUM of cross-entropy over the positions whose label is not -100 (labels
        already shifted: labels[t] is the target of position t), computed in chunks so that the (tokens x vocab)
        logits are never all alive at once (the caller divides by its token count).

        position_ids: (B, T), default 0..T-1 (with a cache: `cache_position`). attention_mask: optional boolean
        (B, 1, T, keys) mask, True where a query may attend (needed for padded batches and packed documents,
        see `document_causal_mask`), or a FlexAttention BlockMask (`document_block_mask`, GPU training);
        without it attention is causal. kv_cache / cache_position (B, T): write this step's keys and values at those
        positions of the cache and attend to its first `kv_cache.window` positions.
        """
        hidden = self.hidden_states(input_ids, position_ids, attention_mask, kv_cache, cache_position, last_only)
        if labels is None:
            return self.lm_head(hidden)
        if not isinstance(self.lm_head, nn.Linear):         # a quantized head (zhcoder.quant): its own forward
            logits = self.lm_head(hidden).float()
            return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
        return chunked_cross_entropy(hidden, self.lm_head.weight, labels)

    def hidden_states(self, input_ids, position_ids=None, attention_mask=None, kv_cache=None, cache_position=None,
                      last_only=False, call_layer=None) -> torch.Tensor:
        """The final normed hidden states (B, T or 1, hidden): `forward` without the language-model head.
        call_layer(layer, *inputs), if given, runs each decoder layer (the engine's compiled step passes a nested
        compile region, so the layer is traced once for all layers)."""
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = cache_position if cache_position is not None else \
                torch.arange(T, device=input_ids.device).expand(B, T)
        x = self.model.embed_tokens(input_ids)
        cos, sin = self.model.rotary_emb(position_ids, x.dtype)
        key_classes = None
        if self.config.code_aware_attention:
            key_classes = self.model.code_token_class[input_ids].long()
            if kv_cache is not None:
                key_classes = kv_cache.update_classes(cache_position, key_classes)
        for i, layer in enumerate(self.model.layers):
            inputs = (x, cos, sin, attention_mask, kv_cache.layer(i) if kv_cache is not None else None,
                      cache_position, key_classes)
            if self.gradient_checkpointing and self.training:
                context = _keep_matmuls if self.gradient_checkpointing == "selective" else _no_context
                x = torch.utils.checkpoint.checkpoint(layer, *inputs, use_reentrant=False, context_fn=context)
            else:
                x = call_layer(layer, *inputs) if call_layer is not None else layer(*inputs)
        if last_only:
            x = x[:, -1:]
        return self.model.norm(x)


def _no_context():
    return contextlib.nullcontext(), contextlib.nullcontext()


_SAVED_IN_SELECTIVE = {torch.ops.aten.mm.default, torch.ops.aten.bmm.default, torch.ops.aten.addmm.default,
                       *(getattr(torch.ops.aten, name).default for name in (
                           "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                           "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu")
                         if hasattr(torch.ops.aten, name))}


def _keep_matmuls():
    """Selective activation checkpointing: save what the matrix products and attention computed, recompute the
    rest (the policy of torchtitan's op-level SAC, without its every-other-matmul refinement)."""
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    def policy(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if op in _SAVED_IN_SELECTIVE else CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(policy)


LOSS_CHUNK_BYTES = 2**27      # fp32 logits alive at once in the chunked loss: 128 MiB (~880 tokens at 152K vocab)


def _cross_entropy_sum(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hidden, weight).float()
    return F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")


class _LinearCrossEntropy(torch.autograd.Function):
    """Sum of cross-entropies of `hidden @ weight.T`, chunk by chunk, with the gradients computed in the same pass
    (softmax - one-hot, times weight and times hidden) and kept for backward: three matrix products per chunk like
    the plain loss, but no chunk's logits outlive it (the fused linear cross-entropy of Liger-Kernel, in torch)."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk):
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        h, w = hidden.to(dtype), weight.to(dtype)
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, labels.numel(), chunk):
            y = labels[start:start + chunk]
            valid = y != -100
            target = y.clamp(min=0)
            log_p = torch.log_softmax(F.linear(h[start:start + chunk], w).float(), dim=-1)
            total -= (log_p.gather(1, target[:, None])[:, 0] * valid).sum()
            grad = log_p.exp_()                                                        # softmax, in place
            grad[torch.arange(y.numel(), device=y.device), target] -= 1.0
            grad = grad.mul_(valid[:, None]).to(dtype)
            if need_hidden:
                torch.mm(grad, w, out=grad_hidden[start:start + chunk]) if grad_hidden.dtype == dtype else \
                    grad_hidden[start:start + chunk].copy_(grad @ w)
            if need_weight:
                if dtype == torch.float32:
                    grad_weight.addmm_(grad.t(), h[start:start + chunk])
                else:
                    grad_weight += (grad.t() @ h[start:start + chunk]).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (grad_hidden * grad_output if grad_hidden is not None else None,
                (grad_weight * grad_output).to(ctx.weight_dtype) if grad_weight is not None else None, None, None)


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                          chunk: int | None = None) -> torch.Tensor:
    """Sum of token cross-entropies of `hidden @ weight.T` against `labels` (-100 = ignore), `chunk` tokens at a
    time (default: LOSS_CHUNK_BYTES of fp32 logits), so that the (tokens x vocab) logits never exist at once; in
    training the gradients are computed chunk by chunk in the same pass (_LinearCrossEntropy)."""
    chunk = chunk or max(64, LOSS_CHUNK_BYTES // (4 * weight.shape[0]))
    hidden = hidden.reshape(-1, hidden.shape[-1])
    labels = labels.reshape(-1)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, labels, chunk)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, labels.numel(), chunk):
        total = total + _cross_entropy_sum(hidden[start:start + chunk], weight, labels[start:start + chunk])
    return total


def document_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) segment number of every position of a packed sequence: a segment starts where position_ids is 0."""
    return (position_ids == 0).cumsum(-1)


def document_causal_mask(position_ids: torch.Tensor) -> torch.Tensor:
    """Boolean (B, 1, T, T) SDPA mask of a packed sequence: causal, and each document attends only to itself."""
    doc = document_ids(position_ids)
    T = doc.shape[-1]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc.device).tril()
    return ((doc[:, :, None] == doc[:, None, :]) & causal)[:, None]


def document_block_mask(position_ids: torch.Tensor, block: int = 128):
    """The FlexAttention BlockMask of `document_causal_mask`, built from per-block document ranges: nothing of
    size T x T is built, and no mask_mod is evaluated to find the blocks (create_block_mask does, over B x T x T).

    Document ids never decrease along a row, so a key block before a query block shares a document with it
    exactly when the key block's last id equals the query block's first; it is full when both hold one and the
    same document. Diagonal blocks are partial (mask_mod decides inside them)."""
    doc = document_ids(position_ids)
    B, T = doc.shape

    def mask_mod(b, h, q_idx, kv_idx):
        return (doc[b, q_idx] == doc[b, kv_idx]) & (kv_idx <= q_idx)

    if T % block:
        return create_block_mask(mask_mod, B, None, T, T, device=doc.device)
    blocks = doc.view(B, T // block, block)
    first, last = blocks[..., 0], blocks[..., -1]
    index = torch.arange(T // block, device=doc.device)
    before = index[None, :] < index[:, None]                                    # (query block, key block)
    single = first == last
    full = before & (single[:, :, None] & single[:, None, :] & (first[:, :, None] == first[:, None, :]))
    shared = before & (last[:, None, :] == first[:, :, None])
    partial = (shared & ~full) | torch.eye(T // block, dtype=torch.bool, device=doc.device)

    def sparse(blocks_on: torch.Tensor):
        order = torch.argsort((~blocks_on).to(torch.int8), dim=-1, stable=True)   # indices of True first
        return blocks_on.sum(-1, dtype=torch.int32)[:, None], order.to(torch.int32)[:, None]

    return BlockMask.from_kv_blocks(*sparse(partial), *sparse(full), BLOCK_SIZE=block, mask_mod=mask_mod,
                                    seq_lengths=(T, T))


def _embedding(rows: int, dim: int) -> nn.Embedding:
    """nn.Embedding with its N(0, 1) initialisation skipped on the meta device (checkpoint loading): there torch runs
    normal_ through a decomposition whose first use imports torch._dynamo, a second of every command's start-up."""
    weight = torch.empty(rows, dim)
    if not weight.is_meta:
        nn.init.normal_(weight)
    return nn.Embedding(rows, dim, _weight=weight)


def init_weights(model: QwenForCausalLM, std: float = 0.02, seed: int | None = None) -> None:
    """Random normal(0, std) weights, zero biases, unit norms: the usual initialisation of Qwen models."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias") or name.endswith("code_bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float32).mul_(std).to(p.dtype))
