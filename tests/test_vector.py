"""The grouped vector env behaves exactly like gymnasium's SyncVectorEnv."""

import numpy as np
import pytest

from vidur_ppo.ppo.vector import make_vector_env
from vidur_ppo.ppo.vector import GroupedAsyncVectorEnv

from conftest import OUTPUTS, PROMPTS

WL = {"kind": "synthetic", "num_requests": 15, "qps": 8.0, "prefill": PROMPTS, "decode": OUTPUTS}
KW = {"cluster": {"num_replicas": 2}, "workload": WL}


def _roll(venv, steps=40):
    obs, info = venv.reset(seed=[3, 4, 5])
    rng = np.random.default_rng(0)
    trail = [obs["replicas"].copy()]
    rewards, terms, metrics = [], [], []
    for _ in range(steps):
        obs, r, term, trunc, info = venv.step(rng.integers(2, size=3))
        trail.append(obs["replicas"].copy())
        rewards.append(r)
        terms.append(term)
        if "episode_metrics" in info:
            m = info["episode_metrics"]
            metrics.append(np.where(info["_episode_metrics"], m["e2e_p99"], np.nan))
    venv.close()
    return np.stack(trail), np.stack(rewards), np.stack(terms), np.stack(metrics)


def test_grouped_equals_sync_including_autoreset_and_infos():
    sync = _roll(make_vector_env(3, mode="sync", **KW))
    grouped = _roll(make_vector_env(3, mode="grouped", num_workers=2, **KW))
    for a, b in zip(sync, grouped):
        np.testing.assert_array_equal(a, b)
    assert sync[2].sum() >= 3  # every env finished an episode and was reset


def test_worker_errors_surface_in_the_parent():
    venv = make_vector_env(2, mode="grouped", num_workers=2, **KW)
    venv.reset(seed=0)
    with pytest.raises(RuntimeError, match="env worker failed"):
        venv.step(np.array([0, 7]))  # replica 7 does not exist
    assert isinstance(venv, GroupedAsyncVectorEnv)
