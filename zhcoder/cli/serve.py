"""`zhcoder serve` (an OpenAI-compatible server, zhcoder.serve) and `zhcoder demo` (the Gradio demo, zhcoder.demo).

    zhcoder serve --model MODEL_DIR --port 8000 --api-key KEY
    zhcoder serve --upstream http://gpu-host:8000/v1            # front another OpenAI-compatible server
    zhcoder demo --model MODEL_DIR                               # or --server http://host:8000/v1
"""

from __future__ import annotations

import socket
from typing import Optional

import typer

from zhcoder.cli.app import CompileOption, ModelOption, QuantizeOption, UsageError, app


def check_port(host: str, port: int) -> None:
    """Refuse a port another program holds, before anything is loaded (uvicorn would fail only after start-up)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UsageError(f"port {port} on {host} is in use ({error.strerror}): stop the program holding it, "
                             "or choose another --port") from None


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
          compile: Optional[bool] = CompileOption,
          quantize: Optional[str] = QuantizeOption,
          warmup: bool = typer.Option(False, "--warmup", help="compile the decode step before serving")):
    """An OpenAI-compatible server: chat, completions with suffix (FIM), /infill, tool calls, continuous batching."""
    import uvicorn

    from zhcoder.serve.app import build

    check_port(host, port)
    if upstream:
        from zhcoder.serve.proxy import create_proxy_app

        proxy = create_proxy_app(upstream, api_key=api_key, upstream_key=upstream_key,
                                 max_body_bytes=int(max_body_mb * 2**20))
        uvicorn.run(proxy, host=host, port=port, log_level="info", timeout_graceful_shutdown=15)
        return
    from zhcoder.checkpoint import default_model

    model = default_model(model)
    if min(max_batch, queue_size, max_model_len, max_tokens) < 1 or max_body_mb <= 0:
        raise UsageError("--max-batch, --queue-size, --max-model-len, --max-tokens-cap and --max-body-mb must be positive")
    device = "cuda" if __import__("torch").cuda.is_available() else "cpu"
    app_, _ = build(model, model_name=model_name, api_key=api_key, max_batch=max_batch, queue_size=queue_size,
                    max_model_len=max_model_len, max_tokens_cap=max_tokens, max_body_bytes=int(max_body_mb * 2**20),
                    dtype=dtype, device=device, warmup=warmup, quantize=quantize, compile=compile)
    uvicorn.run(app_, host=host, port=port, log_level="info", timeout_graceful_shutdown=15)


@app.command()
def demo(model: Optional[str] = ModelOption,
         server: Optional[str] = typer.Option(None, "--server", help="or an OpenAI-compatible server URL"),
         api_key: Optional[str] = typer.Option(None, "--api-key", envvar="ZHCODER_API_KEY", help="the server's key"),
         model_name: Optional[str] = typer.Option(None, "--model-name", help="server mode: the model id to use"),
         host: str = typer.Option("127.0.0.1"), port: int = typer.Option(7860),
         share: bool = typer.Option(False, "--share", help="a public Gradio link (needs the internet)")):
    """A Gradio web demo: streaming chat, fill-in-the-middle completion, Chinese/English interface."""
    from zhcoder.demo import launch

    if model and server:
        raise UsageError("give --model DIR or --server URL, not both")
    if not server:
        from zhcoder.checkpoint import default_model

        model = default_model(model)
    launch(model_dir=model, server=server, host=host, port=port, api_key=api_key, share=share, model_name=model_name)
