"""MBPP+ (zhcoder/eval/evalplus.py) against EvalPlus's published verdicts for Qwen2.5-Coder-1.5B, its canonical
solutions, and the comparison rules (float tolerance, special oracles, time limits) on small programs.

The published-number proof runs every program through the sandbox (2 workers) in one batch, slowest first:
all 399 samples in both stages (and plus_input alone where the published base verdict failed, to check
evalplus's own plus_status too), the canonical solutions in stage "base" for all 399 tasks and in stage "plus"
where the published sample does not pass it (where it does, that correct solution has already been compared with
the reference on every input). ZHCODER_TEST_ALL_CANONICAL=1 runs the canonical solutions in stage "plus" for all
399 tasks (about a minute more on 2 cores).

    python -m pytest tests/test_evalplus.py
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from zhcoder.eval.evalplus import (
    EXTRA_STAGE, HASH_ORDER_TASKS, MD5, MEMORY_MB, SHA256, STAGES, MbppPlusProblem, load_mbpp_plus,
)
from zhcoder.eval.sandbox import Executor, Limits

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MBPP_PLUS = DATA / "mbpp" / "MbppPlus-v0.1.0.jsonl"
QWEN = DATA / "samples" / "qwen2.5-coder-1.5b-base"
needs_data = pytest.mark.skipif(not (MBPP_PLUS.is_file() and QWEN.is_dir()),
                                reason=f"benchmark data not found under {DATA}")

# Programs that take seconds (Mbpp/599 sums to 10^8 on 16 inputs): started first so both workers stay busy.
SLOW_FIRST = ("Mbpp/599", "Mbpp/255", "Mbpp/392", "Mbpp/271", "Mbpp/603", "Mbpp/123", "Mbpp/592", "Mbpp/389")


@pytest.fixture(scope="module")
def task():
    return load_mbpp_plus(MBPP_PLUS)


@pytest.fixture(scope="module")
def limits(task):
    return Limits(timeout_s=task.timeout_s, memory_mb=MEMORY_MB)


@pytest.fixture(scope="module")
def published():
    results = json.loads((QWEN / "mbpp-generated_eval_results.json").read_text())
    return {task_id: rows[0] for task_id, rows in results["eval"].items()} | {"hash": results["hash"]}


@pytest.fixture(scope="module")
def runs(task, limits, published):
    """{(who, task_id, stage): verdict} for who in ("sample", "canonical"), from one sandbox batch."""
    samples = {json.loads(line)["task_id"]: json.loads(line) for line in (QWEN / "mbpp-generated.jsonl").open()}
    all_canonical = os.environ.get("ZHCODER_TEST_ALL_CANONICAL") == "1"
    jobs = []
    for problem in task.problems:
        row = published[problem.task_id]
        for stage in STAGES:
            jobs.append(("sample", problem, stage, samples[problem.task_id]["completion"]))
        if row["base_status"] != "pass":
            jobs.append(("sample", problem, EXTRA_STAGE, samples[problem.task_id]["completion"]))
        jobs.append(("canonical", problem, "base", problem.canonical_solution))
        if all_canonical or not (row["base_status"] == row["plus_status"] == "pass"):
            jobs.append(("canonical", problem, "plus", problem.canonical_solution))
    jobs.sort(key=lambda job: job[1].task_id not in SLOW_FIRST)
    with Executor(workers=2, limits=limits) as executor:
        outcomes = executor.map([problem.program(completion=code, stage=stage) for _, problem, stage, code in jobs])
        return {(who, problem.task_id, stage): outcome.verdict
                for (who, problem, stage, _), outcome in zip(jobs, outcomes)}


CAP = "over the group's time budget of 62.00 s"   # evalplus's cap, min(60 s, sum of limits) + 2 s, was reached


def _capped(runs, published) -> set[str]:
    """Tasks whose published verdict is pass/pass but whose sample reached evalplus's 60-second group cap here: on a
    slower CPU than the one that made the numbers (Mbpp/599 sums to 10^8 on 16 inputs) the cap, which does not scale
    with the reference's time, fails it. The tests below check everything else, then skip, naming them."""
    return {task_id for (who, task_id, stage), verdict in runs.items() if who == "sample" and CAP in verdict
            and published[task_id]["base_status"] == published[task_id]["plus_status"] == "pass"}


def _skip_if_capped(capped: set[str]) -> None:
    if capped:
        pytest.skip(f"this CPU is too slow for evalplus's 60 s group cap on {sorted(capped)}: the published "
                    "verdicts hold for every other task")


# ---------------------------------------------------------------------------------------------------------------
# The published numbers

@needs_data
def test_data_file_is_the_one_evalplus_scored(published):
    raw = MBPP_PLUS.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SHA256
    assert hashlib.md5(raw).hexdigest() == MD5 == published["hash"]


@needs_data
def test_loader(task):
    assert task.name == "mbpp-plus" and task.stages == ("base", "plus") and len(task.problems) == 399
    assert task.source.endswith(f"sha256:{SHA256}")
    problem = task.problems[0]
    assert isinstance(problem, MbppPlusProblem) and problem.task_id == "Mbpp/2"
    assert problem.entry_point == "similar_elements" and problem.shape == "args_to_tuples"
    assert problem.prompt.startswith('"""\nWrite a function to find the shared elements')
    assert problem.prompt.strip() in problem.instruction and '\n"""' in problem.stop
    assert sum(p.atol != 0 for p in task.problems) == 16
    assert sorted(p.task_id for p in task.problems if p.reference_elsewhere) == sorted(HASH_ORDER_TASKS)
    from zhcoder.eval.tasks import load_task
    assert isinstance(load_task("mbpp-plus", DATA).problems[-1], MbppPlusProblem)


@needs_data
def test_qwen_scores_are_the_published_ones(runs, published):
    capped = _capped(runs, published)
    scores = json.loads((QWEN / "mbpp-result.json").read_text())
    base = sum(runs["sample", task_id, "base"] == "passed" for (who, task_id, stage) in runs
               if who == "sample" and stage == "base")
    plus = sum(runs["sample", task_id, "plus"] == "passed" for (who, task_id, stage) in runs
               if who == "sample" and stage == "plus")
    lost = [sum(runs["sample", task_id, stage] != "passed" for task_id in capped) for stage in ("base", "plus")]
    assert (base + lost[0], plus + lost[1]) == (276, 234)
    _skip_if_capped(capped)
    assert round(100 * base / 399, 1) == scores["mbpp"]["pass@1"] == 69.2
    assert round(100 * plus / 399, 1) == scores["mbpp+"]["pass@1"] == 58.6


@needs_data
def test_every_verdict_is_the_published_one(runs, published, task):
    """base == base_status; plus == base_status and plus_status (evalplus's "base + extra"); and plus_input alone
    == plus_status where base failed (where base passed, the plus stage already decides plus_status)."""
    differences = []
    for problem in task.problems:
        row = published[problem.task_id]
        base, extra = row["base_status"] == "pass", row["plus_status"] == "pass"
        ours = {stage: runs["sample", problem.task_id, stage] == "passed" for stage in STAGES}
        if ours != {"base": base, "plus": base and extra}:
            differences.append((problem.task_id, ours, row["base_status"], row["plus_status"]))
        if not base and (runs["sample", problem.task_id, EXTRA_STAGE] == "passed") != extra:
            differences.append((problem.task_id, EXTRA_STAGE, runs["sample", problem.task_id, EXTRA_STAGE]))
    capped = _capped(runs, published)
    assert [d for d in differences if d[0] not in capped] == []
    _skip_if_capped(capped)


def _named_input(verdict: str) -> tuple[str, int] | None:
    found = re.search(r"AssertionError: (base|plus) input (\d+):", verdict)
    return (found.group(1), int(found.group(2))) if found else None


def _as_published(task_id: str, raw_input: list):
    """evalplus writes a failing input back through mbpp_serialize_inputs; only Mbpp/115's differs from the data
    file (its lists became sets or, when empty or not lists, {}: written back as lists, in set order)."""
    if task_id != "Mbpp/115":
        return raw_input
    return [[sorted(map(repr, set(item))) if isinstance(item, list) and item else [] for item in raw_input[0]]]


@needs_data
def test_failing_inputs_are_the_published_ones(runs, published, task):
    """evalplus 0.2.1 records the input a sample failed on (none when it failed on input 0 or while loading);
    ours names the same one, for every failing base and plus_input run."""
    differences = []
    for problem in task.problems:
        row = published[problem.task_id]
        raw = {"base": json.loads(problem.base_inputs), "plus": json.loads(problem.plus_inputs)}
        for stage, key in (("base", "base_fail_tests"), (EXTRA_STAGE, "plus_fail_tests")):
            verdict = runs.get(("sample", problem.task_id, stage))
            if stage == EXTRA_STAGE and verdict is None:  # base passed: the plus stage ran plus_input
                verdict = runs["sample", problem.task_id, "plus"]
            if verdict is None or verdict == "passed":
                continue
            named = _named_input(verdict)
            ours = [raw[named[0]][named[1]]] if named and named[1] > 0 else []
            theirs = row[key]
            if problem.task_id == "Mbpp/115":
                ours = [_as_published("Mbpp/115", x) for x in ours]
                theirs = [[[sorted(map(repr, item)) for item in x[0]]] for x in theirs]
            if ours != theirs:
                differences.append((problem.task_id, stage, verdict[:120], str(theirs)[:120]))
    capped = _capped(runs, published)
    assert [d for d in differences if d[0] not in capped] == []
    _skip_if_capped(capped)


@needs_data
def test_canonical_solutions_pass(runs, task):
    """Every canonical solution passes stage base; in stage plus all pass but the four HASH_ORDER_TASKS, whose
    references order a set of strings by the string hash of another interpreter: under evalplus 0.2.1 (cached
    expected outputs) they fail too, Mbpp/579 on plus input 14, where the published file records the sample (the
    same `tuple(set(a) ^ set(b))`) failing."""
    assert [t for (who, t, stage), v in runs.items() if who == "canonical" and stage == "base" and v != "passed"] == []
    plus = {t: v for (who, t, stage), v in runs.items() if who == "canonical" and stage == "plus"}
    assert len(plus) >= 165
    assert sorted(t for t, v in plus.items() if v != "passed") == sorted(HASH_ORDER_TASKS)
    for task_id in HASH_ORDER_TASKS:
        assert re.match(r"failed: AssertionError: plus input \d+: expected [\[(]", plus[task_id]), plus[task_id]
    assert plus["Mbpp/579"].startswith("failed: AssertionError: plus input 14: expected (")


# ---------------------------------------------------------------------------------------------------------------
# The rules, on small programs

def _problem(reference: str, base: list, plus: list | None = None, atol: float = 0.0, entry_point: str = "f",
             shape: str = "") -> MbppPlusProblem:
    return MbppPlusProblem(task_id="Test/1", prompt="", instruction="", entry_point=entry_point,
                           canonical_solution=reference, stop=[], atol=atol, base_inputs=json.dumps(base),
                           plus_inputs=json.dumps(plus or []), shape=shape)


@pytest.fixture(scope="module")
def sandbox():
    with Executor(workers=2, limits=Limits(timeout_s=60, memory_mb=MEMORY_MB)) as executor:
        yield lambda programs: [outcome.verdict for outcome in executor.map(programs)]


def test_float_tolerance(sandbox):
    """Task atol 1e-4 (with evalplus's rtol 1e-7): 0.9e-4 off passes, 1.2e-4 off fails. atol 0 with a float
    output: 1e-6 is used, from that input on (a later int output then compares within it too)."""
    third = "def f(x):\n    return x / 3{}\n"
    loose = _problem(third.format(""), [[1.0], [2.0]], [[3.0]], atol=1e-4)
    exact = _problem("def f(x):\n    return x / 3 if x else 7\n", [[1.0], [0], [2.0]])
    verdicts = sandbox([
        loose.program(completion=third.format(" + 0.9e-4")),
        loose.program(completion=third.format(" - 1.2e-4")),
        exact.program(completion="def f(x):\n    return x / 3 + 5e-7 if x else 7\n"),
        exact.program(completion="def f(x):\n    return x / 3 + 2e-6 if x else 7\n"),
        exact.program(completion="def f(x):\n    return x / 3 if x else 7 + 1e-7\n"),
        exact.program(completion="def f(x):\n    return x / 3 if x else 7.5\n"),
    ])
    assert verdicts[0] == "passed" and verdicts[2] == "passed" and verdicts[4] == "passed"
    assert verdicts[1].startswith("failed: AssertionError: base input 0: expected 0.333")
    assert verdicts[3].startswith("failed: AssertionError: base input 0: expected 0.333")
    assert verdicts[5].startswith("failed: AssertionError: base input 1: expected 7, got 7.5")


def test_is_floats_quirk(sandbox):
    """evalplus counts an empty list as floats: after an expected [], atol is 1e-6 and assert_allclose accepts a
    list for an expected tuple. Before it, exact equality decides."""
    problem = _problem("def f(x):\n    return () if x == 0 else (x, x)\n", [[0], [1]])
    problem_first = _problem("def f(x):\n    return () if x == 0 else (x, x)\n", [[1], [0]])
    candidate = "def f(x):\n    return [] if x == 0 else [x, x]\n"
    assert sandbox([problem.program(completion=candidate), problem_first.program(completion=candidate)]) == [
        "passed", "failed: AssertionError: base input 0: expected (1, 1), got [1, 1] (AssertionError)"]


def test_stages_and_errors(sandbox):
    """base runs base inputs, plus runs base then plus inputs, extra plus inputs only; each failure names the input;
    exceptions, infinite loops, exit() and a missing function are failures."""
    problem = _problem("def f(x):\n    return x * 2\n", [[1], [2]], [[3], [40]])
    wrong_on_40 = "def f(x):\n    return x * 2 if x < 10 else 0\n"
    verdicts = sandbox([
        problem.program(completion=wrong_on_40, stage="base"),
        problem.program(completion=wrong_on_40, stage="plus"),
        problem.program(completion=wrong_on_40, stage=EXTRA_STAGE),
        problem.program(solution="def f(x):\n    return 1 / (x - 1)\n", stage="base"),
        problem.program(completion="def f(x):\n    while True:\n        pass\n", stage="base"),
        problem.program(completion="import sys\nsys.exit(0)\n", stage="base"),
        problem.program(completion="def g(x):\n    return x * 2\n", stage="base"),
        problem.program(completion="def f(x):\n    print(x)\n    return x + x\n", stage="default"),
    ])
    assert verdicts[0] == "passed"
    assert verdicts[1] == verdicts[2] == "failed: AssertionError: plus input 1: expected 80, got 0 (AssertionError)"
    assert verdicts[3] == "failed: AssertionError: base input 0: raised ZeroDivisionError: division by zero"
    assert verdicts[4] == "failed: AssertionError: base input 0: over its time limit of 1.00 s"
    assert verdicts[5].startswith("failed: AssertionError: base: loading the code raised")
    assert verdicts[6] == "failed: AssertionError: base: the code defines no function 'f'"
    assert verdicts[7] == "passed"


def test_candidate_cannot_touch_the_reference(sandbox):
    """The reference runs in the program's process, the candidate in a child per group: a candidate that patches a
    module the reference uses (math.pi, while answering right) does not change the plus group's expected outputs.
    (Were both in one process, the plus reference would compute with pi = 3 and this candidate would fail.)"""
    problem = _problem("import math\ndef f(x):\n    return round(math.pi * x, 6)\n", [[1]], [[2]])
    patching = ("import math\ndef f(x):\n    value = round(3.141592653589793 * x, 6)\n"
                "    math.pi = 3\n    return value\n")
    assert sandbox([problem.program(completion=patching, stage="plus")]) == ["passed"]


@needs_data
def test_special_oracles_and_wrong_solutions(sandbox, task):
    """evalplus 0.2.1's MBPP oracles: are_equivalent accepts anything, sum_div accepts 0, check_str compares
    `is not None` (a bool output directly); no set equality yet, so a set where a tuple is expected fails."""
    by_id = {problem.task_id: problem for problem in task.problems}
    checks = [
        ("Mbpp/164", "def are_equivalent(a, b):\n    return 'anything'\n", "passed"),
        ("Mbpp/295", "def sum_div(n):\n    return 0\n", "passed"),
        ("Mbpp/295", "def sum_div(n):\n    return 1\n", "failed: AssertionError: base input 0: expected 15.0, got 1"),
        ("Mbpp/737", "import re\ndef check_str(s):\n    return re.match('^[aeiouAEIOU][A-Za-z0-9_]*', s)\n", "passed"),
        ("Mbpp/737", "def check_str(s):\n    return s[:1].lower() in 'aeiou' and s != ''\n", "passed"),
        ("Mbpp/737", "def check_str(s):\n    return 'no'\n", "failed: AssertionError: base input 1: expected False"),
        ("Mbpp/2", "def similar_elements(a, b):\n    return set(a) & set(b)\n",
         "failed: AssertionError: base input 0: expected (4, 5), got {4, 5}"),
        ("Mbpp/82", "import math\ndef volume_sphere(r):\n    return 4 / 3 * math.pi * r ** 3 + 5e-5\n", "passed"),
        ("Mbpp/82", "import math\ndef volume_sphere(r):\n    return 4 / 3 * 3.1416 * r ** 3\n",
         "failed: AssertionError: base input 0: expected 4188.79"),
    ]
    verdicts = sandbox([by_id[task_id].program(completion=code, stage="plus") for task_id, code, _ in checks])
    for (task_id, code, expected), verdict in zip(checks, verdicts):
        assert verdict.startswith(expected), (task_id, verdict)


@needs_data
def test_decoded_inputs_have_evalplus_shapes(task):
    """JSON holds lists; the program decodes them into the tuples, sets, dicts and complex numbers evalplus used."""
    from zhcoder.eval.evalplus_checker import decode
    by_id = {problem.task_id: problem for problem in task.problems}

    def decoded(task_id, group="base"):
        problem = by_id[task_id]
        return decode(problem.base_inputs if group == "base" else problem.plus_inputs, problem.shape)

    assert decoded("Mbpp/2")[0] == [(3, 4, 5, 6), (5, 7, 4, 10)]
    assert decoded("Mbpp/115")[1] == [[{1, 2}, {}, {}]]
    assert decoded("Mbpp/115", "plus")[0] == [[{}, {}, {}]]  # dicts become {} as in evalplus
    assert decoded("Mbpp/124")[0] == (0.0, 1j)
    assert decoded("Mbpp/252", "plus")[0] == [1 + 2j]
    assert decoded("Mbpp/580")[0] == ((4, 5, (7, 6, (2, 4)), 6, 8),)
    assert decoded("Mbpp/722")[0][0]["Cierra Vega"] == (6.2, 70)


def test_program_contract():
    problem = _problem("def f(x):\n    return x\n", [[1]])
    with pytest.raises(ValueError, match="exactly one"):
        problem.program()
    with pytest.raises(ValueError, match="exactly one"):
        problem.program(completion="x", solution="y")
    with pytest.raises(ValueError, match="unknown stage"):
        problem.program(completion="x", stage="hidden")
    # evalplus's solution = prompt + completion: the same program either way; "default" is "plus"
    prompted = MbppPlusProblem(**{**problem.__dict__, "prompt": '"""\ndoc\n"""\n'})
    assert prompted.program(completion="def f(x):\n    return x\n") == prompted.program(
        solution='"""\ndoc\n"""\ndef f(x):\n    return x\n', stage="plus")
    compile(prompted.program(completion="def f(x):\n    return x\n", stage="base"), "<program>", "exec")


def test_checker_compares_as_evalplus_does():
    """The checker is a plain module: its comparison of one output, called directly (the sandboxed program calls
    the same function)."""
    from zhcoder.eval.evalplus_checker import check, is_floats
    assert is_floats(1.5) and is_floats([]) and is_floats((0.5, 2.0)) and not is_floats([1, 2.0])
    assert check(0.1 + 0.2, 0.3, 0, "f") == 1e-6          # a float output sets atol 1e-6 from here on
    assert check([1.0, 2.0], (1.0, 2.0), 1e-6, "f") == 1e-6  # assert_allclose: a list for a tuple, once atol is set
    with pytest.raises(AssertionError):
        check([1, 2], (1, 2), 0, "f")                     # before it, exact equality decides
    assert check("anything", 7, 0, "are_equivalent") == 0 and check(0, 15.0, 0, "sum_div") == 1e-6
    assert check(None, False, 0, "check_str") == 0          # OUTPUT_NOT_NONE: `out is not None` against the reference
    with pytest.raises(AssertionError):
        check(True, False, 0, "check_str")
