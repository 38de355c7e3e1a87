"""One DeepSpeed data-parallel rank of the policy learner: logprobs, RL and SFT steps, export.

`Learner` wraps an HF causal LM in a DeepSpeed engine (ZeRO 1/2/3, fp32 or bf16, gloo on
CPU) and keeps a frozen reference copy when the KL coefficient is positive. Every rank is
handed the *whole* batch and trains on its contiguous shard: advantages and loss
normalizers are whole-batch quantities, so N ranks give the same update as one.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import shutil
import socket
import sys
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from r1ci import algorithms as A
from r1ci.batch import Batch, collate, plan_micro_batches, shard, trainable
from r1ci.config import Config
from r1ci.trajectory import Trajectory
from r1ci.weight_sync import Bucket, pack_buckets

log = logging.getLogger(__name__)

CHECKPOINT_TAG = "learner"
ZERO_ADVANTAGE = 1e-6  # advantages are ~unit scale; below this a batch's are zero up to rounding (a whitened constant)
WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".gguf", ".index.json")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for MASTER_PORT)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _import_deepspeed():
    """Import DeepSpeed without its shared-memory comm op.

    DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce op in its first
    `init_distributed` (~60 s on 2 cores, per fresh machine), and its bf16 kernel needs
    AVX-512, which this class of machine lacks. Gloo does the collectives instead, so the
    builder is replaced by one that reports "no op" (DeepSpeed then skips shm entirely).
    """
    import deepspeed
    import deepspeed.comm.torch  # noqa: F401  (the module that calls build_shm_op)

    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    return deepspeed


def learner_threads(cfg: Config, ranks_on_node: int = 1) -> int:
    """Torch threads for one learner rank: `learner.threads` if set; on a CPU-only node
    (`learner.num_gpus` 0) running synchronous RL, the node's cores shared among its
    `ranks_on_node` learner ranks, since generation is idle while the learner trains;
    otherwise (a GPU rank, whose CPU threads only feed the GPU, or `run.max_staleness` > 0,
    where generation runs meanwhile) the CPUs the rank reserves, rounded up."""
    lc = cfg.learner
    if lc.threads:
        return lc.threads
    if lc.num_gpus == 0 and not cfg.run.max_staleness:
        return max(1, len(os.sched_getaffinity(0)) // max(1, ranks_on_node))
    return max(1, math.ceil(lc.num_cpus))


class PolicyModule(nn.Module):
    """The trained module: an HF causal LM, plus a linear value head for estimators that need values.

    `forward` runs the transformer over a padded micro-batch and the LM head only at the N
    positions that predict model tokens, `chunk_tokens` at a time; with a gradient and more
    than one chunk, each chunk's logits are recomputed in backward instead of kept, so at
    most one chunk's [tokens, vocab] logits are alive. Returns logprobs [N] and entropy [N]
    of the next-token distributions at `temperature`, and values [N] (or None).
    """

    def __init__(self, policy: nn.Module, value_head: bool, chunk_tokens: int):
        super().__init__()
        self.policy = policy
        self.value_head = nn.Linear(policy.config.hidden_size, 1) if value_head else None
        self.chunk_tokens = chunk_tokens

    def forward(self, input_ids, attention_mask, rows, positions, targets, temperature: float, entropy_grad: bool):
        base = getattr(self.policy, self.policy.base_model_prefix)
        hidden = base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        h = hidden[rows, positions]  # [N, H]
        logprobs, entropy = self._head(h, targets, temperature, entropy_grad)
        values = self.value_head(h).squeeze(-1).float() if self.value_head is not None else None
        return logprobs, entropy, values

    def _head(self, h, targets, temperature: float, entropy_grad: bool):
        head = self.policy.get_output_embeddings()

        def chunk(h_c, t_c):
            return A.logprobs_and_entropy(head(h_c), t_c, temperature, entropy_grad)

        size = self.chunk_tokens
        starts = range(0, max(h.shape[0], 1), size)
        if torch.is_grad_enabled() and len(starts) > 1:
            parts = [checkpoint(chunk, h[i:i + size], targets[i:i + size], use_reentrant=False) for i in starts]
        else:
            parts = [chunk(h[i:i + size], targets[i:i + size]) for i in starts]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


class Forward(NamedTuple):
    """One micro-batch's per-token outputs, [B, R] on the CPU (0 off the model tokens)."""

    logprobs: Tensor
    entropy: Tensor
    values: Tensor | None


@dataclass
class StepBatch:
    """A batch as one rank works on it."""

    full: Batch  # the whole batch [N, R]: rewards, masks, group ids (advantages are whole-batch)
    micro: list[list[int]]  # this rank's micro-batches as row indices into it ([]: a padding micro-batch)
    batches: list[Batch]  # their tensors, each padded to its own longest sequence
    tokens: float  # model tokens in the whole batch
    normalizer: float  # what the loss aggregation divides by: tokens, or sequences with tokens
    seconds: dict[str, float] = field(default_factory=dict)  # time of each pass

    def rows(self, whole: Tensor, k: int) -> Tensor:
        """Micro-batch k's rows of a whole-batch [N, R] tensor, cut to its own R (zeros for padding)."""
        shape = self.batches[k].mask.shape
        return whole[self.micro[k], : shape[1]] if self.micro[k] else torch.zeros(shape)


class Learner:
    """One rank of the learner. Methods that take trajectories must be called on every rank
    with the same full list (collectives inside); each rank works on its shard."""

    def __init__(self, cfg: Config, model_dir: str, rank: int = 0, world_size: int = 1,
                 master_addr: str = "127.0.0.1", master_port: int | None = None, ranks_on_node: int = 1,
                 sft: bool = False):
        if master_port is None:  # one rank in this process: any free port (29500 may be another job's)
            master_port = free_port()
        for key, value in {"MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port), "RANK": str(rank),
                           "WORLD_SIZE": str(world_size), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}.items():
            os.environ[key] = value
        self.threads = learner_threads(cfg, ranks_on_node)
        torch.set_num_threads(self.threads)
        deepspeed = _import_deepspeed()
        from transformers import AutoModelForCausalLM

        self.cfg, self.model_dir = cfg, model_dir
        self.rank, self.world_size = rank, world_size
        ac = cfg.algorithm
        self.estimator = A.get_advantage(ac.advantage)
        self.temperature = cfg.sampling.temperature or 1.0  # greedy sampling: logprobs of the plain softmax
        self.zero3 = cfg.learner.zero_stage == 3
        self.dtype = torch.bfloat16 if cfg.model.dtype == "bfloat16" else torch.float32
        self.step = 0
        if not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, rank=rank, world_size=world_size)

        torch.manual_seed(cfg.run.seed)
        policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        if cfg.learner.gradient_checkpointing:
            policy.gradient_checkpointing_enable()
        # An SFT learner (jobs/sft.py) trains the policy alone: no reference model, no value head.
        reference = copy.deepcopy(policy).eval().requires_grad_(False) if ac.kl_coef > 0 and not sft else None
        chunk = cfg.learner.logits_chunk_tokens
        self.module = PolicyModule(policy, self.estimator.needs_values and not sft, chunk)
        self.policy = policy  # the same parameters, under their HF names (export, save_hf)

        params = [p for p in self.module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learner.lr, weight_decay=cfg.learner.weight_decay)
        warmup = cfg.learner.warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warmup + 1)))
        self.engine, _, _, _ = deepspeed.initialize(
            model=self.module, optimizer=optimizer, lr_scheduler=scheduler, config=self._ds_config(train=True)
        )
        self.reference = None
        if reference is not None:
            if self.zero3:  # sharded like the policy: no rank holds a full copy
                self.reference, *_ = deepspeed.initialize(model=PolicyModule(reference, False, chunk), config=self._ds_config(train=False))
            else:
                self.reference = PolicyModule(reference, False, chunk).to(self.engine.device, self.dtype)
        # The KL to the reference goes into the reward as k1 (reinforce_pp, gae) or into the loss.
        self.kl_in_reward = self.estimator.kl_in_reward and self.reference is not None
        self.kl_estimator = "k1" if self.kl_in_reward else ac.kl_estimator
        self.kl_loss_coef = ac.kl_coef if self.reference is not None and not self.kl_in_reward else 0.0
        # A frozen policy pass before the update only where the advantages read its output.
        self.policy_pass = self.estimator.needs_values or self.kl_in_reward

    def _ds_config(self, train: bool) -> dict:
        lc = self.cfg.learner
        zero: dict = {"stage": lc.zero_stage if train else 3}
        if zero["stage"] == 3:
            zero["stage3_param_persistence_threshold"] = 0  # gather every parameter the same way
        return {
            "train_micro_batch_size_per_gpu": lc.micro_batch_size,
            "gradient_accumulation_steps": 1,
            # This learner owns the accumulation boundary: backward() accumulates the
            # micro-batches of one batch, step() reduces and updates once per batch,
            # however many micro-batches that batch has.
            "managed_gradient_accumulation": False,
            "gradient_clipping": lc.grad_clip,
            "zero_optimization": zero,
            "bf16": {"enabled": self.dtype == torch.bfloat16},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 2**31 - 1,
            "wall_clock_breakdown": False,
        }

    # ------------------------------------------------------------------ batching

    def shard(self, trajectories: list[Trajectory]) -> tuple[int, int]:
        """[start, end) of this rank's contiguous share of the batch; shares differ by at most one."""
        return shard(len(trajectories), self.world_size, self.rank)

    def _micro_batches(self, trajectories: list[Trajectory]) -> tuple[list[list[int]], list[Batch]]:
        """This rank's micro-batches (`plan_micro_batches`) as row indices and tensors; a padding
        micro-batch is the batch's shortest trajectory with nothing to learn from."""
        lc = self.cfg.learner
        lengths = [len(t.input_ids) for t in trajectories]
        micro = plan_micro_batches(lengths, self.world_size, lc.micro_batch_size, lc.micro_batch_tokens)[self.rank]
        shortest = min(trajectories, key=lambda t: len(t.input_ids))
        padding = dataclasses.replace(shortest, loss_mask=[0] * len(shortest.loss_mask))
        return micro, [collate([trajectories[i] for i in idx] if idx else [padding]) for idx in micro]

    def _step_batch(self, trajectories: list[Trajectory]) -> StepBatch:
        full = collate(trajectories)
        micro, batches = self._micro_batches(trajectories)
        tokens = float(full.mask.sum())
        sequences = float((full.mask.sum(1) > 0).sum())
        return StepBatch(full, micro, batches, tokens, tokens if self.cfg.algorithm.loss_agg == "token_mean" else sequences)

    def _forward(self, module, batch: Batch, temperature: float, entropy_grad: bool = False) -> Forward:
        """Per-token logprobs at `temperature` (nats), entropy and values of one micro-batch.

        The model runs on the engine's device, the LM head on model tokens only; the [B, R]
        results come back to the CPU, where the batch and the algorithms live (autograd
        flows through the transfer)."""
        dev = self.engine.device
        rows, cols = batch.model_tokens
        lp, ent, values = module(batch.input_ids.to(dev), batch.attention_mask.to(dev), rows.to(dev),
                                 batch.positions[rows, cols].to(dev), batch.response_ids[rows, cols].to(dev),
                                 temperature, entropy_grad)

        def spread(x):  # [N] -> [B, R]
            return torch.zeros(batch.mask.shape).index_put((rows, cols), x.cpu().float())

        return Forward(spread(lp), spread(ent), spread(values) if values is not None else None)

    def _all_reduce(self, tensor: torch.Tensor, op=None) -> torch.Tensor:
        """Sum (or `op`) over ranks (through the engine's device: NCCL reduces GPU tensors only)."""
        if self.world_size == 1:
            return tensor
        on_device = tensor.to(self.engine.device)
        torch.distributed.all_reduce(on_device, op=op or torch.distributed.ReduceOp.SUM)
        return on_device.cpu()

    def _whole_batch(self, sb: StepBatch, per_micro: list[Tensor]) -> Tensor:
        """A whole-batch [N, R] tensor from this rank's micro-batch rows, summed over ranks."""
        out = torch.zeros(sb.full.mask.shape)
        for idx, t in zip(sb.micro, per_micro):
            if idx:
                out[idx, : t.shape[1]] = t.float()
        return self._all_reduce(out)

    # ------------------------------------------------------------------ logprobs

    @torch.no_grad()
    def compute_logprobs(self, trajectories: list[Trajectory], reference: bool = False) -> list[list[float]]:
        """Per response token of this rank's shard, log_softmax(logits / sampling temperature)
        of the taken token (nats); 0.0 on interpreter tokens, matching `Trajectory.logprobs`.
        `reference=True` uses the frozen reference model."""
        module = self.reference if reference else self.engine
        if module is None:
            raise ValueError("no reference model: it exists only when algorithm.kl_coef > 0")
        out: dict[int, list[float]] = {}
        for idx, batch in zip(*self._micro_batches(trajectories)):
            lp = self._forward(module, batch, self.temperature).logprobs
            for row, i in enumerate(idx):
                out[i] = lp[row, : len(trajectories[i].response_ids)].tolist()
        start, end = self.shard(trajectories)
        return [out[i] for i in range(start, end)]

    # ------------------------------------------------------------------ RL step

    def train_step(self, trajectories: list[Trajectory]) -> dict[str, float]:
        """One RL update on the whole batch (each rank trains on its shard): advantages from the
        registered estimator, `algorithm.ppo_epochs` optimizer steps of the clipped policy loss
        (+ KL to the reference, - entropy bonus, + value loss for GAE).

        Failed trajectories (stop reason "error") are left out and counted. The only passes
        besides the training forward are the frozen ones the result needs: the reference's
        when the KL is on, and the policy's before the update when the advantages read its
        values or its KL to the reference (gae, reinforce_pp with KL). Old logprobs are the
        first epoch's own forward, detached, unless `algorithm.old_logprobs: sampling`. A
        batch whose advantages are all zero (and no value head to fit) carries no reward
        signal: its passes and optimizer step are skipped (`skipped` 1), as the DAPO filter
        would have dropped its groups. Returns whole-batch metrics, identical on every rank.
        """
        t0 = time.perf_counter()
        trajectories, counts = trainable(trajectories, self.cfg.algorithm.drop_void_turns, self.cfg.protocol)
        if not trajectories:
            return self._skipped(None, None, counts, t0)
        sb = self._step_batch(trajectories)
        frozen = self._frozen_passes(sb, policy=self.policy_pass, reference=self.kl_in_reward)
        advantages, returns = self._advantages(sb, frozen)
        if not self.estimator.needs_values and advantages.abs().max() <= ZERO_ADVANTAGE:
            return self._skipped(sb, advantages, counts, t0)
        if self.kl_loss_coef:
            frozen.update(self._frozen_passes(sb, policy=False, reference=True))
        totals = self._update(sb, frozen, advantages, returns)
        return self._metrics(sb, totals, advantages, counts, t0)

    @torch.no_grad()
    def _frozen_passes(self, sb: StepBatch, policy: bool, reference: bool) -> dict[str, list[Tensor]]:
        """No-grad forwards before the update: the policy's logprobs and values, the reference's logprobs."""
        out: dict[str, list[Tensor]] = {}
        passes = [("policy", self.engine)] * policy + [("reference", self.reference)] * reference
        for name, module in passes:
            start = time.perf_counter()
            results = [self._forward(module, batch, self.temperature) for batch in sb.batches]
            sb.seconds[f"pass/{name}_s"] = time.perf_counter() - start
            if name == "reference":
                out["ref_logprobs"] = [r.logprobs for r in results]
            else:
                out["old_logprobs"] = [r.logprobs for r in results]
                if self.estimator.needs_values:
                    out["values"] = [r.values for r in results]
        return out

    def _advantages(self, sb: StepBatch, frozen: dict[str, list[Tensor]]) -> tuple[Tensor, Tensor]:
        """Whole-batch advantages and returns [N, R]: every rank fills its rows, a sum over ranks completes them."""
        ac = self.cfg.algorithm
        inputs = {}
        if "values" in frozen:
            inputs["values"] = self._whole_batch(sb, frozen["values"])
        if self.kl_in_reward:
            inputs["logprobs"] = self._whole_batch(sb, frozen["old_logprobs"])
            inputs["ref_logprobs"] = self._whole_batch(sb, frozen["ref_logprobs"])
        return self.estimator.fn(sb.full.rewards, sb.full.mask, group_ids=sb.full.group_ids, norm_by_std=ac.norm_adv_by_std,
                                 kl_coef=ac.kl_coef, gamma=ac.gamma, lam=ac.lam, **inputs)

    def _update(self, sb: StepBatch, frozen: dict[str, list[Tensor]], advantages: Tensor, returns: Tensor) -> dict[str, float]:
        """`ppo_epochs` optimizer steps, each accumulating every micro-batch's gradient; returns this rank's metric sums."""
        ac = self.cfg.algorithm
        start = time.perf_counter()
        totals: dict[str, float] = defaultdict(float)
        old = frozen.get("old_logprobs", [None] * len(sb.batches))
        if ac.old_logprobs == "sampling":
            old = [batch.sampling_logprobs for batch in sb.batches]
        self.engine.train()
        for epoch in range(ac.ppo_epochs):
            for k, batch in enumerate(sb.batches):
                out = self._forward(self.engine, batch, self.temperature, entropy_grad=bool(ac.entropy_coef))
                if epoch == 0:
                    old[k] = out.logprobs.detach() if old[k] is None else old[k]
                    self._tally_mismatch(totals, out.logprobs.detach(), batch)
                loss = self._loss(totals, sb, k, out, old[k], frozen, sb.rows(advantages, k), sb.rows(returns, k))
                # DeepSpeed averages gradients over ranks; the loss is already a whole-batch mean.
                self.engine.backward(loss * self.world_size, scale_wrt_gas=False)
            totals["lr"] += self.engine.get_lr()[0]
            self.engine.step()
            totals["grad_norm"] += float(self.engine.get_global_grad_norm() or 0.0)
        self.step += 1
        sb.seconds["pass/update_s"] = time.perf_counter() - start
        return totals

    def _loss(self, totals: dict[str, float], sb: StepBatch, k: int, out: Forward, old: Tensor,
              frozen: dict[str, list[Tensor]], adv: Tensor, ret: Tensor) -> Tensor:
        """Micro-batch k's share of the whole-batch loss; adds its metric sums to `totals`."""
        ac, batch, m, n = self.cfg.algorithm, sb.batches[k], sb.batches[k].mask, sb.normalizer
        weights = A.truncated_is_weights(old, batch.sampling_logprobs, ac.rollout_correction_cap) if ac.rollout_correction else None
        loss, stats = A.policy_loss(out.logprobs, old, adv, m, ac.clip_ratio, ac.loss_agg, n,
                                    clip_ratio_high=ac.clip_ratio_high or None, weights=weights)
        tokens = float(m.sum())
        totals["policy_loss"] += loss.item()
        totals["clip_frac"] += stats["clip_frac"].item() * tokens
        totals["approx_kl"] += stats["approx_kl"].item() * tokens
        totals["entropy"] += A.masked_sum(out.entropy.detach(), m).item()
        total = loss
        if "ref_logprobs" in frozen:
            kl = A.kl_penalty(out.logprobs, frozen["ref_logprobs"][k], self.kl_estimator)
            totals["kl"] += A.masked_sum(kl.detach(), m).item()
            if self.kl_loss_coef:
                total = total + self.kl_loss_coef * A.aggregate(kl, m, ac.loss_agg, n)
        if ac.entropy_coef:
            total = total - ac.entropy_coef * A.aggregate(out.entropy, m, ac.loss_agg, n)
        if out.values is not None:
            old_values = frozen["values"][k] if "values" in frozen else out.values.detach()
            vloss, _ = A.value_loss(out.values, old_values, ret, m, ac.value_clip, ac.loss_agg, n)
            totals["value_loss"] += vloss.item()
            total = total + ac.value_coef * vloss
        if weights is not None:
            totals["rollout_correction/weight"] += A.masked_sum(weights, m).item()
            totals["rollout_correction/truncated"] += A.masked_sum((weights >= ac.rollout_correction_cap).float(), m).item()
        return total

    @staticmethod
    def _tally_mismatch(totals: dict[str, float], learner_lp: Tensor, batch: Batch) -> None:
        """Sums of the engine/learner logprob gap over model tokens, before the update: |diff|,
        its max, and k3 of the engine's distribution to the learner's (KL(engine || learner))."""
        m = batch.mask
        diff = (learner_lp - batch.sampling_logprobs).abs() * m
        totals["mismatch/mean_abs"] += diff.sum().item()
        totals["mismatch/max_abs"] = max(totals["mismatch/max_abs"], diff.max().item() if diff.numel() else 0.0)
        totals["mismatch/kl"] += A.masked_sum(A.kl_k3(batch.sampling_logprobs, learner_lp), m).item()

    def _metrics(self, sb: StepBatch, totals: dict[str, float], advantages: Tensor, counts: dict[str, float],
                 t0: float) -> dict[str, float]:
        """Whole-batch means: token sums over all ranks' tokens, losses over epochs."""
        epochs = self.cfg.algorithm.ppo_epochs
        summed = sorted(k for k in totals if k not in ("lr", "grad_norm", "mismatch/max_abs"))
        values = self._all_reduce(torch.tensor([totals[k] for k in summed], dtype=torch.float64))
        per_token = {"clip_frac", "approx_kl", "entropy", "kl", "rollout_correction/weight", "rollout_correction/truncated"}
        tokens = max(sb.tokens, 1.0)
        metrics = {k: float(v) / (tokens * epochs if k in per_token else epochs) for k, v in zip(summed, values)}
        for k in ("mismatch/mean_abs", "mismatch/kl"):
            metrics[k] = float(values[summed.index(k)]) / tokens  # measured in the first epoch only
        max_abs = torch.tensor([totals["mismatch/max_abs"]], dtype=torch.float64)
        metrics["mismatch/max_abs"] = float(self._all_reduce(max_abs, torch.distributed.ReduceOp.MAX)[0])
        metrics["grad_norm"], metrics["lr"] = totals["grad_norm"] / epochs, totals["lr"] / epochs
        return {**metrics, **self._batch_metrics(sb, advantages, counts, t0), "skipped": 0.0}

    def _skipped(self, sb: StepBatch | None, advantages: Tensor | None, counts: dict[str, float], t0: float) -> dict[str, float]:
        """Metrics of a step that had nothing to learn from: no gradient, no update."""
        return {"policy_loss": 0.0, "clip_frac": 0.0, "approx_kl": 0.0, "grad_norm": 0.0, "lr": self.engine.get_lr()[0],
                **self._batch_metrics(sb, advantages, counts, t0), "skipped": 1.0}

    def _batch_metrics(self, sb: StepBatch | None, advantages: Tensor | None, counts: dict[str, float], t0: float) -> dict[str, float]:
        """What the batch was and what the step cost: tokens, sequences, padding, pass times."""
        out = {**counts, "tokens": sb.tokens if sb else 0.0, "sequences": float(len(sb.full)) if sb else 0.0,
               "seconds": time.perf_counter() - t0, "step": float(self.step)}
        if sb is not None:
            out["advantage_abs_mean"] = float(A.masked_mean(advantages.abs(), sb.full.mask))
            out["micro_batches"] = float(len(sb.batches))
            out["padding_fraction"] = 1.0 - sum(float(b.attention_mask.sum()) for b in sb.batches) / max(sum(b.padded_tokens for b in sb.batches), 1)
            out.update(sb.seconds)
        return out

    # ------------------------------------------------------------------ SFT

    def _nll_pass(self, trajectories: list[Trajectory], train: bool) -> tuple[float, float]:
        """Masked next-token NLL at temperature 1 over loss_mask == 1 tokens, whole-batch token mean."""
        tokens = float(sum(t.num_model_tokens for t in trajectories))
        loss_sum = 0.0
        self.engine.train(train)
        for batch in self._micro_batches(trajectories)[1]:
            with nullcontext() if train else torch.no_grad():
                lp = self._forward(self.engine, batch, 1.0).logprobs
                loss = -A.masked_sum(lp, batch.mask) / max(tokens, 1.0)
            if train:
                self.engine.backward(loss * self.world_size, scale_wrt_gas=False)
            loss_sum += loss.item()
        return float(self._all_reduce(torch.tensor([loss_sum]))[0]), tokens

    def sft_step(self, trajectories: list[Trajectory]) -> dict[str, float]:
        """One optimizer step of masked NLL on the model-written tokens (loss_mask == 1).
        Returns loss (nats/token, before the step), grad_norm, lr, tokens, seconds."""
        t0 = time.perf_counter()
        loss, tokens = self._nll_pass(trajectories, train=True)
        lr = self.engine.get_lr()[0]
        self.engine.step()
        self.step += 1
        return {"loss": loss, "grad_norm": float(self.engine.get_global_grad_norm() or 0.0), "lr": lr,
                "tokens": tokens, "seconds": time.perf_counter() - t0, "step": float(self.step)}

    def eval_loss(self, trajectories: list[Trajectory]) -> float:
        """Masked NLL (nats per model token) of the whole batch, no update."""
        return self._nll_pass(trajectories, train=False)[0]

    def set_lr(self, lr: float) -> None:
        """Learning rate of the next optimizer steps, for jobs that own their schedule (SFT);
        the warm-up factor of `learner.warmup_steps` still multiplies it."""
        scheduler = self.engine.lr_scheduler
        scheduler.base_lrs = [lr for _ in scheduler.base_lrs]
        for group, factor in zip(scheduler.optimizer.param_groups, scheduler.lr_lambdas):
            group["lr"] = lr * factor(scheduler.last_epoch)

    # ------------------------------------------------------------------ weights out

    def export_weights(self, copy: bool = True) -> dict[str, np.ndarray]:
        """The full policy state dict under HF names as numpy arrays (float32; bf16 weights are
        upcast, numpy has no bfloat16). Under ZeRO-3 this gathers the shards and must be
        called on every rank. A tied `lm_head.weight` is left out: HF and vLLM loaders tie it
        to `model.embed_tokens.weight`. `copy=False` returns views of the live fp32 weights
        where possible (valid until the next step; the object-store put copies them)."""
        deepspeed = _import_deepspeed()
        named = list(self.policy.named_parameters())
        with deepspeed.zero.GatheredParameters([p for _, p in named], enabled=self.zero3):
            out = {}
            for name, p in named:
                t = p.detach().cpu()
                view_ok = not copy and not self.zero3 and t.dtype == torch.float32
                out[name] = t.numpy() if view_ok else t.to(torch.float32).clone().numpy()
        return out

    def weight_buckets(self, version: int) -> list[Bucket]:
        """The exported weights packed into `learner.sync_bucket_mb` buckets tagged `version`
        (views: put them in the object store before the next step). Every rank must call it
        under ZeRO-3; ranks other than 0 get an empty list."""
        weights = self.export_weights(copy=False)
        return pack_buckets(weights, self.cfg.learner.sync_bucket_mb, version) if self.rank == 0 else []

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, path: str) -> None:
        """Model (with value head), optimizer, scheduler and step under `path` (every rank calls;
        ZeRO shards are per rank, so load with the same learner.num_learners)."""
        self.engine.save_checkpoint(path, tag=CHECKPOINT_TAG, client_state={"learner_step": self.step})

    def load_checkpoint(self, path: str) -> None:
        """Restore what `save_checkpoint` wrote (the reference model stays the starting weights)."""
        load_path, client = self.engine.load_checkpoint(path, tag=CHECKPOINT_TAG)
        if load_path is None:
            raise FileNotFoundError(f"no learner checkpoint under '{path}' (expected the folder written by save_checkpoint)")
        self.step = int(client.get("learner_step", 0))

    def save_hf(self, path: str) -> None:
        """A Hugging Face folder (config, safetensors, tokenizer files from model_dir) that engines and
        jobs load like any model. Every rank calls it under ZeRO-3; rank 0 writes."""
        weights = self.export_weights()
        if self.rank != 0:
            return
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: torch.from_numpy(v).to(self.dtype) for k, v in weights.items()}
        self.policy.config.dtype = self.dtype
        self.policy.save_pretrained(out, state_dict=state)
        for f in Path(self.model_dir).iterdir():
            if f.is_file() and not f.name.endswith(WEIGHT_FILES) and not (out / f.name).exists():
                shutil.copy2(f, out / f.name)
