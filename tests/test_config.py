import pytest

from r1ci.config import ConfigError, describe, from_dict, load_config, to_dict


def test_yaml_then_overrides_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learner:\n  lr: 3.0e-6\nrun:\n  steps: 7\n")
    cfg = load_config(path, ["learner.lr=1e-5", "tasks.train=[game24, toy_run_code]"])
    assert cfg.learner.lr == 1e-5
    assert cfg.run.steps == 7
    assert cfg.tasks.train == ["game24", "toy_run_code"]


def test_unknown_key_names_the_key_and_suggests_a_close_one():
    with pytest.raises(ConfigError, match=r"unknown config key 'learner.lrr'.*Did you mean lr"):
        load_config(None, ["learner.lrr=1"])


def test_unknown_section_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lerner:\n  lr: 1\n")
    with pytest.raises(ConfigError, match="lerner"):
        load_config(path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("run.steps=many", "run.steps: expected a number"),
        ("run.steps=0", r"run.steps: must be positive \(> 0\), got 0"),
        ("sampling.temperature=-1", r"sampling.temperature: must be >= 0"),
        ("profile.styles=[agent, prose]", r"profile.styles: need one or more of text, code, agent, guided"),
        ("profile.styles=[]", "profile.styles: need one or more"),
        ("learner.zero_stage=4", "learner.zero_stage: 4 is not one of 1, 2, 3"),
        ("generator.backend=tgi", "generator.backend"),
        ("sampling.top_p=1.5", "sampling.top_p"),
        ("curriculum.stage_bounds=[0.2, 0.6]", "highest first"),
        ("algorithm.norm_adv_by_std=maybe", "expected true or false"),
        ("run.steps", "must look like section.key=value"),
        ("run.steps=2.5", "whole number"),
        ("generator.exec_grace_s=5", r"generator.exec_grace_s: 5 s is less than sandbox.grace_s \(10 s\)"),
        ("learner.num_learners=64", r"learner.num_learners: 64 ranks but a step trains on .* = 32 trajectories"),
        ("run.max_staleness=-1", r"run.max_staleness: must be >= 0"),
        ("run.max_staleness=1.5", r"run.max_staleness: expected a whole number"),
        ("run.max_staleness=one", r"run.max_staleness: expected a number"),
        ("run.max_staleness=1", r"run.max_staleness: 1 trains on batches sampled by older weights.*rollout_correction"),
    ],
)
def test_bad_values_give_one_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_asynchronous_rl_is_accepted_with_an_off_policy_correction():
    assert load_config(None, ["run.max_staleness=2", "algorithm.rollout_correction=true"]).run.max_staleness == 2
    assert load_config(None, ["run.max_staleness=1", "algorithm.old_logprobs=sampling"]).run.max_staleness == 1


def test_missing_config_file_says_so():
    with pytest.raises(ConfigError, match="not found"):
        load_config("configs/nope.yaml")


def test_round_trips_through_a_dict():
    cfg = load_config(None, ["run.seed=5"])
    assert to_dict(from_dict(to_dict(cfg))) == to_dict(cfg)


def test_every_knob_has_help_text():
    rows = describe()
    assert len(rows) > 50
    assert all(text for _, _, text in rows), [key for key, _, text in rows if not text]


def test_help_config_shows_each_knobs_rules_from_its_own_field():
    rows = {key: text for key, _, text in describe()}
    assert rows["learner.zero_stage"].endswith("[one of: 1, 2, 3]")
    assert rows["sampling.top_p"].endswith("[> 0; <= 1]")
    assert rows["synthesis.styles"].endswith("[one of: text, code, agent, guided]")
    assert "[" not in rows["model.path"]  # no rule, nothing shown


def test_a_knob_rule_is_enforced_where_the_knob_is_defined():
    import dataclasses

    from r1ci.config import Config, knob, validate

    @dataclasses.dataclass
    class Extra:
        ratio: float = knob(0.5, "A ratio.", ge=0, lt=1)

    @dataclasses.dataclass
    class WithExtra(Config):
        extra: Extra = dataclasses.field(default_factory=Extra)

    cfg = WithExtra()
    validate(cfg)
    cfg.extra.ratio = 1.0
    with pytest.raises(ConfigError, match=r"extra.ratio: must be < 1, got 1.0"):
        validate(cfg)
    with pytest.raises(TypeError, match="unknown rule"):
        knob(1, "x", positive=True)


def test_shipped_configs_load():
    from pathlib import Path

    for path in Path(__file__).parent.parent.joinpath("configs").glob("*.yaml"):
        load_config(path)
