"""The fork server: imports the preload modules once, then runs each snippet in a fresh contained child.

It runs inside the containment (bwrap or unshare namespaces, or none) as root and is driven
by `r1ci.sandbox.executor` over one Unix stream socket. Its spawner (a fork of it) keeps
spare children ready, each already in its own session, with rlimits set while still root,
a fresh uid (so limits cannot be raised, RLIMIT_NPROC counts only that run, and every
process of the run can be killed by uid), a fresh working dir and /dev/null as stdin. A
spare waits for one snippet with its stdout, stderr and result pipes; the server enforces
the wall deadline and ends the run's processes.
"""

from __future__ import annotations

import builtins
import ctypes
import ctypes.util
import errno
import gc
import heapq
import io
import json
import linecache
import os
import resource
import select
import shutil
import signal
import socket
import struct
import sys
import time
import traceback
import types

HEADER = struct.Struct("!I")
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 36, 38
SNIPPET = "<snippet>"
SPARE_WARM_UP = "import math\nvalues = [math.sqrt(i) for i in range(100)]\nprint(f'{sum(values):.3f}', len(values), {'a': 1})\n"
SANDBOX_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def send_msg(sock: socket.socket, obj: dict, fds: tuple[int, ...] = ()) -> None:
    """Write one length-prefixed JSON frame; `fds` travel with its first byte (SCM_RIGHTS)."""
    data = json.dumps(obj).encode()
    payload = HEADER.pack(len(data)) + data
    sent = socket.send_fds(sock, [payload], list(fds)) if fds else 0
    if sent < len(payload):  # never an empty send: the peer may already have read and gone
        sock.sendall(payload[sent:])


class FrameReader:
    """Splits a Unix stream socket into JSON frames, keeping passed fds in arrival order."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buf, self.fds = sock, b"", []

    def feed(self) -> bool:
        """Read what is available; False at end of stream."""
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, 1 << 16, 8)
        except ConnectionResetError:
            return False
        if not data:
            return False
        self.buf += data
        self.fds += fds
        return True

    def frames(self):
        while len(self.buf) >= HEADER.size:
            (n,) = HEADER.unpack_from(self.buf)
            if len(self.buf) < HEADER.size + n:
                return
            frame = json.loads(self.buf[HEADER.size:HEADER.size + n])
            self.buf = self.buf[HEADER.size + n:]
            yield frame


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def deny_inet_sockets(libc: ctypes.CDLL) -> None:
    """seccomp filter: socket() of any family but AF_UNIX fails with EACCES (the no-namespace fallback)."""

    class ArgCmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2")
    lib.seccomp_init.restype = ctypes.c_void_p
    ctx = ctypes.c_void_p(lib.seccomp_init(ctypes.c_uint32(0x7FFF0000)))  # SCMP_ACT_ALLOW
    nr = lib.seccomp_syscall_resolve_name(b"socket")
    cmp = ArgCmp(0, 1, socket.AF_UNIX, 0)  # SCMP_CMP_NE on arg 0 (the family)
    if lib.seccomp_rule_add_array(ctx, ctypes.c_uint32(0x00050000 | errno.EACCES), nr, 1, ctypes.byref(cmp)) or lib.seccomp_load(ctx):
        raise OSError("could not load the seccomp filter that refuses sockets")


def expose(libc: ctypes.CDLL, hidden: dict[str, list[str]]) -> None:
    """In a private mount namespace: cover each closed directory (like /root, mode 0700) with a
    world-readable tmpfs and bind the interpreter's own directories back, read-only, so the
    unprivileged children can import from them (what bwrap's --tmpfs/--ro-bind do)."""
    ms_rdonly, ms_remount, ms_bind, ms_rec = 1, 32, 4096, 16384
    for top, paths in hidden.items():
        sources = {p: os.open(p, os.O_PATH) for p in paths}  # still reachable once `top` is covered
        if libc.mount(b"tmpfs", top.encode(), b"tmpfs", 0, b"mode=0755"):
            raise OSError(ctypes.get_errno(), f"mount tmpfs on {top}")
        for path, fd in sources.items():
            if not os.path.isdir(path):  # else it is nested under an earlier bind
                os.makedirs(path, mode=0o755)
                dst = path.encode()
                if (libc.mount(f"/proc/self/fd/{fd}".encode(), dst, None, ms_bind | ms_rec, None)
                        or libc.mount(None, dst, None, ms_remount | ms_bind | ms_rdonly, None)):
                    raise OSError(ctypes.get_errno(), f"bind {path}")
            os.close(fd)


def run_snippet(code: str) -> int:
    """Run `code` as a fresh __main__ and return the process exit code Python itself would give."""
    linecache.cache[SNIPPET] = (len(code), None, code.splitlines(True), SNIPPET)
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.argv = [SNIPPET]
    try:
        exec(compile(code, SNIPPET, "exec"), main.__dict__)
        return 0
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code & 0xFF
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException as exc:  # noqa: BLE001 - the snippet's own error, reported like python does
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None  # drop this frame
        traceback.print_exception(type(exc), exc, tb)
        return 1


def child_main(cfg: dict, ctl: socket.socket, inbox: socket.socket, workdir: str, uid: int, libc: ctypes.CDLL) -> None:
    """A spare child: contain itself and drop privileges, then wait on `inbox` (a socket whose
    other end the executor holds) for one snippet and its stdout/stderr/result pipes, tell the
    server on `ctl` that it started, run it, write its result, tell the server, exit. Never returns.

    Spares are forked ahead of need, so the fork of the big preloaded server is not paid on
    the request's path, and the request goes from the executor to the spare directly; the
    result is written before the (equally slow) process teardown.
    """
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        low, high = sorted((ctl.fileno(), inbox.fileno()))
        os.closerange(3, low)  # the server's control socket and other runs' pipes
        os.closerange(low + 1, high)
        os.closerange(high + 1, 1 << 20)
        mb = 1 << 20
        for res, soft, hard in (
            (resource.RLIMIT_CPU, cfg["cpu_time_s"], cfg["cpu_time_s"] + 1),
            (resource.RLIMIT_AS, cfg["memory_mb"] * mb, cfg["memory_mb"] * mb),
            (resource.RLIMIT_NPROC, cfg["max_processes"], cfg["max_processes"]),
            (resource.RLIMIT_FSIZE, cfg["max_file_mb"] * mb, cfg["max_file_mb"] * mb),
            (resource.RLIMIT_CORE, 0, 0),
            (resource.RLIMIT_NOFILE, 256, 256),
        ):
            resource.setrlimit(res, (soft, hard))
        os.chdir(workdir)
        if cfg["drop_privileges"]:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after setresuid, which clears it
        if os.getppid() == 1:
            os._exit(0)  # the server died before the death signal was armed
        if cfg["deny_sockets"]:
            deny_inet_sockets(libc)
        os.environ.clear()
        os.environ.update(SANDBOX_ENV, HOME=workdir, TMPDIR=workdir)
        sys.path = [workdir] + [p for p in sys.path if p and p != os.getcwd()]
    except BaseException as exc:  # noqa: BLE001
        _spare_failed(inbox, f"r1ci sandbox: setting up the run failed: {exc!r}")
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace")
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True)
    # Copy-on-write faults cost ~8 us a page here: a warm-up request (sent to ourselves, output
    # to /dev/null) takes the ones every request would take, before it arrives instead of after.
    warm_in, warm_out = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    null = os.open("/dev/null", os.O_WRONLY)
    send_msg(warm_in, {"code": SPARE_WARM_UP, "timeout": 0}, (null, null, null))
    os.close(null)
    code, _timeout, status_fd = take_request(warm_out)
    status = run_snippet(code)
    flush_streams()
    write_status(status_fd, status)
    for end in (warm_in, warm_out):
        end.close()
    code, timeout, status_fd = take_request(inbox)
    send_msg(ctl, {"op": "started", "timeout": timeout}, (status_fd,))  # the server keeps the deadline
    status = run_snippet(code)
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()  # wait for non-daemon threads, as python does at exit
    except BaseException:  # noqa: BLE001 - a thread's failure does not change the exit code
        pass
    flush_streams()
    try:  # the result goes straight to the executor; the server then ends the process group
        os.close(1)
        os.close(2)
        told = write_status(status_fd, status)
        send_msg(ctl, {"op": "done", "exit_code": status, "told": told})
    finally:
        os._exit(status)


def take_request(inbox: socket.socket) -> tuple[str, float, int]:
    """Block for one request on `inbox` and put its stdout/stderr pipes on fds 1 and 2.

    Returns the code, its wall timeout in seconds and the result pipe's fd. Exits quietly at
    end of stream (the executor is gone)."""
    reader = FrameReader(inbox)
    req = None
    while req is None:
        if not reader.feed():
            os._exit(0)
        req = next(reader.frames(), None)
    out_fd, err_fd, status_fd = reader.fds[:3]
    for fd, target in ((out_fd, 1), (err_fd, 2)):
        if fd != target:
            os.dup2(fd, target)
            os.close(fd)
    return req["code"], float(req.get("timeout", 0)), status_fd


def flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - a closed or broken pipe must not change the status
            pass


def write_status(status_fd: int, status: int) -> bool:
    """The run's result line for the executor; False if the snippet closed the pipe."""
    try:
        os.write(status_fd, json.dumps({"exit_code": status, "signal": None, "reason": "", "cpu_s": 0.0}).encode() + b"\n")
        os.close(status_fd)
        return True
    except OSError:
        return False  # the server reports instead


def _spare_failed(inbox: socket.socket, text: str) -> None:
    """Setup failed before a snippet arrived: wait for it anyway so the caller sees why."""
    reader = FrameReader(inbox)
    while reader.feed() and next(reader.frames(), None) is None:
        pass
    if len(reader.fds) >= 3:
        os.write(reader.fds[1], (text + "\n").encode())
        write_status(reader.fds[2], 126)
    os._exit(126)


def _kill(kill, pid: int) -> None:
    try:
        kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _escaped(uid: int, pgid: int) -> bool:
    """Whether a process of `uid` lives outside process group `pgid` (it left with setsid)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) != pgid and fields[0] != b"Z":
            return True
    return False


class Spawner:
    """The fork server's helper (a fork of it, so it holds the same preloaded modules): forks
    spares, sweeps uids and removes work dirs on request, and reports its children's exits.

    A fork of this big process blocks for milliseconds (and its exit for more); doing it
    here keeps the server's loop free to dispatch and report runs the moment they arrive.
    """

    def __init__(self, cfg: dict, sock: socket.socket, libc: ctypes.CDLL):
        self.cfg, self.sock, self.libc = cfg, sock, libc
        self.uids: dict[int, int] = {}  # pid -> uid of each live spare or run

    def spare(self, uid: int, workdir: str) -> None:
        os.mkdir(workdir, 0o700)
        if self.cfg["drop_privileges"]:
            os.chown(workdir, uid, uid)
        for_server, ctl = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for_executor, inbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            child_main(self.cfg, ctl, inbox, workdir, uid, self.libc)
        ctl.close()
        inbox.close()
        self.uids[pid] = uid
        send_msg(self.sock, {"op": "spare", "pid": pid, "uid": uid, "workdir": workdir},
                 (for_server.fileno(), for_executor.fileno()))
        for_server.close()
        for_executor.close()

    def sweep(self, uid: int) -> None:
        """Kill every process of `uid` (escaped sessions too) from a fork that becomes that uid."""
        if not self.cfg["drop_privileges"]:
            return  # without root only the process group (and the pid namespace) bound a run
        if os.fork() == 0:
            try:
                os.setresuid(uid, uid, uid)
                os.kill(-1, signal.SIGKILL)  # every process this uid may signal, never the caller
            finally:
                os._exit(0)

    def reap(self) -> None:
        while True:
            try:
                pid, status, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.uids.pop(pid, None) is not None:
                send_msg(self.sock, {"op": "exit", "pid": pid, "status": status, "cpu_s": rusage.ru_utime + rusage.ru_stime})

    def serve(self) -> None:
        self.libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        self.libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans of runs come back to be reaped
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        reader = FrameReader(self.sock)
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        try:
            while True:
                for fd, _ev in poller.poll():
                    if fd == wake_r:
                        _drain(wake_r)
                    elif not reader.feed():
                        return
                    else:
                        for msg in reader.frames():
                            if msg["op"] == "spare":
                                self.spare(msg["uid"], msg["workdir"])
                            elif msg["op"] == "sweep":
                                self.sweep(msg["uid"])
                            elif msg["op"] == "rmtree":
                                shutil.rmtree(msg["path"], ignore_errors=True)
                self.reap()
        finally:
            for pid, uid in self.uids.items():
                _kill(os.killpg, pid)
                _kill(os.kill, pid)
                self.sweep(uid)
            shutil.rmtree(self.cfg["workroot"], ignore_errors=True)
            os._exit(0)


class Run:
    """One forked child: a spare until it reports `started`, then a run with a wall deadline."""

    __slots__ = ("pid", "uid", "workdir", "sock", "reader", "status_fd", "start", "deadline", "reason", "reported")

    def __init__(self, pid: int, uid: int, workdir: str, sock: socket.socket):
        self.pid, self.uid, self.workdir, self.sock = pid, uid, workdir, sock
        self.reader = FrameReader(sock)
        self.status_fd = None  # set when the run starts
        self.start = self.deadline = 0.0
        self.reason = ""
        self.reported = False


class ForkServer:
    """Offers spare children to the executor, enforces wall deadlines, ends runs, reports deaths.

    The executor sends each snippet straight to a spare it was offered (one hop, not two);
    the spare tells the server when it starts and when it is done.
    """

    def __init__(self, cfg: dict, sock: socket.socket, libc: ctypes.CDLL):
        self.cfg, self.sock = cfg, sock
        self.reader = FrameReader(sock)
        self.children: dict[int, Run] = {}  # by pid: spares and runs
        self.by_sock: dict[int, Run] = {}  # by control-socket fd
        self.offered = 0  # spares handed to the executor, not yet started
        self.asked = 0  # spares requested from the spawner, not yet arrived
        self.deadlines: list[tuple[float, int]] = []  # (deadline, pid)
        self.count = 0
        self.workroot = cfg["workroot"]
        os.makedirs(self.workroot, mode=0o711, exist_ok=True)
        os.chmod(self.workroot, 0o711)
        self.poller = select.poll()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.fork() == 0:
            mine.close()
            sock.close()
            Spawner(cfg, theirs, libc).serve()
        theirs.close()
        self.spawner, self.spawn_reader = mine, FrameReader(mine)

    def ask(self, msg: dict) -> None:
        send_msg(self.spawner, msg)

    def want_spares(self) -> None:
        for _ in range(self.cfg["spares"] - self.offered - self.asked):
            uid = self.cfg["uid_base"] + self.count % self.cfg["uid_span"]
            self.count += 1
            self.ask({"op": "spare", "uid": uid, "workdir": os.path.join(self.workroot, f"run-{self.count}")})
            self.asked += 1

    def kill_run(self, run: Run, reason: str) -> None:
        """Kill the run's process group and every process of its uid (escaped sessions too)."""
        run.reason = run.reason or reason
        _kill(os.kill, run.pid)  # the child may not have called setsid yet
        _kill(os.killpg, run.pid)
        self.ask({"op": "sweep", "uid": run.uid})

    def report(self, run: Run, exit_code: int | None, sig: int | None, cpu_s: float = 0.0, told: bool = False) -> None:
        """End the run (its process group, and any escaped process of its uid); send the result
        unless the child already wrote it (`told`). The executor takes the first result line."""
        if run.reported or run.status_fd is None:
            return
        run.reported = True
        _kill(os.killpg, run.pid)  # background processes left in the group
        if _escaped(run.uid, run.pid):
            self.ask({"op": "sweep", "uid": run.uid})
        if not told:
            result = {"exit_code": exit_code, "signal": sig, "reason": run.reason, "cpu_s": cpu_s}
            try:
                os.write(run.status_fd, json.dumps(result).encode() + b"\n")
            except OSError:
                pass  # the executor stopped waiting
        os.close(run.status_fd)

    def forget(self, run: Run) -> None:
        if run.sock.fileno() in self.by_sock:
            self.poller.unregister(run.sock)
            del self.by_sock[run.sock.fileno()]

    def on_child(self, run: Run) -> None:
        """Everything a spare has sent: `started` (with its result pipe), `done`, end of stream."""
        while True:
            try:
                alive = run.reader.feed()
            except BlockingIOError:
                return
            except OSError:
                alive = False
            if not alive:
                self.forget(run)
                return
            self.on_child_messages(run)

    def on_child_messages(self, run: Run) -> None:
        for msg in run.reader.frames():
            if msg["op"] == "started" and run.status_fd is None:
                run.status_fd = run.reader.fds.pop(0)
                run.start = time.monotonic()
                run.deadline = run.start + float(msg["timeout"])
                heapq.heappush(self.deadlines, (run.deadline, run.pid))
                self.offered -= 1
                if not self.offered:
                    self.want_spares()  # the executor has none left: more callers may be waiting
            elif msg["op"] == "done":
                self.report(run, int(msg["exit_code"]), None, told=bool(msg["told"]) and not run.reason)
                self.want_spares()  # after the report: a fork now no longer slows this run

    def on_spawner(self) -> bool:
        if not self.spawn_reader.feed():
            return False
        for msg in self.spawn_reader.frames():
            if msg["op"] == "spare":
                for_server, for_executor = self.spawn_reader.fds.pop(0), self.spawn_reader.fds.pop(0)
                run = Run(msg["pid"], msg["uid"], msg["workdir"], socket.socket(fileno=for_server))
                run.sock.setblocking(False)  # a stale poll event for a reused fd must not block the loop
                self.children[run.pid] = run
                self.by_sock[run.sock.fileno()] = run
                self.poller.register(run.sock, select.POLLIN)
                self.asked -= 1
                self.offered += 1
                try:
                    send_msg(self.sock, {"op": "spare", "pid": run.pid}, (for_executor,))
                finally:
                    os.close(for_executor)
            elif msg["op"] == "exit":
                run = self.children.pop(msg["pid"], None)
                if run is None:
                    continue
                if run.sock.fileno() in self.by_sock:
                    self.on_child(run)  # its last words (`started`, `done`) may still wait in its socket
                if run.status_fd is None:
                    self.offered -= 1  # an offered spare died before starting
                status = msg["status"]
                sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
                self.report(run, os.WEXITSTATUS(status) if os.WIFEXITED(status) else None, sig, msg["cpu_s"])
                self.forget(run)
                run.sock.close()
                self.ask({"op": "rmtree", "path": run.workdir})
                self.want_spares()
        return True

    def expire(self) -> float | None:
        """Kill runs past their wall deadline; seconds until the next deadline (None: none pending)."""
        now = time.monotonic()
        while self.deadlines:
            deadline, pid = self.deadlines[0]
            run = self.children.get(pid)
            if run is None or run.deadline != deadline or run.reported:
                heapq.heappop(self.deadlines)
            elif deadline <= now:
                heapq.heappop(self.deadlines)
                self.kill_run(run, "timeout")
            else:
                return deadline - now
        return None

    def handle(self, msg: dict) -> None:
        run = self.children.get(msg["pid"]) if msg["op"] == "kill" else None
        if run is not None and run.status_fd is None:
            self.on_child(run)  # its `started` may still wait in its socket
        if run is not None and not run.reported:
            self.kill_run(run, msg["reason"])

    def serve(self) -> None:
        self.poller.register(self.sock, select.POLLIN)
        self.poller.register(self.spawner, select.POLLIN)
        self.want_spares()
        while True:
            wait = self.expire()
            for fd, _ev in self.poller.poll(None if wait is None else int(wait * 1000) + 1):
                if fd == self.sock.fileno():
                    if not self.reader.feed():
                        return  # the executor went away: the spawner follows and cleans up
                    for msg in self.reader.frames():
                        self.handle(msg)
                elif fd == self.spawner.fileno():
                    if not self.on_spawner():
                        raise SystemExit("r1ci sandbox: the spawner died")
                elif fd in self.by_sock:
                    self.on_child(self.by_sock[fd])


def _drain(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 512):
                return
        except BlockingIOError:
            return


def main() -> None:
    cfg = json.loads(sys.argv[1])
    sock = socket.socket(fileno=cfg["fd"])
    if cfg["expose"]:
        expose(_libc(), cfg["expose"])
    missing = []
    for name in cfg["preload"]:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    try:
        exec(compile(cfg["warm_up"], "<sandbox.warm_up>", "exec"), {"__name__": "__warm_up__"})
        warm_up_error = ""
    except Exception as exc:  # noqa: BLE001 - a module missing on this host only costs speed
        warm_up_error = f"{type(exc).__name__}: {exc}"
    libc = _libc()
    gc.collect()
    gc.freeze()  # children's collections then skip (and so never copy) the preloaded objects
    server = ForkServer(cfg, sock, libc)
    send_msg(sock, {"op": "ready", "pid": os.getpid(), "missing": missing, "warm_up_error": warm_up_error})
    server.serve()


if __name__ == "__main__":
    main()
