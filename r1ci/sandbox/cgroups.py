"""Run-wide memory and process limits: each run joins a cgroup of its own, below the executor's.

`plan` finds where this process may create cgroups with the memory and pids controllers
(cgroup v1 hierarchies, or a cgroup v2 group that delegates both), `Parents` creates this
executor's directory in each, and the fork server makes one `Slot` per lane below it
(working only through directory fds, so it also works behind bubblewrap's read-only /sys)
with `memory_mb` and `max_processes` as limits; a lane's runs join it one after the other,
and its OOM kills are read after each.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from dataclasses import dataclass, field

PREFIX = "r1ci-"


@dataclass
class Plan:
    """Where this executor's run cgroups go: `version` "v1" or "v2", and the host directory
    (one per v1 hierarchy, one for v2) under which its own directory is created."""

    version: str
    bases: dict[str, str] = field(default_factory=dict)  # "memory"/"pids" (v1) or "unified" (v2) -> dir


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount root, mount point, fs type, super options) of each cgroup mount in /proc/self/mountinfo."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fields, rfields = left.split(), right.split()
            if rfields[0] in ("cgroup", "cgroup2"):
                out.append((fields[3], fields[4].replace("\\040", " "), rfields[0], set(rfields[2].split(","))))
    return out


def _own_paths() -> dict[str, str]:
    """{controller or "unified": this process's cgroup path} from /proc/self/cgroup."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else ["unified"]:
                out[c] = path
    return out


def _host_dir(root: str, point: str, own: str) -> str | None:
    if own != root and not own.startswith(root.rstrip("/") + "/"):
        return None  # our group is not visible through this mount
    return os.path.join(point, own[len(root):].lstrip("/"))


def _plan_v1() -> Plan | str:
    own, bases = _own_paths(), {}
    for controller in ("memory", "pids"):
        found = [(r, p) for r, p, fs, opts in _mounts() if fs == "cgroup" and controller in opts]
        path = _host_dir(*found[0], own.get(controller, "/")) if found and controller in own else None
        if path is None:
            return f"no cgroup v1 {controller} hierarchy"
        if not os.access(path, os.W_OK):
            return f"{path} is not writable"
        bases[controller] = path
    return Plan("v1", bases)


def _plan_v2(parent: str) -> Plan | str:
    if not parent:
        found = [(r, p) for r, p, fs, _ in _mounts() if fs == "cgroup2"]
        own = _own_paths().get("unified")
        parent = _host_dir(*found[0], own) if found and own is not None else None
        if parent is None:
            return "no cgroup v2 hierarchy"
    try:
        with open(os.path.join(parent, "cgroup.subtree_control")) as f:
            delegated = set(f.read().split())
    except OSError as exc:
        return f"cannot read {parent}/cgroup.subtree_control ({exc.strerror})"
    if not {"memory", "pids"} <= delegated or not os.access(parent, os.W_OK):
        return (f"{parent} does not delegate memory and pids to groups we may create (start the executor in a "
                "delegated cgroup, e.g. systemd-run --user -p Delegate=yes, or set sandbox.cgroup_parent)")
    return Plan("v2", {"unified": parent})


def plan(mode: str, parent: str = "") -> tuple[Plan | None, str]:
    """The cgroups this host offers for `mode` (auto, v1, v2, off): (plan, "") or (None, why not)."""
    if mode == "off":
        return None, "sandbox.cgroup=off"
    tried = []
    for version in (("v1", "v2") if mode == "auto" else (mode,)):
        found = _plan_v1() if version == "v1" else _plan_v2(parent)
        if isinstance(found, Plan):
            return found, ""
        tried.append(f"{version}: {found}")
    return None, "; ".join(tried)


def _procs(dir_fd: int, name: str) -> list[int]:
    try:
        with open(os.open(f"{name}/cgroup.procs", os.O_RDONLY, dir_fd=dir_fd)) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _remove_group(dir_fd: int, name: str, tries: int = 50) -> bool:
    """Kill what is left in group `name` and remove it; False if it stayed."""
    for _ in range(tries):
        for pid in _procs(dir_fd, name):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.rmdir(name, dir_fd=dir_fd)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(0.01)
    return False


class Parents:
    """This executor's own directory in each hierarchy of `plan` (host side): created, opened, removed."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.fds: dict[str, int] = {}
        for key, base in plan.bases.items():
            _remove_stale(base)
            os.mkdir(os.path.join(base, self.name), 0o755)
            self.fds[key] = os.open(os.path.join(base, self.name), os.O_RDONLY | os.O_DIRECTORY)

    def close(self) -> None:
        """Remove the directories (the fork server has emptied and removed the run groups)."""
        for key, fd in self.fds.items():
            for entry in os.listdir(fd):
                if os.path.isdir(f"/proc/self/fd/{fd}/{entry}"):
                    _remove_group(fd, entry)
            os.close(fd)
            base = os.open(self.plan.bases[key], os.O_RDONLY | os.O_DIRECTORY)
            try:
                _remove_group(base, self.name)
            finally:
                os.close(base)
        self.fds = {}


def _remove_stale(base: str) -> None:
    """Remove directories left by executors that died without cleaning up (their pid is gone)."""
    try:
        names = [n for n in os.listdir(base) if n.startswith(PREFIX)]
    except OSError:
        return
    for name in names:
        try:
            pid = int(name[len(PREFIX):].split("-")[0])
            os.kill(pid, 0)
            continue  # its executor still runs
        except ValueError:
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
        try:
            inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            try:
                for entry in os.listdir(inner):
                    if os.path.isdir(f"/proc/self/fd/{inner}/{entry}"):
                        _remove_group(inner, entry, tries=3)
            finally:
                os.close(inner)
            _remove_group(fd, name, tries=3)
        except OSError:
            pass
        finally:
            os.close(fd)


class Slot:
    """The cgroup (a directory in each hierarchy) one run at a time is in: each of the fork
    server's lanes owns one and reuses it for its runs, one after the other."""

    def __init__(self, name: str, parents: dict[str, int], version: str):
        self.name, self.parents, self.version = name, parents, version
        self.fds = {key: os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd) for key, fd in parents.items()}

    @classmethod
    def create(cls, name: str, parents: dict[str, int], version: str, memory_bytes: int, max_processes: int) -> Slot:
        """Make (or take over, from a fork server that was killed) group `name` with these limits."""
        for fd in parents.values():
            try:
                os.mkdir(name, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
        slot = cls(name, parents, version)
        slot.kill()
        slot.limit(memory_bytes, max_processes)
        return slot

    def _write(self, key: str, file: str, value: str) -> None:
        fd = os.open(file, os.O_WRONLY, dir_fd=self.fds[key])
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def _read(self, key: str, file: str) -> str:
        with open(os.open(file, os.O_RDONLY, dir_fd=self.fds[key])) as f:
            return f.read()

    def limit(self, memory_bytes: int, max_processes: int) -> None:
        if self.version == "v1":
            self._write("memory", "memory.limit_in_bytes", str(memory_bytes))
            try:  # RAM plus swap, where swap accounting is on; else swap is not counted
                self._write("memory", "memory.memsw.limit_in_bytes", str(memory_bytes))
            except FileNotFoundError:
                pass
            self._write("pids", "pids.max", str(max_processes))
        else:
            self._write("unified", "memory.max", str(memory_bytes))
            try:
                self._write("unified", "memory.swap.max", "0")
            except FileNotFoundError:
                pass
            self._write("unified", "memory.oom.group", "1")  # an OOM kill ends the whole run
            self._write("unified", "pids.max", str(max_processes))

    def join(self) -> None:
        """Move the calling process into this run's group (in every hierarchy)."""
        for key in self.fds:
            self._write(key, "cgroup.procs", "0")

    def oom_kills(self) -> int:
        """Processes the kernel's OOM killer has killed in this group so far."""
        key, file = ("memory", "memory.oom_control") if self.version == "v1" else ("unified", "memory.events")
        for line in self._read(key, file).splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
        return 0

    def procs(self) -> list[int]:
        return _procs(self.fds[next(iter(self.fds))], ".")

    def kill(self) -> None:
        """SIGKILL every process in the group (one atomic write on v2)."""
        if self.version == "v2":
            try:
                self._write("unified", "cgroup.kill", "1")
                return
            except FileNotFoundError:
                pass  # kernels before 5.14
        for pid in self.procs():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def close_fds(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}

    def remove(self) -> bool:
        self.close_fds()
        return all(_remove_group(fd, self.name) for fd in self.parents.values())
