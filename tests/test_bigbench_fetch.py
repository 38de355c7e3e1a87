"""Fetching BIG-bench task files: index parsing, selective extraction, idempotence, checksum refusal."""

import io
import json
import tarfile

import pytest

from r1ci.tasks.bigbench_fetch import (
    MEMBER_ROOT,
    FetchError,
    extract,
    fetch_bigbench,
    missing_files,
    needed_sources,
    sdist_url,
)


def _sdist(path, sources):
    with tarfile.open(path, "w:gz") as tar:
        for name, body in [(MEMBER_ROOT + s + "/task.json", json.dumps({"examples": [], "name": s})) for s in sources] + [
            (MEMBER_ROOT + "other_task/task.json", "{}"),
            ("bigbench-1.0.0/setup.py", ""),
        ]:
            data = body.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_index_link_gives_url_and_sha256():
    html = '<a href="https://files.pythonhosted.org/packages/95/f8/x/bigbench-1.0.0.tar.gz#sha256=' + "ab" * 32 + '">bigbench-1.0.0.tar.gz</a>'
    assert sdist_url(html) == ("https://files.pythonhosted.org/packages/95/f8/x/bigbench-1.0.0.tar.gz", "ab" * 32)
    with pytest.raises(FetchError, match="not listed"):
        sdist_url('<a href="https://x/bigbench-0.0.1.tar.gz#sha256=' + "0" * 64 + '">')


def test_extract_writes_only_the_24_needed_files_and_then_skips(tmp_path):
    assert len(needed_sources()) == 24 and "logical_deduction/three_objects" in needed_sources()
    written = extract(_sdist(tmp_path / "b.tar.gz", needed_sources()), tmp_path / "data")
    assert len(written) == 24 and missing_files(tmp_path / "data") == []
    assert not (tmp_path / "data" / "bigbench" / "other_task").exists()
    assert fetch_bigbench(tmp_path / "data") == []  # present: no download, nothing written


def test_extract_names_missing_sources(tmp_path):
    with pytest.raises(FetchError, match="missing snarks"):
        extract(_sdist(tmp_path / "b.tar.gz", [s for s in needed_sources() if s != "snarks"]), tmp_path / "data")


def test_local_tarball_must_be_the_real_sdist(tmp_path):
    with pytest.raises(FetchError, match="sha256 differs"):
        fetch_bigbench(tmp_path / "data", tarball=_sdist(tmp_path / "b.tar.gz", needed_sources()))
    with pytest.raises(FetchError, match="no such file"):
        fetch_bigbench(tmp_path / "data", tarball=tmp_path / "nope.tar.gz")
