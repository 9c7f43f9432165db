"""End to end in a real local Ray Serve: simulated engine replicas behind the learned router.

Two replicas of a mixed A100 + H100 cluster (serve/engine.py: vidur's replica run against the wall clock,
4x faster than real time) report their state; requests sent through a DeploymentHandle are routed by
`LearnedRequestRouter` on a tiny trained run (the parity test's fixture), which lives in this process.
"""

import asyncio
import time

import pytest

from test_serve_parity import run_dir  # noqa: F401 - the module fixture: a tiny trained run

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from vidur_ppo.routing.capacity import replica_speeds  # noqa: E402
from vidur_ppo.build import env_spec  # noqa: E402
from vidur_ppo.checkpoint import load_policy  # noqa: E402
from vidur_ppo.serve.deployment import engine_deployment, start_quietly  # noqa: E402
from vidur_ppo.serve.router import router_report  # noqa: E402

REQUESTS = 12


@pytest.fixture(scope="module")
def engine(run_dir):  # noqa: F811
    spec = env_spec(load_policy(run_dir)[1])
    start_quietly(num_cpus=2, http_port=0)
    handle = serve.run(engine_deployment(spec.cluster, list(replica_speeds(spec.cluster, spec.workload)),
                                         str(run_dir), time_scale=4.0, stats_period_s=0.05),
                       name="serve_router_test", route_prefix=None)
    yield handle
    serve.shutdown()
    ray.shutdown()


def test_learned_router_routes_simulated_engines(engine):
    time.sleep(0.5)  # the first routing stats reach the router

    async def send():
        calls = [engine.remote(prompt_tokens=200 + 50 * i, output_tokens=20 + 5 * i, predicted_output_tokens=30 + 5 * i)
                 for i in range(REQUESTS)]
        calls.append(engine.remote(prompt_tokens=100, output_tokens=10))  # no length estimate: the fallback
        return await asyncio.gather(*calls)

    served = asyncio.run(send())
    assert len(served) == REQUESTS + 1
    for out in served:
        assert out["replica"] in (0, 1)
        assert 0 < out["ttft"] <= out["e2e"]
    report = router_report()
    assert report["routers"] >= 1
    assert report["learned_decisions"] >= REQUESTS // 2  # stats arrived: the policy made the decisions
    assert report["fallbacks"].get("MissingRequestSize") == 1
    assert report["decision_ms_p99"] is not None and report["decision_ms_p99"] < 50
