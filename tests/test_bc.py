"""Behaviour cloning imitates a heuristic teacher."""

import torch

from vidur_ppo.ppo.bc import agreement, collect_demos, train_bc
from vidur_ppo.routing.env import VidurRoutingEnv
from vidur_ppo.models import make_model

from conftest import OUTPUTS, PROMPTS

WL = {"kind": "synthetic", "num_requests": 150, "qps": 12.0, "prefill": PROMPTS, "decode": OUTPUTS}


def test_bc_reaches_90_percent_agreement_with_lor():
    # vidur's LOR looks only at *waiting* requests, which the queue features show (the legacy
    # features mix waiting and running, and reach ~65% agreement)
    env = VidurRoutingEnv(cluster={"num_replicas": 3}, workload=WL, features="queue")
    demos = collect_demos(env, "lor", seeds=[1, 2, 3, 4, 5])
    torch.manual_seed(0)
    model = make_model({"name": "gru", "actor_hidden": 320, "actor_layers": 3, "critic_hidden": 64,
                        "critic_layers": 1}, 3, env.features.num_features)
    before = agreement(model, demos[4:])
    losses = train_bc(model, demos[:4], epochs=30, lr=2e-3, seq_len=32)
    after = agreement(model, demos[4:])
    assert losses[-1] < losses[0]
    assert after >= 0.9, f"agreement {after:.3f} (before training {before:.3f})"


def test_dagger_lets_the_policy_drive_and_the_planner_label():
    import numpy as np
    import pytest

    from vidur_ppo.checks import ConfigError
    from vidur_ppo.eval.paired import TorchPolicy
    from vidur_ppo.ppo.bc import BCConfig, warm_start

    env = VidurRoutingEnv(cluster={"num_replicas": 2}, workload={**WL, "num_requests": 40}, features="queue")
    torch.manual_seed(0)
    model = make_model({"name": "attn_gru"}, 2, env.features.num_features)
    # the learner drives: the episode follows its actions, and every label is the teacher's choice there
    visited = collect_demos(env, "lookahead_one_step", [3], learner=TorchPolicy(model))[0]
    assert list(env._actions) != visited.actions.tolist()  # the untrained policy drove, not the teacher
    assert 0.0 <= visited.learner_agreement <= 1.0 and len(visited.actions) == 40
    cfg = BCConfig(teacher="lookahead_one_step", episodes=1, holdout_episodes=1, epochs=3, dagger_rounds=2,
                   dagger_episodes=1)
    bars = []
    train, result, seeds = warm_start(model, env, cfg, np.random.default_rng(0), 1000, 1, bar=_recording(bars))
    assert len(train) == 3 and len(seeds) == 1  # the teacher's episode, then one policy-driven episode per round
    assert {"dagger0_policy_agreement", "dagger1_policy_agreement", "agreement"} <= set(result)
    # one bar per phase, each run to its end: labelled episodes first (a planner's take long), then epochs
    assert [(b.desc.split(":")[0], b.n, b.total) for b in bars] == [
        ("BC", 2, 2), ("BC epochs", 3, 3), ("DAgger 1/2", 1, 1), ("DAgger 1/2 epochs", 3, 3), ("DAgger 2/2", 1, 1),
        ("DAgger 2/2 epochs", 3, 3)]
    assert "lookahead_one_step labels" in bars[0].desc
    with pytest.raises(ConfigError, match="bc.teacher"):
        BCConfig(teacher="oracle")


def _recording(bars, on_update=None):
    """A progress bar factory (bc.Bar) that keeps its bars, written to a string, for inspection."""
    import io

    from tqdm import tqdm

    class Bar(tqdm):
        def update(self, n=1):
            super().update(n)
            if on_update:
                on_update()

    def bar(total, desc):
        bars.append(Bar(total=total, desc=desc, file=io.StringIO()))
        return bars[-1]

    return bar


def test_sigterm_ends_labelling_at_the_next_decision():
    import os
    import signal

    import pytest

    from vidur_ppo.interrupts import StopRequested, StopSignals

    env = VidurRoutingEnv(cluster={"num_replicas": 2}, workload={**WL, "num_requests": 30}, features="queue")
    bars = []
    with StopSignals() as stop, pytest.raises(StopRequested) as stopped:
        # a real SIGTERM to this process once the first episode is labelled
        collect_demos(env, "jsq", [1, 2, 3], stop=stop, bar=_recording(bars, lambda: os.kill(os.getpid(), signal.SIGTERM)))
    assert stopped.value.signum == signal.SIGTERM
    assert bars[0].n == 1 and bars[0].total == 3  # the second episode never finished
    model = make_model({"name": "gru"}, 2, env.features.num_features)
    demos = collect_demos(env, "jsq", [1])
    with StopSignals() as stop, pytest.raises(StopRequested):
        train_bc(model, demos, epochs=50, lr=1e-3, seq_len=16, stop=stop,
                 bar=_recording(bars, lambda: os.kill(os.getpid(), signal.SIGTERM)))
    assert bars[-1].n == 1  # within one epoch


def test_episodes_labelled_in_parallel_are_the_ones_labelled_in_process():
    """bc.label_workers > 1: the teacher's episodes and the policy-driven (DAgger) ones, labelled by two local
    workers from the slots' specs, equal the in-process demonstrations, slot rotation included."""
    import dataclasses

    from vidur_ppo.build import EnvSpec
    from vidur_ppo.eval.paired import TorchPolicy
    from vidur_ppo.ppo.bc import EpisodeLabeller
    from vidur_ppo.routing.features import features_config
    from vidur_ppo.routing.rewards import reward_config
    from vidur_ppo.routing.safety import SafetyConfig
    from vidur_ppo.sim.cluster import ClusterSpec

    spec = EnvSpec(ClusterSpec(num_replicas=2), {**WL, "num_requests": 30}, reward_config(None),
                   features_config("queue"), SafetyConfig())
    slots = [spec, dataclasses.replace(spec, workload={**spec.workload, "qps": 20.0})]
    envs = [s.make() for s in slots]
    torch.manual_seed(0)
    model = make_model({"name": "attn_gru"}, 2, envs[0].features.num_features)
    labeller = EpisodeLabeller(slots, None, workers=2)
    for learner, first in ((None, 0), (TorchPolicy(model), 1)):
        here = collect_demos(envs, "jsq", [5, 6, 7], learner=learner, first=first)
        there = collect_demos(envs, "jsq", [5, 6, 7], learner=learner, first=first, labeller=labeller)
        assert len(here) == len(there) == 3
        for a, b in zip(here, there):
            assert torch.equal(a.feats, b.feats) and torch.equal(a.actions, b.actions)
            assert a.learner_agreement == b.learner_agreement


def test_a_warm_start_labelled_in_workers_trains_the_model_labelled_in_process():
    """BC then a DAgger round, once labelled here and once by two label workers: the same weights, bit for bit
    (DAgger's learner leaves the model recording attention, which changes its training kernel: it must do so
    whichever process the learner decides in)."""
    import numpy as np

    from vidur_ppo.build import EnvSpec
    from vidur_ppo.ppo.bc import BCConfig, EpisodeLabeller, warm_start
    from vidur_ppo.routing.features import features_config
    from vidur_ppo.routing.rewards import reward_config
    from vidur_ppo.routing.safety import SafetyConfig
    from vidur_ppo.sim.cluster import ClusterSpec

    spec = EnvSpec(ClusterSpec(num_replicas=2), {**WL, "num_requests": 40}, reward_config(None),
                   features_config("queue"), SafetyConfig())
    cfg = BCConfig(teacher="jsq", episodes=2, holdout_episodes=1, epochs=3, dagger_rounds=1, dagger_episodes=2)
    weights = []
    for labeller in (None, EpisodeLabeller([spec], None, workers=2)):
        torch.manual_seed(0)
        model = make_model({"name": "attn_gru"}, 2, spec.make().features.num_features)
        warm_start(model, [spec.make()], cfg, np.random.default_rng(0), 10_000, update_threads=1, labeller=labeller)
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
