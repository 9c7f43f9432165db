"""Length predictors: every kind's errors have the documented shape, are seeded by the episode, and
the heuristics that read lengths see the predictions (oracle is the exact ablation)."""

import numpy as np
import pytest

from vidur_ppo.checks import ConfigError
from vidur_ppo.routing.length_predictor import LengthPredictor, LengthPredictorConfig

TRUE = np.random.default_rng(0).lognormal(np.log(128), 0.9, 20_000).round().clip(8, 1000)


def test_oracle_is_exact_and_lognormal_has_its_sigma():
    assert np.array_equal(LengthPredictor("oracle").predict(TRUE, 5), TRUE.astype(int))
    pred = LengthPredictor({"kind": "lognormal", "sigma": 0.5}).predict(TRUE, 5)
    assert abs(np.log(pred / TRUE).std() - 0.5) < 0.02
    assert np.median(np.abs(pred / TRUE - 1)) == pytest.approx(0.33, abs=0.02)  # README: median error 33%
    assert np.array_equal(pred, LengthPredictor("lognormal").predict(TRUE, 5))  # seeded by the episode
    assert not np.array_equal(pred, LengthPredictor("lognormal").predict(TRUE, 6))
    # a request's prediction does not depend on how many requests the episode has
    assert np.array_equal(LengthPredictor("lognormal").predict(TRUE[:10], 5), pred[:10])


def test_bucketed_classifier_follows_its_confusion_matrix():
    p = LengthPredictor({"kind": "bucketed", "buckets": [64, 256], "accuracy": 0.7})
    m = p.confusion()
    assert np.allclose(m, [[0.7, 0.3, 0.0], [0.15, 0.7, 0.15], [0.0, 0.3, 0.7]])
    pred = p.predict(TRUE, 1)
    true_b, pred_b = np.searchsorted([64, 256], TRUE, "right"), np.searchsorted([64, 256], pred, "right")
    assert (true_b == pred_b).mean() == pytest.approx(0.7, abs=0.02)
    assert np.abs(true_b - pred_b).max() == 1  # errors only to adjacent buckets
    assert set(np.unique(pred)) <= {round(np.sqrt(1 * 63)), round(np.sqrt(64 * 255)), round(np.sqrt(256 * 511))}
    explicit = LengthPredictor({"kind": "bucketed", "buckets": [64], "confusion": [[0, 1], [1, 0]]}).predict(TRUE, 1)
    assert ((TRUE < 64) == (explicit >= 64)).all()  # always the other bucket


def test_none_predicts_one_length_for_everyone():
    assert set(LengthPredictor({"kind": "none", "prior_tokens": 100}).predict(TRUE, 1)) == {100}


@pytest.mark.parametrize("bad, key", [({"kind": "psychic"}, "length_predictor.kind"),
                                      ({"sigma": -0.1}, "length_predictor.sigma"),
                                      ({"buckets": [64, 32]}, "length_predictor.buckets"),
                                      ({"confusion": [[1.0]]}, "length_predictor.confusion"),
                                      ({"accuracy": 2}, "length_predictor.accuracy"), ({"foo": 1}, "length_predictor")])
def test_bad_config_names_the_key(bad, key):
    with pytest.raises(ConfigError, match=key):
        LengthPredictorConfig.of(bad)


def test_heuristics_read_predictions_not_true_lengths():
    """SITA-E's decisions change with the predictor and match the oracle's with `oracle`."""
    from vidur_ppo.routing.env import VidurRoutingEnv, run_episode
    from vidur_ppo.routing.heuristics import make_heuristic
    from vidur_ppo.workloads import DEFAULT_WORKLOAD

    wl = {**DEFAULT_WORKLOAD, "num_requests": 150}
    actions = {}
    for kind in ("oracle", "lognormal", "none"):
        env = VidurRoutingEnv(workload=wl, length_predictor=kind)
        run_episode(env, make_heuristic("sita_e"), seed=11)
        actions[kind] = env.driver.assignment.copy()
    assert not np.array_equal(actions["oracle"], actions["lognormal"])
    assert (actions["none"] == 0).all()  # no length information: every request ties at the cut-off, long pool
