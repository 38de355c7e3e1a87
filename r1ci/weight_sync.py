"""Weights from learner to generators through the object store: bounded buckets, one version.

A sync is a few objects of about `LearnerConfig.sync_bucket_mb` each: not one object per
tensor (thousands of small transfers) nor one for the whole model (nothing overlaps, one
huge allocation). A `Bucket` holds numpy views of the tensors; `ray.put` writes them back
to back into one contiguous object-store buffer (the only copy on the learner side;
packing into a staging array first would add a second), and on the generator side
`unpack_bucket` returns read-only views into that shared buffer: the hf engine makes them
its parameters (no copy at all), vLLM hands them to its worker processes through one
shared-memory file. Every bucket carries the weights version, so
a generator can refuse a mixed or incomplete set instead of serving stale weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np


MIXED_WEIGHTS = -1  # the weight version a generator reports while a sync is half loaded


class WeightSyncError(RuntimeError):
    """Buckets of one sync are missing, duplicated or from different versions."""


@dataclass
class Bucket:
    version: int
    index: int  # position of this bucket within its sync, 0-based
    count: int  # buckets in this sync
    names: list[str] = field(default_factory=list)
    arrays: list[np.ndarray] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)


def pack_buckets(named_arrays: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]], bucket_mb: float, version: int = 0) -> list[Bucket]:
    """Group tensors, in order, into buckets of at most `bucket_mb` MiB; a tensor larger than
    that travels alone. Arrays are kept as views (no copy): put the buckets in the object
    store before the weights change."""
    items = named_arrays.items() if isinstance(named_arrays, Mapping) else named_arrays
    limit = bucket_mb * 2**20
    groups: list[list[tuple[str, np.ndarray]]] = [[]]
    size = 0
    for name, array in items:
        array = np.ascontiguousarray(array)
        if groups[-1] and size + array.nbytes > limit:
            groups.append([])
            size = 0
        groups[-1].append((name, array))
        size += array.nbytes
    groups = [g for g in groups if g]
    return [
        Bucket(version, i, len(groups), [n for n, _ in g], [a for _, a in g]) for i, g in enumerate(groups)
    ]


def unpack_bucket(bucket: Bucket) -> list[tuple[str, np.ndarray]]:
    """(HF parameter name, array) pairs; zero-copy views (read-only after `ray.get`)."""
    return list(zip(bucket.names, bucket.arrays))


def check_complete(buckets: list[Bucket], version: int | None = None) -> None:
    """Raise WeightSyncError unless `buckets` are exactly one sync's buckets (of `version`, if given)."""
    if not buckets:
        raise WeightSyncError("no weight buckets received")
    versions = {b.version for b in buckets}
    if len(versions) != 1 or (version is not None and versions != {version}):
        raise WeightSyncError(f"weight buckets of versions {sorted(versions)} mixed in one sync (expected {version})")
    count = buckets[0].count
    if sorted(b.index for b in buckets) != list(range(count)):
        raise WeightSyncError(f"weights version {buckets[0].version}: got buckets {sorted(b.index for b in buckets)} of {count}")
