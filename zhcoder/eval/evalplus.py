"""MBPP+ (EvalPlus v0.1.0 data, 399 tasks): differential testing against the canonical solution, scored the way
the EvalPlus release behind Qwen2.5-Coder's published MBPP+ numbers scored it: PyPI evalplus 0.2.1 (April 2024),
which Qwen's harness ran as `evalplus.evaluate --dataset mbpp` (qwencoder-eval/base/benchmarks/evalplus/
generate.py) and whose result format, failing-input records and missing set-equality oracles the published
eval_results.json (2024-09-24) shows. Read, not copied: evalplus 0.2.0 -> 0.2.1 (eval/__init__.py unsafe_execute,
is_floats, untrusted_check; evaluate.py; data/mbpp.py mbpp_deserialize_inputs; gen/util trusted_exec) and
evalplus/eval/utils.py (reliability_guard, time_limit, swallow_io).

One program per sample and stage (the code of evalplus_checker.py, then one call of its main), with the constants
that module defines; the sandbox runs it and it passes iff it runs to its end. Inside it, for each
input group ("base" = base_input, then "plus" = plus_input), in order:

1. The reference (prompt + canonical solution) is exec()'d in the program's own process (which candidate code
   never runs in) and run on the group's inputs, each decoded afresh from JSON. Its outputs are the expected
   outputs; its time on each input sets that input's limit, max(1 s, 4 x time): the defaults of the evalplus CLI
   that made the numbers (`--min-time-limit 1 --gt-time-limit-factor 4`).
2. The candidate (prompt + completion, or a full solution) runs in a forked child, as evalplus runs each sample and
   group in a process of its own: evalplus's reliability_guard (exit/quit, os.kill/system/remove/..., subprocess,
   shutil.rmtree... disabled), stdout/stderr swallowed, stdin unreadable; exec()'d in an empty namespace (so
   `if __name__ == "__main__":` blocks do not run), then called on its own fresh copy of each input under that
   input's limit, with evalplus's budget for the whole group, min(60 s, sum of limits) + 2 s.
   Times are CPU seconds of the process (reference and candidate alike) where evalplus measured wall-clock
   seconds: on an idle machine they agree, and other load on the machine then cannot turn a legal candidate into
   a failure. A child still running after WALL_FACTOR times its budget of wall-clock time (asleep, blocked, its
   timer disabled) is killed.
3. Outputs are compared as evalplus 0.2.1's `unsafe_execute` compares them (evalplus/eval/__init__.py):
   `out == expected`, the special oracles below, then: if atol is 0 and the expected output `is_floats` (a float,
   or a list/tuple holding only floats, the empty one included), atol becomes 1e-6 for this input and every later
   input of the group; where the exact test failed and atol != 0, `numpy.testing.assert_allclose(out, expected,
   atol=atol)` (rtol 1e-7, NaN equal to NaN, a scalar broadcast against a list) decides. So once atol is set, a
   list equal in value to an expected tuple passes, as in evalplus. 16 tasks have atol 1e-4. numpy is imported
   for that fallback only (evalplus had it loaded anyway).
4. The first mismatch, exception or overrun fails the program with an AssertionError naming the input
   ("plus input 14: expected ..., got ..."); the plus group is not started after a base failure.

Memory: like evalplus (4 GiB), MBPP+ needs more than the sandbox's default 2 GiB: Mbpp/255's largest output
(1.7 million tuples) is held by the reference and by the candidate's process at once. Run it with
Limits(memory_mb=MEMORY_MB).

Stages: "base" (base_input: evalplus's base verdict; Qwen2.5-Coder-1.5B: 69.2) and "plus" (base_input, then
plus_input: evalplus's "base + extra", passed iff both evalplus verdicts pass; 58.6). program() also accepts
"extra" (plus_input alone: evalplus's own `plus_status`), for checking against evalplus result files; it is not
a scored stage.

The rules of that release, which later EvalPlus versions changed (kept here, because the published per-task
verdicts depend on them):
  - Special oracles are only Mbpp/164 are_equivalent (any output passes), Mbpp/295 sum_div (equal, or 0), and
    Mbpp/737 check_str, 787 text_match_three, 794 text_starta_endb (the reference returns re.Match objects, so
    only `output is not None` is kept; a candidate's bool is compared with it directly, any other output by
    `output is not None`). Later releases compare set(out) == set(expected) for Mbpp/2, 7, 111, 140, 232, 249,
    579, 769 and accept alternative answers for 558 and 581: not here.
  - Expected outputs were computed by another interpreter (evalplus caches them to disk and loads them), whose
    string hash seed differs from the candidate's. Where the reference turns a set of strings into a tuple or
    list, its order is that interpreter's. Four tasks do so on some plus inputs: Mbpp/2, 249, 579, 769
    (HASH_ORDER_TASKS, found by running every reference under PYTHONHASHSEED 0, 1 and 2 and comparing outputs;
    no other reference's outputs differed).
    For them the reference runs in a fresh interpreter with another seed (1; 2 if the program's own is 1), so an
    output of another order is a mismatch, as it was for evalplus: their canonical solutions fail the plus stage
    (Mbpp/579 at plus input 14, exactly where the published result file records Qwen2.5-Coder's identical
    `tuple(set(a) ^ set(b))` failing).

Inputs are decoded as evalplus's `mbpp_deserialize_inputs` decodes them (JSON has no tuples, sets or complex
numbers): see SHAPES.

    python -m pytest tests/test_evalplus.py
    zhcoder eval mbpp-plus --samples ../shared/data/samples/qwen2.5-coder-1.5b-base/mbpp-generated.jsonl \\
        --out runs/mbpp-plus
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .problems import Problem, Task, instruction_en

STAGES = ("base", "plus")
EXTRA_STAGE = "extra"  # plus_input alone: evalplus's own plus_status (not a scored stage)
_GROUPS_OF_STAGE = {"base": ("base",), "plus": ("base", "plus"), "default": ("base", "plus"), EXTRA_STAGE: ("plus",)}

# Stop strings of the Qwen2.5-Coder evalplus harness for base models on MBPP (qwencoder-eval/base/benchmarks/
# evalplus/model.py: EOS + extra_eos_for_direct_completion("mbpp")), most decisive first.
STOP = ['\n"""', "\nassert", "\nif __name__", "\nprint(", "\ndef main("]

HASH_ORDER_TASKS = ("Mbpp/2", "Mbpp/249", "Mbpp/579", "Mbpp/769")
MEMORY_MB = 4096  # evalplus's reliability_guard limit; the sandbox's default (2048) is too small for Mbpp/255

# How evalplus decodes each task's JSON inputs (evalplus/data/mbpp.py, mbpp_deserialize_inputs): a rule name
# for the task numbers it applies to; evalplus_checker.decode implements each rule.
SHAPES = {
    "args_to_tuples": (2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726,
                       740, 744, 809),
    "items_of_args_to_tuples": (63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780),
    "items_of_first_to_tuples": (75, 413, 444, 753),
    "second_to_tuple": (106, 750),
    "first_items_to_sets": (115,),
    "float_and_complex": (124,),
    "first_to_tuple": (250, 405, 446, 617, 720, 763, 808),
    "items_to_tuples_then_args_to_tuples": (259, 401, 445),
    "first_items_to_tuples_then_args_to_tuples": (278,),
    "first_to_tuple_of_three": (307,),
    "dict_values_to_tuples": (722,),
    "complex_arg": (252,),
    "lists_to_tuples_deep": (580, 615, 791),
}
SHAPE_OF_TASK = {number: rule for rule, numbers in SHAPES.items() for number in numbers}

# The test program's code: the module evalplus_checker.py, read as a resource (the sandbox cannot import it).
CHECKER_SOURCE = resources.files(__package__).joinpath("evalplus_checker.py").read_text(encoding="utf-8")
# The data file (EvalPlus's release asset MbppPlus-v0.1.0.jsonl, as evalplus caches it).
SHA256 = "a855b9de667baea8e2f8aa61f898767a7336872208a85222b35622545e819fe9"
MD5 = "ebe95df0d5220f00cedd6f4bddea35e4"  # evalplus's dataset hash, recorded in its eval_results.json


@dataclass
class MbppPlusProblem(Problem):
    """An MBPP+ task: the prompt is the docstring evalplus gives base models; `program()` builds the differential
    test (reference outputs computed in the program, then the candidate compared input by input)."""
    atol: float = 0.0
    base_inputs: str = field(default="[]", repr=False)  # JSON text of base_input, as in the data file
    plus_inputs: str = field(default="[]", repr=False)  # JSON text of plus_input
    shape: str = ""                                      # SHAPES rule decoding the inputs ("" = as they are)
    reference_elsewhere: bool = False                    # reference in another interpreter (HASH_ORDER_TASKS)

    def program(self, completion: str | None = None, solution: str | None = None, stage: str = "default") -> str:
        """The test program for a base-model `completion` (appended to the prompt, as evalplus does) or a full
        `solution`; exactly one of the two. Stage "default" is "plus"."""
        if (completion is None) == (solution is None):
            raise ValueError(f"{self.task_id}: give exactly one of completion or solution")
        if stage not in _GROUPS_OF_STAGE:
            raise ValueError(f"{self.task_id}: unknown stage {stage!r} (stages: {', '.join(STAGES)})")
        inputs = {"base": self.base_inputs, "plus": self.plus_inputs}
        job = {"entry_point": self.entry_point, "atol": self.atol, "shape": self.shape,
               "reference": self.prompt + (self.canonical_solution or ""),
               "candidate": solution if solution is not None else self.prompt + completion,
               "groups": [(name, inputs[name]) for name in _GROUPS_OF_STAGE[stage]],
               "checker_source": CHECKER_SOURCE if self.reference_elsewhere else None}
        return f"{CHECKER_SOURCE}\nmain({job!r})\n"


def load_mbpp_plus(path: str | Path) -> Task:
    """MBPP+ v0.1.0 from a local MbppPlus-v0.1.0.jsonl (399 tasks), stages ("base", "plus")."""
    path = Path(path)
    raw = path.read_bytes()
    problems = []
    for line in raw.decode("utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        number = int(row["task_id"].split("/")[-1])
        problems.append(MbppPlusProblem(
            task_id=row["task_id"], prompt=row["prompt"], instruction=instruction_en(row["prompt"]),
            entry_point=row["entry_point"], canonical_solution=row["canonical_solution"], stop=list(STOP),
            atol=row["atol"], base_inputs=json.dumps(row["base_input"], separators=(",", ":")),
            plus_inputs=json.dumps(row["plus_input"], separators=(",", ":")), shape=SHAPE_OF_TASK.get(number, ""),
            reference_elsewhere=row["task_id"] in HASH_ORDER_TASKS))
    # A program holds the reference's run (Mbpp/599's, the slowest: ~20 s here) and at most two groups of 62 CPU
    # seconds; the program itself ends slow candidates, so the sandbox's timeout is only a backstop.
    return Task("mbpp-plus", problems, timeout_s=400.0, stages=STAGES, memory_mb=MEMORY_MB,
                source=f"{path} @ sha256:{hashlib.sha256(raw).hexdigest()}")
