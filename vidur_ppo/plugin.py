"""A trained checkpoint as one of vidur's own global schedulers.

`PolicyGlobalScheduler` is registered in vidur's `GlobalSchedulerRegistry` (type `ppo`), so a
vidur user can run a trained policy inside vidur's `Simulator.run()` and compare it with
`round_robin` / `lor` without our env:

    python -m vidur_ppo.plugin --global_scheduler_config_type ppo \\
        --policy_global_scheduler_config_checkpoint outputs/<date>/<time> [other vidur flags]

(vidur's CLI with this module imported: the same flags as `python -m vidur.main`). In Python,
`SimulationConfig(cluster_config=ClusterConfig(global_scheduler_config=PolicyGlobalSchedulerConfig(
checkpoint=...)))`. The scheduler sees each replica the way the env does (the same state and
feature code), so it makes the same decisions as the policy does in `VidurRouting-v0`
(tests/test_plugin.py checks this request by request).
"""

# No `from __future__ import annotations`: vidur's CLI flattener needs real field types.
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np
from vidur.config import BaseGlobalSchedulerConfig
from vidur.entities import Request
from vidur.logger import init_logger
from vidur.scheduler.global_scheduler.base_global_scheduler import BaseGlobalScheduler
from vidur.scheduler.global_scheduler.global_scheduler_registry import GlobalSchedulerRegistry
from vidur.types import BaseIntEnum, ReplicaId

from vidur_ppo.sim import cluster as _cluster  # noqa: F401 - applies the compat fixes, registers our keys
from vidur_ppo.sim import predictor as _predictor  # noqa: F401 - registers the offline roofline predictor
from vidur_ppo.routing.env import request_vector
from vidur_ppo.sim.driver import replica_state

logger = init_logger("vidur.vidur_ppo.plugin")  # under vidur's logger, so its CLI shows it


class PluginSchedulerType(BaseIntEnum):
    PPO = 102


@dataclass
class PolicyGlobalSchedulerConfig(BaseGlobalSchedulerConfig):
    checkpoint: str = field(default="", metadata={"help": "vidur-ppo run dir (config.yaml + checkpoint.pt)."})
    deterministic: bool = field(default=True, metadata={"help": "Most likely replica (else sample)."})

    @staticmethod
    def get_type():
        return PluginSchedulerType.PPO


class PolicyGlobalScheduler(BaseGlobalScheduler):
    """Routes each request with a trained vidur-ppo policy."""

    def __init__(self, config, replicas) -> None:
        super().__init__(config, replicas)
        from vidur_ppo.build import env_spec
        from vidur_ppo.checkpoint import load_policy
        from vidur_ppo.routing.features import make_feature_set
        from vidur_ppo.routing.length_predictor import LengthPredictor
        from vidur_ppo.routing.capacity import replica_speeds

        gs = config.cluster_config.global_scheduler_config
        if not gs.checkpoint:
            raise ValueError("the ppo global scheduler needs --policy_global_scheduler_config_checkpoint <run dir>")
        self.policy, run_cfg = load_policy(gs.checkpoint, deterministic=gs.deterministic)
        spec = env_spec(run_cfg)  # the run's own features and length predictor, as the env builds them
        self.features = make_feature_set(spec.features)
        self.lengths = LengthPredictor(spec.length_predictor)
        self._draws = self.lengths.draws(0, 1 << 16)  # per request id, as an env episode of seed 0
        self._predicted = np.zeros(1 << 16, dtype=np.int64)  # by request id, filled as requests arrive
        self._error = np.zeros(1 << 16, dtype=np.int64)  # predicted - true
        # a mixed cluster's replica speeds, as the env measures them (the run's own cluster and workload)
        self._speed = replica_speeds(spec.cluster, spec.workload) if spec.cluster.num_replicas == self._num_replicas \
            else None
        self.policy.reset()
        self.features.reset()
        self._ordered = [self._replica_schedulers[ReplicaId(i)] for i in range(self._num_replicas)]
        self._requests: Dict[int, Request] = {}
        logger.info(f"routing with the vidur-ppo policy of {gs.checkpoint}")

    def schedule(self) -> List[Tuple[ReplicaId, Request]]:
        self.sort_requests()
        now = max(r.arrived_at for r in self._request_queue) if self._request_queue else 0.0
        mapping: List[Tuple[ReplicaId, Request]] = []
        while self._request_queue:
            request = self._request_queue.pop(0)
            self._requests[request.id] = request
            true = request.num_decode_tokens
            self._predicted[request.id] = self.lengths.apply([true], self._draws[[request.id]])[0]
            self._error[request.id] = self._predicted[request.id] - true
            exact = self.lengths.exact
            state = replica_state(self._ordered, self._requests, now, mapping, None if exact else self._error,
                                  self._speed, request)
            req = request_vector(request, None if exact else self._predicted)
            action = self.policy({"features": self.features(state, req, now)})
            mapping.append((ReplicaId(int(action)), request))
        return mapping


GlobalSchedulerRegistry.register(PluginSchedulerType.PPO, PolicyGlobalScheduler)


def main() -> None:
    """vidur's own CLI, with the `ppo` global scheduler and the offline `roofline` predictor."""
    import logging

    from vidur import main as vidur_main

    logging.getLogger("vidur").setLevel(logging.INFO)  # vidur's CLI prints its progress
    if not any(a.endswith("metrics_config_store_plots") for a in sys.argv):
        # vidur's plots are written through Kaleido, which needs a Google Chrome install (none offline):
        # off unless asked for (`--metrics_config_store_plots`); the metrics CSVs are written either way
        sys.argv.append("--no-metrics_config_store_plots")
    vidur_main.main()


if __name__ == "__main__":
    main()
