"""`zhcoder export gguf` through llama.cpp itself (llama-cpp-python): does llama.cpp load the GGUF, tokenize like
zhcoder, and compute the same logits?

For each family (2 layers of a published shape, random weights; biases and norms randomised too so that their
mapping matters) and each GGUF type, the script exports the checkpoint, loads it with `llama_cpp.Llama`, and
compares against zhcoder's own fp32 forward pass:
  * tokenization of a few Chinese / code / chat-marker strings (ids and detokenized bytes),
  * logits at every prompt position (max |difference|, that over the logits' standard deviation),
  * the teacher-forced next-token argmax at every position, and a 16-token greedy continuation.
Prints a table and writes JSON. Needs llama-cpp-python (not a zhcoder dependency; a CPU build from source:
CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install llama-cpp-python).

    python benchmarks/gguf_llamacpp.py [--dtypes f32,f16,bf16,q8_0] [--out benchmarks/gguf_llamacpp.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from zhcoder.chat import builtin_template
from zhcoder.checkpoint import load_model, save_model
from zhcoder.config import preset
from zhcoder.export import export_gguf
from zhcoder.model import QwenForCausalLM, init_weights
from zhcoder.tokenizer import Tokenizer

FAMILIES = {
    "qwen3": dict(shape="qwen3-0.6b, 2 layers", name="qwen3-0.6b", template="qwen3", eos=151645, overrides={}),
    "qwen2": dict(shape="qwen2.5-coder-0.5b, 2 layers (q/k/v bias)", name="qwen2.5-coder-0.5b", template="qwen2.5",
                  eos=151643, overrides={}),
    "qwen3_moe": dict(
        shape="qwen3-coder-30b-a3b narrowed: 2 layers, hidden 512, 8 experts top-2", name="qwen3-coder-30b-a3b",
        template="qwen3-coder", eos=151645,
        overrides=dict(hidden_size=512, num_attention_heads=8, num_key_value_heads=4, head_dim=64,
                       moe_intermediate_size=256, num_experts=8, num_experts_per_tok=2)),
}
PROMPT = ("<|im_start|>user\n写一个函数，计算列表的和。<|im_end|>\n<|im_start|>assistant\n"
          "def 求和(数据):\n    return sum(数据)")
TOKENIZE = [PROMPT, "def fib(n):\n\tif n < 2: return n  # 斐波那契\n", "  x = {'键': [1, 2, 3]}；\r\n\n\n  ",
            "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>", "Hello, 世界! 🦙 3.14159 ...... '''ll've"]
NEW_TOKENS = 16


def make_checkpoint(spec: dict, folder: Path) -> None:
    config = preset(spec["name"], num_hidden_layers=2, **spec["overrides"])
    config.eos_token_id = spec["eos"]
    model = QwenForCausalLM(config)
    init_weights(model, std=0.02, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias") or name.endswith("norm.weight"):
                p.copy_(1.0 * name.endswith("norm.weight") + 0.1 * torch.randn(p.shape, generator=generator))
    save_model(model, folder, tokenizer=Tokenizer.qwen(), chat_template=builtin_template(spec["template"]))


def greedy(next_logits, prompt: list[int], n: int) -> list[int]:
    tokens = list(prompt)
    for _ in range(n):
        tokens.append(int(np.argmax(next_logits(tokens))))
    return tokens[len(prompt):]


def compare(folder: Path, dtype: str, work: Path, threads: int) -> dict:
    import llama_cpp

    tokenizer = Tokenizer.from_dir(folder)
    model = load_model(folder, dtype="float32")
    out = work / f"{folder.name}-{dtype}.gguf"
    start = time.perf_counter()
    export_gguf(folder, out, dtype=dtype)
    export_s = time.perf_counter() - start
    # fp32 KV cache (GGML type 0), so that only the GGUF's weight storage differs from zhcoder's fp32 run
    llm = llama_cpp.Llama(str(out), n_ctx=512, n_threads=threads, n_batch=512, logits_all=True, verbose=False,
                          type_k=0, type_v=0)
    ids = [tokenizer.encode(text) for text in TOKENIZE]
    theirs = [llm.tokenize(text.encode(), add_bos=False, special=True) for text in TOKENIZE]
    detok = [llm.detokenize(i, special=True) == text.encode() for i, text in zip(ids, TOKENIZE)]
    prompt = ids[0]
    with torch.no_grad():
        ours_logits = model(torch.tensor([prompt]))[0].numpy()
    llm.reset()
    llm.eval(prompt)
    their_logits = np.array(llm.scores[: len(prompt)], dtype=np.float32)
    diff = np.abs(ours_logits - their_logits)

    def ours_next(tokens):
        with torch.no_grad():
            return model(torch.tensor([tokens]), last_only=True)[0, -1].numpy()

    def their_next(tokens):
        llm.reset()
        llm.eval(tokens)
        return np.array(llm.scores[len(tokens) - 1], dtype=np.float32)

    ours_greedy, their_greedy = greedy(ours_next, prompt, NEW_TOKENS), greedy(their_next, prompt, NEW_TOKENS)
    same_prefix = next((i for i, (a, b) in enumerate(zip(ours_greedy, their_greedy)) if a != b), NEW_TOKENS)
    result = {
        "dtype": dtype, "gguf_mib": round(out.stat().st_size / 2**20, 1), "export_s": round(export_s, 2),
        "tokenization_equal": [a == b for a, b in zip(ids, theirs)], "detokenization_equal": detok,
        "prompt_tokens": len(prompt), "logit_std": float(ours_logits.std()),
        "max_abs_logit_diff": float(diff.max()), "max_diff_over_std": float(diff.max() / ours_logits.std()),
        "argmax_agreement": float((ours_logits.argmax(-1) == their_logits.argmax(-1)).mean()),
        "greedy_tokens_equal": same_prefix, "greedy_ours": ours_greedy, "greedy_llamacpp": their_greedy,
    }
    llm.close()
    out.unlink()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtypes", default="f32,f16,bf16,q8_0")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated keys of FAMILIES")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("gguf_llamacpp.json"))
    args = parser.parse_args()
    import llama_cpp

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for family in args.families.split(","):
            folder = work / family
            make_checkpoint(FAMILIES[family], folder)
            for dtype in args.dtypes.split(","):
                row = {"family": family, "shape": FAMILIES[family]["shape"],
                       **compare(folder, dtype, work, args.threads)}
                rows.append(row)
                print(f"{family:10s} {dtype:5s} {row['gguf_mib']:8.1f} MiB"
                      f"  tokenize {all(row['tokenization_equal'])!s:5s}"
                      f"  max|dlogit| {row['max_abs_logit_diff']:.2e} ({row['max_diff_over_std']:.1e} std)"
                      f"  argmax {row['argmax_agreement']:.3f}  greedy {row['greedy_tokens_equal']}/{NEW_TOKENS}",
                      flush=True)
    report = {"llama_cpp_python": llama_cpp.__version__, "machine": platform.machine(), "prompt": PROMPT,
              "new_tokens": NEW_TOKENS, "torch": torch.__version__, "rows": rows}
    args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
