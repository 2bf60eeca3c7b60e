"""Serving: continuous batching (scheduler.py) behind an OpenAI-compatible HTTP API (app.py).

    zhcoder serve --model DIR [--host 127.0.0.1] [--port 8000] [--api-key KEY]
    pytest -q tests/test_serve.py
"""
