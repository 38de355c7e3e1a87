"""The multi-turn code-interpreter rollout: generate, run the code, append its output, go on.

Every trajectory advances on its own coroutine: while one waits for its code, the others
keep generating (the engine batches whatever requests are in flight), so there is no
batch-wide barrier per turn. The whole conversation continues inside one assistant
message; token ids accumulate and are never re-tokenized: the response is exactly the
engine's output ids and the encoded observations, in order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

from r1ci import protocol
from r1ci.config import Config
from r1ci.engines.base import Engine, Sampling
from r1ci.sandbox.base import EXECUTOR_UNRESPONSIVE, SANDBOX_ERROR, TIMEOUT, ExecResult, Sandbox
from r1ci.tasks.base import Instance
from r1ci.trajectory import (
    STOP_ANSWER,
    STOP_EOS,
    STOP_ERROR,
    STOP_LENGTH,
    STOP_MAX_CALLS,
    STOP_PROMPT_TOO_LONG,
    Trajectory,
    Turn,
)


@dataclass(frozen=True)
class RolloutRequest:
    """One trajectory to sample: a task instance, its group, the prompt style and sampling settings.

    `sampling.max_tokens` is the budget per engine call and `sampling.seed` seeds the whole
    trajectory (each call gets a seed derived from it); `sampling.stop` is ignored, the
    protocol sets the stop strings of each turn.
    """

    instance: Instance
    group_id: str
    prompt_style: str  # one of r1ci.config.PROMPT_STYLES (the job's tasks.prompt_style or eval.prompt_style)
    sampling: Sampling | None = None  # None: training sampling from the config


def sampling_from_config(cfg: Config, evaluation: bool = False, seed: int | None = None) -> Sampling:
    """Per-turn sampling settings: temperature (training or evaluation), top-p, tokens per turn, seed."""
    s = cfg.sampling
    return Sampling(
        temperature=s.eval_temperature if evaluation else s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_tokens_per_turn,
        seed=seed,
    )


def prompt_ids(tokenizer, question: str, prompt_style: str, cfg: Config) -> list[int]:
    """Chat-template token ids of the system + user messages, ending with the assistant header."""
    messages = protocol.build_messages(question, prompt_style, cfg.protocol)
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False))


def exec_note(result: ExecResult, timeout_s: float) -> str:
    """A line for an abnormal end the executor left unexplained (r1ci's sandbox explains its own in stderr)."""
    if result.stderr.strip() or not (result.timed_out or result.killed_reason or result.exit_code is None):
        return ""
    if result.timed_out or result.killed_reason == TIMEOUT:
        return f"Error: the code timed out after {timeout_s:g} seconds and was stopped."
    return f"Error: the code was stopped ({result.killed_reason or 'killed by a signal'})."


def _call_seed(seed: int | None, call: int) -> int | None:
    """A distinct, reproducible seed for each engine call of a trajectory."""
    return None if seed is None else (seed * 1_000_003 + call) % 2**31


async def rollout(
    engine: Engine,
    executor: Sandbox,
    instance: Instance,
    cfg: Config,
    group_id: str,
    sampling: Sampling,
    prompt_style: str,
    weight_version: int = 0,
) -> Trajectory:
    """Sample one multi-turn trajectory for `instance`.

    Each engine call gets at most `sampling.max_tokens` new tokens; the response (model and
    interpreter tokens) at most `cfg.sampling.max_total_tokens`, and prompt plus response at
    most the engine's `max_model_len`. Ends with a stop reason from `r1ci.trajectory`; engine
    and executor failures end the trajectory with STOP_ERROR and `error` set, never raise.
    """
    traj = Trajectory(
        task=instance.task,
        sample_id=instance.id,
        group_id=group_id,
        prompt_ids=prompt_ids(engine.tokenizer, instance.question, prompt_style, cfg),
        prompt_style=prompt_style,
        weight_version=weight_version,
    )
    return await rollout_from_prompt(engine, executor, traj, cfg, sampling, code_allowed=prompt_style != "text")


async def rollout_from_prompt(
    engine: Engine,
    executor: Sandbox,
    traj: Trajectory,
    cfg: Config,
    sampling: Sampling,
    code_allowed: bool = True,
    on_observation: Callable[[str], None] | None = None,
) -> Trajectory:
    """Run the multi-turn loop on `traj`, whose `prompt_ids` may come from any chat (the server's
    requests), filling its response, turns, stop reason and answer; budgets as in `rollout`.
    `on_observation` gets each code call's observation text the moment the call returns (the
    server streams it)."""
    pcfg = cfg.protocol
    tokenizer = engine.tokenizer
    if len(traj.prompt_ids) >= engine.max_model_len:
        traj.stop_reason = STOP_PROMPT_TOO_LONG
        traj.error = f"prompt of {len(traj.prompt_ids)} tokens does not fit max_model_len {engine.max_model_len}"
        return traj

    last_turn = False  # after max_code_calls: one more turn, no execution
    turn_ids: list[int] = []
    calls = 0

    def room() -> int:
        return min(
            cfg.sampling.max_total_tokens - len(traj.response_ids),
            engine.max_model_len - len(traj.input_ids),
        )

    while True:
        if room() <= 0:
            traj.stop_reason = STOP_LENGTH
            break
        turn_sampling = dataclasses.replace(
            sampling,
            max_tokens=min(sampling.max_tokens, room()),
            stop=tuple(protocol.stop_strings(pcfg, allow_code=code_allowed and not last_turn)),
            seed=_call_seed(sampling.seed, calls),
        )
        calls += 1
        try:
            out = await engine.generate(traj.input_ids, turn_sampling)
        except Exception as exc:
            traj.stop_reason, traj.error = STOP_ERROR, f"engine failed: {exc!r}"
            break
        traj.append(out.token_ids, out.logprobs, trainable=True)
        turn_ids += out.token_ids
        text = tokenizer.decode(turn_ids, skip_special_tokens=True)
        block = protocol.find_code_block(text, pcfg) if code_allowed and not last_turn else None
        answered = bool(protocol.find_answers(text, pcfg))
        if block is not None and not protocol.answer_before_code(text, pcfg):
            turn = Turn(text=text, code=block.code)
            traj.turns.append(turn)
            turn_ids = []
            observation = await _run_code(executor, turn, cfg, traj)
            if observation is None:
                break
            traj.code_calls += 1
            if traj.code_calls >= pcfg.max_code_calls:
                observation += protocol.last_turn_notice(pcfg)
                last_turn = True
            turn.observation = observation
            if on_observation is not None:
                on_observation(observation)
            obs_ids = tokenizer.encode(observation, add_special_tokens=False)
            if len(obs_ids) > room():
                traj.append(obs_ids[: max(room(), 0)], None, trainable=False)
                traj.stop_reason = STOP_LENGTH
                break
            traj.append(obs_ids, None, trainable=False)
            continue
        if answered:
            traj.stop_reason = STOP_ANSWER
        elif out.finish_reason == "eos":
            traj.stop_reason = STOP_MAX_CALLS if last_turn else STOP_EOS
        elif out.finish_reason == "length":
            traj.stop_reason = STOP_LENGTH
        else:  # a stop string without a closed block or an answer (e.g. '>>>' inside code): same turn goes on
            continue
        break

    if turn_ids:
        traj.turns.append(Turn(text=tokenizer.decode(turn_ids, skip_special_tokens=True)))
    traj.answer = protocol.extract_answer("".join(t.text for t in traj.turns), pcfg)
    return traj


async def _run_code(executor: Sandbox, turn: Turn, cfg: Config, traj: Trajectory) -> str | None:
    """The observation text for `turn`'s code call (noting on the turn why the executor stopped
    it, if it did), or None after marking `traj` as failed."""
    timeout = cfg.sandbox.timeout_s
    start = time.perf_counter()
    try:
        result = await asyncio.wait_for(executor.arun(turn.code, timeout), timeout + cfg.generator.exec_grace_s)
    except asyncio.TimeoutError:
        turn.killed_reason, traj.stop_reason = EXECUTOR_UNRESPONSIVE, STOP_ERROR
        traj.error = f"executor gave no result within {timeout + cfg.generator.exec_grace_s:g} s (sandbox timeout {timeout:g} s)"
        return None
    except Exception as exc:  # a runner that breaks the protocol by raising has failed, not the code
        turn.killed_reason, traj.stop_reason, traj.error = SANDBOX_ERROR, STOP_ERROR, f"executor failed: {exc!r}"
        return None
    finally:
        traj.code_wait_s += time.perf_counter() - start
    turn.killed_reason = result.killed_reason or (TIMEOUT if result.timed_out else "")
    if result.executor_failed:
        traj.stop_reason, traj.error = STOP_ERROR, f"executor failed ({result.killed_reason}): {result.stderr[-300:]}"
        return None
    return protocol.format_observation(result.stdout, result.stderr, cfg.protocol, note=exec_note(result, timeout))


async def rollout_batch(
    engine: Engine, executor: Sandbox, requests: list[RolloutRequest], cfg: Config, weight_version: int = 0
) -> list[Trajectory]:
    """All trajectories at once, each on its own coroutine; results in request order, none lost."""
    default = sampling_from_config(cfg)

    async def one(req: RolloutRequest) -> Trajectory:
        try:
            return await rollout(
                engine, executor, req.instance, cfg, req.group_id, req.sampling or default, req.prompt_style, weight_version
            )
        except Exception as exc:  # a bug must not lose the trajectory: keep it, marked
            return Trajectory(
                task=req.instance.task, sample_id=req.instance.id, group_id=req.group_id, prompt_ids=[],
                prompt_style=req.prompt_style, weight_version=weight_version, stop_reason=STOP_ERROR,
                error=f"rollout failed: {exc!r}",
            )

    return list(await asyncio.gather(*(one(r) for r in requests)))
