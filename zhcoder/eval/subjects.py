"""Subjects: where the code under test comes from.

- a samples file (`--samples FILE`): JSONL rows with `task_id` and `completion` (continues the prompt),
  `solution` (a whole program) or `generation` (CodeFuse / HumanEval-X files), validated with line numbers;
- a local model (`--model DIR`), through zhcoder's engine;
- any OpenAI-compatible endpoint (`--endpoint URL --endpoint-model NAME`), through the `openai` client:
  key from an environment variable, concurrency, retries with backoff, timeouts.

Base mode continues `problem.prompt` and stops at `problem.stop`; chat mode sends `problem.instruction` and
takes the first fenced code block of the reply as the solution.

    zhcoder eval humaneval --samples samples.jsonl --out runs/he
    zhcoder eval humaneval-zh --endpoint http://127.0.0.1:8000/v1 --endpoint-model qwen --mode chat --out runs/he-zh
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

CODE_FIELDS = ("completion", "solution", "generation")


@dataclass
class Sample:
    task_id: str
    completion_id: int
    completion: str | None = None  # continues the problem's prompt
    solution: str | None = None  # a whole program

    def to_json(self) -> dict:
        row = {"task_id": self.task_id, "completion_id": self.completion_id}
        row.update({k: v for k, v in (("completion", self.completion), ("solution", self.solution)) if v is not None})
        return row


class SamplesError(ValueError):
    """A samples file that cannot be scored as it is; the message lists the bad lines."""


def _id_mapping(ids: set[str], known: set[str]) -> dict[str, str]:
    """Map ids like `Python/12` (HumanEval-X, CodeFuse) onto a task's `HumanEval/12` when every foreign id has
    one prefix and its number exists in the task; otherwise no mapping."""
    foreign = ids - known
    prefixes = {i.rsplit("/", 1)[0] for i in foreign if "/" in i}
    task_prefixes = {k.rsplit("/", 1)[0] for k in known if "/" in k}
    if not foreign or len(prefixes) != 1 or len(task_prefixes) != 1 or any("/" not in i for i in foreign):
        return {}
    target = task_prefixes.pop()
    mapping = {i: f"{target}/{i.rsplit('/', 1)[1]}" for i in foreign}
    return mapping if all(v in known for v in mapping.values()) else {}


def read_samples(path: str | Path, task_ids: list[str]) -> list[Sample]:
    """Read and validate a samples file; every problem found is reported (up to 20) with its line number."""
    path = Path(path)
    if not path.is_file():
        raise SamplesError(f"samples file not found: {path}")
    known = set(task_ids)
    rows, errors = [], []
    with path.open(encoding="utf-8", errors="strict") as handle:
        try:
            lines = list(handle)
        except UnicodeDecodeError as e:
            raise SamplesError(f"{path}: not UTF-8 text ({e})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(f"line {number}: bad JSON ({e.msg})")
            continue
        if not isinstance(row, dict) or not isinstance(row.get("task_id"), str):
            errors.append(f"line {number}: no task_id")
            continue
        code = [f for f in CODE_FIELDS if isinstance(row.get(f), str)]
        if not code:
            errors.append(f"line {number}: no completion, solution or generation string")
            continue
        rows.append((number, row, code[0]))
    mapping = _id_mapping({row["task_id"] for _, row, _ in rows}, known)
    samples, counters = [], {}
    for number, row, field in rows:
        task_id = mapping.get(row["task_id"], row["task_id"])
        if task_id not in known:
            errors.append(f"line {number}: unknown task_id {row['task_id']!r}")
            continue
        completion_id = counters.get(task_id, 0)
        counters[task_id] = completion_id + 1
        text = row[field]
        samples.append(Sample(task_id, completion_id, solution=text) if field == "solution"
                       else Sample(task_id, completion_id, completion=text))
    if errors:
        shown = "; ".join(errors[:20]) + (f"; and {len(errors) - 20} more" if len(errors) > 20 else "")
        raise SamplesError(f"{path}: {len(errors)} bad line(s), nothing scored: {shown}")
    if not samples:
        raise SamplesError(f"{path}: no samples")
    return samples


FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(reply: str) -> str:
    """The first ```python block of a chat reply (else the first fenced block, else the whole reply)."""
    blocks = FENCE.findall(reply)
    for language, body in blocks:
        if language.lower() in ("python", "py", "python3"):
            return body
    return blocks[0][1] if blocks else reply


@dataclass
class GenerationSettings:
    mode: str = "base"  # "base" (completion with stop strings) or "chat" (instruction, fenced code)
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    seed: int | None = None


def _as_sample(problem, completion_id: int, text: str, mode: str) -> Sample:
    if mode == "chat":
        return Sample(problem.task_id, completion_id, solution=extract_code(text))
    return Sample(problem.task_id, completion_id, completion=text)


class LocalModel:
    """Generates with zhcoder's engine from a checkpoint folder."""

    def __init__(self, model_dir: str, settings: GenerationSettings, dtype: str = "auto", batch_size: int = 8):
        from ..chat import render_chat
        from ..engine import Engine

        self.engine = Engine.from_dir(model_dir, dtype=dtype)
        self.render_chat, self.settings, self.batch_size = render_chat, settings, batch_size
        self.name, self.label = str(Path(model_dir).resolve()), Path(model_dir).name
        self.too_long = 0                      # prompts scored empty because they do not fit the context

    def generate(self, work: list[tuple]) -> Iterator[Sample]:
        """work: (problem, completion_id) pairs; yields samples as batches finish."""
        from ..sampling import SamplingParams

        s = self.settings
        template = self.engine.tokenizer.chat_template or "qwen3"
        for start in range(0, len(work), self.batch_size):
            batch = work[start : start + self.batch_size]
            if s.mode == "chat":
                prompts = [self.render_chat([{"role": "user", "content": p.instruction}], template=template)
                           for p, _ in batch]
            else:
                prompts = [p.prompt for p, _ in batch]
            stops = sorted({stop for p, _ in batch for stop in p.stop}) if s.mode == "base" else []
            seed = None if s.seed is None else s.seed + start
            params = SamplingParams(max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                                    seed=seed, stop=stops)
            # a prompt the model's context cannot hold with max_new_tokens scores as an empty (failed) completion
            fits = [len(self.engine.encode(p)) + s.max_new_tokens <= self.engine.context_length for p in prompts]
            completions = iter(self.engine.generate([p for p, ok in zip(prompts, fits) if ok], params)
                               if any(fits) else [])
            for (problem, completion_id), ok in zip(batch, fits):
                if not ok:
                    self.too_long += 1
                    print(f"{problem.task_id}: prompt + max_new_tokens exceed the model's context of "
                          f"{self.engine.context_length} tokens; scored as an empty completion", file=sys.stderr)
                yield _as_sample(problem, completion_id, next(completions).text if ok else "", s.mode)


class EndpointError(ConnectionError):
    """An endpoint that kept failing after its retries."""


class Endpoint:
    """Any OpenAI-compatible API: /v1/completions in base mode, /v1/chat/completions in chat mode."""

    def __init__(self, url: str, model: str, settings: GenerationSettings, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, retries: int = 3, timeout_s: float = 120.0):
        from openai import OpenAI

        # retries are ours (with backoff and a clear final error), not the client's
        self.client = OpenAI(base_url=url, api_key=os.environ.get(api_key_env) or "none", max_retries=0,
                             timeout=timeout_s)
        self.url, self.model, self.settings = url, model, settings
        self.concurrency, self.retries = concurrency, retries
        self.name, self.label = f"{model}@{url}", model

    def _request(self, problem) -> str:
        s = self.settings
        common = dict(model=self.model, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_new_tokens)
        if s.seed is not None:
            common["seed"] = s.seed
        for attempt in range(self.retries + 1):
            try:
                if s.mode == "chat":
                    reply = self.client.chat.completions.create(
                        messages=[{"role": "user", "content": problem.instruction}], **common)
                    return reply.choices[0].message.content or ""
                reply = self.client.completions.create(prompt=problem.prompt, stop=problem.stop[:4] or None, **common)
                return reply.choices[0].text
            except Exception as e:  # connection errors, timeouts, 429/5xx: back off and retry
                status = getattr(e, "status_code", None)
                if status is not None and 400 <= status < 500 and status != 429:
                    raise EndpointError(f"{self.url}: {problem.task_id}: HTTP {status}: {e}") from None
                if attempt == self.retries:
                    raise EndpointError(
                        f"{self.url} failed after {self.retries + 1} attempts ({type(e).__name__}: {e})"
                    ) from None
                time.sleep(min(2.0**attempt, 30.0))
        raise AssertionError("unreachable")

    def generate(self, work: list[tuple]) -> Iterator[Sample]:
        mode = self.settings.mode
        with ThreadPoolExecutor(self.concurrency) as pool:
            futures = [(problem, cid, pool.submit(self._request, problem)) for problem, cid in work]
            try:
                for problem, cid, future in futures:
                    text = future.result()
                    # OpenAI's API allows 4 stop strings: cut the others here
                    if mode == "base":
                        cuts = [text.find(stop) for stop in problem.stop if stop in text]
                        text = text[: min(cuts)] if cuts else text
                    yield _as_sample(problem, cid, text, mode)
            finally:
                for _, _, future in futures:
                    future.cancel()
