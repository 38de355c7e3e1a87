"""One DeepSpeed data-parallel rank of the policy learner: logprobs, RL and SFT steps, export.

`Learner` wraps an HF causal LM in a DeepSpeed engine (ZeRO 1/2/3, fp32 or bf16, gloo on
CPU) and keeps a frozen reference copy when the KL coefficient is positive. Every rank is
handed the *whole* batch and trains on its contiguous shard: advantages and loss
normalizers are whole-batch quantities, so N ranks give the same update as one.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import socket
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from r1ci import algorithms as A
from r1ci.batch import Batch, collate
from r1ci.config import Config
from r1ci.trajectory import Trajectory
from r1ci.weight_sync import Bucket, pack_buckets

log = logging.getLogger(__name__)

CHECKPOINT_TAG = "learner"
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


class PolicyModule(nn.Module):
    """The trained module: an HF causal LM, plus a linear value head for estimators that need values.

    `forward` runs the LM head only at the response positions, returning logits [B, R, V]
    and values [B, R] (or None).
    """

    def __init__(self, policy: nn.Module, value_head: bool):
        super().__init__()
        self.policy = policy
        self.value_head = nn.Linear(policy.config.hidden_size, 1) if value_head else None

    def forward(self, input_ids, attention_mask, positions):
        base = getattr(self.policy, self.policy.base_model_prefix)
        hidden = base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]
        h = hidden[rows, positions]  # [B, R, H]
        logits = self.policy.get_output_embeddings()(h)
        values = self.value_head(h).squeeze(-1).float() if self.value_head is not None else None
        return logits, values


class Learner:
    """One rank of the learner. Methods that take trajectories must be called on every rank
    with the same full list (collectives inside); each rank works on its shard."""

    def __init__(self, cfg: Config, model_dir: str, rank: int = 0, world_size: int = 1,
                 master_addr: str = "127.0.0.1", master_port: int = 29500):
        for key, value in {"MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port), "RANK": str(rank),
                           "WORLD_SIZE": str(world_size), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}.items():
            os.environ[key] = value
        if cfg.learner.threads:
            torch.set_num_threads(cfg.learner.threads)
        deepspeed = _import_deepspeed()
        from transformers import AutoModelForCausalLM

        self.cfg, self.model_dir = cfg, model_dir
        self.rank, self.world_size = rank, world_size
        self.estimator = A.get_advantage(cfg.algorithm.advantage)
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
        reference = copy.deepcopy(policy).eval().requires_grad_(False) if cfg.algorithm.kl_coef > 0 else None
        self.module = PolicyModule(policy, self.estimator.needs_values)
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
                self.reference, *_ = deepspeed.initialize(model=PolicyModule(reference, False), config=self._ds_config(train=False))
            else:
                self.reference = PolicyModule(reference, False).to(self.engine.device, self.dtype)

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
        n, w, r = len(trajectories), self.world_size, self.rank
        return r * n // w, (r + 1) * n // w

    def _micro_batches(self, trajectories: list[Trajectory], start: int, end: int) -> list[list[int]]:
        """Indices (into the full batch) of this rank's micro-batches, similar lengths together.
        Every rank gets the same number of micro-batches (ZeRO's collectives need that)."""
        mb = self.cfg.learner.micro_batch_size
        most = -(-len(trajectories) // self.world_size)
        count = max(1, -(-most // mb))
        idx = sorted(range(start, end), key=lambda i: len(trajectories[i].input_ids))
        chunks = [idx[i * len(idx) // count:(i + 1) * len(idx) // count] for i in range(count)]
        if any(not c for c in chunks):
            raise ValueError(
                f"a batch of {len(trajectories)} trajectories cannot be split evenly over {self.world_size} learner ranks; "
                f"make run.prompts_per_step * algorithm.group_size a multiple of learner.num_learners"
            )
        return chunks

    def _forward(self, module, batch: Batch, temperature: float, with_entropy: bool = False):
        """Logprobs [B, R] of the taken tokens at `temperature`, values [B, R] or None, entropy [B, R] or None.

        The model runs on the engine's device; the [B, R] results come back to the CPU, where
        the batch and the algorithms live (autograd flows through the transfer)."""
        dev = self.engine.device
        logits, values = module(batch.input_ids.to(dev), batch.attention_mask.to(dev), batch.positions.to(dev))
        logp_all = A.log_softmax(logits, temperature)  # [B, R, V], once: ~0.6 GB at B=4, R=768, V=49k
        logprobs = logp_all.gather(-1, batch.response_ids.to(dev).unsqueeze(-1)).squeeze(-1).cpu()
        entropy = None
        if with_entropy:
            with torch.no_grad() if not self.cfg.algorithm.entropy_coef else nullcontext():
                entropy = A.entropy_from_logprobs(logp_all).cpu()
        return logprobs, values.cpu() if values is not None else None, entropy

    def _all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (through the engine's device: NCCL reduces GPU tensors only)."""
        if self.world_size == 1:
            return tensor
        on_device = tensor.to(self.engine.device)
        torch.distributed.all_reduce(on_device)
        return on_device.cpu()

    # ------------------------------------------------------------------ logprobs

    @torch.no_grad()
    def compute_logprobs(self, trajectories: list[Trajectory], reference: bool = False) -> list[list[float]]:
        """Per response token of this rank's shard, log_softmax(logits / sampling temperature)
        of the taken token (nats); 0.0 on interpreter tokens, matching `Trajectory.logprobs`.
        `reference=True` uses the frozen reference model."""
        module = self.reference if reference else self.engine
        if module is None:
            raise ValueError("no reference model: it exists only when algorithm.kl_coef > 0")
        start, end = self.shard(trajectories)
        out: dict[int, list[float]] = {}
        for idx in self._micro_batches(trajectories, start, end):
            batch = collate([trajectories[i] for i in idx])
            lp, _, _ = self._forward(module, batch, self.temperature)
            lp = lp * batch.mask
            for row, i in enumerate(idx):
                out[i] = lp[row, : len(trajectories[i].response_ids)].tolist()
        return [out[i] for i in range(start, end)]

    def ref_logprobs(self, trajectories: list[Trajectory]) -> list[list[float]]:
        """`compute_logprobs` under the frozen reference model."""
        return self.compute_logprobs(trajectories, reference=True)

    # ------------------------------------------------------------------ RL step

    def train_step(self, trajectories: list[Trajectory]) -> dict[str, float]:
        """One RL update on the whole batch (each rank trains on its shard): advantages from the
        registered estimator, `algorithm.ppo_epochs` optimizer steps of the clipped policy loss
        (+ KL to the reference, - entropy bonus, + value loss for GAE).

        Old logprobs are recomputed by the current policy before the first step (the engine's
        sampling logprobs may come from other kernels or dtypes), unless
        `algorithm.old_logprobs: sampling`. With one epoch the recomputed old logprobs are the
        training forward's own, detached, so no extra forward is paid.
        Returns whole-batch metrics (identical on every rank): policy_loss, kl, entropy,
        clip_frac, approx_kl, grad_norm, lr, tokens (model tokens), sequences, seconds (+ value_loss).
        """
        t0 = time.perf_counter()
        ac = self.cfg.algorithm
        start, end = self.shard(trajectories)
        micro = self._micro_batches(trajectories, start, end)
        R = max(len(t.response_ids) for t in trajectories)
        full = collate(trajectories, response_len=R)  # whole batch: rewards, masks, group ids
        batches = [collate([trajectories[i] for i in idx], response_len=R) for idx in micro]

        # Per-token inputs the estimator and the loss need, from frozen forwards.
        epochs = ac.ppo_epochs
        kl_in_reward = self.estimator.kl_in_reward and self.reference is not None
        need_policy_pass = self.estimator.needs_values or kl_in_reward or (epochs > 1 and ac.old_logprobs == "recompute")
        old_lp, old_values, ref_lp = {}, {}, {}
        with torch.no_grad():
            for k, batch in enumerate(batches):
                if need_policy_pass:
                    lp, v, _ = self._forward(self.engine, batch, self.temperature)
                    old_lp[k], old_values[k] = lp, v
                if self.reference is not None:
                    ref_lp[k], _, _ = self._forward(self.reference, batch, self.temperature)
                if ac.old_logprobs == "sampling":
                    old_lp[k] = batch.old_logprobs

        # Whole-batch advantages: every rank fills its rows, a sum over ranks completes them.
        kl_full = values_full = None
        if kl_in_reward:
            kl_full = self._scatter_rows(full, micro, {k: A.kl_penalty(old_lp[k], ref_lp[k], ac.kl_estimator) for k in ref_lp})
        if self.estimator.needs_values:
            values_full = self._scatter_rows(full, micro, old_values)
        advantages, returns = self.estimator.fn(
            full.rewards, full.mask, group_ids=full.group_ids, norm_by_std=ac.norm_adv_by_std, values=values_full,
            kl=kl_full, kl_coef=ac.kl_coef, gamma=ac.gamma, lam=ac.lam,
        )

        # Normalizers over the whole batch, so micro-batches and ranks add up to its mean.
        normalizer = float(full.mask.sum()) if ac.loss_agg == "token_mean" else float((full.mask.sum(1) > 0).sum())
        tokens = float(full.mask.sum())
        kl_loss_coef = 0.0 if self.estimator.kl_in_reward else ac.kl_coef
        self.engine.train()
        sums = torch.zeros(8)  # policy_loss, kl, entropy, clip_frac, approx_kl, value_loss, grad_norm, lr
        for _ in range(epochs):
            for k, (idx, batch) in enumerate(zip(micro, batches)):
                adv, ret = advantages[idx], returns[idx]
                lp, values, entropy = self._forward(self.engine, batch, self.temperature, with_entropy=True)
                old = old_lp[k] if k in old_lp else lp.detach()
                m = batch.mask
                loss, stats = A.policy_loss(lp, old, adv, m, ac.clip_ratio, ac.loss_agg, normalizer)
                total = loss
                kl = A.kl_penalty(lp, ref_lp[k], ac.kl_estimator) if k in ref_lp else torch.zeros_like(lp)
                if kl_loss_coef:
                    total = total + kl_loss_coef * A.aggregate(kl, m, ac.loss_agg, normalizer)
                if ac.entropy_coef:
                    total = total - ac.entropy_coef * A.aggregate(entropy, m, ac.loss_agg, normalizer)
                vloss = torch.zeros(())
                if values is not None:
                    old_v = old_values[k] if k in old_values else values.detach()
                    vloss, _ = A.value_loss(values, old_v, ret, m, ac.value_clip, ac.loss_agg, normalizer)
                    total = total + ac.value_coef * vloss
                # DeepSpeed averages gradients over ranks; the loss is already a whole-batch mean.
                self.engine.backward(total * self.world_size, scale_wrt_gas=False)
                n = float(m.sum())
                sums[:6] += torch.tensor([
                    loss.item(), A.masked_sum(kl.detach(), m).item() / max(tokens, 1), A.masked_sum(entropy.detach(), m).item() / max(tokens, 1),
                    stats["clip_frac"].item() * n / max(tokens, 1), stats["approx_kl"].item() * n / max(tokens, 1), vloss.item(),
                ])
            lr = self.engine.get_lr()[0]
            self.engine.step()
            sums[6] += float(self.engine.get_global_grad_norm() or 0.0)
            sums[7] += lr
        self.step += 1
        sums[:6] = self._all_reduce(sums[:6].clone())
        sums /= epochs
        names = ["policy_loss", "kl", "entropy", "clip_frac", "approx_kl", "value_loss", "grad_norm", "lr"]
        metrics = {name: float(v) for name, v in zip(names, sums)}
        if values_full is None:
            metrics.pop("value_loss")
        metrics.update(advantage_abs_mean=float(A.masked_mean(advantages.abs(), full.mask)), tokens=tokens,
                       sequences=float(len(trajectories)), seconds=time.perf_counter() - t0, step=float(self.step))
        return metrics

    def _scatter_rows(self, full: Batch, micro: list[list[int]], per_micro: dict[int, torch.Tensor]) -> torch.Tensor:
        """Assemble a whole-batch [N, R] tensor from this rank's micro-batch rows, summed over ranks."""
        out = torch.zeros(full.mask.shape)
        for k, idx in enumerate(micro):
            out[idx] = per_micro[k].float()
        return self._all_reduce(out)

    # ------------------------------------------------------------------ SFT

    def _nll_pass(self, trajectories: list[Trajectory], train: bool) -> tuple[float, float]:
        """Masked next-token NLL at temperature 1 over loss_mask == 1 tokens, whole-batch token mean."""
        start, end = self.shard(trajectories)
        tokens = float(sum(t.num_model_tokens for t in trajectories))
        loss_sum = 0.0
        self.engine.train(train)
        for idx in self._micro_batches(trajectories, start, end):
            batch = collate([trajectories[i] for i in idx])
            with nullcontext() if train else torch.no_grad():
                lp, _, _ = self._forward(self.engine, batch, 1.0)
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
