"""The fork server: imports the preload modules once, then keeps warm spare runs ready, each in its own namespaces.

It runs inside the containment as root (bwrap or unshare: pivoted into `mounts.build_root`'s
read-only root; none: on the host) and is driven by `r1ci.sandbox.executor` over one Unix
socket. It forks `workers + spares` lanes (`Lane`: root, outside every run's namespaces,
never running snippet code); each lane in turn enters fresh namespaces (`mounts.isolate_run`),
forks one run (`run_child`) and comes back, so the run is pid 1 of its own pid namespace, in
the lane's cgroup, with rlimits, a fresh uid and a seccomp filter, warmed up, and holding no
fd but stdin, stdout and stderr once its snippet arrives. The executor sends the snippet
straight to the run, and the timeout with a result pipe to the lane (`Supervisor`), which
keeps the deadline, ends the run, and writes the result from what it observed: the wait
status, the rusage, the OOM kills. Nothing the run writes can reach the server or a lane;
every frame they read is bounded and checked.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import gc
import io
import json
import linecache
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
import traceback
import types

from r1ci.sandbox import cgroups, mounts, seccomp

HEADER = struct.Struct("!I")
MAX_FRAME = 1 << 24  # bytes of one frame's JSON; a snippet travels in one
MAX_FDS = 4  # fds one frame may carry
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
SNIPPET = "<snippet>"
SPARE_WARM_UP = "import math\nvalues = [math.sqrt(i) for i in range(100)]\nprint(f'{sum(values):.3f}', len(values), {'a': 1})\n"
SANDBOX_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
KILL_REASONS = ("output_limit",)  # what the executor may ask a supervisor to end a run for
HOST_TMP_DIRS = ["/tmp", "/var/tmp", "/dev/shm"]  # swept of a run's files when it has no mount namespace


class FrameError(Exception):
    """A peer broke the frame protocol (oversized, malformed or unexpected frame)."""


def send_frame(sock: socket.socket, obj: dict, fds: tuple[int, ...] = ()) -> None:
    """Write one length-prefixed JSON frame; `fds` travel with its first byte (SCM_RIGHTS)."""
    data = json.dumps(obj).encode()
    if len(data) > MAX_FRAME:
        raise FrameError(f"frame of {len(data)} bytes is over the {MAX_FRAME}-byte limit")
    payload = HEADER.pack(len(data)) + data
    sent = socket.send_fds(sock, [payload], list(fds)) if fds else 0
    if sent < len(payload):  # never an empty send: the peer may already have read and gone
        sock.sendall(payload[sent:])


class FrameReader:
    """Splits a Unix stream socket into JSON-object frames, each at most MAX_FRAME bytes, keeping
    passed fds (at most MAX_FDS a read; more are dropped by the kernel) in arrival order."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buf, self.fds = sock, bytearray(), []

    def feed(self) -> bool:
        """Read what is available; False at end of stream. Raises FrameError on a bad frame."""
        try:
            data, fds, flags, _addr = socket.recv_fds(self.sock, 1 << 16, MAX_FDS)
        except (ConnectionResetError, BrokenPipeError):
            return False
        self.fds += fds
        if flags & socket.MSG_CTRUNC:
            raise FrameError("too many fds in one frame")
        if not data:
            return False
        self.buf += data
        if len(self.buf) >= HEADER.size and HEADER.unpack_from(self.buf)[0] > MAX_FRAME:
            raise FrameError(f"frame of {HEADER.unpack_from(self.buf)[0]} bytes announced; at most {MAX_FRAME}")
        return True

    def frames(self):
        while len(self.buf) >= HEADER.size:
            (n,) = HEADER.unpack_from(self.buf)
            if len(self.buf) < HEADER.size + n:
                return
            raw = bytes(self.buf[HEADER.size:HEADER.size + n])
            del self.buf[:HEADER.size + n]
            try:
                frame = json.loads(raw)
            except ValueError as exc:
                raise FrameError(f"frame is not JSON: {exc}") from None
            if not isinstance(frame, dict):
                raise FrameError("frame is not a JSON object")
            yield frame

    def take_fds(self, n: int) -> list[int]:
        if len(self.fds) < n:
            raise FrameError(f"frame needs {n} fds, {len(self.fds)} came")
        out, self.fds = self.fds[:n], self.fds[n:]
        return out

    def close(self) -> None:
        for fd in self.fds:
            _close(fd)
        self.fds = []


def field(frame: dict, name: str, kind: type | tuple[type, ...]):
    """`frame[name]` if it is of `kind`; else FrameError."""
    value = frame.get(name)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise FrameError(f"frame field {name!r} is {type(value).__name__}, not {kind}")
    return value


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _close_all_but(keep: set[int]) -> None:
    """Close every fd from 3 up except those in `keep`."""
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, resource.getrlimit(resource.RLIMIT_NOFILE)[1])


def _kill(pid: int, sig: int = signal.SIGKILL, group: bool = False) -> None:
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


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


def flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - a closed or broken pipe must not change the status
            pass


def _set_limits(cfg: dict) -> None:
    mb = 1 << 20
    for res, soft, hard in (
        (resource.RLIMIT_CPU, cfg["cpu_time_s"], cfg["cpu_time_s"]),  # SIGKILL at the limit (pid 1 ignores SIGXCPU)
        (resource.RLIMIT_AS, cfg["memory_mb"] * mb, cfg["memory_mb"] * mb),
        (resource.RLIMIT_NPROC, cfg["max_processes"], cfg["max_processes"]),
        (resource.RLIMIT_FSIZE, cfg["max_file_mb"] * mb, cfg["max_file_mb"] * mb),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_NOFILE, 256, 256),
    ):
        resource.setrlimit(res, (soft, hard))


def run_child(cfg: dict, inbox: socket.socket, ctl: socket.socket, uid: int, slot, workdir: str, lib: ctypes.CDLL) -> None:
    """The run: contain itself, drop privileges, warm up, tell the supervisor on `ctl` it is
    ready, take one snippet (and its stdout/stderr) from the executor on `inbox`, close every
    other fd, run it, exit with its status. Never returns."""
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        if cfg["namespaces"]:
            mounts.mount_proc(lib)
        if slot is not None:
            slot.join()
            slot.close_fds()
        os.setsid()
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        _close_all_but({inbox.fileno(), ctl.fileno()})
        _set_limits(cfg)
        os.chdir(workdir)
        if cfg["drop_privileges"]:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        lib.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after setresuid, which clears it
        if select.select([ctl], [], [], 0)[0] and not ctl.recv(1, socket.MSG_PEEK):
            os._exit(0)  # the supervisor died before the death signal was armed
        if cfg["seccomp"]:
            seccomp.install(lib, no_network=not cfg["namespaces"])
        os.environ.clear()
        os.environ.update(SANDBOX_ENV, HOME=workdir, TMPDIR=workdir)
        sys.path = [workdir] + [p for p in sys.path if p and p != os.getcwd()]
    except BaseException as exc:  # noqa: BLE001 - told to the supervisor, which reports it
        try:
            send_frame(ctl, {"op": "failed", "error": f"{type(exc).__name__}: {exc}"})
        finally:
            os._exit(126)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace")
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True)
    # Copy-on-write faults cost ~8 us a page here: a warm-up snippet (output to /dev/null) takes
    # the ones every request would take, before it arrives instead of after.
    run_snippet(SPARE_WARM_UP)
    flush_streams()
    send_frame(ctl, {"op": "ready"})
    code, out_fd, err_fd = take_request(inbox)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    for end in (inbox, ctl):
        end.close()
    _close_all_but(set())  # from here on the code holds fds 0, 1 and 2 only
    status = run_snippet(code)
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()  # wait for non-daemon threads, as python does at exit
    except BaseException:  # noqa: BLE001 - a thread's failure does not change the exit code
        pass
    flush_streams()
    os._exit(status)


def take_request(inbox: socket.socket) -> tuple[str, int, int]:
    """Block for the snippet on `inbox`: (code, stdout fd, stderr fd). Exits quietly at end of
    stream or on a bad frame (the executor is gone or broken; the supervisor reports)."""
    reader = FrameReader(inbox)
    try:
        while True:
            if not reader.feed():
                os._exit(0)
            frame = next(reader.frames(), None)
            if frame is not None:
                code = field(frame, "code", str)
                out_fd, err_fd = reader.take_fds(2)
                reader.close()
                return code, out_fd, err_fd
    except FrameError:
        os._exit(125)


class Supervisor:
    """One run's supervision: the deadline, the kill, and the only result the executor trusts.

    Reads the executor's frames (`run` with the timeout and the result pipe, `kill`), the
    run's setup report while it is still trusted (`ready` or `failed`, before its snippet
    arrives), and the run's exit from a pidfd. `serve` returns once the result is written
    (or the executor is gone) and no process of the run is left.
    """

    def __init__(self, cfg: dict, executor: socket.socket, ctl: socket.socket, pid: int, uid: int, slot, workdir: str):
        self.cfg, self.pid, self.uid, self.slot, self.workdir = cfg, pid, uid, slot, workdir
        self.executor, self.exec_reader = executor, FrameReader(executor)
        self.ctl, self.ctl_reader = ctl, FrameReader(ctl)
        ctl.setblocking(False)
        self.ready = False
        self.pidfd = os.pidfd_open(pid)
        self.oom_before = slot.oom_kills() if slot is not None else 0
        self.result_fd: int | None = None
        self.deadline: float | None = None
        self.reason = ""
        self.setup_error = ""
        self.status: tuple[int, float] | None = None  # wait status, CPU seconds

    def kill(self, reason: str) -> None:
        self.reason = self.reason or reason
        _kill(self.pid)  # pid 1 of the run's namespace: the kernel then ends every process in it
        if not self.cfg["namespaces"]:
            _kill(self.pid, group=True)

    def on_executor(self) -> bool:
        """The executor's frames; False when it is gone (or broke the protocol)."""
        try:
            if not self.exec_reader.feed():
                return False
            for frame in self.exec_reader.frames():
                op = field(frame, "op", str)
                if op == "run" and self.result_fd is None:
                    timeout = field(frame, "timeout", (int, float))
                    (self.result_fd,) = self.exec_reader.take_fds(1)
                    self.deadline = time.monotonic() + max(0.0, float(timeout))
                elif op == "kill" and field(frame, "reason", str) in KILL_REASONS:
                    self.kill(frame["reason"])
                else:
                    raise FrameError(f"unexpected frame {op!r}")
            return True
        except FrameError:
            return False
        finally:
            self.exec_reader.close()

    def on_run_setup(self) -> None:
        """The run's `ready` or `failed`, sent before its snippet arrives; its end of `ctl`
        closes before the snippet runs, so nothing the code does is read here."""
        if self.ctl.fileno() < 0:
            return
        alive = True
        try:
            while alive:
                alive = self.ctl_reader.feed()
                for frame in self.ctl_reader.frames():
                    op = field(frame, "op", str)
                    self.ready = self.ready or op == "ready"
                    if op == "failed":
                        self.setup_error = str(frame.get("error", ""))[:2000]
        except BlockingIOError:
            pass
        except (FrameError, OSError):
            alive = False
        self.ctl_reader.close()
        if not alive:
            self.poller.unregister(self.ctl)
            self.ctl.close()

    def serve(self) -> None:
        self.poller = poller = select.poll()
        for fd in (self.executor, self.ctl, self.pidfd):
            poller.register(fd, select.POLLIN)
        try:
            while self.status is None or self.result_fd is None:
                wait = None if self.deadline is None or self.status is not None else max(0.0, self.deadline - time.monotonic())
                for fd, _ev in poller.poll(None if wait is None else int(wait * 1000) + 1):
                    if fd == self.executor.fileno():
                        if not self.on_executor():
                            self.kill("executor_gone")
                            self.reap()
                            self.end_run()
                            return
                    elif fd == self.pidfd:
                        self.reap()
                        poller.unregister(self.pidfd)
                    elif self.ctl.fileno() == fd:
                        self.on_run_setup()
                if self.status is None and self.deadline is not None and time.monotonic() >= self.deadline:
                    self.kill("timeout")
            oom_kills = 0 if self.slot is None else max(0, self.slot.oom_kills() - self.oom_before)
            self.end_run()
            self.report(oom_kills)
        finally:
            for end in (self.executor, self.ctl):
                end.close()
            os.close(self.pidfd)
            if self.result_fd is not None:
                _close(self.result_fd)

    def reap(self) -> None:
        if self.status is None:
            _, status, usage = os.wait4(self.pid, 0)
            self.status = (status, usage.ru_utime + usage.ru_stime)
            self.on_run_setup()  # what it said before it exited
            if not self.ready and not self.setup_error:
                self.setup_error = f"the run exited during its set-up (wait status {status:#x})"

    def end_run(self) -> None:
        """Make sure no process of the run is left (with a pid namespace its init's exit did
        that) and, without a mount namespace, no file it wrote in the host's temporary dirs."""
        if self.cfg["namespaces"]:
            return
        _kill(self.pid, group=True)
        if self.slot is not None:
            self.slot.kill()
        if self.cfg["drop_privileges"]:
            kill_all_of(self.uid)
            with as_uid(self.uid):  # deletes only what the run itself could delete
                deadline = time.monotonic() + 2.0
                while _reap_children() and time.monotonic() < deadline:
                    time.sleep(0.001)  # every process of the run is a descendant (this lane is its subreaper)
                mounts.sweep_owned(HOST_TMP_DIRS, self.uid)
                mounts.remove_tree(self.workdir)  # its contents; the directory itself is the lane's

    def report(self, oom_kills: int) -> None:
        status, cpu_s = self.status
        result = {
            "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "reason": self.reason, "cpu_s": cpu_s, "setup_error": self.setup_error, "oom_kills": oom_kills,
        }
        try:
            os.write(self.result_fd, json.dumps(result).encode() + b"\n")
        except OSError:
            pass  # the executor stopped waiting


def _reap_children() -> bool:
    """Reap what has exited; True while some child is still running."""
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return True
        except ChildProcessError:
            return False


def kill_all_of(uid: int) -> None:
    """SIGKILL every process of `uid` (escaped sessions too), never the caller."""
    with as_uid(uid):
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextlib.contextmanager
def as_uid(uid: int):
    """Act as `uid` (real and effective; the saved uid stays root to come back) for the block."""
    os.setresuid(uid, uid, 0)
    try:
        yield
    finally:
        os.setresuid(0, 0, 0)


class Lane:
    """A long-lived supervisor (forked once from the server): makes one spare at a time with a
    single fork into fresh namespaces, hands it to the executor (through the server), supervises
    its run, cleans up, and makes the next. Each lane owns one cgroup slot."""

    def __init__(self, cfg: dict, index: int, server: socket.socket, slot, lib: ctypes.CDLL):
        self.cfg, self.index, self.server, self.slot, self.lib = cfg, index, server, slot, lib
        self.reader = FrameReader(server)
        self.home = mounts.Namespaces() if cfg["namespaces"] else None

    def serve(self) -> None:
        while True:
            uid = self.next_uid()
            if uid is None:
                return  # the server is gone
            self.one_run(uid)

    def next_uid(self) -> int | None:
        """The server's go-ahead for the next spare, with its uid (handed out in order)."""
        while True:
            frame = next(self.reader.frames(), None)
            if frame is not None:
                return field(frame, "uid", int)
            if not self.reader.feed():
                return None

    def one_run(self, uid: int) -> None:
        cfg = self.cfg
        if cfg["namespaces"]:
            workdir = "/tmp"  # the run's own tmpfs
        else:
            workdir = os.path.join(cfg["workroot"], f"run-{uid}")
            os.mkdir(workdir, 0o700)
            if cfg["drop_privileges"]:
                os.chown(workdir, uid, uid)
        to_supervisor, supervisor_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        to_run, inbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ctl_mine, ctl_run = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = self.fork_run(inbox, ctl_run, uid, workdir)
        except OSError as exc:
            ctl_mine.close()
            self.offer(uid, to_supervisor, to_run)
            _answer_setup_failure(supervisor_end, f"{type(exc).__name__}: {exc}")
            return
        finally:
            inbox.close()
            ctl_run.close()
        supervisor = Supervisor(cfg, supervisor_end, ctl_mine, pid, uid, self.slot, workdir)
        self.offer(uid, to_supervisor, to_run)
        supervisor.serve()
        if not cfg["namespaces"]:
            mounts.remove_tree(workdir)

    def offer(self, uid: int, to_supervisor: socket.socket, to_run: socket.socket) -> None:
        try:
            send_frame(self.server, {"op": "spare", "uid": uid}, (to_supervisor.fileno(), to_run.fileno()))
        finally:
            to_supervisor.close()
            to_run.close()

    def fork_run(self, inbox: socket.socket, ctl: socket.socket, uid: int, workdir: str) -> int:
        """Fork the run: with namespaces, enter fresh ones, fork (the child is pid 1 of the new
        pid namespace), and come back to this lane's own."""
        if self.home is not None:
            try:
                mounts.isolate_run(self.lib, self.cfg["tmp_mb"] << 20, self.cfg["tmp_files"])
                return self._fork(inbox, ctl, uid, workdir)
            finally:
                self.home.restore(self.lib)
        return self._fork(inbox, ctl, uid, workdir)

    def _fork(self, inbox: socket.socket, ctl: socket.socket, uid: int, workdir: str) -> int:
        pid = os.fork()
        if pid == 0:
            try:
                run_child(self.cfg, inbox, ctl, uid, self.slot, workdir, self.lib)
            finally:
                os._exit(126)  # never back into the lane's code (it would restore the lane's namespaces)
        return pid


def lane_main(cfg: dict, index: int, server: socket.socket, slot, lib: ctypes.CDLL) -> None:
    """A freshly forked lane. Never returns."""
    code = 0
    try:
        lib.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        _close_all_but({server.fileno(), *(slot.fds.values() if slot is not None else ())})
        if os.getppid() != cfg["server_pid"]:
            os._exit(0)  # the server died before the death signal was armed
        if not cfg["namespaces"]:
            lib.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # the runs' orphans come back here to be reaped
        Lane(cfg, index, server, slot, lib).serve()
    except BaseException:  # noqa: BLE001 - said on the executor's stderr; the server starts a new lane
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def _answer_setup_failure(executor: socket.socket, error: str) -> None:
    """The run could not even be forked: answer the request for it with why."""
    reader = FrameReader(executor)
    try:
        while reader.feed():
            for frame in reader.frames():
                if frame.get("op") == "run":
                    (fd,) = reader.take_fds(1)
                    os.write(fd, json.dumps({"exit_code": None, "signal": None, "reason": "", "cpu_s": 0.0,
                                             "setup_error": error, "oom_kills": 0}).encode() + b"\n")
                    os.close(fd)
                    return
    except (FrameError, OSError):
        pass
    finally:
        reader.close()
        executor.close()


class ForkServer:
    """Starts `lanes` lanes, hands each its next uid, relays their spares to the executor,
    and replaces a lane that dies. Reads the executor's frames (`kill` a lane) and the lanes'
    (`spare`); nothing of a run reaches it."""

    def __init__(self, cfg: dict, sock: socket.socket, lib: ctypes.CDLL):
        self.cfg, self.sock, self.lib = cfg, sock, lib
        self.reader = FrameReader(sock)
        self.lanes: dict[int, tuple[int, socket.socket, FrameReader]] = {}  # lane pid -> (index, socket, reader)
        self.by_fd: dict[int, int] = {}  # lane socket fd -> lane pid
        self.last_uid: dict[int, int] = {}  # lane index -> uid of its current run
        self.count = 0
        cg = cfg["cgroup"]
        self.slots = [cgroups.Slot.create(str(i), cg["fds"], cg["version"], cfg["memory_mb"] << 20, cfg["max_processes"])
                      for i in range(cfg["lanes"])] if cg else [None] * cfg["lanes"]
        if not cfg["namespaces"]:
            os.makedirs(cfg["workroot"], mode=0o711, exist_ok=True)
            os.chmod(cfg["workroot"], 0o711)

    def start_lane(self, index: int) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            mine.close()
            lane_main(self.cfg, index, theirs, self.slots[index], self.lib)
        theirs.close()
        self.lanes[pid] = (index, mine, FrameReader(mine))
        self.by_fd[mine.fileno()] = pid
        self.poller.register(mine, select.POLLIN)
        self.go(pid)

    def go(self, pid: int) -> None:
        """Let lane `pid` make its next spare, with the next uid."""
        index, sock, _ = self.lanes[pid]
        uid = self.cfg["uid_base"] + self.count % self.cfg["uid_span"]
        self.count += 1
        self.last_uid[index] = uid
        send_frame(sock, {"uid": uid})

    def on_lane(self, pid: int) -> None:
        index, sock, reader = self.lanes[pid]
        try:
            alive = reader.feed()
            for frame in reader.frames():
                uid = field(frame, "uid", int)
                spare = reader.take_fds(2)
                try:
                    send_frame(self.sock, {"op": "spare", "pid": pid, "uid": uid}, tuple(spare))
                finally:
                    for fd in spare:
                        os.close(fd)
                self.go(pid)
        except (FrameError, OSError):
            alive = False
        finally:
            reader.close()
        if not alive:
            _kill(pid)  # a lane that broke the protocol is replaced when reaped

    def on_executor(self) -> bool:
        if not self.reader.feed():
            return False
        for frame in self.reader.frames():
            if field(frame, "op", str) != "kill":
                raise FrameError(f"unexpected frame {frame['op']!r}")
            pid = field(frame, "pid", int)
            if pid in self.lanes:
                _kill(pid)  # a lane the executor gave up on; its run dies with it, a new lane follows
        self.reader.close()  # no executor frame carries fds
        return True

    def reap(self) -> None:
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.lanes:
                index = self.clean_up(pid)
                self.start_lane(index)

    def clean_up(self, pid: int) -> int:
        """After a lane exits: its run's processes, cgroup and (without namespaces) files."""
        index, sock, reader = self.lanes.pop(pid)
        del self.by_fd[sock.fileno()]
        self.poller.unregister(sock)
        reader.close()
        sock.close()
        uid = self.last_uid.pop(index, None)
        if self.slots[index] is not None:
            self.slots[index].kill()
        if uid is not None and self.cfg["drop_privileges"]:
            kill_all_of(uid)  # the lane died without ending its run (its run's death signal should have)
            if not self.cfg["namespaces"]:
                with as_uid(uid):
                    mounts.sweep_owned(HOST_TMP_DIRS, uid)
        if not self.cfg["namespaces"] and uid is not None:
            mounts.remove_tree(os.path.join(self.cfg["workroot"], f"run-{uid}"))
        return index

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.poller = select.poll()
        self.poller.register(self.sock, select.POLLIN)
        self.poller.register(wake_r, select.POLLIN)
        try:
            for index in range(self.cfg["lanes"]):
                self.start_lane(index)
            while True:
                for fd, _ev in self.poller.poll():
                    if fd == wake_r:
                        _drain(wake_r)
                    elif fd == self.sock.fileno():
                        if not self.on_executor():
                            return self.shut_down(0)  # the executor went away
                    elif fd in self.by_fd:
                        self.on_lane(self.by_fd[fd])
                self.reap()
        except BaseException:  # noqa: BLE001 - said on the executor's stderr; the executor restarts the server
            traceback.print_exc()
            self.shut_down(1)

    def shut_down(self, code: int) -> None:
        for pid in list(self.lanes):
            _kill(pid)
        deadline = time.monotonic() + 5
        while self.lanes and time.monotonic() < deadline:
            try:
                pid, _status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid in self.lanes:
                self.clean_up(pid)
        for slot in self.slots:
            if slot is not None:
                slot.remove()
        if not self.cfg["namespaces"]:
            mounts.remove_tree(self.cfg["workroot"])
        os._exit(code)


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
    lib = mounts.libc()
    try:
        if cfg["namespaces"]:
            mounts.build_root(lib, cfg["python_paths"])
    except OSError as exc:
        send_frame(sock, {"op": "failed", "error": f"building the runs' root: {exc}"})
        return
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
    cfg["server_pid"] = os.getpid()
    gc.collect()
    gc.freeze()  # children's collections then skip (and so never copy) the preloaded objects
    server = ForkServer(cfg, sock, lib)
    send_frame(sock, {"op": "ready", "pid": os.getpid(), "missing": missing, "warm_up_error": warm_up_error})
    server.serve()


if __name__ == "__main__":
    main()
