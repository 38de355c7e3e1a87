"""The code executor against ordinary, broken and hostile snippets (real forks, real limits)."""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sandbox_checks import leftovers

from r1ci.config import ConfigError, SandboxConfig, load_config
from r1ci.sandbox import Executor
from r1ci.sandbox.executor import SandboxError


@pytest.fixture(scope="module")
def ex():
    cfg = SandboxConfig(timeout_s=10, preload=["math", "json", "numpy", "subprocess", "ctypes"], warm_up="import numpy")
    executor = Executor(cfg)
    yield executor
    executor.close()


@pytest.fixture(scope="module")
def tight():
    """Small limits, so hitting each of them is quick and harmless."""
    cfg = SandboxConfig(timeout_s=10, cpu_time_s=1, memory_mb=256, max_processes=16, max_file_mb=1,
                        max_output_bytes=1000, output_kill_mb=1, preload=["math", "subprocess", "ctypes"], warm_up="")
    executor = Executor(cfg)
    yield executor
    executor.close()


def test_snippet_output_and_exit_code(ex):
    result = ex.run("import math\nprint(math.factorial(5))")
    assert result.ok and result.stdout == "120\n" and result.stderr == "" and result.killed_reason == ""


def test_auto_containment_gives_each_run_fresh_namespaces(ex):
    assert ex.containment in ("bwrap", "unshare")  # auto never picks none
    probe = "import os\nprint(os.getpid(), *(os.readlink(f'/proc/self/ns/{n}') for n in ('net', 'pid', 'ipc', 'mnt', 'uts')))"
    first, second = ex.run(probe).stdout.split(), ex.run(probe).stdout.split()
    host = [os.readlink(f"/proc/self/ns/{n}") for n in ("net", "pid", "ipc", "mnt", "uts")]
    assert first[0] == "1" and second[0] == "1"  # each run is pid 1 of its own pid namespace
    for mine, theirs, outside in zip(first[1:], second[1:], host):
        assert mine != theirs and mine != outside
    assert ex.isolation["per_run_namespaces"] == ["pid", "network", "ipc", "mount", "uts"]


def test_auto_picks_bubblewrap_where_it_works(ex):
    # asked of bwrap itself, not of the executor's own probe, so a probe that wrongly fails shows here
    argv = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--ro-bind", "/", "/", "--dev", "/dev",
            "--proc", "/proc", "/bin/true"]
    works = shutil.which("bwrap") is not None and subprocess.run(argv, capture_output=True).returncode == 0
    assert ex.containment == ("bwrap" if works else "unshare")


def test_auto_refuses_to_fall_back_to_no_namespaces(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # neither bwrap nor unshare can be found
    with pytest.raises(SandboxError, match=r"sandbox.containment=none runs code without them; it does not stop"):
        Executor(SandboxConfig(containment="auto", preload=[], warm_up=""))


def test_syntax_error_is_reported_with_its_line(ex):
    result = ex.run("x = 1\ndef f(:\n    pass")
    assert result.exit_code == 1 and "SyntaxError" in result.stderr and "line 2" in result.stderr


def test_exception_traceback_shows_the_snippet_line(ex):
    result = ex.run("a = 1\nprint(a / 0)")
    assert result.exit_code == 1 and 'File "<snippet>", line 2' in result.stderr and "ZeroDivisionError" in result.stderr
    assert "server.py" not in result.stderr


def test_exit_codes_of_sys_exit_and_os_exit(ex):
    assert ex.run("import sys; sys.exit(5)").exit_code == 5
    assert ex.run("import os; print('bye', flush=True); os._exit(3)").exit_code == 3
    message = ex.run("import sys; sys.exit('bad input')")
    assert message.exit_code == 1 and "bad input" in message.stderr


def test_timeout_kills_whole_process_group(ex):
    code = "import subprocess, os\nsubprocess.Popen(['sleep', '60'])\nprint(os.getuid(), flush=True)\nwhile True: pass"
    result = ex.run(code, timeout_s=1)
    assert result.timed_out and result.killed_reason == "timeout" and result.exit_code is None
    assert 0.9 < result.duration_s < 5
    assert leftovers(ex) == []


def test_background_process_in_new_session_does_not_outlive_the_run(ex):
    result = ex.run("import subprocess\np = subprocess.Popen(['sleep', '60'], start_new_session=True)\nprint('started')")
    assert result.ok and result.stdout == "started\n" and result.duration_s < 5
    assert leftovers(ex) == []


def test_cpu_limit_kills_busy_code(tight):
    result = tight.run("while True: pass", timeout_s=30)  # 1 s of CPU takes longer on a busy machine
    assert result.killed_reason == "cpu_limit" and not result.timed_out and "CPU-time limit of 1 s" in result.stderr


def test_memory_hog_gets_memory_error(tight):
    result = tight.run("blocks = [bytearray(64 << 20) for _ in range(100)]")
    assert result.killed_reason == "memory_limit" and "MemoryError" in result.stderr


def test_file_size_limit_refuses_big_files(tight):
    result = tight.run("open('big', 'wb').write(b'x' * (4 << 20))")
    assert result.exit_code == 1 and "File too large" in result.stderr


def test_gigabytes_of_output_are_capped_and_the_run_killed(tight):
    result = tight.run("import sys\nwhile True: sys.stdout.write('x' * 65536)", timeout_s=8)
    assert result.killed_reason == "output_limit" and result.truncated_bytes > 1 << 20
    assert len(result.stdout) < 1200 and "bytes of output dropped" in result.stdout
    assert result.duration_s < 7


def test_long_output_keeps_head_and_tail(tight):
    result = tight.run("for i in range(2000): print(i)")
    assert result.ok and result.stdout.startswith("0\n1\n") and result.stdout.endswith("1998\n1999\n")
    assert result.truncated_bytes > 0


def test_process_limit_is_in_force_then_fork_bomb_is_contained(tight):
    probe = (
        "import os, time\nkids = 0\n"
        "try:\n    for _ in range(40):\n        if os.fork() == 0:\n            time.sleep(5); os._exit(0)\n        kids += 1\n"
        "except OSError as e:\n    print('refused after', kids, type(e).__name__)\n"
    )
    result = tight.run(probe)
    assert "refused after" in result.stdout and int(result.stdout.split()[2]) < 16, result
    assert leftovers(tight) == []
    bomb = tight.run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", timeout_s=2)
    assert bomb.killed_reason in ("timeout", "cpu_limit")
    assert leftovers(tight) == []
    assert tight.run("print('still here')").stdout == "still here\n"


def test_segfault_via_ctypes_is_reported(ex):
    result = ex.run("import ctypes\nctypes.string_at(0)")
    assert result.killed_reason == "signal:SIGSEGV" and result.exit_code is None


def test_signalling_everything_it_can_hurts_only_the_run(ex):
    code = ("import os, signal\nfor pid in (os.getppid(), -1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
            "    except OSError:\n        pass\nprint('still here')")
    result = ex.run(code)
    assert result.ok and result.stdout == "still here\n", result
    assert ex.run("print('ok')").stdout == "ok\n"


def test_dead_fork_server_is_restarted(ex):
    restarts = ex.stats()["restarts"]
    os.killpg(ex.server_pid, signal.SIGKILL)
    time.sleep(0.2)
    result = ex.run("print('back')")
    assert result.stdout == "back\n"
    assert ex.stats()["restarts"] == restarts + 1


def test_fork_server_death_mid_run_gives_a_clear_result(ex):
    with ThreadPoolExecutor(1) as caller:
        pending = caller.submit(ex.run, "import time; time.sleep(20)")
        time.sleep(0.5)
        os.killpg(ex.server_pid, signal.SIGKILL)
        result = pending.result(timeout=30)
    assert result.killed_reason == "executor_died" and result.exit_code is None
    assert ex.run("print('again')").stdout == "again\n"




def test_environment_secrets_are_not_visible(ex, monkeypatch):
    monkeypatch.setenv("R1CI_TEST_SECRET", "hunter2")
    code = (
        "import os\nprint(sorted(os.environ))\n"
        "for pid in ['self', '1', str(os.getppid())]:\n"
        "    try:\n        print(open(f'/proc/{pid}/environ', 'rb').read())\n    except OSError:\n        pass\n"
    )
    result = ex.run(code)
    assert result.ok and "PATH" in result.stdout and "hunter2" not in result.stdout and "R1CI_TEST_SECRET" not in result.stdout


def test_non_utf8_output_is_decoded_with_replacement(ex):
    result = ex.run("import sys\nsys.stdout.buffer.write(bytes([0xff, 0xfe]) + 'ok é\\n'.encode())")
    assert result.ok and result.stdout == "\ufffd\ufffdok é\n"


def test_stdin_is_closed(ex):
    result = ex.run("input()")
    assert "EOFError" in result.stderr


def test_runs_do_not_share_state(ex):
    ex.run("import math\nmath.pi = 3\nsecret = 1")
    assert ex.run("import math\nprint(math.pi, 'secret' in globals())").stdout == "3.141592653589793 False\n"


def test_async_runs_share_the_worker_slots(ex):
    # Each run reports when it ran; with sandbox.workers=2, never more than two at once.
    code = "import time\nstart = time.time()\ntime.sleep(0.5)\nprint(start, time.time())"

    async def burst():
        return await asyncio.gather(*(ex.arun(code) for _ in range(4)))

    spans = [tuple(map(float, r.stdout.split())) for r in asyncio.run(burst())]
    assert len(spans) == 4
    at_once = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert at_once == 2, spans


def test_no_stray_process_after_hundreds_of_hostile_runs(ex):
    hostile = [
        "import subprocess\nsubprocess.Popen(['sleep', '30'], start_new_session=True)",
        "import os\nif os.fork() == 0:\n    os.setsid()\n    import time; time.sleep(30)",
        "import os\nos._exit(7)",
        "import ctypes\nctypes.string_at(0)",
        "raise ValueError('boom')",
        "import os\nfor _ in range(5):\n    if os.fork() == 0:\n        import time; time.sleep(30)",
        "import sys\nsys.stdout.write('y' * 200000)",
        "import os, signal\nos.kill(os.getppid(), signal.SIGTERM)",
    ]
    runs_before = ex.stats()["runs"]
    for i in range(96):
        result = ex.run(hostile[i % len(hostile)], timeout_s=5)
        assert result.killed_reason != "executor_died", result
    assert ex.stats()["runs"] - runs_before == 96
    assert leftovers(ex, 5) == []
    assert ex.run("print(sum(range(10)))").stdout == "45\n"



def test_snippet_threads_finish_before_the_run_ends(ex):
    code = "import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.2), print('late'))).start()\nprint('early')"
    assert ex.run(code).stdout == "early\nlate\n"




def test_runs_stay_on_the_cpus_the_sandbox_is_pinned_to():
    before = os.sched_getaffinity(0)
    ex = Executor(SandboxConfig(cpus=[0], workers=1, spares=1))
    try:
        result = ex.run("import os\ntry:\n    os.sched_setaffinity(0, range(os.cpu_count()))\nexcept OSError as e:\n"
                        "    print(e.errno)\nprint(sorted(os.sched_getaffinity(0)))")
        numpy = ex.run("import numpy as np\nprint(round(float(np.linalg.svd(np.ones((200, 200)))[1][0])))")
    finally:
        ex.close()
    assert result.stdout == "1\n[0]\n", result  # EPERM: it cannot widen its CPUs onto the engine's
    assert numpy.stdout == "200\n", numpy  # threaded BLAS runs all the same
    assert os.sched_getaffinity(0) == before  # the caller keeps its CPUs


def test_pinning_to_a_cpu_the_host_lacks_is_a_clear_error():
    with pytest.raises(SandboxError, match=r"sandbox.cpus=\[4096\]: cannot run there .* this host has CPUs 0-"):
        Executor(SandboxConfig(cpus=[4096]))


def test_sandbox_cpus_must_be_cpu_ids():
    with pytest.raises(ConfigError, match="sandbox.cpus"):
        load_config(overrides=["sandbox.cpus=[-1]"])


def test_frames_are_bounded_and_checked():
    from r1ci.sandbox.server import HEADER, MAX_FRAME, FrameError, FrameReader, send_frame

    def read(payload: bytes, fds=()):
        a, b = socket.socketpair()
        socket.send_fds(a, [payload], list(fds)) if fds else a.sendall(payload)
        a.close()
        reader = FrameReader(b)
        try:
            while reader.feed():
                frames = list(reader.frames())
                if frames:
                    return frames
        finally:
            reader.close()
            b.close()

    with pytest.raises(FrameError, match="announced"):
        read(HEADER.pack(MAX_FRAME + 1) + b"{")
    with pytest.raises(FrameError, match="not a JSON object"):
        read(HEADER.pack(2) + b"[]")
    with pytest.raises(FrameError, match="not JSON"):
        read(HEADER.pack(3) + b"{{{")
    before = len(os.listdir("/proc/self/fd"))
    pipes = [os.pipe() for _ in range(4)]
    with pytest.raises(FrameError, match="too many fds"):
        read(HEADER.pack(2) + b"{}", [fd for pair in pipes for fd in pair])
    for pair in pipes:
        for fd in pair:
            os.close(fd)
    assert len(os.listdir("/proc/self/fd")) == before  # the fds that did arrive were closed
    a, b = socket.socketpair()
    with pytest.raises(FrameError, match="over the"):
        send_frame(a, {"code": "x" * MAX_FRAME})
    a.close()
    b.close()


def test_a_result_line_is_checked_field_by_field():
    from r1ci.sandbox.executor import killed_reason, parse_result

    good = {"exit_code": None, "signal": 99, "reason": "", "cpu_s": 0.1, "setup_error": "", "oom_kills": 0}
    assert killed_reason(parse_result(json.dumps(good)), "", 60) == "signal:99"  # a number with no name is still named
    for bad in ("", "{", "[1]", json.dumps({**good, "signal": "9"}), json.dumps({**good, "oom_kills": True})):
        with pytest.raises(ValueError):
            parse_result(bad)


def test_a_huge_snippet_is_refused_without_running(ex):
    from r1ci.sandbox.executor import MAX_CODE_BYTES

    result = ex.run("#" * (MAX_CODE_BYTES + 1))
    assert result.killed_reason == "code_too_large" and not result.executor_failed and result.exit_code is None


def test_cgroup_v2_asked_for_where_it_does_not_delegate_is_a_clear_error():
    from r1ci.sandbox import cgroups

    plan, why = cgroups.plan("v2", "/nonexistent/cgroup")
    assert plan is None and "/nonexistent/cgroup" in why
    with pytest.raises(SandboxError, match=r"sandbox.cgroup=v2: not usable here"):
        Executor(SandboxConfig(cgroup="v2", cgroup_parent="/nonexistent/cgroup", preload=[], warm_up=""))


def test_without_a_cgroup_memory_is_limited_per_process():
    with Executor(SandboxConfig(cgroup="off", memory_mb=256, preload=[], warm_up="")) as bare:
        assert bare.isolation["cgroup"] == "off"
        result = bare.run("blocks = [bytearray(64 << 20) for _ in range(10)]")
        assert result.killed_reason == "memory_limit" and "MemoryError" in result.stderr


def test_cgroup_v2_slot_writes_limits_joins_counts_and_kills(tmp_path):
    # cgroup v2 is not delegated on the development machine: its file protocol is checked on a
    # directory laid out like cgroupfs (the v1 path runs for real in every other sandbox test)
    from r1ci.sandbox.cgroups import Slot

    parent = tmp_path / "r1ci-1-abc"
    group = parent / "0"
    group.mkdir(parents=True)
    for f in ("memory.max", "memory.swap.max", "memory.oom.group", "pids.max", "cgroup.procs", "cgroup.kill", "memory.events"):
        (group / f).write_text("")
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    slot = Slot.create("0", {"unified": fd}, "v2", 256 << 20, 32)
    assert (group / "cgroup.kill").read_text() == "1"  # whatever a killed fork server left in it is ended first
    assert (group / "memory.max").read_text() == str(256 << 20) and (group / "pids.max").read_text() == "32"
    assert (group / "memory.swap.max").read_text() == "0" and (group / "memory.oom.group").read_text() == "1"
    slot.join()
    assert (group / "cgroup.procs").read_text() == "0"
    (group / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n")
    assert slot.oom_kills() == 2
    slot.close_fds()
    os.close(fd)


def test_deep_trees_are_removed_without_recursion(tmp_path):
    from r1ci.sandbox.mounts import remove_tree

    top = tmp_path / "top"
    top.mkdir()
    (tmp_path / "outside").write_text("keep")
    os.symlink(tmp_path / "outside", top / "to_outside")
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1200):  # shutil.rmtree recurses once a level and fails near 1000
        os.mkdir("d", dir_fd=fd)
        fd, old = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
        os.close(old)
    os.close(os.open("file", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    os.symlink("/usr", "link", dir_fd=fd)
    os.mkdir("closed", 0, dir_fd=fd)
    os.close(fd)
    assert remove_tree(str(top)) and not top.exists()
    assert (tmp_path / "outside").read_text() == "keep"  # a link is removed, never followed


def test_the_runs_root_is_read_only_and_holds_only_what_a_run_needs(ex):
    from r1ci.sandbox.executor import PACKAGE_ROOT

    # The checkout's own files stay out (its .venv, when it lives inside the checkout, is mounted).
    source = f"{PACKAGE_ROOT}/r1ci"
    code = ("import os, numpy, sympy, csv\n"
            f"print([p for p in ('/usr/bin/env', '/etc/passwd', '/dev/urandom', {source!r}, '/home', '/run', '/var/log', '/sys', '/root/.bashrc') if os.path.exists(p)])\n"
            "try:\n    open('/usr/x', 'w')\nexcept OSError as e:\n    print(e.strerror)")
    result = ex.run(code)
    assert result.stdout == "['/usr/bin/env', '/etc/passwd', '/dev/urandom']\nRead-only file system\n", result


def test_the_runs_root_holds_interpreter_paths_under_tmp_and_closed_directories():
    from r1ci.sandbox.mounts import root_sources

    sources = root_sources(["/tmp/clone/.venv", "/tmp/clone", "/root/.pyenv/versions/3.11.7", "/usr/lib/python3"])
    wanted = [p for p in ("/tmp/clone", "/root/.pyenv/versions/3.11.7") if os.path.exists(p)]
    assert all(p in sources for p in wanted) and "/usr/lib/python3" not in sources and "/usr" in sources


def test_closing_twice_never_raises():
    executor = Executor(SandboxConfig(preload=[], warm_up=""))
    executor.run("import os\nfor _ in range(1200):\n    os.mkdir('d')\n    os.chdir('d')")
    executor.close()
    executor.close()
    assert executor.run("print(1)").killed_reason == "sandbox_error"
