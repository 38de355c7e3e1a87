"""The curriculum: potentials, stage partitions, seeded batches, the DAPO filter, state round-trips."""

import pickle

import pytest

from r1ci.config import Config, CurriculumConfig
from r1ci.curriculum import (
    CurriculumSampler,
    GroupResult,
    UniformSampler,
    group_results,
    improvement_potential,
    informative_groups,
    make_sampler,
    partition_stages,
    sample_ids,
    task_of,
)
from r1ci.trajectory import STOP_ANSWER, STOP_ERROR, Trajectory


def results(groups: dict[str, list[float]], correct_at: float = 1.0) -> list[GroupResult]:
    """One group per sample id, rewards as given, correct where the reward reaches `correct_at`."""
    return [GroupResult(f"0:0:{k}:{sid}", sid, tuple(r), tuple(x >= correct_at for x in r)) for k, (sid, r) in enumerate(groups.items())]


def rollout(sample: str, group: str, reward: float, correct: bool, stop: str = STOP_ANSWER) -> Trajectory:
    return Trajectory(task=task_of(sample), sample_id=sample, group_id=group, prompt_ids=[1], reward=reward,
                      correct=correct, stop_reason=stop)


def test_improvement_potential_peaks_at_half():
    assert improvement_potential(0.5) == 1.0
    assert improvement_potential(0.0) == improvement_potential(1.0) == 0.0
    assert improvement_potential(0.2) == pytest.approx(0.64)
    assert improvement_potential(0.1) == pytest.approx(0.36)
    with pytest.raises(ValueError):
        improvement_potential(1.5)


def test_partition_follows_the_papers_bounds():
    # p -> 4p(1-p): 0.5->1.0, 0.2->0.64 (closed lower bound), 0.15->0.51, 0.1->0.36, 0.05->0.19, 1.0->0
    pots = {sid: improvement_potential(p) for sid, p in {"a": 0.5, "b": 0.2, "c": 0.15, "d": 0.1, "e": 0.05, "f": 1.0, "g": 0.8}.items()}
    bounds = Config().curriculum.stage_bounds
    assert partition_stages(pots, bounds) == [["a", "b", "g"], ["c"], ["d"], ["e", "f"]]
    assert partition_stages({"x": 0.48, "y": 0.4799}, bounds) == [[], ["x"], ["y"], []]


def _cfg(**kw) -> CurriculumConfig:
    return CurriculumConfig(**{"steps_per_stage": 2, **kw})


IDS = sample_ids(["t1", "t2"], 0, 4)  # t1/0/0..3, t2/0/0..3
# potentials: t1/0/0 1.0 (stage 0); t1/0/1 0.51 (stage 1); t1/0/2 0.36 (stage 2); rest 0.0 (stage 3)
RATES = {"t1/0/0": 0.5, "t1/0/1": 0.15, "t1/0/2": 0.1, "t1/0/3": 1.0, "t2/0/0": 0.0, "t2/0/1": 0.0, "t2/0/2": 1.0, "t2/0/3": 0.0}


def test_each_stage_adds_the_next_group_to_the_pool():
    s = CurriculumSampler(IDS, _cfg(), seed=0, pass_rates=RATES)
    pools = []
    for _ in range(8):
        batch = s.next_batch(3)
        assert set(batch) <= set(s.pool)
        pools.append((s.stage, len(s.pool)))
    assert pools == [(0, 1), (0, 1), (1, 2), (1, 2), (2, 3), (2, 3), (3, 8), (3, 8)]
    assert s.next_batch(1) and s.stage == 3  # the last stage stays


def test_missing_pass_rates_start_in_the_first_stage():
    s = CurriculumSampler(IDS, _cfg(), seed=0, pass_rates=None)
    assert s.stage_info()["stage_sizes"] == [8, 0, 0, 0]


def test_batches_are_seeded_and_cover_the_pool_before_repeating():
    a = CurriculumSampler(IDS, _cfg(steps_per_stage=100), seed=3)
    b = CurriculumSampler(IDS, _cfg(steps_per_stage=100), seed=3)
    first = a.next_batch(8)
    assert first == b.next_batch(8)
    assert sorted(first) == sorted(IDS)  # one epoch before any repeat
    assert CurriculumSampler(IDS, _cfg(steps_per_stage=100), seed=4).next_batch(8) != first


def test_task_balanced_batches_alternate_tasks():
    ids = sample_ids(["big"], 0, 20) + sample_ids(["small"], 0, 2)
    s = CurriculumSampler(ids, _cfg(task_balanced=True, steps_per_stage=100), seed=0)
    batch = s.next_batch(10)
    assert sum(task_of(x) == "small" for x in batch) == 5
    plain = CurriculumSampler(ids, _cfg(steps_per_stage=100), seed=0).next_batch(10)
    assert sum(task_of(x) == "small" for x in plain) < 5


def test_uniform_groups_are_dropped_and_refilled():
    assert informative_groups(results({"a": [1.0, 1.0], "b": [0.0, 1.1], "c": [0.1, 0.1], "d": []})) == ["0:0:1:b"]
    s = CurriculumSampler(IDS, _cfg(drop_uniform_groups=True, steps_per_stage=100), seed=0)
    s.next_batch(2)
    assert s.report(results({"t1/0/0": [1.1, 1.1], "t1/0/1": [1.1, 0.1]})) == ["0:0:1:t1/0/1"]
    step = s.step
    assert len(s.refill(3)) == 3 and s.step == step  # a refill belongs to the same step
    keep_all = CurriculumSampler(IDS, _cfg(steps_per_stage=100), seed=0)
    assert keep_all.report(results({"t1/0/0": [1.0, 1.0]})) == ["0:0:0:t1/0/0"]


def test_the_filter_compares_rewards_not_correctness():
    # All wrong, but one rollout was well formed (+0.1) and one not (-0.1): GRPO gives them
    # non-zero advantages, so the group is informative and must be kept.
    wrong_but_different = [rollout("t1/0/0", "g", 0.1, False), rollout("t1/0/0", "g", -0.1, False)]
    right_alike = [rollout("t1/0/1", "h", 1.1, True), rollout("t1/0/1", "h", 1.1, True)]
    s = CurriculumSampler(IDS, _cfg(drop_uniform_groups=True, online_pass_rate=True, prior_rollouts=0), seed=0)
    s.next_batch(2)
    assert s.report(group_results(wrong_but_different + right_alike)) == ["g"]
    assert s.pass_rate("t1/0/0") == 0.0 and s.pass_rate("t1/0/1") == 1.0  # pass rates count correctness


def test_a_sample_drawn_twice_in_a_round_forms_two_groups():
    trajs = [rollout("t1/0/0", "0:0:0:t1/0/0", 1.1, True), rollout("t1/0/0", "0:0:0:t1/0/0", -0.1, False),
             rollout("t1/0/0", "0:0:1:t1/0/0", 1.1, True), rollout("t1/0/0", "0:0:1:t1/0/0", 1.1, True)]
    groups = group_results(trajs)
    assert [(g.group_id, g.rewards) for g in groups] == [("0:0:0:t1/0/0", (1.1, -0.1)), ("0:0:1:t1/0/0", (1.1, 1.1))]
    s = CurriculumSampler(IDS, _cfg(drop_uniform_groups=True, online_pass_rate=True, prior_rollouts=0), seed=0)
    s.next_batch(2)
    assert s.report(groups) == ["0:0:0:t1/0/0"]  # only the first draw's group is informative
    assert s.stats["t1/0/0"] == [4, 3]


def test_failed_rollouts_count_in_no_pass_rate():
    trajs = [rollout("t1/0/0", "g", 1.1, True), rollout("t1/0/0", "g", 0.0, False, stop=STOP_ERROR),
             rollout("t1/0/1", "h", -0.1, False, stop=STOP_ERROR)]
    groups = group_results(trajs)
    assert [(g.group_id, g.correct) for g in groups] == [("g", (True,))]  # h failed entirely: no result at all
    s = CurriculumSampler(IDS, _cfg(online_pass_rate=True, prior_rollouts=0), seed=0)
    s.next_batch(2)
    s.report(groups)
    assert s.stats == {"t1/0/0": [1, 1]} and s.pass_rate("t1/0/0") == 1.0


def test_online_pass_rates_move_solved_samples_out_of_the_pool():
    cfg = _cfg(online_pass_rate=True, prior_rollouts=4, steps_per_stage=1)
    s = CurriculumSampler(["a/0/0", "a/0/1"], cfg, seed=0)  # no profile: both p=0.5, stage 0
    s.next_batch(2)
    s.report(results({"a/0/0": [1.0] * 16, "a/0/1": [1.0, 0.0] * 8}))
    assert s.pass_rate("a/0/0") == pytest.approx((0.5 * 4 + 16) / 20)
    assert s.pass_rate("a/0/1") == pytest.approx(0.5)
    s.next_batch(1)  # stage 1: re-ranked; a/0/0 (potential 0.36) now waits for stage 2
    assert s.stages[0] == ["a/0/1"] and s.pool == ["a/0/1"]
    offline = CurriculumSampler(["a/0/0"], _cfg(), seed=0)
    offline.report(results({"a/0/0": [1.0] * 16}))
    assert offline.pass_rate("a/0/0") == 0.5


@pytest.mark.parametrize("cls", [CurriculumSampler, UniformSampler])
def test_state_round_trip_gives_identical_batches(cls):
    cfg = _cfg(task_balanced=True, online_pass_rate=True)
    a = cls(IDS, cfg, seed=7, pass_rates=RATES)
    for _ in range(3):
        a.report(results({sid: [1.0, 0.0] for sid in a.next_batch(3)}))
    state = pickle.loads(pickle.dumps(a.state_dict()))
    b = cls(IDS, cfg, seed=999, pass_rates=RATES)
    b.load_state_dict(state)
    assert [a.next_batch(3) for _ in range(6)] == [b.next_batch(3) for _ in range(6)]
    assert a.stage_info() == b.stage_info()


def test_uniform_sampler_uses_every_sample_from_the_start():
    s = UniformSampler(IDS, _cfg(), seed=0, pass_rates=RATES)
    assert s.num_stages == 1 and sorted(s.next_batch(8)) == sorted(IDS)


def test_make_sampler_switches_on_one_key_and_refuses_a_mismatched_checkpoint():
    cfg = Config()
    cfg.curriculum.sampler = "uniform"
    uni = make_sampler(cfg, IDS)
    assert isinstance(uni, UniformSampler)
    cfg.curriculum.sampler = "curriculum"
    cur = make_sampler(cfg, IDS, RATES)
    assert type(cur) is CurriculumSampler and cur.stage_info()["stage_sizes"] == [1, 1, 1, 5]
    with pytest.raises(ValueError, match="uniform"):
        cur.load_state_dict(uni.state_dict())
    cfg.curriculum.potentials = "/nonexistent/potentials.parquet"
    with pytest.raises(FileNotFoundError, match="jobs/profile_samples.py"):
        make_sampler(cfg, IDS)


def test_coordinator_actor_serves_the_same_order_and_restores_it(ray_cluster):
    from actors.curriculum import make_coordinator

    cfg = Config()
    cfg.curriculum.steps_per_stage = 2
    cfg.curriculum.drop_uniform_groups = True
    coord = make_coordinator(cfg, IDS, RATES)
    local = make_sampler(cfg, IDS, RATES)
    get = lambda ref: ray_cluster.get(ref, timeout=60)  # noqa: E731
    for _ in range(3):
        batch = get(coord.next_batch.remote(2))
        assert batch == local.next_batch(2)
        reported = results({sid: [1.0, 0.0] for sid in batch})
        assert get(coord.report.remote(reported)) == [g.group_id for g in reported]
    assert get(coord.stage_info.remote())["stage"] == 1
    state = get(coord.state_dict.remote())
    resumed = make_coordinator(cfg, IDS, RATES)  # how jobs/rl.py starts it
    get(resumed.load_state_dict.remote(state))
    assert get(resumed.next_batch.remote(4)) == get(coord.next_batch.remote(4))
    for actor in (coord, resumed):
        ray_cluster.kill(actor)


def test_profile_rows_round_trip_through_parquet_into_stages(tmp_path):
    from r1ci.curriculum import potential_rows, read_pass_rates, write_potentials

    rows = potential_rows({"t/0/0": [True, False], "t/0/1": [True] * 4, "t/0/2": [False, False, False, True]})
    assert [(r["pass_rate"], r["potential"]) for r in rows] == [(0.5, 1.0), (1.0, 0.0), (0.25, 0.75)]
    write_potentials(rows, tmp_path / "p.parquet")
    rates = read_pass_rates(tmp_path / "p.parquet")
    cfg = Config()
    cfg.curriculum.potentials = str(tmp_path / "p.parquet")
    assert make_sampler(cfg, list(rates)).stage_info()["stage_sizes"] == [2, 0, 0, 1]
