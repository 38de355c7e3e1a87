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
