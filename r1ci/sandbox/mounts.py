"""The file-system and namespace views of the fork server and of each run, and deep-safe deletion.

`build_root` pivots the fork server (once, inside its containment) into a fresh read-only
root that holds only the interpreter's directories, /usr, /etc, a few device nodes and
empty mount points. `isolate_run` enters fresh mount, network (a loopback that is up), IPC,
UTS and pid namespaces with one size-limited tmpfs behind /tmp, /var/tmp and /dev/shm, for
the next child to keep (all gone with its last process); `Namespaces` comes back. `remove_tree` deletes a directory tree of any
depth without recursion and without following links.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import socket
import stat
import struct
from pathlib import Path

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x4000000, 0x8000000, 0x20000000, 0x40000000
RUN_NAMESPACES = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
SYS_PIVOT_ROOT, SYS_MOUNT_SETATTR = 155, 442  # x86_64; mount_setattr's number is the same on every ABI
AT_RECURSIVE, MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 0x8000, 0x1, 0x2
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
DEVICES = ("null", "zero", "full", "random", "urandom")
STAGE = "/.run"  # where a run's tmpfs is mounted before its parts are bound to /tmp, /var/tmp, /dev/shm
WRITABLE = {"tmp": "/tmp", "var-tmp": "/var/tmp", "shm": "/dev/shm"}


def libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(lib: ctypes.CDLL, source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: None if s is None else s.encode())
    _check(lib.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def unshare(lib: ctypes.CDLL, flags: int) -> None:
    _check(lib.unshare(ctypes.c_int(flags)), "unshare")


def outermost(paths: list[str]) -> list[str]:
    """The existing paths of `paths` that no other one contains, sorted."""
    real = sorted({p for p in paths if p.startswith("/") and os.path.exists(p)})
    return [p for p in real if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in real)]


def root_sources(python_paths: list[str]) -> list[str]:
    """What the runs' root holds: the system directories and the interpreter's own paths."""
    return outermost([*SYSTEM_DIRS, *python_paths])


def build_root(lib: ctypes.CDLL, python_paths: list[str]) -> None:
    """Pivot this process (root in a private mount namespace) into a fresh read-only root (see module docstring)."""
    mount(lib, None, "/", None, MS_REC | MS_PRIVATE)
    sources = root_sources(python_paths)
    links = {p: os.readlink(p) for p in sources if os.path.islink(p)}
    fds = {p: os.open(p, os.O_PATH | os.O_NOFOLLOW) for p in sources if p not in links}
    devs = {d: os.open(f"/dev/{d}", os.O_PATH) for d in DEVICES}
    new = "/tmp"  # always exists; covered in this namespace only, after its contents were opened
    mount(lib, "tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    for path, target in links.items():
        os.symlink(target, new + path)
    for path, fd in fds.items():
        dst = new + path
        os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.mkdir(dst, 0o755)
        else:
            open(dst, "w").close()
        mount(lib, f"/proc/self/fd/{fd}", dst, None, MS_BIND | MS_REC)
        os.close(fd)
    for sub in ("proc", "tmp", "var/tmp", "dev/shm", STAGE.lstrip("/"), ".old"):
        os.makedirs(f"{new}/{sub}", mode=0o755, exist_ok=True)
    for name, fd in devs.items():
        open(f"{new}/dev/{name}", "w").close()
        mount(lib, f"/proc/self/fd/{fd}", f"{new}/dev/{name}", None, MS_BIND)
        os.close(fd)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{new}/dev/{name}")
    mount(lib, "proc", f"{new}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.chdir(new)
    _check(lib.syscall(ctypes.c_long(SYS_PIVOT_ROOT), b".", b".old"), "pivot_root")
    os.chdir("/")
    _check(lib.umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    _read_only(lib)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _read_only(lib: ctypes.CDLL) -> None:
    """Every mount under / read-only and nosuid (one call on kernels >= 5.12, else one remount each)."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0, 0, 0)
    at_fdcwd = -100
    if lib.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(at_fdcwd), b"/", ctypes.c_uint(AT_RECURSIVE),
                   ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))) == 0:
        return
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in points:
        mount(lib, None, point.replace("\\040", " "), None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)


class Namespaces:
    """This process's own namespaces, to come back to after entering a run's to fork it."""

    KINDS = {CLONE_NEWNET: "net", CLONE_NEWIPC: "ipc", CLONE_NEWUTS: "uts", CLONE_NEWNS: "mnt", CLONE_NEWPID: "pid"}

    def __init__(self):
        self.fds = {flag: os.open(f"/proc/self/ns/{name}", os.O_RDONLY | os.O_CLOEXEC) for flag, name in self.KINDS.items()}

    def restore(self, lib: ctypes.CDLL) -> None:
        """Back into each of them (for pid: the namespace of later children)."""
        for flag, fd in self.fds.items():
            _check(lib.setns(fd, flag), f"setns back to this process's {self.KINDS[flag]} namespace")


def isolate_run(lib: ctypes.CDLL, tmp_bytes: int, tmp_files: int, hostname: str = "sandbox") -> None:
    """Put this process in fresh namespaces for one run (its next child is pid 1 of the new pid
    namespace), with a private writable tmpfs and its own loopback; `Namespaces.restore` comes back."""
    unshare(lib, RUN_NAMESPACES)
    mount(lib, "tmpfs", STAGE, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=0755,size={tmp_bytes},nr_inodes={tmp_files}")
    for name, target in WRITABLE.items():
        os.mkdir(f"{STAGE}/{name}", 0o1777)
        os.chmod(f"{STAGE}/{name}", 0o1777)  # not narrowed by the umask
        mount(lib, f"{STAGE}/{name}", target, None, MS_BIND)
    _check(lib.umount2(STAGE.encode(), MNT_DETACH), "umount the staging tmpfs")
    socket.sethostname(hostname)
    loopback_up()


def loopback_up() -> None:
    """Bring up `lo` in this (fresh) network namespace: 127.0.0.1 works, nothing else exists."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack_from("H", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16s24x", b"lo")), 16)[0]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def mount_proc(lib: ctypes.CDLL) -> None:
    """A /proc that shows this pid namespace (call from inside it)."""
    mount(lib, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _open_dir(name: str, dir_fd: int | None) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except PermissionError:  # a directory the run closed (mode 000) that we own
        os.chmod(name, 0o700, dir_fd=dir_fd, follow_symlinks=False)
        return os.open(name, flags, dir_fd=dir_fd)


def remove_tree(path: str) -> bool:
    """Delete `path` and everything below it, however deep, holding one directory fd at a time.

    Never follows a symbolic link and never recurses (shutil.rmtree does, and a 1500-level
    tree made it raise RecursionError). True when the path is gone.
    """
    try:
        fd = _open_dir(path, None)
    except FileNotFoundError:
        return True
    except OSError:  # not a directory (or a link to one)
        try:
            os.unlink(path)
        except OSError:
            return not os.path.lexists(path)
        return True
    below: list[str] = []  # names from `path` down to the directory `fd` is open on
    stuck: set[int] = set()  # inodes that could not be removed (skipped, so the walk ends)
    try:
        while True:
            sub = None
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.inode() in stuck:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        sub = entry
                        break
                    try:
                        os.unlink(entry.name, dir_fd=fd)
                    except FileNotFoundError:
                        pass
                    except OSError:
                        stuck.add(entry.inode())
            if sub is not None:
                try:
                    child = _open_dir(sub.name, fd)
                except OSError:
                    stuck.add(sub.inode())
                    continue
                os.close(fd)
                fd = child
                below.append(sub.name)
                continue
            if not below:
                break
            parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            inode = os.fstat(fd).st_ino
            os.close(fd)
            fd = parent
            try:
                os.rmdir(below.pop(), dir_fd=fd)
            except OSError:
                stuck.add(inode)
    finally:
        os.close(fd)
    try:
        os.rmdir(path)
    except OSError:
        return not os.path.lexists(path)
    return True


def sweep_owned(dirs: list[str], uid: int) -> None:
    """Delete the entries of `dirs` that `uid` owns (what a run without a mount namespace left in /tmp and the like)."""
    for d in dirs:
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid == uid:
                    remove_tree(os.path.join(d, entry.name))
            except OSError:
                pass


def python_paths(leave_out: str) -> list[str]:
    """Directories the interpreter imports from (the runs must be able to read them), without
    anything at or below `leave_out` (r1ci's checkout: the fork server has imported what it
    needs from it) that is not inside the interpreter's own prefixes (a `.venv` in the checkout)."""
    import sys

    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(sys.executable).parent)}
    paths |= {p for p in sys.path if p.startswith("/")}
    paths |= {os.path.realpath(p) for p in paths}

    def within(p: str, top: str) -> bool:
        return p == top or p.startswith(top.rstrip("/") + "/")

    out = os.path.realpath(leave_out)
    return sorted(p for p in paths if not within(os.path.realpath(p), out) or any(within(os.path.realpath(p), q) for q in prefixes))
