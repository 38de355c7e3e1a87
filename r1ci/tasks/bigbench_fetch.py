"""Fetch the BIG-bench task files the 24 data-built BBH tasks need, without installing `bigbench`.

`pip install bigbench==1.0.0` fails with current pip (the package declares direct URL
dependencies), so the sdist is taken from PyPI's simple index, checked against its
sha256, and only the needed `task.json` files are extracted into `<data_dir>/bigbench/`.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

from r1ci.errors import UserError

from r1ci.tasks.bbh import BIGBENCH_SPECS, bigbench_dir

INDEX_URL = "https://pypi.org/simple/bigbench/"
SDIST_NAME = "bigbench-1.0.0.tar.gz"
SDIST_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"  # from PyPI's index
MEMBER_ROOT = "bigbench-1.0.0/bigbench/benchmark_tasks/"


class FetchError(UserError, RuntimeError):
    """The BIG-bench sdist could not be fetched, verified or read."""


def needed_sources() -> list[str]:
    """Source directories (under benchmark_tasks/) of the 24 data-built BBH tasks."""
    return sorted({spec.source for spec in BIGBENCH_SPECS.values()})


def missing_files(root: Path) -> list[Path]:
    return [p for p in (bigbench_dir(root) / s / "task.json" for s in needed_sources()) if not p.is_file()]


def sdist_url(index_html: str) -> tuple[str, str]:
    """(download url, sha256) of bigbench-1.0.0.tar.gz from the simple index's HTML."""
    m = re.search(r'href="([^"#]*/' + re.escape(SDIST_NAME) + r')#sha256=([0-9a-f]{64})"', index_html)
    if not m:
        raise FetchError(f"{SDIST_NAME} is not listed at {INDEX_URL}")
    return m.group(1), m.group(2)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(dest: Path, progress: Callable[[int, int], None] | None = None, timeout_s: float = 60.0) -> Path:
    """Download the sdist to `dest` (a file path), verifying the sha256 the index gives."""
    with urllib.request.urlopen(INDEX_URL, timeout=timeout_s) as r:
        url, sha = sdist_url(r.read().decode())
    with urllib.request.urlopen(url, timeout=timeout_s) as r, open(dest, "wb") as f:
        total, done = int(r.headers.get("Content-Length", 0)), 0
        while chunk := r.read(1 << 20):
            f.write(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    if _sha256(dest) != sha:
        dest.unlink()
        raise FetchError(f"{url}: sha256 does not match the index ({sha}); try again")
    return dest


def extract(tarball: Path, root: Path) -> list[Path]:
    """Copy the needed task.json files out of the sdist into `<root>/bigbench/<source>/task.json`."""
    wanted = {MEMBER_ROOT + s + "/task.json": s for s in needed_sources()}
    written = []
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                source = wanted.pop(member.name, None)
                if source is None:
                    continue
                out = bigbench_dir(root) / source / "task.json"
                out.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(out.with_suffix(".tmp"), "wb") as dst:
                    shutil.copyfileobj(src, dst)
                out.with_suffix(".tmp").replace(out)
                written.append(out)
                if not wanted:
                    break
    except (tarfile.TarError, OSError) as exc:
        raise FetchError(f"{tarball}: cannot read the sdist ({exc})") from None
    if wanted:
        raise FetchError(f"{tarball}: missing {', '.join(sorted(wanted.values()))}; is it {SDIST_NAME}?")
    return written


def fetch_bigbench(
    root: Path,
    tarball: Path | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Make sure every needed task.json is under `<root>/bigbench/`; returns the files written.

    Does nothing when all are present (unless `force`). `tarball` is a local copy of the sdist
    (checked against the known sha256) instead of a download.
    """
    root = Path(root).expanduser()
    if not force and not missing_files(root):
        return []
    if tarball is not None:
        tarball = Path(tarball).expanduser()
        if not tarball.is_file():
            raise FetchError(f"{tarball}: no such file")
        if _sha256(tarball) != SDIST_SHA256:
            raise FetchError(f"{tarball}: sha256 differs from PyPI's {SDIST_NAME}; pass the original file")
        return extract(tarball, root)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        return extract(download(Path(tmp) / SDIST_NAME, progress), root)
