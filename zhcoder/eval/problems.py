"""Eval's problem and task types and the chat-mode requests, shared by the benchmark loaders (tasks.py, evalplus.py).

    python -c "from zhcoder.eval.problems import instruction_en; print(instruction_en('def f(): ...'))"
    python -m pytest tests/test_tasks.py
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Problem:
    task_id: str
    prompt: str                       # completion-mode prompt (base models continue it)
    instruction: str                  # chat-mode request, in the task's language
    entry_point: str | None
    canonical_solution: str | None    # a completion that passes (None where the dataset has none)
    stop: list[str]                   # stop strings for base-model completion
    difficulty: str | None = None     # "Easy" | "Medium" | "Hard" (LeetCode)
    tests: dict[str, str] = field(default_factory=dict, repr=False)  # stage -> test code appended to the code
    header: str = field(default="", repr=False)                      # lines put before the code (imports)
    completion_follows_prompt: bool = field(default=True, repr=False)  # False where the prompt is prose (MBPP)
    reference: str | None = field(default=None, repr=False)    # translation: the reference; security: origin_code
    category: str | None = None                                 # security tasks: the test case's CWE

    def program(self, completion: str | None = None, solution: str | None = None, stage: str = "default") -> str:
        """The full test program for a base-model `completion` (appended to the prompt where the prompt is code)
        or a full `solution` (chat mode); exactly one of the two."""
        if (completion is None) == (solution is None):
            raise ValueError(f"{self.task_id}: give exactly one of completion or solution")
        if stage not in self.tests:
            raise ValueError(f"{self.task_id}: unknown stage {stage!r} (stages: {', '.join(self.tests)})")
        if solution is not None:
            code = solution
        else:
            code = self.prompt + completion if self.completion_follows_prompt else completion
        return self.header + code + "\n" + self.tests[stage]


@dataclass
class Task:
    name: str
    problems: list[Problem]
    timeout_s: float                           # per-program default, recorded with results
    stages: tuple[str, ...] = ("default",)     # headline = last
    source: str = ""                           # where the data came from: path or URL @ sha256
    memory_mb: int = 2048                      # address-space limit per program (Limits.memory_mb)
    metric: str = "execution"                  # "execution" (sandbox tests), "translation" (BLEU...), "security"
    target_language: str | None = None         # translation tasks: "cs" or "java"


# Chat-mode requests, in the task's language.

def instruction_en(problem: str) -> str:
    return ("Please provide a self-contained Python script that solves the following problem "
            f"in a markdown code block:\n```python\n{problem.strip()}\n```\n")


def instruction_zh(problem: str) -> str:
    return f"请在一个 markdown 代码块（```python）中给出解决下面问题的完整、可独立运行的 Python 代码：\n```python\n{problem.strip()}\n```\n"


