"""The reusable code executor: one warm fork server inside the best available containment.

`Executor` starts `r1ci.sandbox.server` once (inside bubblewrap, `unshare`, or bare), hands it
each snippet with three pipes (stdout, stderr, result line), captures the output with a byte
cap, and turns the result into an `ExecResult`. A dead server is restarted on the next call.
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

from r1ci.config import SandboxConfig
from r1ci.sandbox.base import ExecResult
from r1ci.sandbox.server import SANDBOX_ENV, FrameReader, send_msg

log = logging.getLogger(__name__)

CONTAINMENTS = ("bwrap", "unshare", "none")
UID_SPAN = 1 << 16  # uids one executor cycles through, one per run
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class SandboxError(RuntimeError):
    """The executor could not start with the requested containment."""


class ServerDied(RuntimeError):
    pass


def _hidden_ancestors(path: str) -> list[str]:
    """Ancestors of `path` that other users cannot traverse (e.g. /root, mode 0700)."""
    out, p = [], Path(path)
    for parent in reversed(p.parents):
        try:
            if parent != Path("/") and not parent.stat().st_mode & 0o001:
                out.append(str(parent))
        except OSError:
            pass
    return out


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


def python_paths() -> list[str]:
    """Directories the interpreter imports from (children must be able to read them)."""
    return sorted({sys.prefix, sys.base_prefix, sys.exec_prefix, PACKAGE_ROOT} | {p for p in sys.path if p.startswith("/")})


def hidden_paths(paths: list[str]) -> dict[str, list[str]]:
    """{closed ancestor (e.g. /root): the paths under it to bind back} for the given paths."""
    out: dict[str, list[str]] = {}
    for p in paths:
        closed = _hidden_ancestors(p)
        if closed and os.path.exists(p):
            out.setdefault(closed[0], []).append(p)
    return out


def bwrap_argv(cfg: SandboxConfig, python_paths: list[str]) -> list[str]:
    """bwrap flags: new pid/net/ipc/uts namespaces (no user namespace, so the server stays real
    root and can give each run its own uid), read-only /, private /dev, /proc and /tmp, and
    the interpreter's own directories made reachable where an ancestor (like /root) is closed."""
    argv = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--die-with-parent",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--size", str(cfg.tmp_mb << 20), "--tmpfs", "/tmp"]
    def bind_back(top: str, paths: list[str]) -> None:
        for p in paths:
            for d in reversed(Path(p).parents):  # bwrap would create these 0700
                if str(d).startswith(top + "/"):
                    argv.extend(["--perms", "0755", "--dir", str(d)])
            argv.extend(["--ro-bind", p, p])

    # A virtualenv or checkout under /tmp (CI clones often live there) is hidden by the
    # private /tmp: bind the outermost such paths back, read-only.
    in_tmp = sorted({p for p in python_paths if p.startswith("/tmp/") and os.path.exists(p)})
    bind_back("/tmp", [p for p in in_tmp if not any(p.startswith(q + "/") for q in in_tmp)])
    for top, paths in hidden_paths(python_paths).items():
        argv += ["--perms", "0755", "--tmpfs", top]
        bind_back(top, paths)
    return argv + ["--"]


def launcher(containment: str, cfg: SandboxConfig) -> list[str]:
    if containment == "bwrap":
        return bwrap_argv(cfg, python_paths())
    if containment == "unshare":
        return ["unshare", "--pid", "--fork", "--net", "--mount", "--mount-proc", "--kill-child", "--"]
    return []


def available(containment: str) -> bool:
    """Whether this host lets us create the namespaces `containment` needs (a ~10 ms probe)."""
    if containment == "none":
        return True
    tool = "bwrap" if containment == "bwrap" else "unshare"
    if shutil.which(tool) is None:
        return False
    argv = launcher(containment, SandboxConfig()) + ["/bin/true"]
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


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
    """Parent-side handle on one fork-server process: it offers warm spare children over one
    socket, each snippet goes straight to a spare, and each run's result comes back on its
    own result pipe (no reader thread, no shared queue)."""

    def __init__(self, cfg: SandboxConfig, containment: str, uid_base: int, workroot: str):
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        server_cfg = {
            "fd": child_sock.fileno(), "preload": list(cfg.preload), "cpu_time_s": cfg.cpu_time_s,
            "warm_up": cfg.warm_up, "memory_mb": cfg.memory_mb, "max_processes": cfg.max_processes, "max_file_mb": cfg.max_file_mb,
            "uid_base": uid_base, "uid_span": UID_SPAN, "spares": min(cfg.spares, cfg.workers), "workroot": workroot,
            "deny_sockets": containment == "none", "expose": hidden_paths(python_paths()) if containment == "unshare" else {},
            "drop_privileges": os.geteuid() == 0,  # root on the host (inside a user namespace uid 0 means less)
        }
        argv = launcher(containment, cfg) + [sys.executable, "-c", "from r1ci.sandbox.server import main; main()", json.dumps(server_cfg)]
        # glibc malloc with transparent huge pages: the preloaded heap then sits in 2 MiB pages,
        # which made each fork ~4x and each child's exit ~2x cheaper here.
        env = dict(SANDBOX_ENV, PYTHONPATH=PACKAGE_ROOT, PYTHONDONTWRITEBYTECODE="1", PYTHONMALLOC="malloc",
                   GLIBC_TUNABLES="glibc.malloc.hugetlb=1")
        with pinned(cfg.cpus):  # the server and every run it forks inherit the affinity
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env,
                                         pass_fds=[child_sock.fileno()], start_new_session=True, cwd="/")
        child_sock.close()
        self.sock = parent_sock
        self.alive = True
        self.send_lock = threading.Lock()  # requests to the server (kills)
        self.recv_lock = threading.Lock()  # offers of spares from the server
        self.reader = FrameReader(parent_sock)
        self.spares: collections.deque[tuple[int, socket.socket]] = collections.deque()
        self.hello: dict | None = None

    def _pump(self, timeout: float) -> None:
        """Read the server's next frames (the hello, offers of spares); call with recv_lock held."""
        self.sock.settimeout(timeout)
        try:
            if not self.reader.feed():
                self.alive = False
                raise ServerDied(f"the fork server exited (code {self.proc.poll()})")
        except socket.timeout as exc:
            raise ServerDied(f"no word from the fork server within {timeout:g} s") from exc
        except OSError as exc:
            self.alive = False
            raise ServerDied(f"the fork server is not reachable: {exc}") from exc
        finally:
            self.sock.settimeout(None)
        for msg in self.reader.frames():
            if msg["op"] == "ready":
                self.hello = msg
            elif msg["op"] == "spare":
                self.spares.append((msg["pid"], socket.socket(fileno=self.reader.fds.pop(0))))

    def wait_ready(self, timeout: float) -> dict:
        """The server's hello once its preload imports are done."""
        deadline = time.monotonic() + timeout
        with self.recv_lock:
            while self.hello is None:
                self._pump(max(0.001, deadline - time.monotonic()))
            return self.hello

    def submit(self, code: str, timeout: float, fds: tuple[int, int, int], wait_s: float) -> int:
        """Hand the snippet and its stdout/stderr/result pipes to a warm spare; returns its pid."""
        deadline = time.monotonic() + wait_s
        while True:
            with self.recv_lock:
                if not self.alive or self.proc.poll() is not None:
                    self.alive = False
                    raise ServerDied("the fork server is not running")
                while not self.spares:
                    self._pump(max(0.001, deadline - time.monotonic()))
                pid, spare = self.spares.popleft()
            try:
                send_msg(spare, {"code": code, "timeout": timeout}, fds)
                return pid
            except OSError:
                continue  # that spare died; take the next
            finally:
                spare.close()

    def kill(self, pid: int, reason: str) -> None:
        with self.send_lock:
            try:
                send_msg(self.sock, {"op": "kill", "pid": pid, "reason": reason})
            except OSError:
                self.alive = False

    def close(self) -> None:
        self.alive = False
        while self.spares:
            self.spares.popleft()[1].close()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.hard_kill()

    def hard_kill(self) -> None:
        self.alive = False
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=5)


def _reason(msg: dict, stderr_tail: str, cpu_limit: float) -> str:
    if msg["reason"]:
        return msg["reason"]
    sig = msg["signal"]
    if sig is not None:
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and msg["cpu_s"] >= cpu_limit - 0.5):
            return "cpu_limit"
        return f"signal:{signal.Signals(sig).name}"
    if msg["exit_code"] != 0 and "MemoryError" in (stderr_tail.strip().splitlines() or [""])[-1]:
        return "memory_limit"
    return ""


class Executor:
    """Runs snippets in fresh children of a warm, contained fork server (see module docstring).

    `containment` names the isolation in force: "bwrap", "unshare" or "none"
    (rlimits, a per-run uid and a seccomp filter refusing inet sockets).
    """

    def __init__(self, cfg: SandboxConfig | None = None):
        self.cfg = cfg or SandboxConfig()
        self.containment = self._choose(self.cfg.containment)
        self._uid_base = self.cfg.uid_base or random.randrange(1 << 20, 1 << 30, UID_SPAN)
        self._slots = threading.BoundedSemaphore(self.cfg.workers)
        self._threads = concurrent.futures.ThreadPoolExecutor(self.cfg.workers, thread_name_prefix="r1ci-exec")
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._workroot = "/tmp/r1ci-runs" if self.containment == "bwrap" else tempfile.mkdtemp(prefix="r1ci-sandbox-")
        self._counters = {"runs": 0, "timeouts": 0, "kills": 0, "restarts": 0, "run_time_s": 0.0, "queue_wait_s": 0.0}
        self._closed = False
        self._ensure_server()

    @staticmethod
    def _choose(wanted: str) -> str:
        if wanted != "auto":
            if wanted not in CONTAINMENTS:
                raise SandboxError(f"sandbox.containment: unknown '{wanted}'; use auto, bwrap, unshare or none")
            if not available(wanted):
                raise SandboxError(f"sandbox.containment={wanted} is not usable on this host "
                                   f"(missing tool or namespaces forbidden); use sandbox.containment=auto")
            return wanted
        return next(c for c in CONTAINMENTS if available(c))

    @property
    def uid_range(self) -> range:
        """The uids this executor's runs use (one per run): no other process should own them."""
        return range(self._uid_base, self._uid_base + UID_SPAN)

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
            server = _Server(self.cfg, self.containment, self._uid_base, self._workroot)
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

    def run(self, code: str, timeout: float | None = None) -> ExecResult:
        """Run one snippet; `timeout` is the wall-clock limit in seconds (default sandbox.timeout_s)."""
        return self._run(code, timeout, time.monotonic())

    async def arun(self, code: str, timeout: float | None = None) -> ExecResult:
        """`run` without blocking the event loop; at most `sandbox.workers` snippets run at once."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._run, code, timeout, time.monotonic())

    def _run(self, code: str, timeout: float | None, queued_at: float) -> ExecResult:
        timeout = float(timeout or self.cfg.timeout_s)
        with self._slots:
            waited = time.monotonic() - queued_at
            start = time.monotonic()
            result = self._run_contained(code, timeout)
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
        try:
            server = self._ensure_server()
        except SandboxError as exc:
            return ExecResult("", str(exc), None, killed_reason="sandbox_error")
        pipes = [os.pipe() for _ in range(3)]  # stdout, stderr, status: (read end, write end)
        try:
            pid = server.submit(code, timeout, tuple(w for _, w in pipes), self.cfg.grace_s)
        except ServerDied as exc:
            for r, _ in pipes:
                os.close(r)
            return ExecResult("", f"r1ci sandbox: {exc}; it will be restarted", None, killed_reason="executor_died")
        finally:
            for _, w in pipes:
                os.close(w)  # the server holds its own copies now
        deadline = time.monotonic() + timeout + self.cfg.grace_s
        cap = self.cfg.max_output_bytes
        out, err, status = _Capped(cap), _Capped(cap), _Capped(1 << 16)
        too_much = []

        def kill_for_output() -> None:
            too_much.append(True)
            server.kill(pid, "output_limit")

        finished = self._capture({pipes[0][0]: out, pipes[1][0]: err, pipes[2][0]: status}, deadline,
                                 kill_for_output, line_fd=pipes[2][0])
        dropped = out.dropped + err.dropped
        if not finished:
            log.warning("sandbox fork server silent %g s past the timeout; restarting it", self.cfg.grace_s)
            server.hard_kill()
            return ExecResult(out.text(), err.text(), None, timed_out=True, killed_reason="executor_unresponsive", truncated_bytes=dropped)
        if not status.total and too_much:  # killed before the server knew the run had started
            status.add(json.dumps({"exit_code": None, "signal": signal.SIGKILL, "reason": "output_limit", "cpu_s": 0.0}).encode())
        if not status.total:
            server.alive = False
            return ExecResult(out.text(), err.text() + "\nr1ci sandbox: the fork server died during this run; it will be restarted",
                              None, killed_reason="executor_died", truncated_bytes=dropped)
        msg = json.loads(status.text().split("\n", 1)[0])
        stderr = err.text()
        reason = _reason(msg, stderr[-400:], self.cfg.cpu_time_s)
        exit_code = msg["exit_code"] if msg["signal"] is None else None
        note = {
            "timeout": f"TimeoutError: the code ran longer than the {timeout:g} s limit and was killed",
            "output_limit": f"r1ci sandbox: killed after more than {self.cfg.output_kill_mb} MiB of output",
            "cpu_limit": f"r1ci sandbox: killed at the CPU-time limit of {self.cfg.cpu_time_s} s",
        }.get(reason, f"r1ci sandbox: the process was killed by {reason[7:]}" if reason.startswith("signal:") else "")
        if note:
            stderr += ("\n" if stderr and not stderr.endswith("\n") else "") + note
        return ExecResult(out.text(), stderr, exit_code, timed_out=reason == "timeout", killed_reason=reason, truncated_bytes=dropped)

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
        """Stop the fork server (killing any run still going) and remove the work dirs."""
        with self._lock:
            self._closed = True
            server, self._server = self._server, None
        if server is not None:
            server.close()
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self.containment != "bwrap":
            shutil.rmtree(self._workroot, ignore_errors=True)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
