"""Checker for the hand-written SFT pairs of zhcoder-nano (``sft_written.jsonl``).

Each line of the JSONL file is one chat example::

    {"messages": [{"role": "user", "content": INSTRUCTION},
                  {"role": "assistant", "content": ANSWER}],
     "lang": "zh" | "en", "id": "w0001", "test": "assert f(1) == 2"}

``test`` is optional and is never shown to the model: it holds 1-3 ``assert``
lines that call the function defined in the answer.

For every row the checker verifies:

* the line is valid JSON with exactly the keys above, two messages
  (user, then assistant), ``lang`` in {zh, en} and an id like ``w0001``;
* the answer contains exactly one fenced ```python block, and nothing after it;
* the code parses with ``ast.parse`` and defines exactly one top-level
  function (top-level imports are allowed, nothing else), and the function has
  a docstring;
* the code runs (``exec`` in a fresh namespace, in a subprocess with a
  5-second timeout) without error, followed by the row's ``test`` lines if any;
* ids and instructions are unique across the file.

It prints per-language counts, the number of rows with tests and every failure,
and exits with status 1 if anything failed.

Usage (from the repository root)::

    python recipes/nano/check_written.py [path/to/sft_written.jsonl] [-j JOBS]
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DEFAULT_PATH = Path(__file__).with_name("sft_written.jsonl")
FENCE_RE = re.compile(r"```python\n(.*?)\n```", re.S)
ID_RE = re.compile(r"w\d{4,}")
TIMEOUT_S = 5

# Runs in a fresh interpreter: code and tests arrive as JSON on stdin.
RUNNER = """
import json, sys
payload = json.load(sys.stdin)
ns = {"__name__": "__written__"}
exec(compile(payload["code"], "<answer>", "exec"), ns)
if payload["test"]:
    exec(compile(payload["test"], "<test>", "exec"), ns)
"""


def check_format(row: object) -> tuple[list[str], str | None]:
    """Return (errors, code) for the static checks of one parsed row."""
    errors: list[str] = []
    if not isinstance(row, dict):
        return ["row is not a JSON object"], None
    extra = set(row) - {"messages", "lang", "id", "test"}
    if extra:
        errors.append(f"unexpected keys {sorted(extra)}")
    if row.get("lang") not in ("zh", "en"):
        errors.append(f"bad lang {row.get('lang')!r}")
    if not isinstance(row.get("id"), str) or not ID_RE.fullmatch(row["id"]):
        errors.append(f"bad id {row.get('id')!r}")
    msgs = row.get("messages")
    if (
        not isinstance(msgs, list)
        or len(msgs) != 2
        or not all(isinstance(m, dict) and set(m) == {"role", "content"} for m in msgs)
        or [m["role"] for m in msgs] != ["user", "assistant"]
        or not all(isinstance(m["content"], str) and m["content"].strip() for m in msgs)
    ):
        errors.append("messages must be [user, assistant] with non-empty string content")
        return errors, None
    answer = msgs[1]["content"]
    if answer.count("```") != 2:
        errors.append(f"answer must hold exactly one fenced block, found {answer.count('```')} fences")
    blocks = FENCE_RE.findall(answer)
    if len(blocks) != 1:
        errors.append(f"expected exactly one ```python block, found {len(blocks)}")
        return errors, None
    if not answer.rstrip().endswith("```"):
        errors.append("text after the code block")
    code = blocks[0]
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        errors.append(f"code does not parse: {exc}")
        return errors, None
    funcs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    others = [
        n for n in tree.body
        if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Import, ast.ImportFrom))
    ]
    if len(funcs) != 1:
        errors.append(f"expected exactly one top-level function, found {len(funcs)}")
    elif ast.get_docstring(funcs[0]) is None:
        errors.append("function has no docstring")
    if others:
        errors.append(f"unexpected top-level statements: {[type(n).__name__ for n in others]}")
    test = row.get("test")
    if test is not None:
        if not isinstance(test, str):
            errors.append("test must be a string")
        else:
            lines = [ln for ln in test.splitlines() if ln.strip()]
            try:
                ok = 1 <= len(lines) <= 3 and all(
                    isinstance(s, ast.Assert) for s in ast.parse(test).body
                ) and len(ast.parse(test).body) == len(lines)
            except SyntaxError:
                ok = False
            if not ok:
                errors.append("test must be 1-3 lines, each a single assert statement")
            elif funcs and not any(
                isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == funcs[0].name
                for n in ast.walk(ast.parse(test))
            ):
                errors.append("test never calls the function")
    return errors, code


def run_code(code: str, test: str | None) -> str | None:
    """Run code (+ test) in a subprocess; return an error message or None."""
    payload = json.dumps({"code": code, "test": test or ""})
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-c", RUNNER],
            input=payload, capture_output=True, text=True, timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {TIMEOUT_S}s"
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
        where = "test" if 'File "<test>"' in proc.stderr else "code"
        return f"{where} failed: {tail[0]}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH)
    parser.add_argument("-j", "--jobs", type=int, default=8, help="parallel subprocesses")
    args = parser.parse_args(argv)

    failures: list[str] = []
    rows: list[tuple[str, dict, str]] = []  # (label, row, code)
    langs: Counter[str] = Counter()
    seen_ids: dict[str, int] = {}
    seen_instr: dict[str, int] = {}
    n_lines = 0
    with_tests = Counter()

    for lineno, line in enumerate(args.path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            failures.append(f"line {lineno}: blank line")
            continue
        n_lines += 1
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            failures.append(f"line {lineno}: invalid JSON: {exc}")
            continue
        label = f"line {lineno} ({row.get('id') if isinstance(row, dict) else '?'})"
        errors, code = check_format(row)
        failures.extend(f"{label}: {e}" for e in errors)
        if not isinstance(row, dict):
            continue
        langs[row.get("lang")] += 1
        rid = row.get("id")
        if rid in seen_ids:
            failures.append(f"{label}: duplicate id, first on line {seen_ids[rid]}")
        seen_ids.setdefault(rid, lineno)
        msgs = row.get("messages")
        if isinstance(msgs, list) and msgs and isinstance(msgs[0], dict):
            key = " ".join(str(msgs[0].get("content", "")).split()).lower()
            if key in seen_instr:
                failures.append(f"{label}: duplicate instruction, first on line {seen_instr[key]}")
            seen_instr.setdefault(key, lineno)
        if code is not None:
            rows.append((label, row, code))
            if row.get("test"):
                with_tests[row.get("lang")] += 1

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda r: run_code(r[2], r[1].get("test")), rows))
    n_run_fail = n_test_fail = 0
    for (label, _row, _code), err in zip(rows, results):
        if err:
            failures.append(f"{label}: {err}")
            if err.startswith("test"):
                n_test_fail += 1
            else:
                n_run_fail += 1

    print(f"file: {args.path}")
    print(f"rows: {n_lines}")
    for lang in sorted(langs, key=str):
        print(f"  lang={lang}: {langs[lang]} rows, {with_tests[lang]} with tests")
    print(f"rows with hidden tests: {sum(with_tests.values())}")
    print(f"executed: {len(rows)}, code errors: {n_run_fail}, test failures: {n_test_fail}")
    if failures:
        print(f"FAILED: {len(failures)} problem(s)")
        for f in failures:
            print("  " + f)
        return 1
    print("OK: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
