"""The `zhcoder` command line: thin verbs over the modules below it.

    zhcoder init --preset qwen3-0.6b --layers 2 /tmp/tiny     # a random-weight checkpoint of a real shape
    zhcoder info /tmp/tiny                                    # family, shapes, parameters, memory
    zhcoder complete --model /tmp/tiny "def add(a, b):" --max-new-tokens 16 --json
    zhcoder fim --model /tmp/tiny --prefix "def f(x):\n    " --suffix "\n    return y"
    zhcoder chat --model /tmp/tiny                            # /reset, /system TEXT, /exit

User errors (a missing folder, a bad flag, a prompt over the context) print one line on stderr and exit 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from . import ZhcoderError

app = typer.Typer(
    add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None, no_args_is_help=True,
    help="zhcoder: a self-hosted Qwen3-Coder-style code model stack.",
)


class UsageError(ValueError):
    """A user error found by the CLI itself."""


# ----- shared options ----------------------------------------------------------------------------------
ModelOption = typer.Option(None, "--model", "-m", help="checkpoint folder (default: $ZHCODER_MODEL, else the embedded "
                                                      "zhcoder-nano)")
DtypeOption = typer.Option("auto", help="auto (as stored), float32, bfloat16 or float16")
MaxNewTokens = typer.Option(256, "--max-new-tokens", "-n", help="tokens to generate at most")
Temperature = typer.Option(0.0, help="0 = greedy")
TopP = typer.Option(1.0, "--top-p")
TopK = typer.Option(0, "--top-k", help="0 = off")
MinP = typer.Option(0.0, "--min-p")
RepetitionPenalty = typer.Option(1.0, "--repetition-penalty")
Seed = typer.Option(None, help="random seed for sampling")
Stop = typer.Option(None, "--stop", help="stop string (repeatable)")
JsonFlag = typer.Option(False, "--json", help="print one JSON object instead of streaming text")
DecodeOption = typer.Option("auto", "--decode", help="auto (fast on CUDA), fast (static cache, device-side "
                            "sampling) or plain")
CompileOption = typer.Option(None, "--compile/--no-compile", help="torch.compile the fast decode step (default: on CUDA)")
QuantizeOption = typer.Option(None, "--quantize", help="int8 or int4 weight-only linear layers (zhcoder.quant; on CPU "
                              "both are fast with --dtype bfloat16)")


def _decode_path(decode: str, compile: Optional[bool]) -> dict:
    if decode not in ("auto", "fast", "plain"):
        raise UsageError(f"--decode must be auto, fast or plain, not {decode!r}")
    return {"fast": {"auto": None, "fast": True, "plain": False}[decode], "compile": compile}


def _load(model: Optional[str], dtype: str, decode: str = "auto", compile: Optional[bool] = None,
          quantize: Optional[str] = None):
    from .checkpoint import default_model
    from .engine import Engine

    return Engine.from_dir(default_model(model), dtype=dtype, quantize=quantize, **_decode_path(decode, compile))


def _params(max_new_tokens, temperature, top_p, top_k, min_p, repetition_penalty, seed, stop, token_healing=False):
    from .engine import SamplingParams

    return SamplingParams(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
        repetition_penalty=repetition_penalty, seed=seed, stop=list(stop or []), token_healing=token_healing,
    )


def _run(engine, prompt: str, params, as_json: bool) -> None:
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


def _read(value: Optional[str], file: Optional[Path], what: str) -> Optional[str]:
    if value is not None and file is not None:
        raise UsageError(f"give the {what} as an argument or with a file, not both")
    if file is not None:
        if not file.is_file():
            raise UsageError(f"{what} file not found: {file}")
        return file.read_text(encoding="utf-8")
    return value


# ----- verbs -------------------------------------------------------------------------------------------
@app.command()
def info(model: Optional[str] = typer.Argument(None, help="checkpoint folder or preset name (default: the default "
                                                          "model)"),
         as_json: bool = JsonFlag):
    """Family, shapes, parameter count (total and active for MoE), dtype and memory needed."""
    from .checkpoint import default_model, load_config
    from .config import DTYPE_BYTES, PRESETS, preset

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
    from .chat import builtin_template
    from .checkpoint import resolve_dtype, save_model
    from .config import preset
    from .model import QwenForCausalLM, init_weights
    from .tokenizer import Tokenizer

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
             stop: Optional[list[str]] = Stop, as_json: bool = JsonFlag, decode: str = DecodeOption,
             compile: Optional[bool] = CompileOption, quantize: Optional[str] = QuantizeOption,
             token_healing: bool = typer.Option(True, "--token-healing/--no-token-healing",
                                                help="back up over the prompt's last token and let the model "
                                                     "choose how it continues: 'def f(x):' goes on as if "
                                                     "'):\\n' were one token (zhcoder.healing)")):
    """Continue a prompt."""
    text = _read(prompt, file, "prompt")
    if text is None:
        if sys.stdin.isatty():
            raise UsageError("no prompt: give it as an argument, with --file, or on stdin")
        text = sys.stdin.read()
    params = _params(max_new_tokens, temperature, top_p, top_k, min_p, repetition_penalty, seed, stop, token_healing)
    _run(_load(model, dtype, decode, compile, quantize), text, params, as_json)


@app.command()
def fim(prefix: Optional[str] = typer.Option(None, help="code before the gap"),
        suffix: Optional[str] = typer.Option(None, help="code after the gap"),
        prefix_file: Optional[Path] = typer.Option(None, "--prefix-file"),
        suffix_file: Optional[Path] = typer.Option(None, "--suffix-file"),
        model: Optional[str] = ModelOption, dtype: str = DtypeOption, max_new_tokens: int = MaxNewTokens,
        temperature: float = Temperature, top_p: float = TopP, top_k: int = TopK, min_p: float = MinP,
        repetition_penalty: float = RepetitionPenalty, seed: Optional[int] = Seed,
        stop: Optional[list[str]] = Stop, as_json: bool = JsonFlag, decode: str = DecodeOption,
        compile: Optional[bool] = CompileOption, quantize: Optional[str] = QuantizeOption):
    """Fill in the middle between --prefix and --suffix (Qwen's FIM tokens)."""
    from .chat import fim_prompt

    before, after = _read(prefix, prefix_file, "prefix"), _read(suffix, suffix_file, "suffix")
    if before is None and after is None:
        raise UsageError("fim needs --prefix/--prefix-file and/or --suffix/--suffix-file")
    params = _params(max_new_tokens, temperature, top_p, top_k, min_p, repetition_penalty, seed, stop)
    _run(_load(model, dtype, decode, compile, quantize), fim_prompt(before or "", after or ""), params, as_json)


@app.command()
def chat(model: Optional[str] = ModelOption, dtype: str = DtypeOption, max_new_tokens: int = MaxNewTokens,
         temperature: float = Temperature, top_p: float = TopP, top_k: int = TopK, min_p: float = MinP,
         repetition_penalty: float = RepetitionPenalty, seed: Optional[int] = Seed,
         stop: Optional[list[str]] = Stop, system: Optional[str] = typer.Option(None, help="system prompt"),
         template: Optional[str] = typer.Option(None, help="qwen2.5, qwen3 or qwen3-coder (default: the model's)"),
         think: bool = typer.Option(True, help="Qwen3 thinking mode"), decode: str = DecodeOption,
         compile: Optional[bool] = CompileOption, quantize: Optional[str] = QuantizeOption):
    """Chat interactively, streaming replies. Commands: /reset, /system TEXT, /exit."""
    from .chat import render_chat

    engine = _load(model, dtype, decode, compile, quantize)
    params = _params(max_new_tokens, temperature, top_p, top_k, min_p, repetition_penalty, seed, stop)
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


@app.command("eval")
def eval_(task: str = typer.Argument(..., help="humaneval, mbpp, mbpp-plus, humaneval-zh, humaneval-xl-zh, mbpp-zh, "
                                               "leetcode, leetcode-zh, codexglue-java-cs, codexglue-cs-java, "
                                               "security-instruct, security-autocomplete; or `report` followed by "
                                               "output folders"),
          folders: Optional[list[Path]] = typer.Argument(None, help="with `report`: eval output folders"),
          samples: Optional[Path] = typer.Option(None, help="score a JSONL of task_id + completion/solution (for "
                                                 "translation tasks also a text file, one line per example)"),
          model: Optional[str] = typer.Option(None, "--model", "-m", help="generate with a local checkpoint (the "
                                              "default subject: $ZHCODER_MODEL, else the embedded zhcoder-nano)"),
          endpoint: Optional[str] = typer.Option(None, help="OpenAI-compatible base URL, e.g. http://host:8000/v1"),
          endpoint_model: Optional[str] = typer.Option(None, "--endpoint-model", help="model name at the endpoint"),
          api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="environment variable with the key"),
          mode: str = typer.Option("base", help="base (continue the prompt) or chat (instruction, fenced code)"),
          out: Optional[Path] = typer.Option(None, help="output folder (resumes if it holds the same run)"),
          name: Optional[str] = typer.Option(None, help="subject label for reports (default: file/model name)"),
          n: int = typer.Option(1, "--n", help="samples per task (pass@k needs n >= k)"),
          temperature: float = Temperature, top_p: float = TopP, seed: Optional[int] = Seed,
          max_new_tokens: int = typer.Option(512, "--max-new-tokens"),
          dtype: str = DtypeOption,
          workers: Optional[int] = typer.Option(None, help="sandbox processes (default: CPU count)"),
          timeout: Optional[float] = typer.Option(None, help="seconds per program (default: the task's)"),
          limit: Optional[int] = typer.Option(None, help="only the first N problems"),
          concurrency: int = typer.Option(8, help="parallel endpoint requests"),
          retries: int = typer.Option(3, help="endpoint retries, with backoff"),
          data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="benchmark data (default $ZHCODER_DATA)"),
          md: Optional[Path] = typer.Option(None, help="with `report`: write the Markdown table here"),
          png: Optional[Path] = typer.Option(None, help="with `report`: write a bar chart here"),
          as_json: bool = JsonFlag):
    """Score a subject (samples file, local model or endpoint) on a benchmark, or `report` several runs."""
    if task == "report":
        from .eval.report import bar_chart, load_summaries, markdown

        summaries = load_summaries(folders or [])
        text = markdown(summaries)
        if md:
            md.write_text(text, encoding="utf-8")
        if png:
            bar_chart(summaries, png)
        print(text, end="")
        return
    from .eval.run import evaluate
    from .eval.subjects import Endpoint, GenerationSettings, LocalModel

    if folders:
        raise UsageError(f"unexpected argument(s): {' '.join(map(str, folders))}")
    if sum(x is not None for x in (samples, model, endpoint)) > 1:
        raise UsageError("give one of --samples FILE, --model DIR, --endpoint URL (none: the default model)")
    if samples is None and endpoint is None:
        from .checkpoint import default_model

        model = default_model(model)
    if out is None:
        raise UsageError("--out DIR is required")
    if mode not in ("base", "chat"):
        raise UsageError("--mode must be base or chat")
    if endpoint and not endpoint_model:
        raise UsageError("--endpoint needs --endpoint-model NAME")
    if n < 1:
        raise UsageError("--n must be at least 1")
    settings = GenerationSettings(mode=mode, n=n, temperature=temperature, top_p=top_p,
                                  max_new_tokens=max_new_tokens, seed=seed)
    subject = None
    if model:
        subject = LocalModel(model, settings, dtype=dtype)
    elif endpoint:
        subject = Endpoint(endpoint, endpoint_model, settings, api_key_env=api_key_env, concurrency=concurrency,
                           retries=retries)
    summary = evaluate(task, out, samples=str(samples) if samples else None, subject=subject, settings=settings,
                       workers=workers, timeout_s=timeout, limit=limit, name=name,
                       data_dir=str(data_dir) if data_dir else None, show_progress=not as_json)
    if as_json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        from .eval.scoring import round_scores

        print(json.dumps(round_scores(summary), indent=2, ensure_ascii=False))


tokenizer_app = typer.Typer(help="Train and inspect tokenizers.", no_args_is_help=True)
data_app = typer.Typer(help="Build training data.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")
app.add_typer(data_app, name="data")


@tokenizer_app.command("train")
def tokenizer_train(files: list[Path] = typer.Argument(..., help="text files (or folders) to learn from"),
                    vocab_size: int = typer.Option(..., "--vocab-size", help="learned tokens, before the special tokens"),
                    out: Path = typer.Option(..., "--out", help="folder for tokenizer.json + tokenizer_config.json"),
                    min_frequency: int = typer.Option(2, "--min-frequency")):
    """Train a byte-level BPE with Qwen's pre-tokenizer and the ChatML / FIM / repo special tokens."""
    from .tokenizer import train_tokenizer

    tokenizer = train_tokenizer(files, vocab_size, out, min_frequency=min_frequency)
    print(json.dumps({"out": str(out), "vocab_size": tokenizer.vocab_size, **tokenizer.training_stats.to_dict()}))


@data_app.command("sft")
def data_sft(inputs: list[Path] = typer.Argument(
                 ..., help="JSONL files: OpenAI messages, Alpaca, ShareGPT or prompt-completion rows"),
             tokenizer: Path = typer.Option(..., "--tokenizer", help="folder with tokenizer.json (a model folder)"),
             out: Path = typer.Option(..., "--out", help="output folder (train/ and validation/ token shards, stats.json)"),
             template: Optional[str] = typer.Option(None, help="chat template (default: the tokenizer's)"),
             max_tokens: int = typer.Option(4096, "--max-tokens", help="longer samples are dropped and counted"),
             train_on: str = typer.Option("all", "--train-on", help="all assistant turns, or only the last"),
             val_fraction: float = typer.Option(0.01, "--val-fraction"),
             seed: int = typer.Option(0)):
    """Chat rows through the chat template (loss on assistant turns), prompt-completion rows as plain text (loss on
    the completion): masked token shards."""
    from .data.sft import build_sft

    if train_on not in ("all", "last"):
        raise UsageError("--train-on must be all or last")
    stats = build_sft(list(map(str, inputs)), str(tokenizer), out, template=template, max_tokens=max_tokens,
                      train_on=train_on, val_fraction=val_fraction, seed=seed, progress=True)
    print(json.dumps(stats, indent=2, ensure_ascii=False))


@data_app.command("build")
def data_build(
    sources: list[str] = typer.Argument(..., help="folders (git work trees: tracked files only), .jsonl or .parquet"),
    tokenizer: str = typer.Option(..., "--tokenizer", help="a folder with tokenizer.json, or 'qwen'"),
    out: Path = typer.Option(..., "--out", help="output folder: train/, validation/, stats.json, removed.jsonl"),
    workers: Optional[int] = typer.Option(None, "--workers", help="local worker processes (default: all cores)"),
    tasks: int = typer.Option(0, "--tasks", help="tasks per stage (0: 8, or one per 128 MiB of input)"),
    executor: str = typer.Option("local", "--executor", help="local, slurm or ray"),
    partition: Optional[str] = typer.Option(None, help="Slurm partition (--executor slurm)"),
    time_limit: str = typer.Option("04:00:00", "--time", help="Slurm time limit per task"),
    env_command: Optional[str] = typer.Option(None, "--env-command",
                                              help="Slurm: shell command that activates the environment"),
    cpus_per_task: int = typer.Option(1, "--cpus-per-task", help="Slurm / Ray CPUs per task"),
    mem_per_cpu_gb: float = typer.Option(4, "--mem-per-cpu-gb", help="Slurm / Ray memory per CPU"),
    fim_rate: float = typer.Option(0.5, "--fim-rate", help="fraction of files turned into FIM samples"),
    spm_rate: float = typer.Option(0.5, "--spm-rate", help="fraction of FIM samples in SPM order (else PSM)"),
    repo_level: bool = typer.Option(False, "--repo-level", help="repo-level samples instead of file-level FIM"),
    repo_max_chars: int = typer.Option(131_072, "--repo-max-chars", help="most characters per repo-level sample"),
    validation_fraction: float = typer.Option(0.005, "--validation-fraction"),
    seed: int = typer.Option(0, "--seed"),
    dedup: bool = typer.Option(True, "--dedup/--no-dedup", help="exact + near-duplicate removal"),
    near_threshold: float = typer.Option(0.85, "--near-threshold", help="MinHash Jaccard threshold"),
    shingle_size: int = typer.Option(5, "--shingle-size", help="tokens per shingle"),
    num_perm: int = typer.Option(128, "--num-perm", help="MinHash permutations"),
    redact: bool = typer.Option(True, "--redact/--no-redact", help="replace secrets and personal data"),
    decontaminate: bool = typer.Option(True, "--decontaminate/--no-decontaminate"),
    decontaminate_n: int = typer.Option(13, "--decontaminate-n", help="n-gram length in words"),
    decontaminate_tasks: Optional[str] = typer.Option(None, "--decontaminate-tasks",
                                                      help="comma-separated eval sets (default: all)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="where the eval sets are"),
    max_line_length: int = typer.Option(1000, "--max-line-length", help="0: off"),
    max_mean_line_length: float = typer.Option(100.0, "--max-mean-line-length", help="0: off"),
    min_alphanumeric_fraction: float = typer.Option(0.25, "--min-alphanumeric-fraction", help="0: off"),
    min_chars: int = typer.Option(20, "--min-chars", help="non-whitespace characters; 0: off"),
    max_bytes: int = typer.Option(1_000_000, "--max-bytes", help="0: off"),
    max_lines: int = typer.Option(100_000, "--max-lines", help="0: off"),
    text_field: Optional[str] = typer.Option(None, "--text-field", help="records: text field (default text/content)"),
    path_field: Optional[str] = typer.Option(None, "--path-field", help="records: file path field"),
    repo_field: Optional[str] = typer.Option(None, "--repo-field", help="records: repository name field"),
    language_field: Optional[str] = typer.Option(None, "--language-field", help="records: language field"),
    restart: bool = typer.Option(False, "--restart", help="discard an earlier (partial) build in --out"),
):
    """Build pre-training token shards from code: language id, filters, secrets, decontamination, dedup, FIM."""
    import dataclasses

    from .data.build import BuildConfig, build, summary
    from .data.filters import FilterConfig

    filters = dataclasses.asdict(FilterConfig(
        max_line_length=max_line_length or None, max_mean_line_length=max_mean_line_length or None,
        min_alphanumeric_fraction=min_alphanumeric_fraction or None, min_chars=min_chars or None,
        max_bytes=max_bytes or None, max_lines=max_lines or None))
    config = BuildConfig(
        sources=sources, tokenizer=tokenizer, out=str(out), tasks=tasks, filters=filters, redact=redact,
        decontaminate=decontaminate, decontaminate_n=decontaminate_n,
        decontaminate_tasks=tuple(t.strip() for t in decontaminate_tasks.split(",") if t.strip())
        if decontaminate_tasks else None,
        data_dir=str(data_dir) if data_dir else None, dedup=dedup, near_threshold=near_threshold,
        shingle_size=shingle_size, num_perm=num_perm, fim_rate=fim_rate, spm_rate=spm_rate, repo_level=repo_level,
        repo_max_chars=repo_max_chars, validation_fraction=validation_fraction, seed=seed, text_field=text_field,
        path_field=path_field, repo_field=repo_field, language_field=language_field)
    options: dict = {}
    if executor == "slurm":
        if not partition:
            raise UsageError("--executor slurm needs --partition")
        options = {"partition": partition, "time": time_limit, "cpus_per_task": cpus_per_task,
                   "mem_per_cpu_gb": mem_per_cpu_gb, "env_command": env_command}
    elif executor == "ray":
        options = {"cpus_per_task": cpus_per_task, "mem_per_cpu_gb": mem_per_cpu_gb}
    stats = build(config, workers=workers, executor=executor, restart=restart, executor_options=options)
    if stats is None:
        print(f"submitted; when the jobs finish, {out}/stats.json and {out}/train/index.json are written "
              f"(logs: {out}/work/logs/<stage>/)")
        return
    print(summary(stats))
    print(f"wrote {out}/train, {out}/validation, {out}/stats.json, {out}/removed.jsonl")


@app.command()
def serve(model: Optional[str] = ModelOption,
          upstream: Optional[str] = typer.Option(None, "--upstream",
                                                 help="instead of a model: an OpenAI-compatible server to front"),
          upstream_key: Optional[str] = typer.Option(None, "--upstream-key", envvar="ZHCODER_UPSTREAM_KEY"),
          host: str = typer.Option("127.0.0.1", help="address to bind (0.0.0.0 to serve other machines)"),
          port: int = typer.Option(8000),
          api_key: Optional[str] = typer.Option(None, "--api-key", envvar="ZHCODER_API_KEY",
                                                help="require Authorization: Bearer KEY"),
          model_name: Optional[str] = typer.Option(None, "--model-name", help="the id clients use (default: folder name)"),
          max_batch: int = typer.Option(16, "--max-batch", help="requests decoded together"),
          queue_size: int = typer.Option(64, "--queue-size", help="waiting requests before 429"),
          max_model_len: int = typer.Option(4096, "--max-model-len", help="prompt + completion tokens per request"),
          max_tokens: int = typer.Option(4096, "--max-tokens-cap", help="largest max_tokens accepted"),
          max_body_mb: float = typer.Option(4.0, "--max-body-mb", help="largest request body"),
          dtype: str = typer.Option("auto", help="auto, float32, bfloat16 or float16"),
          decode: str = DecodeOption, compile: Optional[bool] = CompileOption,
          quantize: Optional[str] = QuantizeOption,
          warmup: bool = typer.Option(False, "--warmup", help="compile the fast decode steps before serving")):
    """An OpenAI-compatible server: chat, completions with suffix (FIM), /infill, tool calls, continuous batching."""
    import uvicorn

    from .serve.app import build

    if upstream:
        from .serve.proxy import create_proxy_app

        proxy = create_proxy_app(upstream, api_key=api_key, upstream_key=upstream_key,
                                 max_body_bytes=int(max_body_mb * 2**20))
        uvicorn.run(proxy, host=host, port=port, log_level="info", timeout_graceful_shutdown=15)
        return
    from .checkpoint import default_model

    model = default_model(model)
    if min(max_batch, queue_size, max_model_len, max_tokens) < 1 or max_body_mb <= 0:
        raise UsageError("--max-batch, --queue-size, --max-model-len, --max-tokens-cap and --max-body-mb must be positive")
    device = "cuda" if __import__("torch").cuda.is_available() else "cpu"
    app_, _ = build(model, model_name=model_name, api_key=api_key, max_batch=max_batch, queue_size=queue_size,
                    max_model_len=max_model_len, max_tokens_cap=max_tokens, max_body_bytes=int(max_body_mb * 2**20),
                    dtype=dtype, device=device, warmup=warmup, quantize=quantize,
                    **_decode_path(decode, compile))
    uvicorn.run(app_, host=host, port=port, log_level="info", timeout_graceful_shutdown=15)


@app.command()
def demo(model: Optional[str] = ModelOption,
         server: Optional[str] = typer.Option(None, "--server", help="or an OpenAI-compatible server URL"),
         api_key: Optional[str] = typer.Option(None, "--api-key", envvar="ZHCODER_API_KEY", help="the server's key"),
         model_name: Optional[str] = typer.Option(None, "--model-name", help="server mode: the model id to use"),
         host: str = typer.Option("127.0.0.1"), port: int = typer.Option(7860),
         share: bool = typer.Option(False, "--share", help="a public Gradio link (needs the internet)")):
    """A Gradio web demo: streaming chat, fill-in-the-middle completion, Chinese/English interface."""
    from .demo import launch

    if model and server:
        raise UsageError("give --model DIR or --server URL, not both")
    if not server:
        from .checkpoint import default_model

        model = default_model(model)
    launch(model_dir=model, server=server, host=host, port=port, api_key=api_key, share=share, model_name=model_name)


tokens_app = typer.Typer(help="Tokenizer economics.", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")


@tokens_app.command("compare")
def tokens_compare(paths: list[str] = typer.Argument(..., help="files or folders of code"),
                   tokenizers: str = typer.Option("qwen,o200k,cl100k", "--tokenizers",
                                                  help="comma-separated: qwen, o200k, cl100k, or model folders"),
                   baseline: Optional[str] = typer.Option(None, "--baseline", help="default: the first tokenizer"),
                   cost: bool = typer.Option(False, "--cost", help="add the price table and the cost of the set"),
                   prices: Optional[Path] = typer.Option(None, "--prices", help="JSON price table (USD per 1M)"),
                   per_file: bool = typer.Option(False, "--per-file", help="a row per file"),
                   as_json: bool = typer.Option(False, "--json", help="one JSON object")):
    """Tokens per file, in total and on the Chinese lines, per tokenizer, with ratios (and costs)."""
    from .eval.tokens import compare, costs, load_prices, markdown

    result = compare(paths, [t.strip() for t in tokenizers.split(",") if t.strip()], baseline)
    cost_rows = costs(result, load_prices(str(prices) if prices else None)) if cost or prices else None
    if as_json:
        print(json.dumps({**result, "costs": cost_rows}, ensure_ascii=False, indent=1))
    else:
        print(markdown(result, cost_rows, per_file=per_file))


@app.command()
def report(inputs: list[Path] = typer.Argument(..., help="eval output folders and `tokens compare --json` files"),
           out: Path = typer.Option(Path("report.md"), "--out", help="the Markdown card (HTML and PNG beside it)")):
    """One report card (Markdown + HTML + charts) from eval results and tokenizer comparisons."""
    from .eval.card import write

    for kind, path in write(inputs, out).items():
        print(f"{kind}: {path}")


train_app = typer.Typer(help="Train: continued pre-training and SFT, full or LoRA.", no_args_is_help=True)
lora_app = typer.Typer(help="LoRA adapters.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(lora_app, name="lora")


def _train(stage: str, **flags) -> None:
    from .train.loop import TrainConfig, load_toml, train

    config_file, resume, resume_from, layers, selective = (
        flags.pop(k) for k in ("config", "resume", "resume_from", "layers", "selective_checkpointing"))
    if selective:
        flags["gradient_checkpointing"] = "selective"
    settings = {"stage": stage, **(load_toml(config_file) if config_file else {})}
    settings.update({k: (str(v) if isinstance(v, Path) else v) for k, v in flags.items() if v is not None})
    if layers is not None:
        settings.setdefault("model_overrides", {})["num_hidden_layers"] = layers
    metrics = train(TrainConfig(**settings), resume=str(resume_from) if resume_from else resume)
    if os.environ.get("RANK", "0") == "0":              # under torchrun, one summary line
        print(json.dumps(metrics))


def _train_command(stage: str):
    def command(
        data: Optional[Path] = typer.Option(None, "--data", help="a `data build` / `data sft` output folder"),
        out: Optional[Path] = typer.Option(None, "--out", help="the run folder"),
        model: Optional[Path] = typer.Option(None, "--model", help="HF checkpoint to start from"),
        preset: Optional[str] = typer.Option(None, "--preset", help="or a published shape, random weights"),
        layers: Optional[int] = typer.Option(None, "--layers", help="override num_hidden_layers of --preset"),
        tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="default: the model's, else qwen"),
        config: Optional[Path] = typer.Option(None, "--config", help="TOML file of settings (flags win)"),
        steps: Optional[int] = typer.Option(None, "--steps"),
        seq_len: Optional[int] = typer.Option(None, "--seq-len"),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="sequences per micro-batch per process"),
        grad_accum: Optional[int] = typer.Option(None, "--grad-accum"),
        lr: Optional[float] = typer.Option(None, "--lr"),
        warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps"),
        weight_decay: Optional[float] = typer.Option(None, "--weight-decay"),
        grad_clip: Optional[float] = typer.Option(None, "--grad-clip"),
        precision: Optional[str] = typer.Option(None, "--precision", help="auto, bf16 or fp32"),
        gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing"),
        selective_checkpointing: bool = typer.Option(False, "--selective-checkpointing",
                                                     help="recompute all but the matmuls and attention in backward"),
        compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model"),
        seed: Optional[int] = typer.Option(None, "--seed"),
        save_every: Optional[int] = typer.Option(None, "--save-every"),
        eval_every: Optional[int] = typer.Option(None, "--eval-every"),
        log_every: Optional[int] = typer.Option(None, "--log-every"),
        lora: Optional[bool] = typer.Option(None, "--lora/--full", help="train a LoRA adapter (PEFT)"),
        lora_r: Optional[int] = typer.Option(None, "--lora-r"),
        lora_alpha: Optional[int] = typer.Option(None, "--lora-alpha"),
        lora_dropout: Optional[float] = typer.Option(None, "--lora-dropout"),
        code_aware_attention: Optional[bool] = typer.Option(None, "--code-aware-attention/--plain-attention"),
        peak_tflops: Optional[float] = typer.Option(None, "--peak-tflops", help="for MFU on unlisted devices"),
        time_limit: Optional[float] = typer.Option(None, "--time-limit", help="seconds: the schedule is shortened "
                                                   "to fit (timed over the first steps), then a hard stop"),
        resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its newest checkpoint"),
        resume_from: Optional[Path] = typer.Option(None, "--resume-from", help="continue from this checkpoint"),
    ):
        flags = {k: v for k, v in locals().items() if k != "stage"}       # locals() holds the closure's `stage`
        _train(stage, **flags)
    return command


train_app.command("pretrain", help="Continued pre-training (or from scratch with --preset) on `data build` shards.")(
    _train_command("pretrain"))
train_app.command("sft", help="Supervised fine-tuning on `data sft` shards (loss on assistant turns and "
                               "completions only).")(_train_command("sft"))


@lora_app.command("merge")
def lora_merge(base: Path = typer.Argument(..., help="the base HF checkpoint"),
               adapter: Path = typer.Argument(..., help="a PEFT adapter folder"),
               out: Path = typer.Argument(..., help="where to write the merged checkpoint"),
               dtype: str = typer.Option("auto", help="auto (the base's), float32, bfloat16 or float16")):
    """Merge a LoRA adapter into its base: a plain HF checkpoint zhcoder and transformers load."""
    from .train.lora import merge

    print(merge(base, adapter, out, dtype=dtype))


export_app = typer.Typer(help="Export checkpoints to other formats.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("gguf")
def export_gguf_command(checkpoint: Optional[Path] = typer.Argument(None, help="checkpoint folder (qwen2, qwen3 or "
                                                                       "qwen3_moe; default: the default model)"),
                        out: Path = typer.Option(..., "--out", help="the .gguf file to write"),
                        dtype: str = typer.Option("f16", help="f16, bf16, f32 or q8_0 (norms, biases, router: f32)"),
                        drop_code_bias: bool = typer.Option(False, "--drop-code-bias",
                                                            help="export without a trained code-aware attention "
                                                                 "bias (llama.cpp cannot compute it)")):
    """Write a GGUF file that llama.cpp and Ollama run (weights, hyper-parameters, tokenizer, chat template)."""
    from .checkpoint import default_model
    from .export import export_gguf

    path = export_gguf(default_model(checkpoint), out, dtype=dtype, drop_code_bias=drop_code_bias, progress=sys.stderr.isatty())
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {dtype})")


USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, ConnectionError, ZhcoderError)


def main() -> None:
    try:
        app(standalone_mode=False)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as e:  # bad flags and arguments
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `zhcoder`: the help, not an error
            print(e.format_message())
            sys.exit(0)
        print(f"zhcoder: error: {e.format_message()}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except USER_ERRORS as e:
        if os.environ.get("ZHCODER_DEBUG"):
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"zhcoder: error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
