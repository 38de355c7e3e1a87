"""What the sandbox tests check after a hostile run: the next snippet still answers, nothing of earlier runs is left."""

from __future__ import annotations

import os
import time

HOST_TMP = ("/tmp", "/var/tmp", "/dev/shm")


def earlier_uids(executor) -> range:
    """The uids handed out before the probe's (each run has its own, in order of its spare's
    making; some may belong to spares that have not run yet)."""
    probe = int(executor.run("import os; print(os.getuid())").stdout)
    return range(executor.uid_range.start, probe)


def _owner(path: str) -> int | None:
    try:
        return os.lstat(path).st_uid
    except FileNotFoundError:  # gone while we looked
        return None


def _entries(d: str) -> list[str]:
    try:
        return [os.path.join(d, name) for name in os.listdir(d)]
    except FileNotFoundError:
        return []


def _owned(uids: set[int], workroot: str) -> list[str]:
    found = [f"process {name}" for name in os.listdir("/proc") if name.isdigit() and _owner(f"/proc/{name}") in uids]
    for d in HOST_TMP + ((workroot,) if workroot else ()):
        found += [path for path in _entries(d) if _owner(path) in uids]
    return found


def leftovers(executor, seconds: float = 5.0) -> list[str]:
    """Processes of earlier runs, and files they own in the host's /tmp, /var/tmp, /dev/shm and
    (containment none) the executor's work root; waits up to `seconds` for clean-up to finish."""
    uids = earlier_uids(executor)
    deadline = time.monotonic() + seconds
    while True:  # spares made before the probe's may still wait to be offered; once offered they are known
        found = _owned(set(uids) - set(executor.spare_uids), executor._workroot)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def assert_sound(executor) -> None:
    """The next trivial snippet answers correctly and no process or file of earlier runs is left."""
    result = executor.run("print(6 * 7)")
    assert result.ok and result.stdout == "42\n" and result.stderr == "", result
    assert leftovers(executor) == []
