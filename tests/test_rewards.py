import pytest

from r1ci import rewards
from r1ci.config import ProtocolConfig, RewardConfig
from r1ci.tasks.base import Instance, Task
from r1ci.trajectory import Trajectory, Turn

P, R = ProtocolConfig(), RewardConfig()
CODE = "```python\nprint(6*7)\n```\n"


class ExactTask(Task):
    """A stand-in verifier: isolates the reward arithmetic from the task suite."""

    name, family, kind = "exact", "symbench", "execution"

    def score(self, answer, instance):
        if answer == "boom":
            raise ValueError("verifier bug")
        return 1.0 if answer == instance.answer else 0.0


INST = Instance("exact", 0, 0, "6*7?", "42")


def traj(*turns, answer):
    return Trajectory("exact", INST.id, "g", [1], turns=list(turns), answer=answer)


def test_correct_well_formed_answer_earns_correct_plus_format_bonus():
    t = traj(Turn(CODE, "print(6*7)", "Code Execution Results:\n42\n"), Turn("<<<42>>>"), answer="42")
    parts = rewards.score(t, ExactTask(), INST, R, P)
    assert parts.correct and parts.total == 1.1


def test_wrong_answer_keeps_only_the_format_term():
    t = traj(Turn("<<<41>>>"), answer="41")
    assert rewards.score(t, ExactTask(), INST, R, P).total == 0.1


def test_missing_answer_is_ill_formed():
    t = traj(Turn("I think it is 42."), answer=None)
    parts = rewards.score(t, ExactTask(), INST, R, P)
    assert not parts.correct and parts.total == -0.1


def test_more_than_six_turns_is_penalized():
    turns = [Turn(CODE, "print(6*7)", "42\n") for _ in range(7)] + [Turn("<<<42>>>")]
    parts = rewards.score(traj(*turns, answer="42"), ExactTask(), INST, R, P)
    assert parts.turns == -0.1 and round(parts.total, 6) == 1.0


def test_a_verifier_that_raises_counts_as_wrong():
    parts = rewards.score(traj(Turn("<<<boom>>>"), answer="boom"), ExactTask(), INST, R, P)
    assert not parts.correct and parts.correctness == 0.0


def test_weights_come_from_config():
    cfg = RewardConfig(correct=2.0, well_formed=0.5)
    t = traj(Turn("<<<42>>>"), answer="42")
    assert rewards.score(t, ExactTask(), INST, cfg, P).total == 2.5


class GradedTask(ExactTask):
    """A verifier that gives partial credit, as 55 Reasoning-Gym verifiers do."""

    def score(self, answer, instance):
        return 1.0 if answer == instance.answer else 0.5 if answer.startswith("4") else 0.0


def test_correctness_is_zero_or_one_unless_partial_credit_is_asked_for():
    t = traj(Turn("<<<41>>>"), answer="41")
    parts = rewards.score(t, GradedTask(), INST, R, P)
    assert not parts.correct and parts.correctness == 0.0 and parts.total == 0.1
    graded = rewards.score(t, GradedTask(), INST, RewardConfig(partial_credit=True), P)
    assert not graded.correct and graded.correctness == 0.5
    assert rewards.score(traj(Turn("<<<42>>>"), answer="42"), GradedTask(), INST, RewardConfig(partial_credit=True), P).correctness == 1.0


def test_an_empty_answer_earns_no_format_bonus():
    parts = rewards.score(traj(Turn("<<<>>>"), answer=""), ExactTask(), INST, R, P)
    assert not parts.correct and parts.format == R.ill_formed


def test_the_answer_is_read_from_the_text_with_the_runs_protocol():
    cfg = ProtocolConfig(answer_open="[[", answer_close="]]")
    t = traj(Turn("so [[42]]"), answer=None)
    assert rewards.score(t, ExactTask(), INST, R, cfg).correct
    assert not rewards.score(t, ExactTask(), INST, R, P).correct  # the default markers find no answer


@pytest.mark.parametrize("answer", ["", "   ", "4" * 3_000_000, "42\x00", "\ud80042", "<<<42>>>", "<<<<<<42>>>>>>"])
def test_bad_answers_score_zero_and_never_raise(answer):
    for task in (ExactTask(), GradedTask()):
        assert rewards.verdict(task, answer, INST, R) == 0.0
        parts = rewards.score(traj(Turn(f"<<<{answer}>>>"), answer=None), task, INST, R, P)
        assert not parts.correct and parts.correctness == 0.0


def test_over_long_answers_are_not_verified():
    class Counting(ExactTask):
        calls = 0

        def score(self, answer, instance):
            Counting.calls += 1
            return 1.0

    assert rewards.verdict(Counting(), "4" * (R.max_answer_chars + 1), INST, R) == 0.0 and Counting.calls == 0
    assert rewards.verdict(Counting(), "4" * R.max_answer_chars, INST, R) == 1.0


def test_a_verifier_returning_nan_or_out_of_range_is_clamped():
    class Odd(ExactTask):
        def score(self, answer, instance):
            return {"nan": float("nan"), "big": 7.0, "neg": -1.0}[answer]

    assert [rewards.verdict(Odd(), a, INST, R) for a in ("nan", "big", "neg")] == [0.0, 1.0, 0.0]
