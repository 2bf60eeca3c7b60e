"""`zhcoder info | init | complete | fim | chat`: a checkpoint's facts, a random-weight checkpoint, and generation.

    zhcoder init --preset qwen3-0.6b --layers 2 /tmp/tiny     # a random-weight checkpoint of a real shape
    zhcoder info /tmp/tiny                                    # family, shapes, parameters, memory
    zhcoder complete --model /tmp/tiny "def add(a, b):" --max-new-tokens 16 --json
    zhcoder fim --model /tmp/tiny --prefix "def f(x):\n    " --suffix "\n    return y"
    zhcoder chat --model /tmp/tiny                            # /reset, /system TEXT, /exit
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from zhcoder.cli.app import (CompileOption, DtypeOption, JsonFlag, MaxNewTokens, MinP, ModelOption, QuantizeOption,
                         RepetitionPenalty, Seed, Stop, Temperature, TopK, TopP, UsageError, app, load_engine)


def sampling_params(max_new_tokens, temperature, top_p, top_k, min_p, repetition_penalty, seed, stop,
                    token_healing=False):
    from zhcoder.sampling import SamplingParams

    return SamplingParams(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
        repetition_penalty=repetition_penalty, seed=seed, stop=list(stop or []), token_healing=token_healing,
    )


def run(engine, prompt: str, params, as_json: bool) -> None:
    """Generate for one prompt: stream text to stdout, or print exactly one JSON object."""
    completion = None
    for event in engine.stream(prompt, params):
        if not as_json and event.text:
            sys.stdout.write(event.text)
            sys.stdout.flush()
        completion = event.completion or completion
    if as_json:
        print(json.dumps({
            "text": completion.text, "token_ids": completion.token_ids,
            "prompt_tokens": completion.prompt_tokens, "finish_reason": completion.finish_reason,
        }, ensure_ascii=False))
    else:
        sys.stdout.write("\n")


def read_text(value: Optional[str], file: Optional[Path], what: str) -> Optional[str]:
    if value is not None and file is not None:
        raise UsageError(f"give the {what} as an argument or with a file, not both")
    if file is not None:
        if not file.is_file():
            raise UsageError(f"{what} file not found: {file}")
        return file.read_text(encoding="utf-8")
    return value


@app.command()
def info(model: Optional[str] = typer.Argument(None, help="checkpoint folder or preset name (default: the default "
                                                          "model)"),
         as_json: bool = JsonFlag):
    """Family, shapes, parameter count (total and active for MoE), dtype and memory needed."""
    from zhcoder.checkpoint import default_model, load_config
    from zhcoder.config import DTYPE_BYTES, PRESETS, preset

    model = default_model(model)
    config = preset(model) if model.lower() in PRESETS and not Path(model).exists() else load_config(model)
    total, active = config.num_parameters(), config.num_parameters(active=True)
    weight_bytes = total * DTYPE_BYTES.get(config.torch_dtype, 2)
    kv = config.kv_cache_bytes_per_token(config.torch_dtype if config.torch_dtype in DTYPE_BYTES else "bfloat16")
    facts = {
        "model": model, "family": config.model_type, "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size, "intermediate_size": config.intermediate_size,
        "attention_heads": config.num_attention_heads, "kv_heads": config.num_key_value_heads,
        "head_dim": config.head_dim, "vocab_size": config.vocab_size, "context": config.max_position_embeddings,
        "rope_theta": config.rope_theta, "rope_scaling": config.rope_scaling,
        "tied_embeddings": config.tie_word_embeddings, "parameters": total, "active_parameters": active,
        "experts": config.num_experts, "experts_per_token": config.num_experts_per_tok,
        "dtype": config.torch_dtype, "weights_bytes": weight_bytes, "kv_cache_bytes_per_token": kv,
        "memory_bytes_at_full_context": weight_bytes + kv * config.max_position_embeddings,
    }
    if as_json:
        print(json.dumps(facts))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None)
    gib = lambda n: f"{n / 2**30:.2f} GiB"  # noqa: E731
    shown = {k: v for k, v in facts.items() if config.num_experts or k not in ("experts", "experts_per_token")}
    for key, value in shown.items():
        if key in ("parameters", "active_parameters"):
            value = f"{value:,}"
        elif key.endswith("bytes") or key.endswith("bytes_at_full_context"):
            value = gib(value)
        elif key == "kv_cache_bytes_per_token":
            value = f"{value / 2**10:.1f} KiB"
        table.add_row(key.replace("_", " "), str(value))
    Console().print(table)


@app.command()
def init(out_dir: Path = typer.Argument(..., help="folder to write"),
         preset_name: str = typer.Option(..., "--preset", help="published shape, e.g. qwen3-0.6b"),
         layers: Optional[int] = typer.Option(None, help="override num_hidden_layers"),
         hidden: Optional[int] = typer.Option(None, help="override hidden_size"),
         intermediate: Optional[int] = typer.Option(None, help="override intermediate_size"),
         heads: Optional[int] = typer.Option(None, help="override num_attention_heads"),
         kv_heads: Optional[int] = typer.Option(None, "--kv-heads", help="override num_key_value_heads"),
         head_dim: Optional[int] = typer.Option(None, "--head-dim", help="override head_dim"),
         experts: Optional[int] = typer.Option(None, help="override num_experts (MoE)"),
         moe_intermediate: Optional[int] = typer.Option(None, "--moe-intermediate", help="override moe_intermediate_size"),
         dtype: str = typer.Option("bfloat16", help="float32, bfloat16 or float16"),
         seed: int = typer.Option(0)):
    """Write a random-weight checkpoint of a real shape, with the Qwen tokenizer and chat template."""
    from zhcoder.chat import builtin_template
    from zhcoder.checkpoint import resolve_dtype, save_model
    from zhcoder.config import preset
    from zhcoder.model import QwenForCausalLM, init_weights
    from zhcoder.tokenizer import Tokenizer

    config = preset(preset_name, num_hidden_layers=layers, hidden_size=hidden, intermediate_size=intermediate,
                    num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim, num_experts=experts,
                    moe_intermediate_size=moe_intermediate)
    if config.num_experts and config.num_experts_per_tok > config.num_experts:
        config.num_experts_per_tok = config.num_experts
    torch_dtype = resolve_dtype(dtype, config)
    config.eos_token_id = 151645 if preset_name.startswith("qwen3") else 151643
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UsageError(f"{out_dir} exists and is not empty")
    model = QwenForCausalLM(config)
    init_weights(model, seed=seed)
    model.to(torch_dtype)
    template = "qwen3-coder" if "coder" in preset_name and preset_name.startswith("qwen3") else (
        "qwen2.5" if preset_name.startswith("qwen2.5") else "qwen3")
    save_model(model, out_dir, tokenizer=Tokenizer.qwen(), chat_template=builtin_template(template))
    print(f"wrote {out_dir} ({config.num_parameters():,} parameters, {dtype}, chat template {template})")


@app.command()
def complete(prompt: Optional[str] = typer.Argument(None, help="prompt text (or --file, or stdin)"),
             file: Optional[Path] = typer.Option(None, "--file", "-f", help="read the prompt from a file"),
             model: Optional[str] = ModelOption, dtype: str = DtypeOption, max_new_tokens: int = MaxNewTokens,
             temperature: float = Temperature, top_p: float = TopP, top_k: int = TopK, min_p: float = MinP,
             repetition_penalty: float = RepetitionPenalty, seed: Optional[int] = Seed,
             stop: Optional[list[str]] = Stop, as_json: bool = JsonFlag,
             compile: Optional[bool] = CompileOption, quantize: Optional[str] = QuantizeOption,
             token_healing: bool = typer.Option(True, "--token-healing/--no-token-healing",
                                                help="back up over the prompt's last token and let the model "
                                                     "choose how it continues: 'def f(x):' goes on as if "
                                                     "'):\\n' were one token (zhcoder.healing)")):
    """Continue a prompt."""
    text = read_text(prompt, file, "prompt")
    if text is None:
        if sys.stdin.isatty():
            raise UsageError("no prompt: give it as an argument, with --file, or on stdin")
        text = sys.stdin.read()
    params = sampling_params(max_new_tokens, temperature, top_p, top_k, min_p, repetition_penalty, seed, stop,
                             token_healing)
    run(load_engine(model, dtype, compile, quantize), text, params, as_json)


@app.command()
def fim(prefix: Optional[str] = typer.Option(None, help="code before the gap"),
        suffix: Optional[str] = typer.Option(None, help="code after the gap"),
        prefix_file: Optional[Path] = typer.Option(None, "--prefix-file"),
        suffix_file: Optional[Path] = typer.Option(None, "--suffix-file"),
        model: Optional[str] = ModelOption, dtype: str = DtypeOption, max_new_tokens: int = MaxNewTokens,
        temperature: float = Temperature, top_p: float = TopP, top_k: int = TopK, min_p: float = MinP,
        repetition_penalty: float = RepetitionPenalty, seed: Optional[int] = Seed,
        stop: Optional[list[str]] = Stop, as_json: bool = JsonFlag,
        compile: Optional[bool] = CompileOption, quantize: Optional[str] = QuantizeOption):
    """Fill in the middle between --prefix and --suffix (Qwen's FIM tokens)."""
    from zhcoder.chat import fim_prompt

    before, after = read_text(prefix, prefix_file, "prefix"), read_text(suffix, suffix_file, "suffix")
    if before is None and after is None:
        raise UsageError("fim needs --prefix/--prefix-file and/or --suffix/--suffix-file")
    params = sampling_params(max_new_tokens, temperature, top_p, top_k, min_p, repetition_penalty, seed, stop)
    run(load_engine(model, dtype, compile, quantize), fim_prompt(before or "", after or ""), params, as_json)


@app.command()
def chat(model: Optional[str] = ModelOption, dtype: str = DtypeOption, max_new_tokens: int = MaxNewTokens,
         temperature: float = Temperature, top_p: float = TopP, top_k: int = TopK, min_p: float = MinP,
         repetition_penalty: float = RepetitionPenalty, seed: Optional[int] = Seed,
         stop: Optional[list[str]] = Stop, system: Optional[str] = typer.Option(None, help="system prompt"),
         template: Optional[str] = typer.Option(None, help="qwen2.5, qwen3 or qwen3-coder (default: the model's)"),
         think: bool = typer.Option(True, help="Qwen3 thinking mode"),
         compile: Optional[bool] = CompileOption, quantize: Optional[str] = QuantizeOption):
    """Chat interactively, streaming replies. Commands: /reset, /system TEXT, /exit."""
    from zhcoder.chat import BUILTIN_TEMPLATES, render_chat

    if template is not None and template not in BUILTIN_TEMPLATES:        # before loading, not at the first message
        raise UsageError(f"--template must be one of {', '.join(BUILTIN_TEMPLATES)}, not {template!r}")
    engine = load_engine(model, dtype, compile, quantize)
    params = sampling_params(max_new_tokens, temperature, top_p, top_k, min_p, repetition_penalty, seed, stop)
    chat_template = template or engine.tokenizer.chat_template or "qwen3"
    interactive = sys.stdin.isatty()
    messages: list[dict] = []
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            break
        if not line.strip():
            continue
        if line.strip() in ("/exit", "/quit"):
            break
        if line.strip() == "/reset":
            messages.clear()
            print("(conversation cleared)")
            continue
        if line.startswith("/system"):
            system = line[len("/system"):].strip() or None
            messages.clear()
            print(f"(system prompt {'set' if system else 'cleared'}; conversation cleared)")
            continue
        messages.append({"role": "user", "content": line})
        conversation = ([{"role": "system", "content": system}] if system else []) + messages
        prompt = render_chat(conversation, template=chat_template, enable_thinking=think)
        reply = ""
        for event in engine.stream(prompt, params):
            sys.stdout.write(event.text)
            sys.stdout.flush()
            reply += event.text
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": reply})
