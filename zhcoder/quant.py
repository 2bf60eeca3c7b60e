"""Weight-only quantization of a loaded model's linear layers: int8 per output channel, int4 per group.

Only the weights are quantized; activations stay in the model's floating-point dtype, and every matrix product
runs on weights dequantized to that dtype (the scheme of pytorch-labs gpt-fast's `quantize.py`).

- int8 (`Int8WeightOnlyLinear`): each output row w gets one symmetric scale s = max|w| / 127 and codes
  q = round(w / s) in [-127, 127]; so |w - q*s| <= s/2 elementwise, and the layer computes (x @ q.T) * s.
  On CPU with bf16 activations and few rows (decode) it runs ATen's `_weight_int8pack_mm` kernel, which reads
  the int8 weight directly (no dequantized copy); elsewhere it dequantizes, matmuls, then scales.
- int4 (`Int4GroupwiseLinear`): each row is cut into groups of `group_size` input columns (128 by default; 32 and
  64 trade memory for accuracy), each with its own scale, asymmetric by default (16 levels from the group's
  minimum to its maximum: w ~ min + q*s, s = (max - min) / 15) or symmetric (w ~ (q - 8)*s, s = max|w| / 7,
  zero stays exactly zero). Two codes share a byte (even column in the low nibble). Either way
  |w - w_hat| <= s/2 per element. The forward pass dequantizes the whole weight to the activations' dtype and
  runs a plain matmul: correct on every device, it saves memory, not time. Except on CPU: where torch has ATen's
  CPU int4 kernel (`_weight_int4pack_mm_for_cpu`), `quantize_model` repacks each layer's codes, in place, into
  that kernel's packing (which depends on the CPU's vector width; found by `cpu_int4_kernel_layout()`), and bf16
  activations of up to INT4_KERNEL_MAX_ROWS rows (decode) go through the kernel, which reads the packed weight
  directly: faster than a bf16 matmul. The kernel takes each group's scale and zero point in bf16 (2 more bytes
  each per group: 4.5 bits per weight at group size 128); state dicts keep the portable packing.

What stays in floating point, and why:
- the token embedding (a lookup, not a matmul), the norms, and the MoE router (`mlp.gate`: tiny, and a small
  change in its logits changes which experts a token is sent to);
- a tied `lm_head` (`lm_head.weight is model.embed_tokens.weight`): quantizing it would either break the tie
  (a second, quantized copy of the vocabulary matrix next to the float embedding: more memory, not less) or
  force the embedding to be quantized too; an untied `lm_head` is quantized like every other linear layer;
- anything named in `skip` (fnmatch patterns over module names, e.g. ("lm_head", "*.down_proj")).

Quantize after the model has its final dtype and device (`model.to(...)` afterwards would cast the float scales).
int8 scales are fp32 (4 bytes per row of `in` bytes: under 0.5% at in >= 1024). int4 scales and offsets are
bf16, rounded outward (scale up, minimum down) so that the stored numbers still span each group and the bound
above holds for them: 4.25 bits per weight at group size 128 (4.5 at 64, 5 at 32; symmetric 4.125, 4.25, 4.5).
Buffers are named `weight` (the codes), `scales`, `offsets` and `bias`, so a quantized state dict reads plainly;
it is not a checkpoint format that `load_model` reads: quantize after loading.

    python -m pytest -q tests/test_quant.py
    python benchmarks/quant_quality.py          # perplexity, greedy agreement and decode speed vs float
"""

from __future__ import annotations

import fnmatch
import functools

import torch
import torch.nn.functional as F
from torch import nn

from .model import SparseMoeBlock

QUANT_MODES = ("int8", "int4")
INT8_MAX = 127
INT4_LEVELS = 16
SMALLEST_SCALE = 1e-12          # the scale of an all-zero row or group (its codes are all 0 -> exact zeros)
# `_weight_int8pack_mm` (CPU, bf16) wins over dequantize-then-matmul up to about this many rows; past it the
# dequantized matrix is reused by enough rows that a blocked GEMM is faster (measured on a 1024 x 3072 layer).
INT8_KERNEL_MAX_ROWS = 128
# `_weight_int4pack_mm_for_cpu` (bf16) against dequantize-then-matmul on a 1024 x 3072 layer, 1 core: 0.17 vs 3.3 ms
# at 1 row, 1.2 vs 3.8 ms at 16, 4.7 vs 5.3 ms at 64, 19 vs 11 ms at 256: the kernel serves decode, not prefill.
INT4_KERNEL_MAX_ROWS = 32
INT4_KERNEL_GROUP_SIZES = (32, 64, 128, 256)
INT4_KERNEL_CHUNK_ROWS = 8192   # rows repacked at a time (their int32 codes: 32 MB at in = 1024)


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float weight -> int8 codes (out, in) and fp32 scales (out,), symmetric per output row."""
    w = weight.detach().float()
    scales = (w.abs().amax(dim=1) / INT8_MAX).clamp(min=SMALLEST_SCALE)
    codes = torch.round(w / scales[:, None]).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return codes, scales


def dequantize_int8(codes: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (codes.to(torch.float32) * scales[:, None].float()).to(dtype)


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """(rows, 2k) integers in [0, 15] -> (rows, k) uint8: column 2j in the low nibble, 2j+1 in the high one."""
    codes = codes.to(torch.uint8)
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of `pack_int4`: (rows, k) uint8 -> (rows, 2k) uint8 codes in [0, 15]."""
    return torch.stack((packed & 0x0F, packed >> 4), dim=-1).reshape(packed.shape[0], -1)


# ATen's CPU int4 kernel wants its weight in its own packing, which depends on the vector width torch was
# dispatched to (aten/src/ATen/native/cpu/int4mm_kernel.cpp, weight_to_int4pack_kernel): blocks of 64 rows (AVX-512)
# or 32 (AVX2 and the plain loop), each stored as (in, block / 2) bytes. AVX-512 pairs row r with r + 32 in a byte
# (r in the low nibble) and lays the pairs out as rows 0-15 then 16-31; AVX2 pairs r with r + 16; the plain loop and
# a last, partial block (16, 32 or 48 rows) pair r with r + 1.
_KERNEL_BLOCK_ROWS = {"avx512": 64, "avx2": 32, "plain": 32}


def _kernel_pack(codes: torch.Tensor, layout: str) -> torch.Tensor:
    """(out, in) uint8 codes in [0, 15] -> (out, in / 2) uint8 in `layout`'s packing (out a multiple of 16)."""
    rows, cols = codes.shape
    block = _KERNEL_BLOCK_ROWS[layout]
    full = rows // block * block
    parts = []
    if full:
        lanes = codes[:full].view(-1, block // 16, 16, cols)
        if layout == "avx512":
            packed = torch.cat((lanes[:, 0] | lanes[:, 2] << 4, lanes[:, 1] | lanes[:, 3] << 4), dim=1)
        elif layout == "avx2":
            packed = lanes[:, 0] | lanes[:, 1] << 4
        else:
            pairs = codes[:full].view(-1, block // 2, 2, cols)
            packed = pairs[:, :, 0] | pairs[:, :, 1] << 4
        parts.append(packed.transpose(1, 2).reshape(-1))
    if rows > full:
        pairs = codes[full:].view(-1, 2, cols)
        parts.append((pairs[:, 0] | pairs[:, 1] << 4).t().reshape(-1))
    return torch.cat(parts).view(rows, cols // 2)


def _kernel_unpack(packed: torch.Tensor, layout: str) -> torch.Tensor:
    """The inverse of `_kernel_pack`: (out, in / 2) uint8 -> (out, in) uint8 codes."""
    rows, cols = packed.shape[0], packed.shape[1] * 2
    flat = packed.reshape(-1)
    block = _KERNEL_BLOCK_ROWS[layout]
    full = rows // block * block
    parts = []
    if full:
        blocks = flat[:full * cols // 2].view(-1, cols, block // 2).transpose(1, 2)
        low, high = blocks & 0x0F, blocks >> 4
        if layout == "avx512":
            codes = torch.cat((low[:, :16], low[:, 16:], high[:, :16], high[:, 16:]), dim=1)
        elif layout == "avx2":
            codes = torch.cat((low, high), dim=1)
        else:
            codes = torch.stack((low, high), dim=2)
        parts.append(codes.reshape(full, cols))
    if rows > full:
        pairs = flat[full * cols // 2:].view(cols, -1).t()
        parts.append(torch.stack((pairs & 0x0F, pairs >> 4), dim=1).reshape(rows - full, cols))
    return torch.cat(parts)


@functools.cache
def cpu_int4_kernel_layout() -> str | None:
    """The packing of this machine's CPU int4 kernel ("avx512", "avx2" or "plain"), found by packing a probe with
    ATen and comparing it with each known layout; None when torch has no such kernel or none matches."""
    ops = torch.ops.aten
    if not (hasattr(ops, "_convert_weight_to_int4pack_for_cpu") and hasattr(ops, "_weight_int4pack_mm_for_cpu")):
        return None
    codes = torch.randint(0, INT4_LEVELS, (112, 8), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    try:                               # 112 rows: full blocks and a partial one for every layout
        packed = ops._convert_weight_to_int4pack_for_cpu(codes, 1)
    except RuntimeError:
        return None
    for layout in _KERNEL_BLOCK_ROWS:
        if torch.equal(_kernel_pack(codes.to(torch.uint8), layout), packed):
            return layout
    return None


def _check_group_size(group_size: int) -> None:
    if not isinstance(group_size, int) or group_size < 2 or group_size % 2:
        raise ValueError(f"group_size must be an even integer >= 2 (32, 64 or 128), got {group_size!r}")


def _bf16_rounded(x: torch.Tensor, up: bool) -> torch.Tensor:
    """fp32 -> bf16 rounded toward +inf (`up`) or -inf, instead of to nearest: a scale rounded up and a group
    minimum rounded down still span the whole group, so the error bound holds for the stored (bf16) numbers."""
    if up:
        x = x.clamp(min=SMALLEST_SCALE)
    rounded = x.to(torch.bfloat16)
    wrong_side = rounded.float() < x if up else rounded.float() > x
    toward = torch.full_like(rounded, float("inf") if up else float("-inf"))
    return torch.where(wrong_side, torch.nextafter(rounded, toward), rounded)


def quantize_int4(weight: torch.Tensor, group_size: int = 128, symmetric: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(out, in) float weight -> packed codes (out, padded_in / 2) uint8, bf16 scales (out, groups) and bf16
    offsets (out, groups) (the value of code 0: the group's minimum, rounded down; None when symmetric).

    `in` is padded up to a multiple of group_size by repeating the last column, which leaves the last group's
    range, and so its scale, unchanged; the padding columns are dropped again on dequantization."""
    _check_group_size(group_size)
    w = weight.detach().float()
    out_features, in_features = w.shape
    padding = -in_features % group_size
    if padding:
        w = torch.cat((w, w[:, -1:].expand(-1, padding)), dim=1)
    groups = w.view(out_features, -1, group_size)
    if symmetric:
        half = INT4_LEVELS // 2                              # codes 1..15 stand for -7..7; code 0 is unused
        scales = _bf16_rounded(groups.abs().amax(dim=-1) / (half - 1), up=True)
        codes = torch.round(groups / scales.float()[..., None]).clamp_(-(half - 1), half - 1) + half
        offsets = None
    else:
        offsets = _bf16_rounded(groups.amin(dim=-1), up=False)
        spread = groups.amax(dim=-1) - offsets.float()
        scales = _bf16_rounded(spread / (INT4_LEVELS - 1), up=True)
        codes = torch.round((groups - offsets.float()[..., None]) / scales.float()[..., None])
        codes = codes.clamp_(0, INT4_LEVELS - 1)
    return pack_int4(codes.view(out_features, -1)), scales, offsets


def dequantize_int4(packed: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor | None, in_features: int,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Packed int4 codes -> the (out, in_features) weight they stand for, computed in `dtype`."""
    out_features, groups = scales.shape
    codes = unpack_int4(packed).to(dtype).view(out_features, groups, -1)
    if offsets is None:
        codes.sub_(INT4_LEVELS // 2)
    weight = codes.mul_(scales.to(dtype)[..., None])
    if offsets is not None:
        weight.add_(offsets.to(dtype)[..., None])
    return weight.view(out_features, -1)[:, :in_features]


class Int8WeightOnlyLinear(nn.Module):
    """A linear layer holding int8 weights (out, in) and one fp32 scale per output row; computes
    (x @ weight.T) * scales + bias in the activations' dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, device=None,
                 bias_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.ones(out_features, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=bias_dtype, device=device) if bias else None)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear) -> "Int8WeightOnlyLinear":
        bias = linear.bias
        layer = cls(linear.in_features, linear.out_features, bias is not None, linear.weight.device,
                    bias.dtype if bias is not None else torch.float32)
        layer.weight, layer.scales = quantize_int8(linear.weight)
        if bias is not None:
            layer.bias = bias.detach().clone()
        return layer

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_int8(self.weight, self.scales, dtype)

    def _cpu_kernel_applies(self, x2d: torch.Tensor) -> bool:
        # The kernel's AVX2/AVX-512 loops step K by 8/16 with aligned loads, and only its bf16 path is vectorized
        # on x86: anything else is slow or, for unaligned rows, unsafe.
        # Under torch.compile the dequantize path is used: it fuses, and data pointers are not there to check.
        return (x2d.device.type == "cpu" and x2d.dtype == torch.bfloat16 and x2d.shape[0] <= INT8_KERNEL_MAX_ROWS
                and not x2d.requires_grad and not torch.compiler.is_compiling() and self.in_features % 16 == 0
                and self.weight.is_contiguous() and self.weight.data_ptr() % 64 == 0
                and hasattr(torch.ops.aten, "_weight_int8pack_mm"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d = x.reshape(-1, self.in_features)
        if self._cpu_kernel_applies(x2d):
            if not x2d.is_contiguous() or x2d.data_ptr() % 64:
                x2d = x2d.clone(memory_format=torch.contiguous_format)     # a fresh, aligned allocation
            out = torch.ops.aten._weight_int8pack_mm(x2d, self.weight, self.scales.to(x.dtype))
            out = out.view(*x.shape[:-1], self.out_features)
        else:
            out = F.linear(x, self.weight.to(x.dtype)) * self.scales.to(x.dtype)
        return out if self.bias is None else out + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int4GroupwiseLinear(nn.Module):
    """A linear layer holding 4-bit weights, two per byte, with a bf16 scale (and offset, unless symmetric)
    per group of `group_size` input columns; dequantizes to the activations' dtype, then matmuls. After
    `use_cpu_kernel()`, `weight` holds the same codes in the packing of ATen's CPU int4 kernel, which then computes
    bf16 products of up to INT4_KERNEL_MAX_ROWS rows straight from the packed weight."""

    def __init__(self, in_features: int, out_features: int, group_size: int = 128, symmetric: bool = False,
                 bias: bool = False, device=None, bias_dtype: torch.dtype = torch.float32):
        super().__init__()
        _check_group_size(group_size)
        self.in_features, self.out_features = in_features, out_features
        self.group_size, self.symmetric = group_size, symmetric
        groups = -(-in_features // group_size)
        self.register_buffer("weight", torch.zeros(out_features, groups * group_size // 2, dtype=torch.uint8,
                                                   device=device))
        self.register_buffer("scales", torch.ones(out_features, groups, dtype=torch.bfloat16, device=device))
        self.register_buffer("offsets", None if symmetric else
                             torch.zeros(out_features, groups, dtype=torch.bfloat16, device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=bias_dtype, device=device) if bias else None)
        self.layout = "portable"    # or a cpu_int4_kernel_layout(), after use_cpu_kernel()
        self.register_buffer("scale_zeros", None, persistent=False)   # the kernel's (groups, out, 2) bf16

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, group_size: int = 128, symmetric: bool = False) -> "Int4GroupwiseLinear":
        bias = linear.bias
        layer = cls(linear.in_features, linear.out_features, group_size, symmetric, bias is not None,
                    linear.weight.device, bias.dtype if bias is not None else torch.float32)
        layer.weight, layer.scales, offsets = quantize_int4(linear.weight, group_size, symmetric)
        if offsets is not None:
            layer.offsets = offsets
        if bias is not None:
            layer.bias = bias.detach().clone()
        return layer

    @torch.no_grad()
    def use_cpu_kernel(self) -> bool:
        """Repack `weight` for ATen's CPU int4 kernel, in place, 8,192 rows at a time; whether it was done. Needs
        the kernel (cpu_int4_kernel_layout()), a CPU weight, out a multiple of 16, in a multiple of group_size and a
        group size of 32, 64, 128 or 256. The scale and zero point of each group go to the kernel in bf16: code q
        stands for (q - 8) * scale + zero, zero = offset + 8 * scale (0 when symmetric), rounded to bf16."""
        layout = cpu_int4_kernel_layout()
        if (layout is None or self.layout != "portable" or self.weight.device.type != "cpu" or self.out_features % 16
                or self.in_features % self.group_size or self.group_size not in INT4_KERNEL_GROUP_SIZES):
            return False
        for rows in self.weight.split(INT4_KERNEL_CHUNK_ROWS):         # whole blocks: each chunk packs alone
            rows.copy_(torch.ops.aten._convert_weight_to_int4pack_for_cpu(unpack_int4(rows).to(torch.int32), 1))
        scales = self.scales.float()
        zeros = torch.zeros_like(scales) if self.offsets is None else self.offsets.float() + INT4_LEVELS // 2 * scales
        self.scale_zeros = torch.stack((scales.t(), zeros.t()), dim=-1).to(torch.bfloat16).contiguous()
        self.layout = layout
        return True

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.layout != "portable":       # a state dict always holds the portable packing
            destination[prefix + "weight"] = self.portable_weight()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        repacked = self.layout != "portable"
        if repacked:                        # back to the portable packing, which a state dict holds (or lacks)
            with torch.no_grad():
                self.weight.copy_(self.portable_weight())
            self.layout = "portable"
        try:
            super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        finally:
            if repacked:
                given = state_dict.get(prefix + "weight")
                if isinstance(given, torch.Tensor) and given.data_ptr() == self.weight.data_ptr():
                    self.weight = self.weight.clone()     # loaded with assign=True: repack a copy, not the caller's
                self.use_cpu_kernel()

    def codes(self) -> torch.Tensor:
        """The (out, padded in) uint8 codes in [0, 15], whatever the packing."""
        if self.layout == "portable":
            return unpack_int4(self.weight)
        return _kernel_unpack(self.weight, self.layout)

    def portable_weight(self) -> torch.Tensor:
        """`weight` in the portable packing (itself, unless repacked for the CPU kernel)."""
        return self.weight if self.layout == "portable" else pack_int4(self.codes())

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_int4(self.portable_weight(), self.scales, self.offsets, self.in_features, dtype)

    def _cpu_kernel_applies(self, x2d: torch.Tensor) -> bool:
        return (self.layout != "portable" and x2d.device.type == "cpu" and self.weight.device.type == "cpu"
                and x2d.dtype == torch.bfloat16 and x2d.shape[0] <= INT4_KERNEL_MAX_ROWS and not x2d.requires_grad
                and not torch.compiler.is_compiling())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        x2d = x.reshape(-1, self.in_features)
        if not self._cpu_kernel_applies(x2d):
            return F.linear(x, self.dequantized_weight(x.dtype), bias)
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(x2d.contiguous(), self.weight, self.group_size,
                                                         self.scale_zeros.to(x.dtype))
        out = out.view(*x.shape[:-1], self.out_features)
        return out if bias is None else out + bias

    def extra_repr(self) -> str:
        kind = "symmetric" if self.symmetric else "asymmetric"
        layout = "" if self.layout == "portable" else f", layout={self.layout}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}, "
                f"{kind}, bias={self.bias is not None}{layout}")


QUANTIZED_LINEARS = (Int8WeightOnlyLinear, Int4GroupwiseLinear)


def _float_reason(name: str, parent: nn.Module, attribute: str, linear: nn.Linear, model: nn.Module,
                  skip: tuple[str, ...]) -> str | None:
    """Why the linear layer `name` stays in floating point, or None when it is quantized."""
    if isinstance(parent, SparseMoeBlock) and attribute == "gate":
        return "MoE router"
    embedding = getattr(getattr(model, "model", None), "embed_tokens", None)
    if embedding is not None and linear.weight is getattr(embedding, "weight", None):
        return "tied to the embedding"
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in skip):
        return "skipped"
    return None


@torch.no_grad()
def quantize_model(model: nn.Module, mode: str = "int8", group_size: int = 128, symmetric: bool = False,
                   skip: tuple[str, ...] | list[str] = ()) -> nn.Module:
    """Replace the model's nn.Linear layers in place by weight-only quantized ones; returns the model.

    mode: "int8" (per output channel) or "int4" (per group of `group_size` input columns, asymmetric unless
    `symmetric`). The MoE routers and a tied lm_head stay in floating point, as do modules whose name matches
    a pattern in `skip`. The choices made are recorded in `model.quantization`."""
    if mode not in QUANT_MODES:
        raise ValueError(f"unknown quantization mode {mode!r}: choose {' or '.join(QUANT_MODES)}")
    if mode == "int4":
        _check_group_size(group_size)
    if getattr(model, "quantization", None):
        raise ValueError(f"the model is already quantized ({model.quantization['mode']}): quantize a float model")
    skip = tuple(skip)
    targets, kept = [], {}
    for parent_name, parent in model.named_modules():
        for attribute, child in parent.named_children():
            if not isinstance(child, nn.Linear):
                continue
            name = f"{parent_name}.{attribute}" if parent_name else attribute
            reason = _float_reason(name, parent, attribute, child, model, skip)
            if reason is None:
                targets.append((parent, attribute))
            else:
                kept[name] = reason
    kernel_layers = 0
    for parent, attribute in targets:                 # one layer at a time: the float weight is freed as we go
        linear = getattr(parent, attribute)
        if mode == "int8":
            setattr(parent, attribute, Int8WeightOnlyLinear.from_linear(linear))
        else:
            layer = Int4GroupwiseLinear.from_linear(linear, group_size, symmetric)
            kernel_layers += layer.use_cpu_kernel()
            setattr(parent, attribute, layer)
    model.quantization = {
        "mode": mode,
        "group_size": group_size if mode == "int4" else None,
        "symmetric": True if mode == "int8" else symmetric,
        "quantized_layers": len(targets),
        "cpu_kernel_layers": kernel_layers,           # int4 layers repacked for ATen's CPU kernel
        "float_linears": kept,                        # name -> why it stayed in floating point
    }
    return model


def _unique_tensors(module: nn.Module):
    seen = set()
    for tensor in list(module.parameters()) + list(module.buffers()):
        key = (tensor.device, tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
        if tensor.numel() and key not in seen:
            seen.add(key)
            yield tensor


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer, a tensor shared by two modules (tied embeddings) counted once."""
    return sum(t.numel() * t.element_size() for t in _unique_tensors(model))


def linear_size_bytes(model: nn.Module, include_tied: bool = False) -> int:
    """Bytes held by the linear layers, float or quantized (weights, scales, offsets, biases). A head tied to the
    embedding is left out unless `include_tied` (its matrix is the embedding's, counted by model_size_bytes)."""
    embedding = getattr(getattr(model, "model", None), "embed_tokens", None)
    tied = getattr(embedding, "weight", None)
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.weight is tied and not include_tied:
            continue
        if isinstance(module, (nn.Linear, *QUANTIZED_LINEARS)):
            total += sum(t.numel() * t.element_size() for t in _unique_tensors(module))
    return total
