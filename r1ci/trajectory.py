"""The one record every stage speaks: a rollout's tokens, loss mask, logprobs, turns and reward.

Generators produce it, the reward and curriculum read it, the learner trains on it and
SFT data is stored in its schema (`to_row` / `from_row`), so either side can change alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Turn:
    """One model turn: what it wrote, the code it ran (if any) and what the interpreter said."""

    text: str
    code: str | None = None
    observation: str | None = None
    killed_reason: str = ""  # why the code was stopped (ExecResult.killed_reason: r1ci.sandbox.base names the values), "" if it ran to its end


# Why a trajectory ended.
STOP_ANSWER = "answer"  # a <<<final answer>>> was written
STOP_EOS = "eos"  # the model ended its message without an answer
STOP_LENGTH = "length"  # the response token budget ran out
STOP_MAX_CALLS = "max_code_calls"  # code-call limit reached and the last turn gave no answer
STOP_PROMPT_TOO_LONG = "prompt_too_long"  # the prompt did not fit the context
STOP_ERROR = "error"  # the engine or executor failed; `error` says how


@dataclass
class Trajectory:
    """One multi-turn rollout of one prompt.

    `response_ids`, `loss_mask` and `logprobs` have the same length: every token after the
    prompt, model-written (mask 1, its sampling logprob) or interpreter-written (mask 0,
    logprob 0.0). Token ids accumulate across turns and are never re-tokenized.
    """

    task: str
    sample_id: str  # stable instance id: "task/seed/index"
    group_id: str  # the G rollouts of one prompt in one step share it
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    code_calls: int = 0
    stop_reason: str = ""
    answer: str | None = None
    prompt_style: str = "agent"
    reward: float = 0.0
    correct: bool = False
    weight_version: int = 0  # version of the policy weights that sampled it
    error: str = ""
    code_wait_s: float = 0.0  # seconds this trajectory waited on the executor

    @property
    def input_ids(self) -> list[int]:
        return self.prompt_ids + self.response_ids

    @property
    def num_model_tokens(self) -> int:
        return sum(self.loss_mask)

    @property
    def text(self) -> str:
        """The response as the model and interpreter wrote it, turn by turn."""
        parts = []
        for t in self.turns:
            parts.append(t.text)
            if t.observation is not None:
                parts.append(t.observation)
        return "".join(parts)

    def append(self, ids: list[int], logprobs: list[float] | None, trainable: bool) -> None:
        """Add tokens: model-written (trainable, with logprobs) or interpreter-written."""
        self.response_ids.extend(ids)
        self.loss_mask.extend([1 if trainable else 0] * len(ids))
        if trainable and logprobs is not None:
            if len(logprobs) != len(ids):
                raise ValueError(f"{len(ids)} tokens but {len(logprobs)} logprobs")
            self.logprobs.extend(float(x) for x in logprobs)
        else:
            self.logprobs.extend([0.0] * len(ids))

    def to_row(self) -> dict[str, Any]:
        """A flat dict for Parquet (turns as JSON), the schema SFT data shares."""
        row = dataclasses.asdict(self)
        row["turns"] = json.dumps([dataclasses.asdict(t) for t in self.turns])
        row["text"] = self.text
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Trajectory:
        names = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in row.items() if k in names}
        turns = data.get("turns") or "[]"
        data["turns"] = [Turn(**t) for t in (json.loads(turns) if isinstance(turns, str) else turns)]
        for key in ("prompt_ids", "response_ids", "loss_mask", "logprobs"):
            data[key] = list(data.get(key) or [])
        return cls(**data)
