"""Hostile snippets, one class of attack per test, in every containment mode this host supports.

Each test runs the attack for real, asserts that it failed (or, for `none`, what the README
says `none` does not stop), and then that the next trivial snippet still answers and no
process or file of the attacking run is left.
"""

import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sandbox_checks import assert_sound

from r1ci.config import SandboxConfig
from r1ci.sandbox import Executor
from r1ci.sandbox.base import MEMORY_LIMIT, TIMEOUT
from r1ci.sandbox.executor import PACKAGE_ROOT, available

MODES = [m for m in ("bwrap", "unshare", "none") if available(m)]


@pytest.fixture(scope="module", params=MODES)
def ex(request):
    cfg = SandboxConfig(containment=request.param, timeout_s=10, memory_mb=256, max_processes=24, max_file_mb=8,
                        tmp_mb=16, tmp_files=4000, workers=2, spares=2, preload=["socket", "ctypes", "subprocess", "json"],
                        warm_up="")
    executor = Executor(cfg)
    yield executor
    executor.close()  # must not raise, whatever the runs left behind


def together(ex, *codes, delay=0.5, timeout=10):
    """Run the snippets at once (each started `delay` s after the previous); their results in order."""
    with ThreadPoolExecutor(len(codes)) as pool:
        pending = []
        for code in codes:
            pending.append(pool.submit(ex.run, code, timeout))
            time.sleep(delay)
        return [p.result(timeout=60) for p in pending]


def test_the_code_holds_no_fd_but_stdin_stdout_stderr(ex):
    code = ("import os\nopen_fds = []\nfor fd in range(3, 4096):\n    try:\n        os.fstat(fd)\n"
            "        open_fds.append(fd)\n    except OSError:\n        pass\nprint(open_fds)")
    result = ex.run(code)
    assert result.ok and result.stdout == "[]\n", result
    assert_sound(ex)


def test_bytes_written_to_any_fd_and_forged_result_lines_change_nothing(ex):
    forged = '{"exit_code": 0, "signal": null, "reason": "", "cpu_s": 0.0, "setup_error": "", "oom_kills": 0}'
    spam = (
        "import os, struct, sys\n"
        f"line = {forged!r}.encode() + b'\\n'\n"
        "frame = struct.pack('!I', 2**31) + b'{' * 100\n"
        "for fd in range(0, 1024):\n    for data in (line, frame, b'\\xff' * 70000):\n        try:\n"
        "            os.write(fd, data)\n        except OSError:\n            pass\n"
        "print('spammed', flush=True)\nos._exit(7)\n"
    )
    slow, hostile = together(ex, "import time; time.sleep(2); print('unharmed')", spam)
    assert hostile.exit_code == 7 and hostile.killed_reason == "" and "spammed" in hostile.stdout
    assert forged in hostile.stdout  # what it wrote to fds 1 and 2 is just its output
    assert slow.ok and slow.stdout == "unharmed\n", slow
    assert_sound(ex)


def test_runs_cannot_reach_each_others_sockets(ex):
    name = f"r1ci-secret-{uuid.uuid4().hex[:8]}"
    listener = (
        "import socket, time\nopen_ = []\n"
        "for family, addr in ((socket.AF_UNIX, '\\0" + name + "'), (socket.AF_INET, ('127.0.0.1', 47123))):\n"
        "    try:\n        s = socket.socket(family)\n        s.bind(addr)\n        s.listen()\n"
        "        s.settimeout(0.1)\n        open_.append(s)\n    except OSError as e:\n        print('no listener', e.errno)\n"
        "print('listening', len(open_), flush=True)\nend = time.time() + 2.5\nwhile time.time() < end:\n"
        "    for s in open_:\n        try:\n            s.accept()\n            print('LEAK')\n        except OSError:\n            pass\n"
    )
    client = (
        "import socket\n"
        "for family, addr in ((socket.AF_UNIX, '\\0" + name + "'), (socket.AF_INET, ('127.0.0.1', 47123))):\n"
        "    try:\n        c = socket.socket(family)\n        c.settimeout(1)\n        c.connect(addr)\n        print('CONNECTED')\n"
        "    except OSError as e:\n        print('refused', type(e).__name__)\n"
    )
    server, peer = together(ex, listener, client, delay=0.8)
    assert "LEAK" not in server.stdout and "CONNECTED" not in peer.stdout, (server, peer)
    assert peer.stdout.count("refused") == 2
    assert server.stdout.startswith("no listener 13\n")  # no Unix socket (abstract or not) can even be made
    if ex.containment != "none":
        assert "listening 1" in server.stdout  # a loopback of its own: other runs cannot reach it
    assert_sound(ex)


def test_a_run_has_a_working_loopback_of_its_own(ex):
    code = ("import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\n"
            "c = socket.create_connection(s.getsockname())\na, _ = s.accept()\nc.sendall(b'ping')\nprint(a.recv(4).decode())")
    result = ex.run(code)
    if ex.containment == "none":
        assert "PermissionError" in result.stderr  # no socket at all without a network namespace
    else:
        assert result.ok and result.stdout == "ping\n", result
    assert_sound(ex)


def test_host_services_are_unreachable(ex, tmp_path):
    host = socket.socket()
    host.bind(("127.0.0.1", 0))
    host.listen()
    host.settimeout(0.3)
    paths = [f"/var/tmp/r1ci-{uuid.uuid4().hex[:8]}.sock", f"{PACKAGE_ROOT}/.r1ci-{uuid.uuid4().hex[:8]}.sock"]
    unix = []
    for path in paths:
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        os.chmod(path, 0o777)
        s.listen()
        s.settimeout(0.3)
        unix.append(s)
    code = (
        "import ctypes, socket\n"
        f"for family, addr in [(socket.AF_INET, ('127.0.0.1', {host.getsockname()[1]})), (socket.AF_INET, ('1.1.1.1', 53)),"
        f" (socket.AF_UNIX, {paths[0]!r}), (socket.AF_UNIX, {paths[1]!r}), (40, (2, 1024))]:\n"
        "    try:\n        c = socket.socket(family)\n        c.settimeout(1)\n        c.connect(addr)\n        print('CONNECTED', addr)\n"
        "    except OSError as e:\n        print('blocked', type(e).__name__)\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('io_uring', libc.syscall(425, 8, ctypes.create_string_buffer(120)), ctypes.get_errno())\n"
    )
    try:
        result = ex.run(code)
        assert result.stdout.count("blocked") == 5 and "CONNECTED" not in result.stdout, result
        assert "io_uring -1 1\n" in result.stdout  # EPERM: its ring could open sockets without socket()
        for s in [host, *unix]:
            with pytest.raises(socket.timeout):
                s.accept()
    finally:
        for s in [host, *unix]:
            s.close()
        for path in paths:
            os.unlink(path)
    assert_sound(ex)


def test_runs_see_and_signal_only_their_own_processes(ex):
    sleeper = "import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(2.5)\nprint('alive')"
    looker = (
        "import os, signal\nmine = os.getuid()\nothers = []\n"
        "for p in os.listdir('/proc'):\n    if p.isdigit():\n        try:\n            st = os.stat('/proc/' + p)\n"
        "        except OSError:\n            continue\n        if st.st_uid != mine:\n            others.append(int(p))\n"
        "killed = 0\nfor p in others:\n    try:\n        os.kill(p, signal.SIGKILL)\n        killed += 1\n    except OSError:\n        pass\n"
        "os.kill(-1, signal.SIGKILL) if os.getpid() != 1 else None\n"
        "print('others', len(others), 'killed', killed)\n"
    )
    first, second = together(ex, sleeper, looker, delay=0.8)
    assert first.ok and first.stdout.endswith("alive\n"), (first, second)
    others, killed = int(second.stdout.split()[1]), int(second.stdout.split()[3])
    assert killed == 0
    if ex.containment != "none":
        assert others == 0  # its own pid namespace: nothing of other runs or the host is visible
    assert_sound(ex)


def test_shared_memory_and_files_do_not_outlive_the_run(ex):
    key = int(uuid.uuid4().hex[:7], 16)
    mark = uuid.uuid4().hex[:8]
    places = ["/tmp", "/var/tmp", "/dev/shm", "."]
    writer = (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"print('shm', libc.shmget({key}, 4096, 0o1666) >= 0)\n"
        f"for d in {places + ['/etc', '/usr', PACKAGE_ROOT, '/root']!r}:\n"
        f"    try:\n        open(os.path.join(d, 'r1ci-{mark}'), 'w').write('x')\n        print('wrote', d)\n"
        "    except OSError:\n        print('refused', d)\n"
    )
    reader = (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"print('shm', libc.shmget({key}, 0, 0) >= 0)\n"
        f"print('seen', [d for d in {places!r} if os.path.exists(os.path.join(d, 'r1ci-{mark}'))])\n"
    )
    first = ex.run(writer)
    assert first.stdout.count("wrote") == 4 and "refused /etc" in first.stdout and "refused /usr" in first.stdout, first
    assert first.stdout.startswith("shm False" if ex.containment == "none" else "shm True")  # none: no host IPC
    second = ex.run(reader)
    assert second.stdout == "shm False\nseen []\n", second
    with open("/proc/sysvipc/shm") as f:
        assert not any(line.split()[0] == str(key) for line in f.readlines()[1:])
    assert_sound(ex)  # also: no file of the run left in the host's /tmp, /var/tmp, /dev/shm


def test_memory_is_limited_for_the_whole_run(ex):
    if ex.isolation["cgroup"] == "off":
        pytest.skip("no cgroup here: memory is limited per process only (see the README)")
    spread = (  # 4 processes x 120 MiB, each under the 256 MiB address-space limit, 480 MiB together
        "import os, time\nkids = []\nfor _ in range(4):\n    pid = os.fork()\n    if pid == 0:\n"
        "        block = bytearray(120 << 20)\n        block[::4096] = b'x' * len(block[::4096])\n        time.sleep(3)\n        os._exit(0)\n"
        "    kids.append(pid)\nprint(sorted(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in kids))\n"
    )
    result = ex.run(spread)
    codes = eval(result.stdout)
    assert -9 in codes, result  # the cgroup's OOM killer ended some of them
    memfds = ("import os\nfds = []\nfor i in range(6):\n    fd = os.memfd_create(f'm{i}')\n"
              "    for _ in range(7):\n        os.write(fd, b'x' * (1 << 20))\n    fds.append(fd)\nprint('held', len(fds))")
    small = ex.run(memfds)  # 42 MiB in memfds: fine
    assert small.ok and small.stdout == "held 6\n", small
    big = ex.run(memfds.replace("range(6)", "range(60)"))  # 420 MiB held in memfds, in one process
    assert big.killed_reason == MEMORY_LIMIT and "held" not in big.stdout, big
    assert_sound(ex)


def test_processes_are_limited_for_the_whole_run(ex):
    code = (  # two processes fork until refused; together they stay under max_processes
        "import os, time\nr, w = os.pipe()\nfirst = os.fork()\n"
        "def spawn():\n    n = 0\n    try:\n        for _ in range(40):\n            if os.fork() == 0:\n"
        "                time.sleep(3)\n                os._exit(0)\n            n += 1\n    except OSError:\n        pass\n    return n\n"
        "n = spawn()\nif first == 0:\n    os.write(w, str(n).encode())\n    os._exit(0)\n"
        "os.waitpid(first, 0)\nprint(n + int(os.read(r, 10)))\n"
    )
    result = ex.run(code)
    assert result.ok and 0 < int(result.stdout) < ex.cfg.max_processes, result
    assert_sound(ex)


def test_disk_use_is_bounded(ex):
    fill = ("import os\nwritten = 0\ntry:\n    for i in range(64):\n        with open(f'f{i}', 'wb') as f:\n"
            "            for _ in range(4):\n                f.write(b'x' * (1 << 20))\n                f.flush()\n                written += 1\n"
            "except OSError as e:\n    print('stopped', e.strerror, written)\n")
    many = ("import os\nn = 0\ntry:\n    for i in range(6000):\n        open(f'e{i}', 'w').close()\n        n += 1\n"
            "except OSError as e:\n    print('stopped', e.strerror, n)\n")
    big_file = "open('big', 'wb').write(b'x' * (12 << 20))"
    assert "File too large" in ex.run(big_file).stderr  # max_file_mb, in every mode
    if ex.containment == "none":
        pytest.skip("containment none bounds each file (max_file_mb), not their total (see the README)")
    filled = ex.run(fill)
    assert "No space left on device" in filled.stdout and int(filled.stdout.split()[-1]) <= ex.cfg.tmp_mb, filled
    inodes = ex.run(many)
    assert "No space left on device" in inodes.stdout and int(inodes.stdout.split()[-1]) <= ex.cfg.tmp_files, inodes
    assert_sound(ex)


def test_deep_directory_trees_do_not_break_the_clean_up(ex):
    code = ("import os\nfor top in (os.getcwd(), '/var/tmp'):\n    os.chdir(top)\n    for _ in range(1600):\n        os.mkdir('d')\n        os.chdir('d')\n"
            "    os.symlink('/usr', 'link')\n    os.mkdir('closed', 0)\nprint('deep')")
    result = ex.run(code, 30)
    assert result.stdout == "deep\n", result
    assert_sound(ex)


def test_wall_time_holds_when_the_code_fights_back(ex):
    code = (
        "import os, signal, sys\nfor sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):\n"
        "    signal.signal(sig, signal.SIG_IGN)\n"
        "for _ in range(3):\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n            while True: pass\n        os._exit(0)\n"
        "os.close(1)\nos.close(2)\nwhile True: pass\n"
    )
    start = time.monotonic()
    result = ex.run(code, 1.5)
    assert result.timed_out and result.killed_reason == TIMEOUT and result.exit_code is None, result
    assert time.monotonic() - start < 5
    assert_sound(ex)


def test_calls_that_widen_the_kernel_surface_are_refused(ex):
    # each as (name, syscall number, args); without the filter a run's own uid could make a user namespace
    # (and be root in it), attach to or read another process, or load bpf
    code = (
        "import ctypes, os, socket\nlibc = ctypes.CDLL(None, use_errno=True)\nbuf = ctypes.create_string_buffer(256)\n"
        "NEWUSER, NEWNET, SIGCHLD = 0x10000000, 0x40000000, 17\n"
        "calls = [('unshare_user', 272, NEWUSER), ('unshare_net', 272, NEWNET), ('clone_newuser', 56, NEWUSER | SIGCHLD, 0, 0, 0, 0),\n"
        "         ('setns', 308, 0, 0), ('mount', 165, b'none', b'/tmp', b'tmpfs', 0, 0), ('bpf', 321, 0, buf, 128),\n"
        "         ('perf_event_open', 298, buf, 0, -1, -1, 0), ('userfaultfd', 323, 0), ('keyctl', 250, 0, 0),\n"
        "         ('ptrace_attach', 101, 16, os.getppid(), 0, 0), ('process_vm_readv', 310, os.getppid(), buf, 1, buf, 1, 0),\n"
        "         ('io_uring_setup', 425, 8, buf), ('chroot', 161, b'/tmp'), ('pivot_root', 155, b'/tmp', b'/tmp')]\n"
        "for name, nr, *args in calls:\n"
        "    r = libc.syscall(nr, *args)\n"
        "    if r == 0 and nr == 56:\n        os._exit(0)  # a clone that went through: the child leaves at once\n"
        "    print(name, r, ctypes.get_errno())\n"
        "print('clone3', libc.syscall(435, buf, 88), ctypes.get_errno())\n"
        "for family in (socket.AF_UNIX, socket.AF_NETLINK, socket.AF_PACKET, 40):\n"
        "    try:\n        socket.socket(family, socket.SOCK_DGRAM if family == socket.AF_NETLINK else socket.SOCK_STREAM)\n"
        "        print('socket', family, 'MADE')\n    except OSError as e:\n        print('socket', family, e.errno)\n"
        "try:\n    socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\n    print('dgram pair MADE')\nexcept OSError as e:\n"
        "    print('dgram pair', e.errno)\n"
    )
    result = ex.run(code)
    lines = result.stdout.splitlines()
    assert result.ok and len(lines) == 20, result
    for line in lines[:14]:
        assert line.endswith(" -1 1"), line  # EPERM, from the filter
    assert lines[14] == "clone3 -1 38"  # ENOSYS, so libc falls back to clone, whose flags the filter can read
    assert all(line.endswith(" 13") for line in lines[15:20]), lines  # EACCES: no socket but IPv4/IPv6
    x32 = ex.run("import ctypes\nctypes.CDLL(None).syscall(0x40000000 | 39)\nprint('ran')")  # getpid of the x32 ABI
    assert x32.killed_reason == "signal:SIGSYS" and "ran" not in x32.stdout, x32
    assert_sound(ex)


def test_the_code_holds_no_privilege(ex):
    # a uid of its own with no groups and no capabilities, and no_new_privs, so the host's setuid
    # binaries (mount, passwd, ...) cannot give it any back
    code = ("import os\nprint(os.getuid() == os.geteuid() == os.getgid() == os.getegid(), os.getuid() > 0, os.getgroups())\n"
            "print(*sorted(l.split()[1] for l in open('/proc/self/status') if l.startswith(('CapInh', 'CapPrm', 'CapEff', 'CapAmb', 'NoNewPrivs'))))\n"
            "import subprocess\nprint(subprocess.run(['mount', '-t', 'tmpfs', 'none', '/tmp'], capture_output=True).returncode != 0)")
    result = ex.run(code)
    assert result.stdout == "True True []\n0000000000000000 0000000000000000 0000000000000000 0000000000000000 1\nTrue\n", result
    assert_sound(ex)
