"""Serving: an OpenAI-compatible HTTP API (app.py) over continuous batching (scheduler.py), or in front of
another OpenAI-compatible server (proxy.py). See docs/serving.md.

    zhcoder serve --model DIR [--host 127.0.0.1] [--port 8000] [--api-key KEY]
    zhcoder serve --upstream http://gpu-node:8000/v1
    pytest -q tests/test_serve.py
"""
