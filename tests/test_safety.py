"""The safety monitor fires on a crafted overload, and can end a training episode early."""

import numpy as np

from vidur_ppo.routing.env import VidurRoutingEnv

from conftest import OUTPUTS, PROMPTS

OVERLOAD = {"kind": "synthetic", "num_requests": 150, "qps": 60.0, "prefill": PROMPTS, "decode": OUTPUTS}


def _run(env, seed=0):
    obs, _ = env.reset(seed=seed)
    steps, done, info = 0, False, {}
    while not done:
        obs, r, term, trunc, info = env.step(0)  # everything to replica 0: a starving, growing queue
        steps += 1
        done = term or trunc
    return steps, r, term, trunc, info


def test_overload_triggers_are_counted_and_every_request_still_finishes():
    env = VidurRoutingEnv(cluster={"num_replicas": 2, "num_blocks": 600}, workload=OVERLOAD, slo_e2e=2.0,
                          safety={"max_queue": 8, "latency_cutoff": 2.0})
    steps, _, term, trunc, info = _run(env)
    m = info["episode_metrics"]
    assert term and not trunc and steps == 150 and m["num_completed"] == 150
    assert m["safety_latency_triggers"] > 0 and m["safety_queue_triggers"] > 0


def test_terminate_ends_the_episode_with_a_penalty():
    env = VidurRoutingEnv(cluster={"num_replicas": 2, "num_blocks": 600}, workload=OVERLOAD, slo_e2e=2.0,
                          safety={"max_queue": 8, "terminate": True, "penalty": 50.0})
    steps, r, term, trunc, info = _run(env)
    assert trunc and not term and steps < 150 and r <= -50.0 + 4.0
    assert info["episode_metrics"]["safety_terminated"] == 1


def test_balanced_light_load_triggers_nothing():
    env = VidurRoutingEnv(cluster={"num_replicas": 2}, slo_e2e=20.0,
                          workload={**OVERLOAD, "qps": 4.0, "num_requests": 40})
    obs, _ = env.reset(seed=1)
    done = False
    while not done:
        obs, _, done, _, info = env.step(int(np.argmin(obs["replicas"][:, 0] + obs["replicas"][:, 1])))
    assert info["episode_metrics"]["safety_queue_triggers"] == 0
