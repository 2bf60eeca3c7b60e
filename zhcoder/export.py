"""GGUF export: a zhcoder (Hugging Face layout) checkpoint as one .gguf file that llama.cpp and Ollama run.

Written through PyPI `gguf` (llama.cpp's own Python package) the way llama.cpp's `convert_hf_to_gguf.py` writes
Qwen2 / Qwen3 / Qwen3-MoE: architecture `qwen2` / `qwen3` / `qwen3moe`, tensor names from the package's name map
(`model.layers.N.self_attn.q_proj.weight` -> `blk.N.attn_q.weight`, ...), the experts of each MoE layer stacked
into `ffn_{gate,up,down}_exps`, norms, biases and the router kept in F32 and the rest in the chosen type (Q8_0
falls back to F16 for rows that are not a multiple of 32), a tied `lm_head` left out (llama.cpp reuses
`token_embd`), and the byte-level BPE vocabulary as `tokenizer.ggml.*` (model gpt2, pre-tokenizer qwen2).
Tensors are read memory-mapped and written one at a time, so memory stays near the largest single tensor.

The code-aware attention bias (zhcoder/code_bias.py) has no llama.cpp counterpart: a checkpoint with a nonzero
`code_bias` is refused unless `drop_code_bias=True`, and the GGUF then computes the plain model without it.

    zhcoder export gguf /tmp/tiny --out /tmp/tiny.gguf --dtype q8_0
    pytest -q tests/test_export.py                       # read back with gguf's own GGUFReader
    python benchmarks/gguf_llamacpp.py                   # logits through llama.cpp (llama-cpp-python)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from . import ZhcoderError
from .checkpoint import CheckpointError, load_config, weight_files
from .config import CODE_CLASSES, ModelConfig
from .tokenizer import QWEN_PATTERN, Tokenizer

# --dtype -> (gguf.GGMLQuantizationType, gguf.LlamaFileType) names
DTYPES = {"f16": ("F16", "MOSTLY_F16"), "bf16": ("BF16", "MOSTLY_BF16"), "f32": ("F32", "ALL_F32"),
          "q8_0": ("Q8_0", "MOSTLY_Q8_0")}
ARCHITECTURES = {"qwen2": "QWEN2", "qwen3": "QWEN3", "qwen3_moe": "QWEN3MOE"}  # names in gguf.MODEL_ARCH
EXPERT_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
# Tokens llama.cpp's converter treats as control tokens even when tokenizer.json does not mark them special.
LOOKS_SPECIAL = (("<|", "|>"), ("<｜", "｜>"))


def _gguf():
    try:
        import gguf
    except ImportError:
        raise ZhcoderError("GGUF export needs the gguf package: pip install 'zhcoder[export]'") from None
    return gguf


@dataclass
class PlannedTensor:
    """One GGUF tensor: its name, storage type, the numpy shape it is written with, and how to make it."""
    name: str
    qtype: object                      # gguf.GGMLQuantizationType
    shape: tuple[int, ...]             # logical shape in PyTorch order (GGUF stores it reversed)
    nbytes: int
    produce: Callable[[], np.ndarray]  # the data, already in `qtype` (uint8 bytes for BF16 / Q8_0)


# ----- checks: what llama.cpp can run ----------------------------------------------------------------------
def check_llamacpp_can_run(config: ModelConfig) -> None:
    """Raise ValueError for configurations llama.cpp's qwen2 / qwen3 / qwen3moe graphs compute differently."""
    if config.model_type == "qwen2" and config.head_dim * config.num_attention_heads != config.hidden_size:
        raise ValueError(f"llama.cpp's qwen2 needs head_dim x heads == hidden_size; this checkpoint has "
                         f"{config.head_dim} x {config.num_attention_heads} != {config.hidden_size}")
    scaling = config.rope_scaling or {}
    if scaling.get("rope_type") == "yarn" and scaling.get("truncate") is False:
        raise ValueError("llama.cpp's YaRN always rounds the correction range to whole dimensions; this "
                         "checkpoint's rope_scaling has truncate=false")
    if config.model_type == "qwen3_moe":
        dense = [i for i in range(config.num_hidden_layers) if not config.is_moe_layer(i)]
        if dense:
            raise ValueError(f"llama.cpp's qwen3moe runs every layer as MoE; layers {dense} of this checkpoint are "
                             "dense (mlp_only_layers / decoder_sparse_step)")
        if not config.norm_topk_prob:
            raise ValueError("llama.cpp's qwen3moe always renormalises the top-k expert weights; this checkpoint "
                             "has norm_topk_prob=false")


def code_bias_is_nonzero(config: ModelConfig, read: Callable[[str], torch.Tensor], names: set[str]) -> bool:
    if not config.code_aware_attention:
        return False
    return any(read(name).abs().max().item() > 0 for name in sorted(names) if name.endswith(".code_bias"))


# ----- tokenizer metadata ------------------------------------------------------------------------------
def vocabulary(directory: Path, vocab_size: int) -> tuple[list[str], list[int], "Tokenizer"]:
    """The token strings (byte-level BPE text, as in tokenizer.json) and llama.cpp token types of ids 0..vocab_size-1,
    as llama.cpp's converter makes them: added tokens control when special or <|...|>, else user-defined; ids the
    tokenizer lacks become `[PAD{id}]`, unused."""
    gguf = _gguf()
    tokenizer = Tokenizer.from_dir(directory)
    pre = json.loads(tokenizer.backend.pre_tokenizer.__getstate__()) if tokenizer.backend.pre_tokenizer else {}
    patterns = [p.get("pattern", {}).get("Regex") for p in pre.get("pretokenizers", [pre]) if p.get("type") == "Split"]
    if patterns != [QWEN_PATTERN]:
        raise ValueError(f"{directory / 'tokenizer.json'} does not split text with Qwen's regex, so llama.cpp's "
                         "qwen2 pre-tokenizer would tokenize differently; only Qwen-layout tokenizers are exported")
    vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
    if max(vocab.values()) >= vocab_size:
        raise ValueError(f"the tokenizer has ids up to {max(vocab.values())} but the model's vocab_size is "
                         f"{vocab_size}")
    added = tokenizer.backend.get_added_tokens_decoder()
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [int(gguf.TokenType.UNUSED)] * vocab_size
    for text, token_id in vocab.items():
        tokens[token_id] = text
        if token_id not in added:
            types[token_id] = int(gguf.TokenType.NORMAL)
        elif added[token_id].special or any(text.startswith(a) and text.endswith(b) for a, b in LOOKS_SPECIAL):
            types[token_id] = int(gguf.TokenType.CONTROL)
        else:
            types[token_id] = int(gguf.TokenType.USER_DEFINED)
    return tokens, types, tokenizer


def special_token_ids(directory: Path, config: ModelConfig, tokenizer: Tokenizer) -> dict[str, int]:
    """bos / eos / padding ids: eos as generation_config.json says (its first id), else config.json, else the
    tokenizer's; bos likewise, else <|endoftext|> (as Qwen's own config.json says; never added, add_bos is false);
    padding the tokenizer's pad token, else eos."""
    generation = {}
    if (directory / "generation_config.json").is_file():
        try:
            generation = json.loads((directory / "generation_config.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{directory / 'generation_config.json'} is not valid JSON: {e}") from None

    def first(*values) -> int | None:
        for value in values:
            if isinstance(value, list):
                value = value[0] if value else None
            if isinstance(value, int):
                return value
        return None

    ids = {
        "bos": first(generation.get("bos_token_id"), config.bos_token_id, tokenizer.token_to_id("<|endoftext|>")),
        "eos": first(generation.get("eos_token_id"), config.eos_token_id, tokenizer.eos_token_id),
    }
    ids["pad"] = first(tokenizer.pad_token_id, ids["eos"])
    return {name: token_id for name, token_id in ids.items() if token_id is not None}


# ----- tensors -----------------------------------------------------------------------------------------
def _storage_type(gguf, gguf_name: str, shape: tuple[int, ...], target):
    """llama.cpp's converter's rule: 1-D tensors, norms, biases and the MoE router in F32; Q8_0 rows must be a
    multiple of 32 values (else F16); everything else in the target type."""
    Q = gguf.GGMLQuantizationType
    if len(shape) <= 1 or gguf_name.endswith("_norm.weight") or not gguf_name.endswith(".weight") \
            or ".ffn_gate_inp." in gguf_name:
        return Q.F32
    if target == Q.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0]:
        return Q.F16
    return target


def _stored_shape_and_bytes(gguf, shape: tuple[int, ...], qtype) -> tuple[tuple[int, ...], np.dtype, int]:
    Q = gguf.GGMLQuantizationType
    if qtype in (Q.F32, Q.F16):
        dtype = np.dtype(np.float32 if qtype == Q.F32 else np.float16)
        return shape, dtype, int(np.prod(shape)) * dtype.itemsize
    byte_shape = tuple(gguf.quant_shape_to_byte_shape(shape, qtype))
    return byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape))


def _convert(gguf, tensor: torch.Tensor, qtype) -> np.ndarray:
    return gguf.quants.quantize(tensor.to(torch.float32).numpy(), qtype)


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The checkpoint tensors a config implies (HF names, PyTorch shapes, model order), from the config alone;
    a tied lm_head is left out, as checkpoints leave it out."""
    h, hd, vocab = config.hidden_size, config.head_dim, config.vocab_size
    q, kv = config.num_attention_heads * hd, config.num_key_value_heads * hd
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, h)}
    for i in range(config.num_hidden_layers):
        layer = f"model.layers.{i}."
        attention = {"q_proj.weight": (q, h), "k_proj.weight": (kv, h), "v_proj.weight": (kv, h)}
        if config.attention_bias:
            attention.update({"q_proj.bias": (q,), "k_proj.bias": (kv,), "v_proj.bias": (kv,)})
        attention["o_proj.weight"] = (h, q)
        if config.qk_norm:
            attention.update({"q_norm.weight": (hd,), "k_norm.weight": (hd,)})
        if config.code_aware_attention:
            attention["code_bias"] = (config.num_attention_heads, len(CODE_CLASSES))
        shapes.update((layer + "self_attn." + name, shape) for name, shape in attention.items())
        if config.is_moe_layer(i):
            ff = config.moe_intermediate_size
            shapes[layer + "mlp.gate.weight"] = (config.num_experts, h)
            mlps = [f"{layer}mlp.experts.{e}." for e in range(config.num_experts)]
        else:
            ff, mlps = config.intermediate_size, [layer + "mlp."]
        for mlp in mlps:
            shapes.update({mlp + "gate_proj.weight": (ff, h), mlp + "up_proj.weight": (ff, h),
                           mlp + "down_proj.weight": (h, ff)})
        shapes[layer + "input_layernorm.weight"] = (h,)
        shapes[layer + "post_attention_layernorm.weight"] = (h,)
    if config.code_aware_attention:
        shapes["model.code_token_class"] = (vocab,)
    shapes["model.norm.weight"] = (h,)
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (vocab, h)
    return shapes


def plan_tensors(config: ModelConfig, shapes: dict[str, tuple[int, ...]], read: Callable[[str], torch.Tensor],
                 dtype: str) -> list[PlannedTensor]:
    """Every GGUF tensor in llama.cpp's names, in model order. `shapes` are the checkpoint's tensor shapes."""
    gguf = _gguf()
    target = getattr(gguf.GGMLQuantizationType, DTYPES[dtype][0])
    arch = getattr(gguf.MODEL_ARCH, ARCHITECTURES[config.model_type])
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    expected = expected_shapes(config)
    planned = [name for name in expected       # the code bias has no llama.cpp counterpart: refused or dropped
               if not name.endswith(".code_bias") and name != "model.code_token_class"]
    missing = sorted(name for name in planned if name not in shapes)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise CheckpointError(f"the checkpoint lacks weights for {shown}")
    for name, shape in expected.items():
        if name in shapes and shapes[name] != shape:
            raise CheckpointError(f"shape mismatch for {name}: checkpoint has {shapes[name]}, "
                                  f"config.json implies {shape}")

    def gguf_name(hf_name: str) -> str:
        mapped = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise ValueError(f"no llama.cpp tensor for {hf_name} in architecture {gguf.MODEL_ARCH_NAMES[arch]}")
        return mapped

    def single(hf_name: str) -> PlannedTensor:
        name, shape = gguf_name(hf_name), expected[hf_name]
        qtype = _storage_type(gguf, name, shape, target)
        _, _, nbytes = _stored_shape_and_bytes(gguf, shape, qtype)
        return PlannedTensor(name, qtype, shape, nbytes, lambda: _convert(gguf, read(hf_name), qtype))

    def stacked(layer: int, projection: str) -> PlannedTensor:
        experts = [f"model.layers.{layer}.mlp.experts.{e}.{projection}.weight" for e in range(config.num_experts)]
        name = gguf_name(f"model.layers.{layer}.mlp.experts.{projection}.weight")
        shape = (config.num_experts, *expected[experts[0]])
        qtype = _storage_type(gguf, name, shape, target)
        stored, np_dtype, nbytes = _stored_shape_and_bytes(gguf, shape, qtype)

        def produce() -> np.ndarray:     # filled expert by expert: one expert in fp32 at a time
            out = np.empty(stored, dtype=np_dtype)
            for e, expert in enumerate(experts):
                out[e] = _convert(gguf, read(expert), qtype)
            return out
        return PlannedTensor(name, qtype, shape, nbytes, produce)

    plan, done_experts = [], set()
    for hf_name in planned:
        if ".mlp.experts." in hf_name:
            layer = int(hf_name.split(".")[2])
            if layer not in done_experts:
                done_experts.add(layer)
                plan.extend(stacked(layer, projection) for projection in EXPERT_PROJECTIONS)
            continue
        plan.append(single(hf_name))
    return plan


# ----- metadata ----------------------------------------------------------------------------------------
def write_metadata(writer, gguf, config: ModelConfig, name: str, file_type) -> None:
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    scaling = config.rope_scaling or {}
    if scaling.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(scaling["factor"])
    elif scaling.get("rope_type") == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(scaling["factor"])
        writer.add_rope_scaling_orig_ctx_len(
            scaling.get("original_max_position_embeddings", config.max_position_embeddings))
        for key, method in (("attention_factor", "add_rope_scaling_yarn_attn_factor"),
                            ("beta_fast", "add_rope_scaling_yarn_beta_fast"),
                            ("beta_slow", "add_rope_scaling_yarn_beta_slow")):
            if scaling.get(key) is None:
                continue               # llama.cpp's defaults equal zhcoder's (beta 32 / 1, 0.1 ln(factor) + 1)
            if not hasattr(writer, method):
                raise ZhcoderError(f"this checkpoint's YaRN {key} needs a newer gguf package: pip install -U gguf")
            getattr(writer, method)(scaling[key])
    if config.model_type == "qwen3_moe":
        writer.add_expert_count(config.num_experts)
        writer.add_expert_used_count(config.num_experts_per_tok)
        writer.add_expert_feed_forward_length(config.moe_intermediate_size)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def write_tokenizer(writer, gguf, directory: Path, config: ModelConfig) -> None:
    tokens, types, tokenizer = vocabulary(directory, config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    merges = gguf.SpecialVocab(directory, load_merges=True, special_token_types=()).merges
    if not merges:
        raise ValueError(f"{directory / 'tokenizer.json'} has no BPE merges")
    writer.add_token_merges(merges)
    ids = special_token_ids(directory, config, tokenizer)
    for kind, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                      ("pad", writer.add_pad_token_id)):
        if kind in ids:
            add(ids[kind])
    writer.add_add_bos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


# ----- the export ------------------------------------------------------------------------------------
@contextmanager
def open_weights(directory: Path) -> Iterator[tuple[dict[str, tuple[int, ...]], Callable[[str], torch.Tensor]]]:
    """The checkpoint's tensor shapes (read from the headers only) and a reader of one tensor by name, over the
    memory-mapped safetensors files (single or sharded)."""
    with ExitStack() as stack:
        handles = {}
        try:
            for file in weight_files(directory):
                f = stack.enter_context(safe_open(file, framework="pt", device="cpu"))
                handles.update((key, f) for key in f.keys())
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key, f in handles.items()}
        except SafetensorError as e:
            raise CheckpointError(f"{directory} holds an unreadable safetensors file ({e})") from None
        yield shapes, lambda key: handles[key].get_tensor(key)


@contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over bytes written (on stderr); yields the advance function."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("writing GGUF"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True)) as bar:
        task = bar.add_task("write", total=total)
        yield lambda n: bar.advance(task, n)


def export_gguf(checkpoint_dir: str | Path, out_path: str | Path, dtype: str = "f16", progress: bool = False,
                drop_code_bias: bool = False, name: str | None = None) -> Path:
    """Write `out_path` (.gguf) from a checkpoint folder; returns the path. dtype: f16, bf16, f32 or q8_0."""
    gguf = _gguf()
    directory, out = Path(checkpoint_dir), Path(out_path)
    if dtype not in DTYPES:
        raise ValueError(f"unknown GGUF dtype {dtype!r}: choose {', '.join(DTYPES)}")
    config = load_config(directory)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name such as {out / (directory.name + '.gguf')}")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the folder of --out does not exist: {out.parent}")
    check_llamacpp_can_run(config)
    file_type = getattr(gguf.LlamaFileType, DTYPES[dtype][1])
    partial = out.with_name(out.name + ".partial")
    with open_weights(directory) as (shapes, read):
        if code_bias_is_nonzero(config, read, set(shapes)) and not drop_code_bias:
            raise ValueError(f"{directory} has a trained code-aware attention bias (code_bias), which llama.cpp "
                             "cannot compute; pass --drop-code-bias to export the plain model without it")
        plan = plan_tensors(config, shapes, read, dtype)
        architecture = getattr(gguf.MODEL_ARCH, ARCHITECTURES[config.model_type])
        writer = gguf.GGUFWriter(partial, gguf.MODEL_ARCH_NAMES[architecture])
        try:
            write_metadata(writer, gguf, config, name or directory.resolve().name, file_type)
            write_tokenizer(writer, gguf, directory, config)
            for t in plan:
                stored, np_dtype, _ = _stored_shape_and_bytes(gguf, t.shape, t.qtype)
                writer.add_tensor_info(t.name, stored, np_dtype, t.nbytes, raw_dtype=t.qtype)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            with _progress_bar(sum(t.nbytes for t in plan), progress) as advance:
                for t in plan:
                    data = t.produce()
                    writer.write_tensor_data(data)
                    advance(data.nbytes)
            writer.close()
            os.replace(partial, out)
        except BaseException:
            writer.close()
            partial.unlink(missing_ok=True)
            raise
    return out
