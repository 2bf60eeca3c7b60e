"""Ship a trained zhcoder-nano arm as the embedded default model: bf16 weights, tokenizer and a model card.

    python recipes/nano/ship.py --run /tmp/nano/runs/plain --work /tmp/nano --scores /tmp/nano/eval/plain/scores.json \
        --ablation /tmp/nano/eval/ablation.md --hardware "one NVIDIA H200, torch 2.11" --out models/zhcoder-nano

RUN is a train.py arm folder (stage1/ and stage2/, each with metrics.jsonl and config.json; stage2/final is the
model unless --model names another, e.g. an SFT checkpoint that tools/nano_gpu_run.sh packed: then --sft-steps N).
WORK is build_corpus.py's folder: pretrain/sources.json (sources, licenses, tokens), pretrain/stats.json and
sft/stats.json feed the card's data section, and the tokenizer's efficiency is measured here against Qwen's and
o200k on held-out code (CodeXGLUE's Java/C# test pairs and the HumanEval / HumanEval-zh prompts, all kept out of
training by decontamination). OUT gets config.json, model.safetensors (bf16), tokenizer files (their chat template
the one the SFT data was rendered with, sft/stats.json's), generation_config.json, eval.json (the scores) and
README.md (the card).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from datetime import date
from pathlib import Path

from zhcoder.chat import builtin_template
from zhcoder.checkpoint import load_model, save_model
from zhcoder.eval.tasks import load_task
from zhcoder.eval.tokens import compare
from zhcoder.tokenizer import Tokenizer

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data"


def run_summary(stage_dir: Path, upto: int | None = None) -> dict:
    """Steps, tokens seen, wall time and mean throughput of one training stage, from its metrics.jsonl (its steps up
    to `upto` when given: an earlier checkpoint shipped)."""
    rows = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if upto is None or r.get("step", 0) <= upto]
    steps = [r for r in rows if "tokens" in r]
    config = json.loads((stage_dir / "config.json").read_text())
    per_step = config["seq_len"] * config["batch_size"] * config.get("grad_accum", 1)   # tokens_per_s counts these
    seconds = sum(per_step / r["tokens_per_s"] for r in steps if r.get("tokens_per_s"))
    tokens = sum(r["tokens"] for r in steps)
    losses = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
    timed = [(r["mfu"], per_step / r["tokens_per_s"]) for r in steps if r.get("mfu") is not None]
    last = steps[-20:]                                  # one batch's loss is noise; the card shows the last 20
    return {"steps": len(steps), "tokens": tokens, "seconds": round(seconds), "tokens_per_s": round(tokens / seconds),
            "final_loss": round(sum(r["loss"] for r in last) / len(last), 4),
            "validation_loss": round(losses[-1], 4) if losses else None,
            "mfu": round(sum(m * t for m, t in timed) / sum(t for _, t in timed), 4) if timed else None,   # by time
            "seq_len": config["seq_len"],
            "batch_size": config["batch_size"], "lr": config["lr"]}


def tokenizer_efficiency(model_dir: Path) -> dict:
    """Token counts of held-out code for nano's tokenizer, Qwen's and o200k (ratios to Qwen's)."""
    with tempfile.TemporaryDirectory() as folder:
        held_out = Path(folder) / "held-out"
        held_out.mkdir()
        for language in ("java", "cs"):
            text = (DATA / "codexglue" / f"test.java-cs.txt.{language}").read_text(encoding="utf-8")
            (held_out / f"codexglue-test.{language}").write_text(text, encoding="utf-8")
        for task in ("humaneval", "humaneval-zh"):
            prompts = "\n\n".join(p.prompt for p in load_task(task).problems)
            (held_out / f"{task}-prompts.py").write_text(prompts, encoding="utf-8")
        named = held_out.parent / "zhcoder-nano"                    # the table names a tokenizer by its folder
        named.mkdir()
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(model_dir / name, named / name)
        result = compare([str(held_out)], [str(named), "qwen", "o200k"], baseline="qwen")
    result["files"] = {Path(k).name: v for k, v in result["files"].items()}
    return result


INTERIM_NOTE = {"cpu": """
**Interim weights.** These were trained on two CPU cores with the smaller `cpu-*.toml` configs of the recipe
(no GPU was lent to the sessions that built them), on {tokens:.1f} M pre-training tokens: enough to make every
command work offline, far too little to write correct code. The GPU run of the recipe
(`tools/nano_gpu_run.sh`: the full-size model, both ablation arms) replaces them.
""", "gpu": """
**Interim weights.** These come from a GPU run of the recipe ({tokens:.1f} M pre-training tokens) but fail the parse
smoke test of tests/test_nano.py (which expects that failure while this note stands). {reason}The next GPU run of
the recipe replaces them.
"""}


def mfu(stage: dict) -> str:
    return "-" if stage["mfu"] is None else f"{100 * stage['mfu']:.1f} %"


def card(config, sources: list[dict], pretrain_stats: dict, sft_stats: dict, stages: dict, efficiency: dict,
         scores: dict, ablation: str | None, hardware: str, arm: str, interim: bool = False,
         note: str | None = None, cpu: bool = False, reason: str | None = None) -> str:
    params = config.num_parameters()
    interim_note = "" if not interim else INTERIM_NOTE["cpu" if cpu else "gpu"].format(
        tokens=stages["1 pre-training"]["tokens"] / 1e6, reason=f"{reason} " if reason else "")
    source_rows = "\n".join(f"| {s['source']} | {s['origin']} | {s['license']} | {s['files']:,} | {s['tokens']:,} |"
                            for s in sources)
    eff_rows = "\n".join(
        f"| {efficiency['tokenizers'][n]} | {efficiency['total'][n]:,} | {efficiency['ratio'][n]} | "
        f"{efficiency['chinese_lines'][n]:,} | {efficiency['chinese_ratio'][n]} |" for n in efficiency["tokenizers"])
    stage_rows = "\n".join(
        f"| {name} | {s['steps']:,} | {s['batch_size']} x {s['seq_len']} | {s['tokens']:,} | {s['seconds']:,} | "
        f"{s['tokens_per_s']:,} | {mfu(s)} | {s['final_loss']} | "
        f"{s['validation_loss']} |" for name, s in stages.items())
    loss = scores["validation_loss"]
    score_rows = "\n".join(f"| {task} | {scores[task]['pass@1']:.2f} | {scores[task]['n_tasks']} |"
                           for task in ("humaneval", "humaneval-zh", "mbpp"))
    removed = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in pretrain_stats["removed"].items())
    train_split = pretrain_stats["splits"]["train"]
    return f"""---
license: apache-2.0
language: [code, zh, en]
pipeline_tag: text-generation
---
# zhcoder-nano

zhcoder's embedded default model: a {params / 1e6:.1f} M-parameter Qwen3-architecture code model trained from
scratch by zhcoder's own pipeline (`recipes/nano/`), so that every `zhcoder` command works offline with no
download. It is trained to write small Python functions from a signature or a Chinese or English docstring, and
it is the proof that the pipeline runs end to end. It is **not** a useful coding assistant: use a real Qwen3-Coder
checkpoint (`--model DIR`) for real work.

Shipped arm: **{arm}**. Card written {date.today().isoformat()} by `recipes/nano/ship.py`.
{interim_note}
## Model
Qwen3 architecture (`model_type: qwen3`, loads in transformers as `Qwen3ForCausalLM`): {config.num_hidden_layers}
layers, hidden {config.hidden_size}, MLP {config.intermediate_size}, {config.num_attention_heads} query heads and
{config.num_key_value_heads} key/value heads of {config.head_dim}, QK-norm, RoPE θ {config.rope_theta:g}, tied
embeddings, vocabulary {config.vocab_size:,}, context {config.max_position_embeddings:,}.
Code-aware attention bias: {"on" if config.code_aware_attention else "off"}. {params:,} parameters,
{params * 2 / 2**20:.1f} MiB in bf16.

## Data
`python recipes/nano/build_corpus.py --work WORK` rebuilds everything from these sources with
`zhcoder data build` (filters, secret redaction, exact and MinHash dedup, decontamination against every
evaluation set, FIM at rate 0.5): {train_split['n_tokens']:,} training tokens in {train_split['n_documents']:,}
documents. Removed: {removed}. Tokens below are of the kept text, counted with nano's tokenizer.

| source | origin | license | files kept | tokens |
|---|---|---|---|---|
{source_rows}

SFT (stage 2): {sft_stats['kept']:,} samples ({sft_stats['train_tokens']:,} training tokens; {sft_stats['validation_samples']} held
out). {sft_stats['by_format']['messages']['kept']:,} are instruction-code conversations: docstring -> function
pairs mined from the corpus (Chinese and English, `recipes/nano/synth_sft.py`) and 306 Chinese and English pairs
written for this model (`recipes/nano/sft_written.jsonl`, each checked by `check_written.py`).
{sft_stats['by_format'].get('completion', {}).get('kept', 0):,} are plain prompt-completion rows of the same mined
functions (signature + docstring -> body, signature -> docstring + body), so that plain completion does not take up
the Markdown fences of the chat answers.
Conversations were rendered with the `{sft_stats['template']}` chat template (ChatML), which tokenizer_config.json
carries, and so does an exported GGUF.

## Tokenizer
`zhcoder tokenizer train` (byte-level BPE, Qwen's pre-tokenizer and special tokens) on the corpus: 16,384 learned
tokens. On held-out code ({efficiency['characters']:,} characters: CodeXGLUE's Java/C# test pairs, the HumanEval
and HumanEval-zh prompts), against Qwen's 151,643-token vocabulary:

| tokenizer | tokens | ratio | Chinese-line tokens | ratio |
|---|---|---|---|---|
{eff_rows}

## Compute
{hardware}. {"`python recipes/nano/train.py --cpu` (both arms at once, a core each; stage 1 `cpu-pretrain.toml`, stage 2 `cpu-sft.toml`)" if cpu else "`bash tools/nano_gpu_run.sh` (`train.py --together`: both arms at once; stage 1 `pretrain.toml`, stage 2 `sft.toml`)"}:

| stage | steps | batch | tokens seen | seconds | tokens/s | MFU | train loss (last 20 steps) | validation loss |
|---|---|---|---|---|---|---|---|---|
{stage_rows}

{note or ""}

## Scores
zhcoder's harness, greedy, base mode (`python recipes/nano/evaluate.py`):

| task | pass@1 (%) | problems |
|---|---|---|
{score_rows}

Validation loss (held-out split of the build): {loss['overall']:.4f} nats/token overall, {loss['boundary']:.4f} on
code-boundary tokens ({loss['boundary_tokens']:,} of {loss['tokens']:,}). HumanEval completions that parse
(`ast.parse(prompt + completion)`): {100 * scores['humaneval_parse_rate']:.1f} % (a low bar: HumanEval's stop
strings cut most completions after a line or two).

## Ablation: the code-aware attention bias
{ablation or "Not measured for this model: the ablation (same data, seed and steps with the bias on and off) is part of the GPU run, `tools/nano_gpu_run.sh`."}

## Intended use and limits
- Intended: the offline default of `zhcoder complete / fim / chat / serve / demo / eval`, tests, demos of the
  pipeline, and a starting point for experiments with the recipe.
- Limits: a model this small trained on {stages["1 pre-training"]["tokens"] / 1e6:.1f} M tokens completes simple patterns and often writes plausible but
  wrong code; it knows little beyond Python's standard library and the Chinese SDKs it read; chat is shallow.
  Never run its code without review. Secrets in the corpus were redacted, but the model may still reproduce
  identifiers, URLs or names from its training files.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="train.py's run folder of one arm")
    parser.add_argument("--work", type=Path, required=True, help="build_corpus.py's folder")
    parser.add_argument("--scores", type=Path, required=True, help="evaluate.py's scores.json of this model")
    parser.add_argument("--ablation", type=Path, help="evaluate.py's ablation.md of both arms")
    parser.add_argument("--hardware", required=True, help="where it was trained, e.g. 'one NVIDIA H200, torch 2.11'")
    parser.add_argument("--label", help="what the card calls the shipped arm (default: RUN's folder name)")
    parser.add_argument("--note", help="a line for the compute section (e.g. how the run went)")
    parser.add_argument("--interim", action="store_true", help="say on the card that these are interim weights")
    parser.add_argument("--interim-reason", help="with --interim: what the card says went wrong")
    parser.add_argument("--cpu", action="store_true", help="the weights come from `train.py --cpu` (cpu-*.toml)")
    parser.add_argument("--model", type=Path, help="the weights to ship (default RUN/stage2/final): an earlier SFT "
                        "checkpoint, or nano_gpu_run.sh's packed arm unpacked with tokenizer files beside it")
    parser.add_argument("--sft-steps", type=int, help="the SFT step of --model: the card counts stage 2 up to it")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    final = args.model or args.run / "stage2" / "final"
    model = load_model(final, dtype="bfloat16")
    tokenizer = Tokenizer.from_dir(final)
    sft_stats = json.loads((args.work / "sft" / "stats.json").read_text())
    # the template the SFT data was rendered with (build_corpus.py: qwen3), so chat and the GGUF use the same one
    template = tokenizer.chat_template or builtin_template(sft_stats["template"])
    save_model(model, args.out, tokenizer=tokenizer, chat_template=template)
    scores = json.loads(args.scores.read_text())
    scores["validation_loss"].pop("rows", None)                    # evaluate.py's per-row sums: not for the card
    (args.out / "eval.json").write_text(json.dumps(scores, indent=1) + "\n")
    stages = {"1 pre-training": run_summary(args.run / "stage1"),
              "2 SFT": run_summary(args.run / "stage2", args.sft_steps)}
    text = card(model.config, json.loads((args.work / "pretrain" / "sources.json").read_text()),
                json.loads((args.work / "pretrain" / "stats.json").read_text()),
                sft_stats, stages, tokenizer_efficiency(final),
                scores, args.ablation.read_text() if args.ablation else None, args.hardware,
                args.label or args.run.name, args.interim, args.note, args.cpu, args.interim_reason)
    (args.out / "README.md").write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
