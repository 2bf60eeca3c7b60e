"""Serving load: requests/s and tokens/s of `zhcoder serve` at 1, 8 and 32 concurrent streaming clients, with
continuous batching (--max-batch 32) and one request at a time (--max-batch 1), on the same checkpoint.

    python benchmarks/serve_load.py                          # a random Qwen3 shape of ~10 M parameters
    python benchmarks/serve_load.py --model DIR --tokens 64

Each client sends greedy /v1/completions requests (stream=True) through the official openai client, one after
another, for `--requests` requests per concurrency level in total. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_checkpoint(folder: Path) -> Path:
    from zhcoder.checkpoint import save_model
    from zhcoder.config import ModelConfig
    from zhcoder.model import QwenForCausalLM, init_weights
    from zhcoder.tokenizer import Tokenizer

    config = ModelConfig(model_type="qwen3", vocab_size=151936, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         torch_dtype="float32")
    model = QwenForCausalLM(config)
    init_weights(model, std=0.2, seed=0)
    save_model(model, folder, tokenizer=Tokenizer.qwen())
    return folder


def measure(model_dir: Path, max_batch: int, clients: int, requests: int, tokens: int) -> dict:
    """Start `zhcoder serve` in its own process (so the clients here do not share its interpreter), load it."""
    import httpx
    import openai

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "zhcoder.cli", "serve", "--model", str(model_dir), "--port",
                               str(port), "--max-batch", str(max_batch), "--queue-size", "256", "--model-name", "m"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=600)
        per_client = max(requests // clients, 1)
        generated, latencies = [0] * clients, []

        def run(index: int) -> None:
            for r in range(per_client):
                start = time.perf_counter()
                stream = client.completions.create(model="m", prompt=f"# 订单 {index}-{r}\ndef 处理(订单):\n",
                                                   max_tokens=tokens, temperature=0, stream=True,
                                                   stream_options={"include_usage": True})
                for chunk in stream:
                    if chunk.usage is not None:
                        generated[index] += chunk.usage.completion_tokens
                latencies.append(time.perf_counter() - start)

        steps_before = httpx.get(url + "/health").json()["decode_steps"]
        threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
        steps = httpx.get(url + "/health").json()["decode_steps"] - steps_before
    finally:
        server.terminate()
        server.wait(30)
    done = per_client * clients
    return {"max_batch": max_batch, "clients": clients, "requests": done, "seconds": round(seconds, 2),
            "requests_per_s": round(done / seconds, 2), "tokens_per_s": round(sum(generated) / seconds, 1),
            "median_latency_s": round(statistics.median(latencies), 3),
            # each request's first token comes from its prefill, the others from shared decode steps
            "mean_batch": round((sum(generated) - done) / max(steps, 1), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="checkpoint folder (default: a random ~10M-parameter Qwen3)")
    parser.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    parser.add_argument("--tokens", type=int, default=32, help="max_tokens per request")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or tiny_checkpoint(Path(tmp) / "tiny")
        rows = [measure(model, batch, clients, args.requests, args.tokens)
                for clients in args.clients for batch in (32, 1)]
    print(f"{model if args.model else 'random Qwen3, 9.8 M parameters (152K vocabulary)'}; "
          f"{args.requests} requests x {args.tokens} tokens per level, greedy, streamed")
    print("| clients | scheduler | requests/s | tokens/s | median latency (s) | mean decode batch |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        mode = "continuous batching" if row["max_batch"] > 1 else "one at a time"
        print(f"| {row['clients']} | {mode} | {row['requests_per_s']} | {row['tokens_per_s']} | "
              f"{row['median_latency_s']} | {row['mean_batch']} |")


if __name__ == "__main__":
    sys.exit(main())
