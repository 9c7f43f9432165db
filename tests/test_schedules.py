"""PPO strategy controllers: entropy schedules hit their end, the KL controller moves the right
way, early stop triggers, fading BC fades."""

import pytest

from vidur_ppo.ppo.bc import bc_weight
from vidur_ppo.ppo.config import PPOConfig
from vidur_ppo.ppo.schedules import EntropySchedule, KLController


@pytest.mark.parametrize("kind", ["linear", "exponential"])
def test_entropy_schedule_reaches_its_end_value(kind):
    s = EntropySchedule(kind, start=0.02, end=0.001, decay_updates=10)
    values = [s.value(u) for u in range(0, 15)]
    assert values[0] == pytest.approx(0.02) and values[10] == pytest.approx(0.001) and values[14] == pytest.approx(0.001)
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert EntropySchedule("linear", 0.02, 0.0, 10).value(10) == 0.0


def test_constant_and_target_entropy():
    assert EntropySchedule("constant", 0.02).value(100) == 0.02
    s = EntropySchedule("target_entropy", start=0.01, target=1.0, lr=0.5)
    s.observe(0.2)  # entropy below target -> more exploration bonus
    assert s.coef > 0.01
    c = s.coef
    s.observe(1.3)
    assert s.coef < c
    with pytest.raises(ValueError):  # checked once, by the config
        PPOConfig(entropy_schedule="target_entropy")


def test_kl_penalty_coefficient_moves_the_right_way():
    k = KLController("penalty", target=0.1, coef=0.2)
    k.update(0.5)
    assert k.penalty == 0.4  # KL far above target: doubled
    k.update(0.01)
    assert k.penalty == 0.2  # far below: halved
    k.update(0.1)
    assert k.penalty == 0.2  # near target: kept
    assert not k.should_stop(10.0)  # penalty only


def test_early_stop_triggers_past_the_bound():
    k = KLController("early_stop", target=0.1, early_stop_factor=1.5)
    assert not k.should_stop(0.14) and k.should_stop(0.16)
    assert k.penalty == 0.0


def test_lr_adaptation_from_kl():
    k = KLController("both", target=0.1, adapt_lr=True, lr_bounds=(1e-5, 1e-3))
    assert k.adapt(3e-4, 0.5) < 3e-4 and k.adapt(3e-4, 0.01) > 3e-4 and k.adapt(3e-4, 0.1) == 3e-4
    assert k.adapt(1e-3, 0.0) == 1e-3  # bounded


def test_fading_bc_weight():
    assert [bc_weight(0.5, 4, u) for u in (0, 2, 4, 9)] == [0.5, 0.25, 0.0, 0.0]
    assert bc_weight(0.5, 0, 0) == 0.0
