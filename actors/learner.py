"""The learner on Ray: one `LearnerActor` per DeepSpeed rank, driven together by a `LearnerGroup`.

The driver assigns ranks; rank 0 picks the rendezvous address (its node IP and a free
port) and every rank joins before `deepspeed.initialize`, knowing how many ranks share its
node (their torch threads split its cores). Each call sends the whole batch (one
object-store put) to every rank; the ranks split it themselves, evenly or not.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Iterator, NoReturn

import ray

from actors.runtime import node_ip
from r1ci.config import Config
from r1ci.trajectory import Trajectory

log = logging.getLogger(__name__)


class LearnerGroupError(ray.exceptions.RayError):
    """A learner rank died or hung; the group is unusable and has been shut down."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@ray.remote
class LearnerActor:
    """One DeepSpeed rank: a thin shell over `r1ci.learner.Learner`."""

    def __init__(self, cfg: Config, model_dir: str, rank: int, world_size: int, sft: bool = False):
        self.args = (cfg, model_dir, rank, world_size, sft)
        self.learner = None

    def rendezvous(self) -> tuple[str, int]:
        """This node's IP and a free port: rank 0's answer is every rank's MASTER_ADDR/PORT."""
        from r1ci.learner import free_port

        return node_ip(), free_port()

    def setup(self, master_addr: str, master_port: int, ranks_on_node: int) -> int:
        """Build this rank's `Learner`; returns its torch threads."""
        from r1ci.learner import Learner

        cfg, model_dir, rank, world_size, sft = self.args
        self.learner = Learner(cfg, model_dir, rank, world_size, master_addr, master_port, ranks_on_node, sft)
        return self.learner.threads

    def call(self, method: str, *args):
        return getattr(self.learner, method)(*args)

    def publish(self, version: int):
        """Rank 0 yields the weight buckets one at a time (a Ray streaming generator: each lands
        in the object store as it is yielded, so generators can load it while the next is put);
        the other ranks take part in the ZeRO-3 gather and yield none."""
        for bucket in self.learner.weight_buckets(version):
            yield bucket


class LearnerGroup:
    """All ranks of the learner, driven from the job as one object."""

    def __init__(self, cfg: Config, actors: list):
        self.cfg, self.actors = cfg, actors
        self.timeout_s = cfg.learner.timeout_s
        self.threads: list[int] = []  # torch threads of each rank, once set up

    @classmethod
    def create(cls, cfg: Config, model_dir: str, sft: bool = False) -> LearnerGroup:
        """Start `learner.num_learners` ranks (each `learner.num_cpus`/`num_gpus`) and form the
        DeepSpeed group; `sft`: the policy alone, for `sft_step` (no reference, no value head)."""
        lc = cfg.learner
        n = lc.num_learners
        # Ray starts its workers at nice 15, under which any busy process of normal priority on
        # the node takes nearly all the CPU a learner rank reserved: ranks run at nice 0.
        env = {"env_vars": {"RAY_worker_niceness": "0"}}
        actors = [LearnerActor.options(num_cpus=lc.num_cpus, num_gpus=lc.num_gpus, runtime_env=env).remote(cfg, model_dir, rank, n, sft)
                  for rank in range(n)]
        group = cls(cfg, actors)
        places = group._wait([a.rendezvous.remote() for a in actors], "rendezvous")
        addr, port = places[0]
        per_node = Counter(ip for ip, _ in places)
        group.threads = group._wait([a.setup.remote(addr, port, per_node[ip]) for a, (ip, _) in zip(actors, places)], "setup")
        log.info("learner group of %d ranks formed at %s:%d (torch threads per rank: %s)", n, addr, port, group.threads)
        return group

    # ------------------------------------------------------------------ plumbing

    def _wait(self, refs: list, what: str) -> list:
        """Results of one call on every rank; the first failure or a timeout kills the group."""
        index = {ref: rank for rank, ref in enumerate(refs)}
        pending, who = list(refs), "a learner rank"
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=self.timeout_s)
                if not done:
                    who = "a learner rank"
                    raise TimeoutError(f"no answer within learner.timeout_s={self.timeout_s:g} s")
                who = f"learner rank {index[done[0]]}"
                ray.get(done[0])  # raises the rank's error
            return ray.get(refs)
        except Exception as exc:
            self._fail(exc, who, what)

    def _fail(self, exc: Exception, who: str, what: str) -> NoReturn:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        self.shutdown()
        raise LearnerGroupError(
            f"{who} failed during {what}: {first}. The learner group was shut down; "
            f"resume the job from its last checkpoint (--resume)."
        ) from exc

    def _all(self, method: str, trajectories: list[Trajectory]) -> list:
        if not trajectories:
            raise ValueError(f"{method}: empty batch of trajectories")
        ref = ray.put(trajectories)
        return self._wait([a.call.remote(method, ref) for a in self.actors], method)

    # ------------------------------------------------------------------ the learner's API

    def train_step(self, trajectories: list[Trajectory]) -> dict[str, float]:
        """One RL update on the batch (sharded over ranks, shares differing by at most one); whole-batch metrics."""
        return self._all("train_step", trajectories)[0]

    def sft_step(self, trajectories: list[Trajectory]) -> dict[str, float]:
        """One SFT optimizer step (masked NLL) on the batch; the loss is nats per model token."""
        return self._all("sft_step", trajectories)[0]

    def eval_loss(self, trajectories: list[Trajectory]) -> float:
        """Masked NLL of the batch (nats per model token), no update."""
        return self._all("eval_loss", trajectories)[0]

    def set_lr(self, lr: float) -> None:
        """Learning rate of the next optimizer steps on every rank (jobs/sft.py's schedule)."""
        self._wait([a.call.remote("set_lr", lr) for a in self.actors], "set_lr")

    def compute_logprobs(self, trajectories: list[Trajectory]) -> list[list[float]]:
        """Current-policy logprobs per response token (0.0 on interpreter tokens), in batch order."""
        per_rank = self._all("compute_logprobs", trajectories)
        return [lp for shard in per_rank for lp in shard]

    def publish_weights(self, version: int) -> Iterator[ray.ObjectRef]:
        """Put the current weights into the object store once, as `learner.sync_bucket_mb` buckets
        tagged `version`, yielding each bucket's ObjectRef (owned by rank 0) as soon as it is
        put: a consumer that hands each on at once (`GeneratorFleet.load_weights`) overlaps the
        generators' loading with the rest of the export."""
        streams = [a.publish.remote(version) for a in self.actors]
        try:
            while True:
                if not ray.wait([streams[0]], timeout=self.timeout_s)[0]:
                    raise TimeoutError(f"no weight bucket within learner.timeout_s={self.timeout_s:g} s")
                try:
                    ref = next(streams[0])
                except StopIteration:
                    break
                yield ref
        except Exception as exc:
            self._fail(exc, "learner rank 0", "publish_weights")
        self._wait([s.completed() for s in streams], "publish_weights")  # every rank's part (ZeRO-3 gather) ended well

    def save(self, path: str) -> None:
        """Model, optimizer, scheduler and step of every rank under `path` (a shared filesystem
        path on a cluster); restore with `load` on a group of the same size."""
        self._wait([a.call.remote("save_checkpoint", path) for a in self.actors], "save")

    def load(self, path: str) -> None:
        self._wait([a.call.remote("load_checkpoint", path) for a in self.actors], "load")

    def save_hf(self, path: str) -> None:
        """Write a Hugging Face folder (config, safetensors, tokenizer) of the current policy."""
        self._wait([a.call.remote("save_hf", path) for a in self.actors], "save_hf")

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

