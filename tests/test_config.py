"""Every option of every group composes; bad configs fail at start naming the key."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError

from vidur_ppo.config import ConfigError, register_configs, validate

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["env", "workload", "reward", "features", "model", "ppo", "curriculum", "slots", "logger", "eval", "experiment", "debug"]
register_configs()


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(group, option):
    overrides = [f"{group}={option}"]
    if group == "workload" and option == "trace":
        overrides.append("workload.path=some.csv")
    cfg = _compose(overrides)
    tc = validate(cfg)
    assert tc.ppo.num_updates > 0 and tc.env.num_replicas >= 1


def test_each_group_has_options():
    for g in GROUPS:
        assert options(g), f"conf/{g}/ is empty"


@pytest.mark.parametrize("override,key", [("ppo.lrr=1", "lrr"), ("env.num_replica=3", "num_replica"),
                                          ("reward.slope=3", "slope")])
def test_typo_key_fails_at_composition_naming_it(override, key):
    with pytest.raises((ConfigCompositionException, ConfigKeyError), match=key):
        _compose([override])


def test_unknown_option_fails_listing_available():
    with pytest.raises(Exception, match="Could not find 'model/transformer'"):
        _compose(["model=transformer"])


@pytest.mark.parametrize("override,message", [
    ("ppo.lr=-1", "ppo.lr must be > 0"),
    ("ppo.gae_lambda=1.5", "ppo.gae_lambda must be in [0, 1]"),
    ("ppo.gamma=-0.1", "ppo.gamma must be in [0, 1]"),
    ("ppo.seq_len=33", "ppo.seq_len must divide"),
    ("env.replica_scheduler=fcfs", "replica_scheduler='fcfs'"),
    ("bc.teacher=oracle", "bc.teacher must be a heuristic or a planner"),
    ("eval.baselines=[rr]", "eval.baselines must be heuristics"),
    ("workload.qps=0", "workload.qps must be > 0"),
    ("reward.credit=decision", "ppo.rollout_steps must be a multiple of workload.num_requests=1000"),
    ("features=size_aware", None),
])
def test_bad_values_fail_with_one_line_naming_the_key(override, message):
    if message is None:  # a good value, for contrast
        validate(_compose([override]))
        return
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate(_compose([override]))


@pytest.mark.parametrize("override,key", [("ppo.lr=fast", "ppo.lr"), ("reward.credit=hindsight", "reward.credit"),
                                          ("ppo.vector_mode=threads", "ppo.vector_mode")])
def test_bad_type_or_choice_names_the_key(override, key):
    with pytest.raises(Exception, match=key):
        _compose([override])


def test_smoke_shrinks_only_what_was_not_set():
    cfg = _compose(["debug=smoke", "ppo.num_updates=5"])
    assert cfg.ppo.num_updates == 5 and cfg.ppo.rollout_steps == 60 and cfg.workload.num_requests == 60
    validate(cfg)
