"""Weight sync through the Ray object store against an in-process memory copy of the same bytes.

    python benchmarks/weight_sync.py [--json] [--models tiny,smollm2] [--backends hf,vllm] [--repeats 5]

Two measurements per model, each timed sync paired with a memcpy pass just before it:
- transport (`sequential`, `pipelined`): the fp32 weights as numpy views (what
  `Learner.export_weights(copy=False)` gives under ZeRO 1/2), `pack_buckets`, `ray.put` per
  bucket in the driver; a separate actor `ray.get`s them and copies them into the
  preallocated parameters of its own model. `sequential` puts every bucket, then loads;
  `pipelined` hands each bucket on as soon as it is put.
- `job_<backend>`: the sync phase of `jobs/rl.py` itself: a real DeepSpeed learner actor
  streams its buckets (`LearnerGroup.publish_weights`) and a real generator actor loads
  each into its engine as it arrives (`GeneratorFleet.load_weights`). The hf engine takes
  the read-only object-store buffers as its parameters (no copy on the generator side), so
  the put is the sync's one copy. vLLM on CPU can only reload a whole model, in its own
  worker process, and repacks every linear layer for oneDNN when it does, so its rate is
  bounded by that, not by the transfer.
- `actor_call_s`: one empty actor call's round trip, the fixed cost that bounds a small
  model's rate (the tiny model's sync is a chain of a few such calls).
The baseline copies the same arrays into preallocated arrays in one process. Seconds are
medians of --repeats syncs after --warmup untimed ones; fraction_of_memcpy is the median of
the paired ratios (the cold first transport sync is reported apart).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import ray
import torch

from actors.runtime import init_ray
from common import stdout_to_stderr
from r1ci.weight_sync import pack_buckets, unpack_bucket

SMOLLM2_SHAPE = dict(  # SmolLM2-135M, for a random stand-in when the real one cannot be built
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
    num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
)


def load_model(name: str, data_dir: str):
    """(HF model, how it was obtained) for 'tiny' or 'smollm2'."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from r1ci.models import resolve_model

    try:
        path = resolve_model(name, data_dir)
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), path
    except Exception as exc:  # noqa: BLE001 (the stand-in has the same tensors, so the same bytes)
        if name != "smollm2":
            raise
        print(f"smollm2 unavailable ({exc}); using a random Llama of its shape", file=sys.stderr)
        return LlamaForCausalLM(LlamaConfig(**SMOLLM2_SHAPE)).to(torch.float32), "random SmolLM2-shaped Llama"


def named_arrays(model) -> list[tuple[str, np.ndarray]]:
    return [(n, p.detach().numpy()) for n, p in model.named_parameters()]


@ray.remote(num_cpus=0.5)
class Receiver:
    """A generator stand-in: a model's preallocated parameters that buckets are copied into."""

    def __init__(self, shapes: dict[str, tuple[list[int], str]]):
        self.params = {n: torch.empty(shape, dtype=getattr(torch, dtype)) for n, (shape, dtype) in shapes.items()}

    def load(self, *buckets) -> int:
        n = 0
        for bucket in buckets:
            for name, array in unpack_bucket(bucket):
                self.params[name].copy_(torch.from_numpy(array))
                n += array.nbytes
        return n

    def load_refs(self, refs: list) -> int:
        return self.load(*ray.get(refs, timeout=600))

    def ping(self) -> None:
        pass

    def checksum(self) -> float:
        return float(sum(p.double().sum() for p in self.params.values()))


class Memcpy:
    """The baseline: the same arrays copied into preallocated arrays in this process."""

    def __init__(self, arrays: list[tuple[str, np.ndarray]]):
        self.arrays = arrays
        self.nbytes = sum(a.nbytes for _, a in arrays)
        self.dst = [np.empty_like(a) for _, a in arrays]
        self.once()  # touch the destination pages once, as a warm object store is touched

    def once(self) -> float:
        t0 = time.perf_counter()
        for d, (_, a) in zip(self.dst, self.arrays):
            np.copyto(d, a)
        return time.perf_counter() - t0


def actor_call_seconds(actor, calls: int = 50) -> float:
    """Median round trip of an empty actor call from this driver."""
    seconds = []
    for _ in range(calls):
        t0 = time.perf_counter()
        ray.get(actor.ping.remote(), timeout=60)
        seconds.append(time.perf_counter() - t0)
    return float(np.median(seconds))


def sync_once(arrays, receiver, bucket_mb: float, version: int, pipelined: bool) -> float:
    """Seconds of one sync: learner-side pack + put, generator-side get + unpack + copy."""
    t0 = time.perf_counter()
    buckets = pack_buckets(arrays, bucket_mb, version)
    if pipelined:
        done = [receiver.load.remote(ray.put(b)) for b in buckets]
    else:
        done = [receiver.load_refs.remote([ray.put(b) for b in buckets])]
    nbytes = sum(ray.get(done, timeout=600))
    seconds = time.perf_counter() - t0
    assert nbytes == sum(a.nbytes for _, a in arrays)
    return seconds


def run(name: str, data_dir: str, bucket_mb: float, repeats: int, warmup: int, backends: list[str]) -> dict:
    model, source = load_model(name, data_dir)
    arrays = named_arrays(model)
    nbytes = sum(a.nbytes for _, a in arrays)
    receiver = Receiver.remote({n: (list(a.shape), str(a.dtype)) for n, a in arrays})
    ray.get(receiver.checksum.remote(), timeout=300)
    memcpy = Memcpy(arrays)
    out = {"model": name, "source": source, "bytes": nbytes, "tensors": len(arrays),
           "buckets": len(pack_buckets(arrays, bucket_mb)), "bucket_mb": bucket_mb,
           "actor_call_s": actor_call_seconds(receiver)}
    # The first syncs fault in fresh object-store pages (~16k minor faults per 64 MiB, on both
    # sides) until the store's allocator reuses freed space: the cold first sync is reported
    # apart, and each mode is timed after `warmup` untimed syncs. Each timed sync is paired
    # with a memcpy pass just before it, so load from other processes hits both sides alike.
    cold = sync_once(arrays, receiver, bucket_mb, 0, pipelined=True)
    out["cold_first_sync"] = {"seconds": cold, "gb_per_s": nbytes / cold / 1e9}
    all_memcpy = []
    for mode in ("sequential", "pipelined"):
        pipelined = mode == "pipelined"
        for v in range(warmup):
            sync_once(arrays, receiver, bucket_mb, v, pipelined)
        pairs = [(memcpy.once(), sync_once(arrays, receiver, bucket_mb, v, pipelined)) for v in range(repeats)]
        all_memcpy += [m for m, _ in pairs]
        seconds = float(np.median([o for _, o in pairs]))
        out[mode] = {"seconds": seconds, "best_seconds": min(o for _, o in pairs), "gb_per_s": nbytes / seconds / 1e9,
                     "fraction_of_memcpy": float(np.median([m / o for m, o in pairs]))}
    m = float(np.median(all_memcpy))
    out["memcpy"] = {"seconds": m, "best_seconds": min(all_memcpy), "gb_per_s": nbytes / m / 1e9}
    expected = float(sum(p.detach().double().sum() for _, p in model.named_parameters()))
    assert abs(ray.get(receiver.checksum.remote(), timeout=300) - expected) <= 1e-6 * max(1.0, abs(expected))
    ray.kill(receiver)
    out["fraction_of_memcpy"] = {"transport_pipelined": out["pipelined"]["fraction_of_memcpy"]}
    if source.startswith("random"):
        return out  # no model folder for a learner and an engine to load
    for backend in backends:
        out[f"job_{backend}"] = job_path(source, backend, bucket_mb, repeats, warmup, memcpy)
        out["fraction_of_memcpy"][f"job_{backend}"] = out[f"job_{backend}"]["fraction_of_memcpy"]
    return out


def job_path(model_dir: str, backend: str, bucket_mb: float, repeats: int, warmup: int, memcpy: Memcpy) -> dict:
    """What `jobs/rl.py` does in its sync phase, timed: a real DeepSpeed learner streams its
    buckets (`LearnerGroup.publish_weights`) and a real generator actor loads each into its
    engine as it arrives (`GeneratorFleet.load_weights`)."""
    from actors.fleet import GeneratorFleet
    from actors.learner import LearnerGroup
    from r1ci.config import Config

    cfg = Config()
    cfg.learner.num_cpus, cfg.generator.num_cpus, cfg.generator.backend = 0.5, 0.5, backend
    cfg.generator.max_model_len = 1024
    cfg.learner.sync_bucket_mb = int(bucket_mb)
    learners = LearnerGroup.create(cfg, model_dir)
    fleet = GeneratorFleet(cfg, model_dir, executor=None)
    try:
        for v in range(1, warmup + 1):
            fleet.load_weights(learners.publish_weights(v), v)
        pairs = []
        for v in range(warmup + 1, warmup + repeats + 1):
            m = memcpy.once()
            t0 = time.perf_counter()
            fleet.load_weights(learners.publish_weights(v), v)
            pairs.append((m, time.perf_counter() - t0))
    finally:
        fleet.shutdown()
        learners.shutdown()
    seconds = float(np.median([o for _, o in pairs]))
    return {"seconds": seconds, "max_seconds": max(o for _, o in pairs), "gb_per_s": memcpy.nbytes / seconds / 1e9,
            "fraction_of_memcpy": float(np.median([m / o for m, o in pairs]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--models", default="tiny,smollm2")
    parser.add_argument("--repeats", type=int, default=7)
    # A fresh learner's first ~5 syncs are ~2.5x slower while the object-store pages it writes
    # fault in; after that about one sync in six still takes 3-6x as long. A bare `ray.put` loop
    # does the same (a 64 MiB put now and then takes ~105 ms instead of ~9 ms; Ray's own put
    # benchmark is bimodal too, ray-project/ray#22045): hence the warm-up, the median and the max.
    parser.add_argument("--warmup", type=int, default=6, help="untimed syncs before the timed ones")
    parser.add_argument("--bucket-mb", type=float, default=64)
    parser.add_argument("--backends", default="hf,vllm", help="engines the job path is timed with (empty: transport only)")
    parser.add_argument("--data-dir", default="~/.cache/r1ci", help="model.data_dir: where the converted SmolLM2 is cached")
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    with stdout_to_stderr():  # libraries' and vLLM's log lines must not break the one JSON object
        init_ray("local", num_cpus=2)
        results = {m: run(m, args.data_dir, args.bucket_mb, args.repeats, args.warmup, backends) for m in args.models.split(",")}
        ray.shutdown()
    if args.json:
        print(json.dumps({"models": results, "fraction_of_memcpy": {m: r["fraction_of_memcpy"] for m, r in results.items()}}, indent=1))
        return
    print(f"{'model':10} {'MB':>8} {'buckets':>7} {'memcpy ms':>9} {'actor call ms':>13}  fraction of memcpy")
    for m, r in results.items():
        fractions = "  ".join(f"{k} {v:.2f}" for k, v in r["fraction_of_memcpy"].items())
        print(f"{m:10} {r['bytes'] / 2**20:8.1f} {r['buckets']:7d} {r['memcpy']['seconds'] * 1e3:9.2f} "
              f"{r['actor_call_s'] * 1e3:13.2f}  {fractions}")


if __name__ == "__main__":
    main()
