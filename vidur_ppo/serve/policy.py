"""A trained run dir as a routing decision over reported replica states: the env's observation, the env's policy.

The same objects the simulator evaluation uses: the run's `FeatureSet` (built from its config.yaml, with its
trend and length-history state carried across decisions) and `checkpoint.load_policy`'s deterministic
`TorchPolicy` (its recurrent state carried across decisions). Pure Python, no Ray: the Serve router calls it
and tests/test_serve_parity.py checks it against the env decision by decision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np

from vidur_ppo.routing.features import features_config, make_feature_set
from vidur_ppo.serve.stats import RoutedRequest, state_matrix
from vidur_ppo.sim.driver import ReplicaColumn

#: feature sets whose columns a replica cannot report without a prefix cache (ReplicaColumn.cached_prefix)
UNSUPPORTED_FEATURES = ("prefix",)


class LearnedRouting:
    """`route(reports, request, now)` / `decide(state, request, now)` -> (replica row, observation) with a
    trained run's features and policy."""

    def __init__(self, run_dir: str | Path) -> None:
        import torch
        from omegaconf import OmegaConf

        from vidur_ppo.checkpoint import load_policy

        torch.set_num_threads(1)  # one decision is a few small matmuls: threads only add latency
        self.run_dir = str(run_dir)
        self.policy, cfg = load_policy(run_dir, deterministic=True)
        features = OmegaConf.to_container(cfg.features, resolve=True)
        if features.get("name") in UNSUPPORTED_FEATURES:
            raise ValueError(f"{run_dir}: feature set {features['name']!r} needs each replica's prefix cache "
                             f"({ReplicaColumn.cached_prefix.name}), which the Serve replicas do not report")
        self.features = make_feature_set(features_config(features))
        self.feature_names = tuple(self.features.names)
        self.trained_replicas = int(cfg.env.num_replicas)
        self.reset()

    def reset(self) -> None:
        """A new episode: feature trends and the recurrent state start afresh."""
        self.features.reset()
        self.policy.reset()

    def decide(self, state: np.ndarray, request: np.ndarray, now: float) -> Tuple[int, np.ndarray]:
        """The policy's replica (a row of `state`) and the observation it read."""
        features = self.features(state, request, now)
        return self.policy({"features": features}), features

    def route(self, reports: Sequence[Mapping[str, float]], request: np.ndarray, now: float,
              routed_since: Optional[Sequence[Sequence[RoutedRequest]]] = None) -> Tuple[int, np.ndarray]:
        """`decide` on the state the replicas' routing stats describe (in rank order, serve/stats.py): the
        whole decision of the Serve router."""
        return self.decide(state_matrix(reports, now, routed_since), request, now)
