"""The Serve application: simulated engine replicas behind an ingress, routed by the learned router or Serve's default.

    HTTP POST {"prompt_tokens": p, "output_tokens": o, "predicted_output_tokens": q}
      -> `Ingress` (parses the body, calls the engine through its DeploymentHandle with those kwargs)
      -> `EngineReplica` chosen by the engine deployment's request router
      <- the request's simulated times (ttft, e2e, ...) and the replica's rank

`GET /router_stats` returns the learned routers' decisions, fallbacks and decision overhead in the ingress (the
routers live in the handles that call the engine). Replica i of the engine deployment is the i-th replica of the
cluster spec (a mixed cluster keeps the env's replica order, which size-based features read).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Dict, List, Optional, Sequence

from ray import serve
from ray.serve.config import RequestRouterConfig

from vidur_ppo.serve.stats import routing_stats
from vidur_ppo.sim.cluster import ClusterSpec

LEARNED_ROUTER = "vidur_ppo.serve.router.LearnedRequestRouter"
#: replicas accept far more requests than they batch: queueing happens in vidur's scheduler, as in the env
MAX_ONGOING_REQUESTS = 4096
#: Serve's own logs at WARNING and no access log, so tests and the demo stay readable
QUIET_LOGGING = {"log_level": "WARNING", "enable_access_log": False}
#: replicas and the ingress claim no CPU of their own: a laptop (or CI box) places all of them
NO_CPU = {"num_cpus": 0}


@serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS, ray_actor_options=NO_CPU, logging_config=QUIET_LOGGING)
class EngineReplica:
    """One simulated engine (serve/engine.py) that reports its replica state as routing stats."""

    def __init__(self, cluster: Dict[str, Any], speeds: Sequence[float], time_scale: float = 1.0) -> None:
        from vidur_ppo.serve.engine import SimulatedEngine

        self.rank = int(serve.get_replica_context().rank.rank)
        specs = ClusterSpec.from_mapping(cluster).replica_specs()
        self.engine = SimulatedEngine(specs[self.rank % len(specs)], speed=speeds[self.rank % len(speeds)],
                                      time_scale=time_scale)
        self._loop_task: Optional[asyncio.Task] = None

    def _ensure_running(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self.engine.run())

    async def __call__(self, prompt_tokens: int, output_tokens: int, predicted_output_tokens: Optional[int] = None,
                       **_: Any) -> Dict[str, Any]:
        self._ensure_running()
        served = await self.engine.submit(prompt_tokens, output_tokens, predicted_output_tokens)
        return {**served.to_dict(), "replica": self.rank}

    async def record_routing_stats(self) -> Dict[str, float]:
        """Serve calls this every `request_routing_stats_period_s`; the router reads the result."""
        self._ensure_running()
        return routing_stats(self.engine.state_row(), self.rank, time.time())


@serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS, ray_actor_options=NO_CPU, logging_config=QUIET_LOGGING)
class Ingress:
    """HTTP in front of the engines: the JSON body becomes the engine call's keyword arguments."""

    def __init__(self, engine) -> None:
        self.engine = engine

    async def __call__(self, request) -> Dict[str, Any]:
        from vidur_ppo.serve.router import router_report

        if request.url.path.rstrip("/").endswith("router_stats"):
            return router_report()
        body = await request.json()
        received = time.time()
        out = await self.engine.remote(**body)
        return {**out, "ingress_s": time.time() - received}


def router_config(run_dir: Optional[str], stats_period_s: float = 0.1,
                  max_stats_age_s: float = 2.0) -> RequestRouterConfig:
    """The learned router on `run_dir`; None: Serve's default power-of-two router (same stats period)."""
    if run_dir is None:
        return RequestRouterConfig(request_routing_stats_period_s=stats_period_s)
    return RequestRouterConfig(request_router_class=LEARNED_ROUTER,
                               request_router_kwargs={"run_dir": str(run_dir), "max_stats_age_s": max_stats_age_s},
                               request_routing_stats_period_s=stats_period_s)


def engine_deployment(cluster: ClusterSpec, speeds: List[float], run_dir: Optional[str], time_scale: float = 1.0,
                      stats_period_s: float = 0.1):
    """The engine deployment (one replica per cluster replica) bound to its arguments, with its router."""
    return EngineReplica.options(num_replicas=cluster.num_replicas,
                                 request_router_config=router_config(run_dir, stats_period_s)).bind(
        cluster.to_dict(), [float(s) for s in speeds], time_scale)


def build_app(cluster: ClusterSpec, speeds: List[float], run_dir: Optional[str], time_scale: float = 1.0,
              stats_period_s: float = 0.1):
    """HTTP ingress -> engine replicas routed by the learned router on `run_dir` (None: power of two)."""
    return Ingress.bind(engine_deployment(cluster, speeds, run_dir, time_scale, stats_period_s))


def start_quietly(num_cpus: Optional[int] = None, http_port: int = 8000) -> None:
    """A local Ray + Serve whose logs stay at WARNING and off the driver's console."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
                 configure_logging=True)
    serve.start(http_options={"port": http_port}, logging_config=QUIET_LOGGING)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
