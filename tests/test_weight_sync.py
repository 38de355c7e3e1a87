"""Bucketed weight sync: exact round trips through the object store, bounded buckets, versions."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from r1ci.weight_sync import WeightSyncError, check_complete, pack_buckets, unpack_bucket


def all_weights(buckets, version=None):
    check_complete(buckets, version)
    return [pair for b in sorted(buckets, key=lambda b: b.index) for pair in unpack_bucket(b)]


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
    assert sum(b.nbytes for b in buckets) == sum(a.nbytes for a in named.values())
    assert np.shares_memory(buckets[0].arrays[0], named["a"])  # packing copies nothing


def test_buckets_round_trip_exactly_through_the_object_store_as_views(ray_cluster):
    ray = ray_cluster
    named = arrays()
    refs = [ray.put(b) for b in pack_buckets(named, bucket_mb=0.5, version=5)]
    got = ray.get(refs, timeout=60)
    back = dict(all_weights(got, version=5))
    assert list(back) == list(named)
    for name, a in named.items():
        assert back[name].dtype == a.dtype and np.array_equal(back[name], a)
    first = unpack_bucket(got[0])[0][1]
    assert not first.flags.writeable and not first.flags.owndata  # a view into the shared object


def test_incomplete_or_mixed_syncs_are_refused():
    old = pack_buckets(arrays(), bucket_mb=0.5, version=1)
    new = pack_buckets(arrays(), bucket_mb=0.5, version=2)
    with pytest.raises(WeightSyncError, match="versions"):
        check_complete(new[:1] + old[1:])
    with pytest.raises(WeightSyncError, match="got buckets"):
        check_complete(new[1:])
    with pytest.raises(WeightSyncError, match="expected 1"):
        check_complete(new, version=1)


def test_a_published_version_loads_into_the_hf_engine_with_identical_logits(ray_cluster, tiny_model_dir):
    # Through the engine's own load path (read-only object-store buffers become its parameters).
    import asyncio

    from r1ci.config import load_config
    from r1ci.engines.hf import HFEngine

    ray = ray_cluster
    source = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.01 * torch.randn_like(p))  # weights the engine has never seen
    named = [(n, p.detach().numpy()) for n, p in source.named_parameters()]
    got = ray.get([ray.put(b) for b in pack_buckets(named, bucket_mb=0.25, version=9)], timeout=60)
    assert len(got) > 1
    engine = HFEngine(tiny_model_dir, load_config(None, ["model.dtype=float32"]))
    ids = torch.tensor([[5, 17, 99, 300, 42]])
    with torch.no_grad():
        assert not torch.equal(source(ids).logits, engine.model(ids).logits)

    async def load():
        for k, bucket in enumerate(got):
            await engine.load_weights(unpack_bucket(bucket), 9, final=k == len(got) - 1)

    asyncio.run(load())
    assert engine.stats().weight_version == 9
    with torch.no_grad():
        assert torch.equal(source(ids).logits, engine.model(ids).logits)
