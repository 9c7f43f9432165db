"""The policy workers as Ray actors (RayPolicyWorkerSampler) give PolicyWorkerSampler's rollouts exactly, their
states load into each other, and a dead actor is one clear error. One local Ray for the module: 4 logical CPUs,
for the pair's two actors and the kill test's two (an actor takes one CPU)."""

import pytest
import torch

from vidur_ppo.models import make_model
from vidur_ppo.ppo.rollout import RolloutBatch
from vidur_ppo.ppo.samplers import WORKER_DIED, PolicyWorkerSampler, RayPolicyWorkerSampler, RolloutWorkerDied

from test_sampler import KW, SPEC

ray = pytest.importorskip("ray")

ARGS = dict(env_kwargs=KW, num_envs=3, num_workers=2, model_cfg=SPEC, num_replicas=3, num_features=8, seed=5)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def pair(local_ray):
    """Both samplers over the same envs (3 envs in workers of 2 + 1) and seeds, and a policy."""
    torch.manual_seed(0)
    model = make_model(SPEC, 3, 8)
    procs, actors = PolicyWorkerSampler(**ARGS), RayPolicyWorkerSampler(**ARGS)
    yield procs, actors, model
    procs.close()
    actors.close()


def assert_same(a: RolloutBatch, b: RolloutBatch) -> None:
    for k in RolloutBatch.TENSORS + ("last_value",):
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    assert all(torch.equal(x, y) for x, y in zip(a.states, b.states, strict=True))
    assert (a.returns, a.episodes, a.reward_parts) == (b.returns, b.episodes, b.reward_parts)


def assert_same_state(a, b) -> None:
    """Nested worker states (lists, dicts, tensors, arrays, scalars) equal."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same_state(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_state(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert type(a) is type(b) and (a == b if not hasattr(a, "shape") else (a == b).all())


def test_ray_actors_give_the_process_workers_rollouts(pair):
    procs, actors, model = pair
    for s in (procs, actors):
        s.reset([1, 2, 3])
    for _ in range(2):  # episodes (20 decisions) end inside the second rollout: autoreset included
        assert_same(procs.collect(model, 16), actors.collect(model, 16))
    calls = procs.call("snapshot"), actors.call("snapshot")
    assert len(calls[0]) == 3
    assert_same_state(*calls)
    assert_same_state(procs.state_dict(), actors.state_dict())  # one format: checkpoints are interchangeable


def test_a_state_from_either_sampler_continues_identically_in_the_other(pair):
    procs, actors, model = pair
    procs.reset([7, 8, 9])
    actors.reset([4, 5, 6])  # somewhere else entirely, until it loads the processes' state
    procs.collect(model, 12)
    actors.load_state_dict(procs.state_dict())
    assert_same(procs.collect(model, 12), actors.collect(model, 12))
    actors.collect(model, 5)
    procs.load_state_dict(actors.state_dict())
    assert_same(actors.collect(model, 12), procs.collect(model, 12))
    with pytest.raises(ValueError, match="holds 1 rollout workers' states, this sampler has 2"):
        actors.load_state_dict(procs.state_dict()[:1])


def test_a_killed_actor_is_one_clear_error(local_ray):
    model = make_model(SPEC, 3, 8)
    sampler = RayPolicyWorkerSampler(**{**ARGS, "num_envs": 2})
    sampler.reset([1, 2])
    sampler.collect(model, 4)
    ray.kill(sampler.actors[1])
    with pytest.raises(RolloutWorkerDied) as err:
        sampler.collect(model, 4)
    assert str(err.value).startswith(WORKER_DIED) and "\n" not in str(err.value)  # train.py adds the run dir
    assert err.value.__cause__ is None
    sampler.close()  # closed by the error already: a second close is a no-op
    with pytest.raises(ray.exceptions.RayActorError):  # the surviving actor was killed too
        ray.get(sampler.actors[0].state.remote(), timeout=30)


def test_an_error_inside_an_actor_comes_with_its_traceback(local_ray):
    sampler = RayPolicyWorkerSampler(**{**ARGS, "num_envs": 1})
    with pytest.raises(RuntimeError, match=r"(?s)a rollout worker failed:.*File .*samplers.py.*in call"
                                           r".*AttributeError: 'VidurRoutingEnv' object has no attribute 'no_such"):
        sampler.call("no_such_method")
    sampler.close()


def test_a_worker_that_cannot_start_says_why(local_ray):
    sampler = RayPolicyWorkerSampler(**{**ARGS, "num_envs": 1, "model_cfg": {**SPEC, "name": "no_such_model"}})
    with pytest.raises(RuntimeError, match=r"(?s)a rollout worker failed:.*creation task.*no_such_model") as err:
        sampler.reset([1])
    assert "\x1b[" not in str(err.value)
