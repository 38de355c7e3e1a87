"""The seccomp filter every run gets: system calls that widen the kernel surface or reach past the run fail.

A hand-assembled BPF program (no libseccomp needed). It refuses, with EPERM unless noted:
io_uring (whose ring can open sockets without `socket()`), bpf, perf_event_open,
userfaultfd, the key-ring calls, ptrace and cross-process memory access, sched_setaffinity
(a run stays on the CPUs `sandbox.cpus` pinned its fork server to), every namespace
and mount call (unshare, setns, clone with a CLONE_NEW* flag, clone3 with ENOSYS so libc
falls back to clone), and every socket family but IPv4/IPv6 (so no Unix, abstract, netlink,
vsock or packet socket can be created; `socketpair` stays, stream only). With
`no_network` (containment none) every `socket()` fails, and so do the System V and POSIX
IPC calls, which would otherwise reach the host's IPC namespace. Calls of another ABI
(i386, x32) kill the process.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import socket

# system call numbers; x86_64 only (the filter is refused elsewhere, see `supported`)
X86_64 = {
    "socket": 41, "socketpair": 53, "clone": 56, "clone3": 435, "unshare": 272, "setns": 308,
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "open_tree_attr": 467,
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "bpf": 321, "perf_event_open": 298,
    "userfaultfd": 323, "keyctl": 250, "add_key": 248, "request_key": 249,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "sched_setaffinity": 203, "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176,
    "syslog": 103, "acct": 163, "swapon": 167, "swapoff": 168, "reboot": 169,
    "shmget": 29, "shmat": 30, "shmctl": 31, "shmdt": 67, "semget": 64, "semop": 65, "semctl": 66, "semtimedop": 220,
    "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71,
    "mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243, "mq_notify": 244, "mq_getsetattr": 245,
}
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

ALWAYS_DENIED = (
    "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "perf_event_open", "userfaultfd",
    "keyctl", "add_key", "request_key", "ptrace", "process_vm_readv", "process_vm_writev",
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "open_tree_attr",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "syslog", "acct",
    "swapon", "swapoff", "reboot", "sched_setaffinity",
)
HOST_IPC = ("shmget", "shmat", "shmctl", "shmdt", "semget", "semop", "semctl", "semtimedop",
            "msgget", "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive",
            "mq_notify", "mq_getsetattr")
CLONE_NEW_FLAGS = 0x02000000 | 0x00020000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

# classic BPF opcodes and seccomp return values
LD_ABS, JEQ, JGE, JSET, AND, RET = 0x20, 0x15, 0x35, 0x45, 0x54, 0x06
RET_KILL_PROCESS, RET_ERRNO, RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
NR, ARCH, ARG0, ARG1 = 0, 4, 16, 24  # offsets in struct seccomp_data (low 32 bits of each argument)
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2


class _Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_Filter))]


def supported() -> bool:
    """Whether this machine's ABI has a filter (x86_64)."""
    return platform.machine() == "x86_64"


def program(no_network: bool) -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) instructions; jumps are resolved from labels here."""
    ins: list[tuple] = []  # (code, true label or 0, false label or 0, k); a label is a str
    labels: dict[str, int] = {}

    def label(name: str) -> None:
        labels[name] = len(ins)

    deny = {"eperm": RET_ERRNO | errno.EPERM, "enosys": RET_ERRNO | errno.ENOSYS,
            "eacces": RET_ERRNO | errno.EACCES, "allow": RET_ALLOW, "kill": RET_KILL_PROCESS}
    ins += [(LD_ABS, 0, 0, ARCH), (JEQ, 0, "kill", AUDIT_ARCH_X86_64), (LD_ABS, 0, 0, NR), (JGE, "kill", 0, X32_SYSCALL_BIT)]
    for name in ALWAYS_DENIED + (HOST_IPC if no_network else ()):
        ins.append((JEQ, "eperm", 0, X86_64[name]))
    ins += [(JEQ, "enosys", 0, X86_64["clone3"]), (JEQ, "clone", 0, X86_64["clone"]),
            (JEQ, "socket", 0, X86_64["socket"]), (JEQ, "socketpair", 0, X86_64["socketpair"]), (RET, 0, 0, RET_ALLOW)]
    label("clone")
    ins += [(LD_ABS, 0, 0, ARG0), (JSET, "eperm", "allow", CLONE_NEW_FLAGS)]
    label("socket")
    if no_network:
        ins.append((RET, 0, 0, deny["eacces"]))
    else:
        ins += [(LD_ABS, 0, 0, ARG0), (JEQ, "allow", 0, socket.AF_INET), (JEQ, "allow", "eacces", socket.AF_INET6)]
    label("socketpair")
    ins += [(LD_ABS, 0, 0, ARG1), (AND, 0, 0, 0xF), (JEQ, "allow", "eacces", socket.SOCK_STREAM)]
    for name, value in deny.items():
        label(name)
        ins.append((RET, 0, 0, value))

    out = []
    for i, (code, jt, jf, k) in enumerate(ins):
        offsets = [labels[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf)]
        assert all(0 <= o < 256 for o in offsets), (i, offsets)
        out.append((code, offsets[0], offsets[1], k))
    return out


def install(libc: ctypes.CDLL, no_network: bool) -> None:
    """Load the filter into this process (inherited by every child); sets no_new_privs first."""
    if not supported():
        raise OSError(f"no seccomp filter for {platform.machine()}")
    prog = program(no_network)
    filters = (_Filter * len(prog))(*[_Filter(*p) for p in prog])
    fprog = _Program(len(prog), filters)
    zero = ctypes.c_ulong(0)
    if (libc.prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), zero, zero, zero)
            or libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(fprog), zero, zero)):
        raise OSError(ctypes.get_errno(), "could not load the seccomp filter")
