"""Bucketed weight sync: exact round trips through the object store, bounded buckets, versions."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from r1ci.weight_sync import WeightSyncError, describe, iter_weights, pack_buckets, unpack_bucket


def arrays():
    rng = np.random.default_rng(0)
    return {
        "a": rng.standard_normal((256, 256)).astype(np.float32),  # 256 KiB
        "b": rng.standard_normal(1000).astype(np.float32),
        "big": rng.standard_normal((600, 600)).astype(np.float32),  # 1.4 MiB: more than one bucket's worth
        "ids": np.arange(7, dtype=np.int64),
        "c": rng.standard_normal((128, 512)).astype(np.float32),  # 256 KiB
    }


def test_buckets_are_bounded_ordered_and_never_one_per_tensor():
    named = arrays()
    buckets = pack_buckets(named, bucket_mb=0.5, version=3)
    assert [n for b in buckets for n in b.names] == list(named)
    for b in buckets:
        assert b.nbytes <= 0.5 * 2**20 or len(b.names) == 1  # only an oversized tensor travels alone
    assert 1 < len(buckets) < len(named)
    assert describe(buckets).num_bytes == sum(a.nbytes for a in named.values())
    assert np.shares_memory(buckets[0].arrays[0], named["a"])  # packing copies nothing


def test_buckets_round_trip_exactly_through_the_object_store_as_views(ray_cluster):
    ray = ray_cluster
    named = arrays()
    refs = [ray.put(b) for b in pack_buckets(named, bucket_mb=0.5, version=5)]
    got = ray.get(refs, timeout=60)
    back = dict(iter_weights(got, version=5))
    assert list(back) == list(named)
    for name, a in named.items():
        assert back[name].dtype == a.dtype and np.array_equal(back[name], a)
    first = unpack_bucket(got[0])[0][1]
    assert not first.flags.writeable and not first.flags.owndata  # a view into the shared object


def test_incomplete_or_mixed_syncs_are_refused():
    old = pack_buckets(arrays(), bucket_mb=0.5, version=1)
    new = pack_buckets(arrays(), bucket_mb=0.5, version=2)
    with pytest.raises(WeightSyncError, match="versions"):
        list(iter_weights(new[:1] + old[1:]))
    with pytest.raises(WeightSyncError, match="got buckets"):
        list(iter_weights(new[1:]))
    with pytest.raises(WeightSyncError, match="expected 1"):
        list(iter_weights(new, version=1))


def test_a_published_version_loads_into_a_transformers_model_with_identical_logits(ray_cluster, tiny_model_dir):
    ray = ray_cluster
    source = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.01 * torch.randn_like(p))  # weights the target has never seen
    named = [(n, p.detach().numpy()) for n, p in source.named_parameters()]
    refs = [ray.put(b) for b in pack_buckets(named, bucket_mb=0.25, version=9)]
    target = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    params = target.state_dict()
    for name, array in iter_weights(ray.get(refs, timeout=60), version=9):
        params[name].copy_(torch.from_numpy(np.array(array)))
    ids = torch.tensor([[5, 17, 99, 300, 42]])
    with torch.no_grad():
        assert torch.equal(source(ids).logits, target(ids).logits)
