"""The parse smoke test of zhcoder-nano: greedy completion of two function prompts (128 new tokens at most,
HumanEval's stop strings) must stop by itself and parse with its prompt. tests/test_nano.py runs it on the shipped
model; nano_gpu_run.sh on each freshly trained arm, so a device call says at once whether its weights can ship.

    python recipes/nano/smoke.py MODEL_DIR [MODEL_DIR ...] [--device cuda]   # each completion; exit 1 if one fails
    python recipes/nano/smoke.py RUNS/plain/stage2/final --bf16-weights      # fp32 training weights, as shipped
"""

from __future__ import annotations

import argparse
import ast
import sys

PROMPTS = ("def 计算订单总价(订单列表):\n", 'def add(a, b):\n    """Return the sum of a and b."""\n')
STOPS = ["\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#"]


def check(model_dir, device: str = "cpu", bf16_weights: bool = False) -> list[tuple[str, str, str | None]]:
    """(prompt, completion, what failed or None) for each prompt. `bf16_weights`: round fp32 training weights to
    bf16 first, as ship.py stores them (a marginal greedy choice can flip on that rounding)."""
    import torch

    from zhcoder.engine import Engine, SamplingParams

    engine = Engine.from_dir(model_dir, dtype="float32", device=device, compile=False)   # as the test runs it
    if bf16_weights:
        with torch.no_grad():
            for parameter in engine.model.parameters():
                parameter.copy_(parameter.to(torch.bfloat16))
    results = []
    for prompt in PROMPTS:
        completion = engine.generate([prompt], SamplingParams(max_new_tokens=128, stop=STOPS))[0]
        problem = None
        if completion.finish_reason != "stop":
            problem = "no stop within 128 tokens"
        else:
            try:
                ast.parse(prompt + completion.text)
            except SyntaxError as error:
                problem = f"does not parse: {error.msg} (line {error.lineno})"
        results.append((prompt, completion.text, problem))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16-weights", action="store_true", help="round the weights to bf16 first (as shipped)")
    args = parser.parse_args()
    failed = False
    for model in args.models:
        for prompt, text, problem in check(model, args.device, args.bf16_weights):
            print(f"smoke {model}: {'FAIL ' + problem if problem else 'ok'}\n{prompt}{text}\n", flush=True)
            failed = failed or problem is not None
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
