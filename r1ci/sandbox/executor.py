"""The reusable code executor: one warm fork server inside the chosen containment, spares ready in their own namespaces.

`Executor` starts `r1ci.sandbox.server` once (inside bubblewrap or `unshare`, or bare when
`none` is asked for by name), takes a warm spare run for each snippet, sends the snippet and
its stdout/stderr pipes to the run and the timeout and a result pipe to the run's supervisor,
captures the output with a byte cap, and builds the `ExecResult` from the supervisor's
observations only. A dead server is restarted on the next call.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import json
import logging
import os
import random
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from r1ci.config import CONTAINMENTS as CONTAINMENT_CHOICES, SandboxConfig
from r1ci.sandbox import cgroups, mounts, seccomp
from r1ci.sandbox.base import (
    CODE_TOO_LARGE,
    CPU_LIMIT,
    EXECUTOR_DIED,
    EXECUTOR_UNRESPONSIVE,
    MEMORY_LIMIT,
    OUTPUT_LIMIT,
    SANDBOX_ERROR,
    SIGNAL_PREFIX,
    TIMEOUT,
    ExecResult,
)
from r1ci.sandbox.server import MAX_FRAME, SANDBOX_ENV, FrameError, FrameReader, field, send_frame

log = logging.getLogger(__name__)

CONTAINMENTS = tuple(c for c in CONTAINMENT_CHOICES if c != "auto")  # the modes besides auto
AUTO = ("bwrap", "unshare")  # what `auto` may pick: never `none`
UID_SPAN = 1 << 16  # uids one executor cycles through, one per run
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
MAX_CODE_BYTES = MAX_FRAME - 4096  # the rest of the frame is its JSON wrapping
NONE_DOES_NOT_STOP = (
    "reading any file the unprivileged run uid may read, seeing the host's processes, and writing "
    "world-writable host directories without a bound on the total size, where runs going at the same time "
    "can pass each other files (files a run leaves in /tmp, /var/tmp and /dev/shm are deleted after it, others stay)"
)
PROBE = f"import ctypes, sys\nsys.exit(ctypes.CDLL(None).unshare({mounts.RUN_NAMESPACES}) != 0)"


class SandboxError(RuntimeError):
    """The executor could not start with the requested containment."""


class ServerDied(RuntimeError):
    pass


@contextlib.contextmanager
def pinned(cpus: list[int]):
    """This thread on `cpus` (all CPUs it may use when empty) for the block: processes it starts
    inside inherit that affinity, the rest of the process keeps its own."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    missing = [c for c in cpus if c >= (os.cpu_count() or 1)]
    try:
        if missing:
            raise OSError(f"no CPU {missing[0]}")
        os.sched_setaffinity(0, cpus)
    except OSError as exc:
        raise SandboxError(f"sandbox.cpus={list(cpus)}: cannot run there ({exc}); this host has CPUs 0-{(os.cpu_count() or 1) - 1}") from None
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def launcher(containment: str) -> list[str]:
    """The command that puts the fork server in its own pid, network, IPC, UTS and mount
    namespaces, as root there (it builds the runs' root and their per-run namespaces itself)."""
    if containment == "bwrap":
        return ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
                "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--"]
    if containment == "unshare":
        return ["unshare", "--pid", "--fork", "--net", "--ipc", "--uts", "--mount", "--mount-proc", "--kill-child", "--"]
    return []


def available(containment: str) -> bool:
    """Whether this host lets the fork server create each run's namespaces under `containment` (a ~50 ms probe)."""
    if containment == "none":
        return True
    argv = launcher(containment) + [sys.executable, "-S", "-c", PROBE]
    if shutil.which(argv[0]) is None:
        return False
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=SANDBOX_ENV, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def choose(wanted: str) -> str:
    """The containment for `sandbox.containment`: auto picks bwrap, else unshare, and never `none`."""
    if wanted == "auto":
        found = next((c for c in AUTO if available(c)), None)
        if found is None:
            raise SandboxError(
                "sandbox.containment=auto: neither bubblewrap nor unshare can create the per-run namespaces on this "
                "host (install bubblewrap, run as root, or allow namespaces). sandbox.containment=none runs code "
                f"without them; it does not stop {NONE_DOES_NOT_STOP}. Set it by name only if that is acceptable.")
        return found
    if wanted not in CONTAINMENTS:
        raise SandboxError(f"sandbox.containment: unknown '{wanted}'; use auto, {', '.join(CONTAINMENTS)}")
    if not available(wanted):
        raise SandboxError(f"sandbox.containment={wanted} is not usable on this host "
                           f"(missing tool or namespaces forbidden); use sandbox.containment=auto")
    if wanted == "none":
        if not seccomp.supported():
            raise SandboxError("sandbox.containment=none needs the seccomp filter, which r1ci has only for x86_64")
        log.warning("sandbox.containment=none: runs share the host's namespaces; it does not stop %s", NONE_DOES_NOT_STOP)
    return wanted


class _Capped:
    """Keeps the first and the last half of a stream's bytes; counts what falls between."""

    def __init__(self, cap: int):
        self.half = cap // 2
        self.head_cap = cap - self.half
        self.head, self.tail = bytearray(), bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        self.tail += data
        if len(self.tail) > 2 * self.half + 65536:
            del self.tail[: len(self.tail) - self.half]

    @property
    def dropped(self) -> int:
        return self.total - len(self.head) - len(self.tail[-self.half:] if self.half else b"")

    def text(self) -> str:
        tail = self.tail[-self.half:] if self.half else bytearray()
        if not self.dropped:
            return (self.head + self.tail).decode("utf-8", errors="replace")
        return (self.head.decode("utf-8", errors="replace") + f"\n... [{self.dropped} bytes of output dropped] ...\n"
                + tail.decode("utf-8", errors="replace"))


class _Server:
    """Parent-side handle on one fork-server process: it offers warm spares over one socket;
    each spare is a (supervisor socket, run socket) pair that the executor uses once."""

    def __init__(self, cfg: SandboxConfig, containment: str, uid_base: int, workroot: str, cgroup: dict | None):
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        namespaces = containment != "none"
        server_cfg = {
            "fd": child_sock.fileno(), "preload": list(cfg.preload), "warm_up": cfg.warm_up, "cpu_time_s": cfg.cpu_time_s,
            "memory_mb": cfg.memory_mb, "max_processes": cfg.max_processes, "max_file_mb": cfg.max_file_mb,
            "tmp_mb": cfg.tmp_mb, "tmp_files": cfg.tmp_files, "uid_base": uid_base, "uid_span": UID_SPAN,
            "lanes": cfg.workers + cfg.spares, "workroot": workroot, "namespaces": namespaces,
            "seccomp": seccomp.supported(), "drop_privileges": os.geteuid() == 0, "cgroup": cgroup,
            "python_paths": mounts.python_paths(PACKAGE_ROOT) if namespaces else [],
        }
        argv = launcher(containment) + [sys.executable, "-c", "from r1ci.sandbox.server import main; main()", json.dumps(server_cfg)]
        # glibc malloc with transparent huge pages: the preloaded heap then sits in 2 MiB pages,
        # which made each fork ~4x and each child's exit ~2x cheaper here.
        env = dict(SANDBOX_ENV, PYTHONPATH=PACKAGE_ROOT, PYTHONDONTWRITEBYTECODE="1", PYTHONMALLOC="malloc",
                   GLIBC_TUNABLES="glibc.malloc.hugetlb=1")
        fds = [child_sock.fileno(), *(cgroup["fds"].values() if cgroup else ())]
        with pinned(cfg.cpus):  # the server and every run it forks inherit the affinity
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env,
                                         pass_fds=fds, start_new_session=True, cwd="/")
        child_sock.close()
        self.sock = parent_sock
        self.alive = True
        self.send_lock = threading.Lock()  # frames to the server
        self.recv_lock = threading.Lock()  # offers of spares from the server
        self.reader = FrameReader(parent_sock)
        self.spares: collections.deque[tuple[int, int, socket.socket, socket.socket]] = collections.deque()  # lane pid, uid, sockets
        self.hello: dict | None = None

    def _pump(self, timeout: float) -> None:
        """Read the server's next frames (the hello, offers of spares); call with recv_lock held."""
        self.sock.settimeout(timeout)
        try:
            if not self.reader.feed():
                self.alive = False
                raise ServerDied(f"the fork server exited (code {self.proc.poll()})")
            for frame in self.reader.frames():
                op = field(frame, "op", str)
                if op == "ready":
                    self.hello = frame
                elif op == "failed":
                    self.alive = False
                    raise ServerDied(str(frame.get("error", "")))
                elif op == "spare":
                    pid, uid = field(frame, "pid", int), field(frame, "uid", int)
                    supervisor, run = self.reader.take_fds(2)
                    self.spares.append((pid, uid, socket.socket(fileno=supervisor), socket.socket(fileno=run)))
                else:
                    raise FrameError(f"unexpected frame {op!r}")
        except socket.timeout as exc:
            raise ServerDied(f"no word from the fork server within {timeout:g} s") from exc
        except (OSError, FrameError) as exc:
            self.alive = False
            raise ServerDied(f"the fork server is not reachable: {exc}") from exc
        finally:
            self.reader.close()
            self.sock.settimeout(None)

    def wait_ready(self, timeout: float) -> dict:
        """The server's hello once its preload imports are done."""
        deadline = time.monotonic() + timeout
        with self.recv_lock:
            while self.hello is None:
                self._pump(max(0.001, deadline - time.monotonic()))
            return self.hello

    def take(self, wait_s: float) -> tuple[int, socket.socket, socket.socket]:
        """A warm spare (its lane's pid, supervisor socket, run socket), waiting up to `wait_s` for one."""
        deadline = time.monotonic() + wait_s
        with self.recv_lock:
            if not self.alive or self.proc.poll() is not None:
                self.alive = False
                raise ServerDied("the fork server is not running")
            while not self.spares:
                self._pump(max(0.001, deadline - time.monotonic()))
            pid, _uid, supervisor, run = self.spares.popleft()
        return pid, supervisor, run

    def offered_uids(self) -> list[int]:
        """The uids of the spares offered so far and not taken (offers already sent are read first)."""
        with self.recv_lock:
            while select.select([self.sock], [], [], 0)[0]:
                try:
                    self._pump(1.0)
                except ServerDied:
                    return []
            return [uid for _, uid, _, _ in self.spares]

    def tell(self, frame: dict) -> None:
        with self.send_lock:
            try:
                send_frame(self.sock, frame)
            except OSError:
                self.alive = False

    def close(self) -> None:
        self.alive = False
        while self.spares:
            _, _, supervisor, run = self.spares.popleft()
            supervisor.close()
            run.close()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.hard_kill()

    def hard_kill(self) -> None:
        self.alive = False
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


NOTES = {
    TIMEOUT: "TimeoutError: the code ran longer than the {timeout:g} s limit and was killed",
    OUTPUT_LIMIT: "r1ci sandbox: killed after more than {output_kill_mb} MiB of output",
    CPU_LIMIT: "r1ci sandbox: killed at the CPU-time limit of {cpu_time_s} s",
    MEMORY_LIMIT: "r1ci sandbox: killed at the run's memory limit of {memory_mb} MiB",
}


def parse_result(raw: str) -> dict:
    """The supervisor's result line, checked field by field (ValueError if it is not one)."""
    msg = json.loads(raw.split("\n", 1)[0])
    if not isinstance(msg, dict):
        raise ValueError("not an object")
    for name, kinds in (("exit_code", (int, type(None))), ("signal", (int, type(None))), ("reason", str),
                        ("cpu_s", (int, float)), ("setup_error", str), ("oom_kills", int)):
        if not isinstance(msg.get(name), kinds) or isinstance(msg.get(name), bool):
            raise ValueError(f"field {name} is {msg.get(name)!r}")
    return msg


def killed_reason(msg: dict, stderr_tail: str, cpu_limit: float) -> str:
    """Why the run ended abnormally, from the supervisor's observations ("" for a normal exit)."""
    if msg["reason"]:
        return msg["reason"]
    if msg["oom_kills"] and msg["exit_code"] != 0:
        return MEMORY_LIMIT
    sig = msg["signal"]
    if sig is not None:
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and msg["cpu_s"] >= cpu_limit - 0.5):
            return CPU_LIMIT
        try:
            return SIGNAL_PREFIX + signal.Signals(sig).name
        except ValueError:
            return f"{SIGNAL_PREFIX}{sig}"
    if msg["exit_code"] != 0 and "MemoryError" in (stderr_tail.strip().splitlines() or [""])[-1]:
        return MEMORY_LIMIT  # the address-space limit of one process (the code's own traceback says so)
    return ""


class Executor:
    """Runs snippets in fresh, isolated runs forked from a warm, contained fork server (see module docstring).

    `containment` names the isolation in force: "bwrap" or "unshare" (per-run namespaces), or
    "none" (rlimits, a per-run uid and a seccomp filter only); `isolation` says what else holds.
    Implements `r1ci.sandbox.Sandbox`.
    """

    def __init__(self, cfg: SandboxConfig | None = None):
        self.cfg = cfg or SandboxConfig()
        self.containment = choose(self.cfg.containment)
        plan, why = cgroups.plan(self.cfg.cgroup, self.cfg.cgroup_parent)
        if plan is None and self.cfg.cgroup in ("v1", "v2"):
            raise SandboxError(f"sandbox.cgroup={self.cfg.cgroup}: not usable here ({why}); use sandbox.cgroup=auto or off")
        if plan is None and self.cfg.cgroup == "auto":
            log.warning("sandbox: no cgroup for run-wide limits (%s); memory_mb and max_processes hold per process "
                        "and per uid only", why)
        self._cgroup_note = why
        self._parents = cgroups.Parents(plan) if plan is not None else None
        self._uid_base = self.cfg.uid_base or random.randrange(1 << 20, 1 << 30, UID_SPAN)
        self._slots = threading.BoundedSemaphore(self.cfg.workers)
        self._threads = concurrent.futures.ThreadPoolExecutor(self.cfg.workers, thread_name_prefix="r1ci-exec")
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._workroot = "" if self.containment != "none" else tempfile.mkdtemp(prefix="r1ci-sandbox-")
        self._counters = {"runs": 0, "timeouts": 0, "kills": 0, "restarts": 0, "run_time_s": 0.0, "queue_wait_s": 0.0}
        self._closed = False
        try:
            self._ensure_server()
        except BaseException:
            self.close()
            raise

    @property
    def isolation(self) -> dict:
        """What holds for every run, by name (see the README's "What the code executor isolates")."""
        namespaces = self.containment != "none"
        return {
            "containment": self.containment,
            "per_run_namespaces": ["pid", "network", "ipc", "mount", "uts"] if namespaces else [],
            "cgroup": self._parents.plan.version if self._parents else "off",
            "cgroup_note": self._cgroup_note,
            "uid_per_run": os.geteuid() == 0,
            "seccomp": seccomp.supported(),
        }

    @property
    def uid_range(self) -> range:
        """The uids this executor's runs use (one per run): no other process should own them."""
        return range(self._uid_base, self._uid_base + UID_SPAN)

    @property
    def spare_uids(self) -> list[int]:
        """The uids of the warm spares this executor holds (none of them has run anything)."""
        return self._server.offered_uids() if self._server is not None else []

    @property
    def server_pid(self) -> int | None:
        """Host pid of the process that holds the fork server (bwrap or unshare when contained)."""
        return self._server.proc.pid if self._server is not None else None

    def _ensure_server(self) -> _Server:
        with self._lock:
            if self._closed:
                raise SandboxError("this Executor is closed")
            if self._server is not None and self._server.alive and self._server.proc.poll() is None:
                return self._server
            if self._server is not None:
                self._counters["restarts"] += 1
                log.warning("sandbox fork server died (%s); restarting it", self._server.proc.poll())
                self._server.close()
            cgroup = {"version": self._parents.plan.version, "fds": self._parents.fds} if self._parents else None
            server = _Server(self.cfg, self.containment, self._uid_base, self._workroot, cgroup)
            try:
                ready = server.wait_ready(timeout=120)
            except ServerDied as exc:
                server.hard_kill()
                raise SandboxError(f"the sandbox fork server did not start ({self.containment}): {exc}") from exc
            if ready["missing"]:
                log.warning("sandbox preload modules not importable: %s", ", ".join(ready["missing"]))
            if ready["warm_up_error"]:
                log.warning("sandbox warm_up failed (snippets still run, their first use of a library is slower): %s", ready["warm_up_error"])
            self._server = server
            return server

    def run(self, code: str, timeout_s: float | None = None) -> ExecResult:
        """Run one snippet; `timeout_s` is the wall-clock limit in seconds (default sandbox.timeout_s)."""
        return self._run(code, timeout_s, time.monotonic())

    async def arun(self, code: str, timeout_s: float | None = None) -> ExecResult:
        """`run` without blocking the event loop; at most `sandbox.workers` snippets run at once."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._run, code, timeout_s, time.monotonic())

    def _run(self, code: str, timeout_s: float | None, queued_at: float) -> ExecResult:
        timeout = float(timeout_s or self.cfg.timeout_s)
        with self._slots:
            waited = time.monotonic() - queued_at
            start = time.monotonic()
            try:
                result = self._run_contained(code, timeout)
            except Exception as exc:  # noqa: BLE001 - a bug here must not look like the code's failure
                log.exception("sandbox: the run failed in the executor")
                result = ExecResult("", f"r1ci sandbox: {type(exc).__name__}: {exc}", None, killed_reason=SANDBOX_ERROR)
            result.duration_s = time.monotonic() - start
        with self._lock:
            c = self._counters
            c["runs"] += 1
            c["timeouts"] += result.timed_out
            c["kills"] += bool(result.killed_reason)
            c["run_time_s"] += result.duration_s
            c["queue_wait_s"] += waited
        return result

    def _run_contained(self, code: str, timeout: float) -> ExecResult:
        if len(code.encode("utf-8", errors="surrogatepass")) > MAX_CODE_BYTES:
            return ExecResult("", f"r1ci sandbox: the snippet is larger than {MAX_CODE_BYTES} bytes and was not run",
                              None, killed_reason=CODE_TOO_LARGE)
        pipes = [os.pipe() for _ in range(3)]  # stdout, stderr, result: (read end, write end)
        try:
            started = self._start(code, timeout, [w for _, w in pipes])
        finally:
            for _, w in pipes:
                os.close(w)  # the run and its supervisor hold their own copies now
        if isinstance(started, ExecResult):
            for r, _ in pipes:
                os.close(r)
            return started
        server, pid, supervisor = started
        try:
            return self._collect(server, pid, supervisor, [r for r, _ in pipes], timeout)
        finally:
            supervisor.close()

    def _start(self, code: str, timeout: float, fds: list[int]) -> tuple[_Server, int, socket.socket] | ExecResult:
        """Hand the snippet to a spare; a server found dead before the hand-over is restarted
        once (nothing ran yet). An ExecResult when that failed."""
        try:
            try:
                server = self._ensure_server()
                return (server, *self._hand_over(server, code, timeout, fds))
            except ServerDied:
                server = self._ensure_server()
                return (server, *self._hand_over(server, code, timeout, fds))
        except SandboxError as exc:
            return ExecResult("", str(exc), None, killed_reason=SANDBOX_ERROR)
        except ServerDied as exc:
            return ExecResult("", f"r1ci sandbox: {exc}; it will be restarted", None, killed_reason=EXECUTOR_DIED)

    def _hand_over(self, server: _Server, code: str, timeout: float, fds: list[int]) -> tuple[int, socket.socket]:
        """Give a warm spare its snippet: the timeout and result pipe to its supervisor, the code
        and stdout/stderr pipes to the run itself. Returns the supervisor's pid and socket."""
        while True:
            pid, supervisor, run = server.take(self.cfg.grace_s)
            try:
                send_frame(supervisor, {"op": "run", "timeout": timeout}, (fds[2],))
            except OSError:
                supervisor.close()
                run.close()
                continue  # that spare died before it was used; take the next
            try:
                send_frame(run, {"code": code}, (fds[0], fds[1]))
            except OSError:
                pass  # the run died as a spare: its supervisor reports how
            finally:
                run.close()
            return pid, supervisor

    def _collect(self, server: _Server, pid: int, supervisor: socket.socket, fds: list[int], timeout: float) -> ExecResult:
        cap = self.cfg.max_output_bytes
        out, err, status = _Capped(cap), _Capped(cap), _Capped(1 << 16)
        too_much = []

        def kill_for_output() -> None:
            too_much.append(True)
            try:
                send_frame(supervisor, {"op": "kill", "reason": OUTPUT_LIMIT})
            except OSError:
                pass

        finished = self._capture({fds[0]: out, fds[1]: err, fds[2]: status}, time.monotonic() + timeout + self.cfg.grace_s,
                                 kill_for_output, line_fd=fds[2])
        dropped = out.dropped + err.dropped
        if not finished:
            log.warning("sandbox: a run gave no result %g s past its timeout; ending it and its lane %d", self.cfg.grace_s, pid)
            server.tell({"op": "kill", "pid": pid})
            return ExecResult(out.text(), err.text(), None, timed_out=True, killed_reason=EXECUTOR_UNRESPONSIVE, truncated_bytes=dropped)
        if not status.total:
            if server.proc.poll() is not None:
                server.alive = False
            return ExecResult(out.text(), err.text() + "\nr1ci sandbox: the run's supervisor died during this run",
                              None, killed_reason=EXECUTOR_DIED, truncated_bytes=dropped)
        try:
            msg = parse_result(status.text())
        except ValueError as exc:
            return ExecResult(out.text(), err.text() + f"\nr1ci sandbox: unreadable result ({exc})", None,
                              killed_reason=SANDBOX_ERROR, truncated_bytes=dropped)
        if msg["setup_error"]:
            return ExecResult("", f"r1ci sandbox: setting up the run failed: {msg['setup_error']}", None,
                              killed_reason=SANDBOX_ERROR)
        stderr = err.text()
        reason = killed_reason(msg, stderr[-400:], self.cfg.cpu_time_s)
        exit_code = msg["exit_code"] if msg["signal"] is None else None
        if reason in NOTES:
            note = NOTES[reason].format(timeout=timeout, **vars(self.cfg))
        elif reason.startswith(SIGNAL_PREFIX):
            note = f"r1ci sandbox: the process was killed by {reason[len(SIGNAL_PREFIX):]}"
        else:
            note = ""
        if note and not (reason == MEMORY_LIMIT and "MemoryError" in stderr[-400:]):
            stderr += ("\n" if stderr and not stderr.endswith("\n") else "") + note
        return ExecResult(out.text(), stderr, exit_code, timed_out=reason == TIMEOUT, killed_reason=reason, truncated_bytes=dropped)

    def _capture(self, streams: dict[int, _Capped], deadline: float, kill_for_output, line_fd: int) -> bool:
        """Read every pipe to EOF (`line_fd` only to its first line), capped; False if the deadline passed first."""
        limit = self.cfg.output_kill_mb << 20
        killed = False
        sel = selectors.DefaultSelector()
        for fd in streams:
            sel.register(fd, selectors.EVENT_READ)
        try:
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                for key, _ in sel.select(left):
                    data = os.read(key.fd, 1 << 16)
                    if data:
                        streams[key.fd].add(data)
                    if not data or (key.fd == line_fd and b"\n" in streams[key.fd].head):
                        sel.unregister(key.fd)
                if not killed and sum(s.total for s in streams.values()) > limit:
                    killed = True
                    kill_for_output()
            return True
        finally:
            sel.close()
            for fd in streams:
                os.close(fd)

    def stats(self) -> dict[str, float]:
        """Counters since start: runs, timeouts, kills (any killed_reason), restarts, run_time_s, queue_wait_s."""
        with self._lock:
            return dict(self._counters)

    def close(self) -> None:
        """Stop the fork server (killing any run still going) and remove the cgroups and work dirs. Never raises."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            server, self._server = self._server, None
        try:
            if server is not None:
                server.close()
        finally:
            self._threads.shutdown(wait=False, cancel_futures=True)
            if self._parents is not None:
                try:
                    self._parents.close()
                except OSError as exc:
                    log.warning("sandbox: could not remove the run cgroups: %s", exc)
            if self._workroot:
                mounts.remove_tree(self._workroot)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
