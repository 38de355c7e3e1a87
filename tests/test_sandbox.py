"""The code executor against ordinary, broken and hostile snippets (real forks, real limits)."""

import asyncio
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from r1ci.config import ConfigError, SandboxConfig, load_config
from r1ci.sandbox import Executor, run_code
from r1ci.sandbox.executor import SandboxError, available


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


def leftovers(executor: Executor, seconds: float = 3.0) -> list[int]:
    """Host pids still running under the uid of any earlier run (each run has its own uid,
    handed out in order; idle spare children hold the uids after the probe's)."""
    probe = int(executor.run("import os; print(os.getuid())").stdout)
    earlier = range(executor.uid_range.start, probe)
    deadline = time.monotonic() + seconds
    while True:
        found = []
        for name in os.listdir("/proc"):
            try:
                if name.isdigit() and os.stat(f"/proc/{name}").st_uid in earlier:
                    found.append(int(name))
            except FileNotFoundError:
                pass
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_snippet_output_and_exit_code(ex):
    result = ex.run("import math\nprint(math.factorial(5))")
    assert result.ok and result.stdout == "120\n" and result.stderr == "" and result.killed_reason == ""


def test_best_containment_is_active_and_reported(ex):
    assert ex.containment == ("bwrap" if available("bwrap") else "unshare" if available("unshare") else "none")


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
    result = ex.run(code, timeout=1)
    assert result.timed_out and result.killed_reason == "timeout" and result.exit_code is None
    assert 0.9 < result.duration_s < 5
    assert leftovers(ex) == []


def test_background_process_in_new_session_does_not_outlive_the_run(ex):
    result = ex.run("import subprocess\np = subprocess.Popen(['sleep', '60'], start_new_session=True)\nprint('started')")
    assert result.ok and result.stdout == "started\n" and result.duration_s < 5
    assert leftovers(ex) == []


def test_cpu_limit_kills_busy_code(tight):
    result = tight.run("while True: pass", timeout=8)
    assert result.killed_reason == "cpu_limit" and not result.timed_out and result.duration_s < 7


def test_memory_hog_gets_memory_error(tight):
    result = tight.run("blocks = [bytearray(64 << 20) for _ in range(100)]")
    assert result.killed_reason == "memory_limit" and "MemoryError" in result.stderr


def test_file_size_limit_refuses_big_files(tight):
    result = tight.run("open('big', 'wb').write(b'x' * (4 << 20))")
    assert result.exit_code == 1 and "File too large" in result.stderr


def test_gigabytes_of_output_are_capped_and_the_run_killed(tight):
    result = tight.run("import sys\nwhile True: sys.stdout.write('x' * 65536)", timeout=8)
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
    bomb = tight.run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", timeout=2)
    assert bomb.killed_reason in ("timeout", "cpu_limit")
    assert leftovers(tight) == []
    assert tight.run("print('still here')").stdout == "still here\n"


def test_segfault_via_ctypes_is_reported(ex):
    result = ex.run("import ctypes\nctypes.string_at(0)")
    assert result.killed_reason == "signal:SIGSEGV" and result.exit_code is None


def test_killing_the_parent_is_refused_and_executor_survives(ex):
    result = ex.run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")
    assert "PermissionError" in result.stderr
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


def test_writes_outside_the_working_dir_are_refused(ex):
    code = (
        "import os\nopen('mine.txt', 'w').write('ok')\nprint(os.getcwd())\n"
        "for path in ['/etc/r1ci_test', '/work/r1ci_test', os.path.expanduser('~root') + '/r1ci_test', '/usr/r1ci_test']:\n"
        "    try:\n        open(path, 'w')\n        print('WROTE', path)\n    except OSError as e:\n        print('refused', path)\n"
    )
    result = ex.run(code)
    assert result.ok and "WROTE" not in result.stdout and result.stdout.count("refused") == 4
    workdir = result.stdout.splitlines()[0]
    peek = ex.run(f"open({workdir!r} + '/mine.txt').read()")  # another run, another uid
    assert "PermissionError" in peek.stderr or "FileNotFoundError" in peek.stderr
    for _ in range(40):  # removed just after the run ends
        if ex.run(f"import os; print(os.path.exists({workdir!r}))").stdout == "False\n":
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"{workdir} was not removed")


def test_network_is_unreachable(ex):
    host = socket.socket()
    host.bind(("127.0.0.1", 0))
    host.listen()
    host.settimeout(0.5)
    port = host.getsockname()[1]
    code = (
        "import socket\n"
        f"for addr in [('127.0.0.1', {port}), ('1.1.1.1', 53)]:\n"
        "    try:\n        socket.create_connection(addr, timeout=2)\n        print('CONNECTED', addr)\n"
        "    except OSError as e:\n        print('blocked', type(e).__name__)\n"
    )
    result = ex.run(code)
    assert result.stdout.count("blocked") == 2 and "CONNECTED" not in result.stdout
    with pytest.raises(socket.timeout):
        host.accept()
    host.close()


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
    async def burst():
        return await asyncio.gather(*(ex.arun("import time; time.sleep(0.5); print('done')") for _ in range(4)))

    start = time.monotonic()
    results = asyncio.run(burst())
    elapsed = time.monotonic() - start
    assert [r.stdout for r in results] == ["done\n"] * 4
    assert 0.95 < elapsed < 4  # 2 workers: two rounds of 0.5 s


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
    for i in range(240):
        result = ex.run(hostile[i % len(hostile)], timeout=5)
        assert result.killed_reason != "executor_died", result
    assert ex.stats()["runs"] - runs_before == 240
    assert leftovers(ex, 5) == []
    assert ex.run("print(sum(range(10)))").stdout == "45\n"


@pytest.mark.skipif(os.getuid() != 0, reason="seccomp fallback is exercised as root here")
def test_without_namespaces_sockets_are_refused():
    with Executor(SandboxConfig(containment="none", preload=["socket"], warm_up="")) as bare:
        assert bare.containment == "none"
        result = bare.run("import socket\ntry:\n    socket.socket()\n    print('OPEN')\nexcept OSError as e:\n    print('refused', e.errno)")
        assert result.stdout.startswith("refused") and "OPEN" not in result.stdout
        assert bare.run("import os; print(os.getuid() != 0)").stdout == "True\n"


@pytest.mark.skipif(not available("unshare"), reason="unshare cannot create namespaces here")
def test_unshare_containment_isolates_network_and_still_imports_the_stdlib():
    with Executor(SandboxConfig(containment="unshare", preload=["math"], warm_up="")) as ex:
        code = (
            "import csv, socket\nprint(csv.__name__)\n"
            "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2)\nexcept OSError as e:\n    print('blocked', e.errno)"
        )
        result = ex.run(code)
        assert result.stdout.splitlines()[0] == "csv" and "blocked" in result.stdout, result


def test_snippet_threads_finish_before_the_run_ends(ex):
    code = "import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.2), print('late'))).start()\nprint('early')"
    assert ex.run(code).stdout == "early\nlate\n"


def test_run_code_uses_a_shared_warm_executor():
    first = run_code("print(1)")
    start = time.monotonic()
    second = run_code("print(2)")
    assert first.stdout == "1\n" and second.stdout == "2\n" and time.monotonic() - start < 2


def test_interpreter_paths_under_tmp_stay_visible_inside_the_private_tmp(tmp_path):
    # A CI clone (and its .venv) under /tmp would otherwise vanish behind bwrap's --tmpfs /tmp.
    from r1ci.config import ConfigError, SandboxConfig, load_config
    from r1ci.sandbox.executor import bwrap_argv

    venv = tmp_path / "clone" / ".venv"
    venv.mkdir(parents=True)
    argv = bwrap_argv(SandboxConfig(), [str(tmp_path / "clone"), str(venv), "/usr/lib"])
    binds = [i for i, a in enumerate(argv) if a == "--ro-bind" and argv[i + 1] == str(tmp_path / "clone")]
    private_tmp = next(i for i, a in enumerate(argv) if a == "--tmpfs" and argv[i + 1] == "/tmp")
    assert binds and binds[0] > private_tmp  # bound back after /tmp is made private; it covers the venv


def test_runs_stay_on_the_cpus_the_sandbox_is_pinned_to():
    before = os.sched_getaffinity(0)
    ex = Executor(SandboxConfig(cpus=[0], workers=1, spares=1))
    try:
        result = ex.run("import os\nprint(sorted(os.sched_getaffinity(0)))")
    finally:
        ex.close()
    assert result.stdout.strip() == "[0]"
    assert os.sched_getaffinity(0) == before  # the caller keeps its CPUs


def test_pinning_to_a_cpu_the_host_lacks_is_a_clear_error():
    with pytest.raises(SandboxError, match=r"sandbox.cpus=\[4096\]: cannot run there .* this host has CPUs 0-"):
        Executor(SandboxConfig(cpus=[4096]))


def test_sandbox_cpus_must_be_cpu_ids():
    with pytest.raises(ConfigError, match="sandbox.cpus"):
        load_config(overrides=["sandbox.cpus=[-1]"])
