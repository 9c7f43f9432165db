"""A trained run dir as a routing decision over reported replica states: the env's observation, the env's policy.

The same objects the simulator evaluation uses: the run's `FeatureSet` (built from its config.yaml, with its
trend and length-history state carried across decisions) and `checkpoint.load_policy`'s deterministic
`TorchPolicy` (its recurrent state carried across decisions), its forward traced for serving (`TracedPolicy`).
Pure Python, no Ray: the Serve router calls it and tests/test_serve_parity.py checks it against the env decision by
decision.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from vidur_ppo.eval.paired import TorchPolicy
from vidur_ppo.routing.features import features_config, make_feature_set
from vidur_ppo.serve.stats import RoutedRequest, state_matrix
from vidur_ppo.sim.driver import ReplicaColumn

log = logging.getLogger(__name__)

#: feature sets whose columns a replica cannot report without a prefix cache (ReplicaColumn.cached_prefix)
UNSUPPORTED_FEATURES = ("prefix",)
#: untimed runs of a new trace: TorchScript's executor profiles a graph on its first runs (ms each)
TRACE_WARMUP_RUNS = 3


class _Step(torch.nn.Module):
    """One decision step of a model as a function of tensors only, for torch.jit.trace."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, feats, starts, state):
        logits, _, state = self.model(feats, state, starts, with_value=False)
        return logits, state


class TracedPolicy(TorchPolicy):
    """`TorchPolicy`'s deterministic decision, its forward traced (torch.jit.trace) once per input shape.

    The trace is the aten ops the eager forward runs, attention weights included (as TorchPolicy asks for
    them), without nn.Module's Python dispatch on every call: about 2/3 of the eager forward's time. It
    runs unoptimised (`optimized_execution(False)`: no graph passes, so the same kernels on the same inputs
    and the same logits bit for bit) in inference mode. Serving only: no attention map, no sampling.

    torch.jit is deprecated (torch 2.13) but the only way measured to run exactly the eager ops without their
    Python: torch.export swaps the fused attention for bmm + softmax (slower than eager), torch.compile breaks
    its graph at the GRU (no faster) and inductor changes the logits."""

    def __init__(self, policy: TorchPolicy) -> None:
        if not policy.deterministic:
            raise ValueError("TracedPolicy decides deterministically (argmax); use TorchPolicy to sample")
        super().__init__(policy.model, deterministic=True)
        self._steps: Dict[torch.Size, torch.jit.ScriptModule] = {}
        self._running = torch.zeros((1, 1))  # `start` after an episode's first decision

    def prepare(self, num_replicas: int) -> None:
        """Trace for `num_replicas` now (tracing and its warm-up take tens of ms: not in a decision)."""
        self._step(torch.zeros((1, 1, num_replicas, self.model.num_features)))

    def _step(self, feats: torch.Tensor):
        step = self._steps.get(feats.shape)
        if step is None:  # the model records attention (TorchPolicy's constructor set it): the eager path's ops
            with torch.inference_mode(), warnings.catch_warnings():
                # shape checks become constants of the trace: one trace per input shape
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.filterwarnings("ignore", "`torch.jit.trace", DeprecationWarning)  # see the docstring
                step = torch.jit.trace(_Step(self.model).eval(), (feats, self.start, self.state), check_trace=False)
                with torch.jit.optimized_execution(False):
                    for _ in range(TRACE_WARMUP_RUNS):
                        step(feats, self.start, self.state)
            self._steps[feats.shape] = step
        return step

    @torch.inference_mode()
    def __call__(self, obs) -> int:
        feats = torch.as_tensor(obs["features"]).view(1, 1, *obs["features"].shape)
        step = self._step(feats)
        with torch.jit.optimized_execution(False):
            logits, self.state = step(feats, self.start, self.state)
        self.start, self.logits = self._running, logits[0, 0]
        return int(self.logits.argmax())


class LearnedRouting:
    """`route(reports, request, now)` / `decide(state, request, now)` -> (replica row, observation) with a
    trained run's features and policy (`traced=False`: the env evaluation's eager `TorchPolicy`)."""

    def __init__(self, run_dir: str | Path, traced: bool = True) -> None:
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
        if traced:
            try:
                traced_policy = TracedPolicy(self.policy)
                traced_policy.prepare(self.trained_replicas)
                self.policy = traced_policy
            except Exception as exc:  # noqa: BLE001 - e.g. a torch without torch.jit: the eager path decides the same
                log.warning("the policy's forward could not be traced (%s): deciding with the eager forward", exc)
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
