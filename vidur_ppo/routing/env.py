"""`VidurRouting-v0`: the gymnasium environment in which the agent is vidur's global scheduler.

One step is one routing decision: the observation describes every replica (a matrix
[replicas x features], so attention models stay permutation-equivariant and a policy can run
on other cluster sizes) and the arriving request; the action is the replica index. An episode
is one trace: it ends when the trace is exhausted and every request has finished (the driver
raises if any request would be lost). Each `reset(seed)` builds a fresh vidur simulator.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Union

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from vidur_ppo.routing.features import FeatureSet, FeaturesConfig, make_feature_set
from vidur_ppo.routing.length_predictor import LengthPredictor, LengthPredictorConfig
from vidur_ppo.routing.rewards import Credit, DecisionMetric, Reward, RewardConfig, Step, make_reward
from vidur_ppo.routing.safety import SafetyConfig, SafetyMonitor
from vidur_ppo.sim.cluster import ClusterSpec
from vidur_ppo.sim.driver import REPLICA_STATE_COLUMNS, RequestColumn, SimDriver, request_vector
from vidur_ppo.sim.metrics import DEFAULT_SLO_TPOT, DEFAULT_SLO_TTFT, slo_costs
from vidur_ppo.workloads import SLO_KEYS, WorkloadConfig, make_workload, workload_spec
from vidur_ppo.routing.capacity import replica_speeds

ENV_ID = "VidurRouting-v0"
DEFAULT_SLO_E2E = 8.0  # seconds: the latency SLO of rewards, the safety monitor and the SLO-violation metric
EVAL_SEED_BASE = 100_000  # training draws episode seeds below this; held-out evaluation uses seeds from here up

#: what a router is told of the arriving request (obs["request"], `request_vector`): prompt length, output
#: length as predicted, and a key of the prompt's leading prefix (sim/driver.py's RequestColumn)
REQUEST_FEATURES = tuple(c.name for c in RequestColumn)


class VidurRoutingEnv(gym.Env):
    """Route each arriving request of a vidur simulation to one replica."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        cluster: Union[ClusterSpec, Mapping[str, Any], None] = None,
        workload: Union[WorkloadConfig, Mapping[str, Any], None] = None,
        slo_e2e: float = DEFAULT_SLO_E2E,
        slo_ttft: Optional[float] = None,
        slo_tpot: Optional[float] = None,
        reward: Union[Reward, RewardConfig, Mapping[str, Any], str, None] = None,
        features: Union[FeatureSet, FeaturesConfig, Mapping[str, Any], str, None] = None,
        record_token_times: bool = True,
        seed_limit: int = EVAL_SEED_BASE,
        safety: Union[SafetyConfig, Mapping[str, Any], None] = None,
        length_predictor: Union[LengthPredictorConfig, Mapping[str, Any], str, None] = None,
    ) -> None:
        self.cluster = ClusterSpec.from_mapping(cluster)
        self.cluster.validate()
        self.workload = self._fit_to_cluster(make_workload(workload))
        self._workload_spec = workload_spec(workload)
        # each replica's relative throughput (measured once per group and cached; ones when identical)
        self.replica_speed = replica_speeds(self.cluster, self._workload_spec)
        self.slo_e2e = float(slo_e2e)
        # SLO attainment, goodput and the SLO reward: these when set, else the episode's workload's own
        # (a zoo: the family drawn), else the chatbot defaults (`episode_slos`)
        self.slo_override = {"slo_ttft": slo_ttft, "slo_tpot": slo_tpot}
        self.slos = self.episode_slos(None)
        self.safety = SafetyMonitor(SafetyConfig.of(safety), self.slo_e2e)
        self.reward = reward if isinstance(reward, Reward) else make_reward(reward)
        self.features = features if isinstance(features, FeatureSet) else make_feature_set(features)
        self.record_token_times = record_token_times
        # decision credit (reward.credit=decision): at an episode's end, info["decision_rewards"][k]
        # = minus the k-th routed request's cost (`request_costs`), for the trainer to put at decision k
        rc = self.reward.cfg
        self.decision_credit = float(rc.decision_power) if rc.credit == Credit.decision else None
        # what routers are told of output lengths: predictions, seeded by the episode (oracle: the
        # true ones); the simulation always runs the true lengths
        self.length_predictor = LengthPredictor(length_predictor)
        self._predicted: Optional[np.ndarray] = None
        self._routed: list = []
        # episodes drawn without an explicit seed use seeds below this (evaluation uses seeds above)
        self.seed_limit = int(seed_limit)
        r, f = self.cluster.num_replicas, len(REPLICA_STATE_COLUMNS)
        # "features" is what a model reads; "replicas"/"request" are raw, for heuristics (and BC
        # teachers) and for anyone who wants to build other features outside the env.
        self.observation_space = spaces.Dict(
            {
                "features": spaces.Box(-np.inf, np.inf, shape=(r, self.features.num_features), dtype=np.float32),
                "replicas": spaces.Box(0.0, np.inf, shape=(r, f), dtype=np.float32),
                "request": spaces.Box(0.0, np.inf, shape=(len(REQUEST_FEATURES),), dtype=np.float32),
            }
        )
        self.action_space = spaces.Discrete(r)
        self.driver: Optional[SimDriver] = None
        self._request = None
        self.episode_seed: Optional[int] = None

    # --- gymnasium API -------------------------------------------------------------------

    def reset(self, *, seed: Optional[int] = None, options: Optional[Dict[str, Any]] = None):
        super().reset(seed=seed)
        options = options or {}
        if "trace" in options:
            trace = options["trace"]
            self.episode_seed = options.get("episode_seed")
        else:
            self.episode_seed = int(seed if seed is not None else self.np_random.integers(self.seed_limit))
            trace = self.workload.generate(self.episode_seed)
        self.slos = self.episode_slos(self.episode_seed)  # a zoo's: its drawn family's
        true = np.asarray(trace.num_decode_tokens)
        self._predicted = None if self.length_predictor.exact else self.length_predictor.predict(
            true, self.episode_seed or 0)
        self.driver = SimDriver(self.cluster, trace, record_token_times=self.record_token_times,
                                length_error=None if self._predicted is None else self._predicted - true,
                                replica_speed=self.replica_speed)
        self.features.reset()
        self.reward.reset()
        self.safety.reset()
        self._routed = []
        self._actions: list = []
        self._request = self.driver.next_decision()
        self._state = self.driver.replica_state()
        return self._observe(), self._info()

    def step(self, action):
        if self.driver is None or self._request is None:
            raise RuntimeError("call reset() before step(); the episode has ended")
        routed = self._request
        self._routed.append(routed.id)
        self._actions.append(int(action))
        self._request = self.driver.assign(int(action))
        self._state = self.driver.replica_state()
        completed = self.driver.pop_completed()
        reward, parts = self.reward(Step(completed, self._state, self.driver.now, routed))
        triggers = self.safety.check(completed, self._state)
        terminated = self._request is None
        truncated = False
        if self.safety.terminate and any(triggers.values()) and not terminated:
            reward -= self.safety.penalty  # abandon this episode: a training signal, never in evaluation
            truncated = True
        info = self._info()
        for k, v in parts.items():
            info[f"reward/{k}"] = v
        for k, v in triggers.items():
            info[f"safety/{k}"] = v
        if terminated or truncated:
            summary = self.driver.summary(slo_e2e=self.slo_e2e, **self.slos) if terminated else self._partial_summary()
            summary.update({f"safety_{k}_triggers": v for k, v in self.safety.counts.items()}, **self.slos)
            summary["safety_terminated"] = int(truncated)
            info["episode_metrics"] = summary
            if self.decision_credit is not None:
                info["decision_rewards"] = self.decision_rewards()
            if truncated:
                self._request = None
        return self._observe(), reward, terminated, truncated, info

    def episode_slos(self, seed: Optional[int]) -> Dict[str, float]:
        """The SLOs requests are held to in the episode with this seed: the run's override, else the
        workload's own (a zoo's: the member the seed draws), else DistServe's chatbot SLOs (sim/metrics.py)."""
        spec = self._workload_spec
        if spec.get("members") and seed is not None:
            spec = spec["members"][self.workload.draw(seed)[0]]
        default = {"slo_ttft": DEFAULT_SLO_TTFT, "slo_tpot": DEFAULT_SLO_TPOT}
        return {k: float(next(v for v in (self.slo_override[k], spec.get(k), default[k]) if v is not None))
                for k in SLO_KEYS}

    def decision_rewards(self) -> np.ndarray:
        """Minus the cost of every request routed this episode, in decision order (`request_costs`); a
        request still unfinished (an episode ended by the safety monitor) counts its times so far (lower
        bounds). With `reward.reference`, plus the same request's cost under that heuristic, same trace."""
        req = self.driver.per_request()
        now, arrived = self.driver.now, np.asarray(req["arrived_at"], dtype=float)
        so_far = {"e2e": np.where(req["completed"], req["e2e"], now - arrived),
                  "ttft": np.where(req["first_token_at"] > 0, req["ttft"], now - arrived),
                  "num_decode_tokens": req["num_decode_tokens"], "request_id": req["request_id"]}
        routed = np.asarray(self._routed)
        out = -self.request_costs(so_far)[routed]
        if self.reward.cfg.reference is not None:  # minus the reference's reward for the same request, same trace
            out += self.request_costs(self.reference_requests(self.reward.cfg.reference))[routed]
        return out

    def request_costs(self, req: Mapping[str, np.ndarray]) -> np.ndarray:
        """Cost per request id (`reward.decision_metric`): e2e, (E2E / slo_e2e) ** decision_power; slo, its
        TTFT/TPOT SLO miss plus a smooth margin (`metrics.slo_costs`, this env's SLOs). `req`: request_id,
        ttft, e2e, num_decode_tokens."""
        if self.reward.cfg.decision_metric == DecisionMetric.slo:
            cost = slo_costs(req, **self.slos)
        else:
            cost = np.power(np.maximum(np.asarray(req["e2e"], dtype=float), 0.0) / self.slo_e2e, self.decision_credit)
        out = np.zeros(len(self.driver.trace.arrived_at))
        out[np.asarray(req["request_id"])] = cost
        return out

    def reference_requests(self, router: str) -> Dict[str, np.ndarray]:
        """Per-request columns (`metrics.per_request`) of this episode's trace under a heuristic, told the
        same predicted lengths."""
        from vidur_ppo.routing.heuristics import make_heuristic

        driver = SimDriver(self.cluster, self.driver.trace, record_token_times=False,
                           length_error=self.driver.length_error, replica_speed=self.replica_speed)
        policy = make_heuristic(router)
        policy.reset(self.episode_seed)
        request = driver.next_decision()
        while request is not None:
            request = driver.assign(policy({"replicas": driver.replica_state(),
                                            "request": request_vector(request, self._predicted)}))
        return driver.per_request()

    def _partial_summary(self) -> Dict[str, float]:
        """Metrics of the requests finished so far (an episode ended by the safety monitor)."""
        from vidur_ppo.sim import metrics

        d = self.driver
        return metrics.summarize(d.per_request(), d.num_replicas, busy_time=d.busy_time, slo_e2e=self.slo_e2e,
                                 prefix_caching=d.prefix_caching, **self.slos)

    # --- exact resume: an episode in flight is its seed plus the actions taken so far ------------

    def snapshot(self) -> Dict[str, Any]:
        """What reproduces this env exactly: the episode's seed and actions, and the generator that
        draws the next episodes' seeds (the simulator is deterministic given those)."""
        return {"episode_seed": self.episode_seed, "actions": list(self._actions),
                "np_random": self.np_random.bit_generator.state}

    def restore(self, snapshot: Optional[Dict[str, Any]] = None) -> Dict[str, np.ndarray]:
        """Rebuild the snapshot's episode by replaying its actions; returns the current observation.
        Without an argument it takes `pending_snapshot` (set per env by a vector env's set_attr)."""
        snap = snapshot if snapshot is not None else self.pending_snapshot
        seed = int(snap["episode_seed"])
        obs, _ = self.reset(options={"trace": self.workload.generate(seed), "episode_seed": seed})
        for a in snap["actions"]:
            obs = self.step(a)[0]  # (observing again would advance the feature trends)
        self.np_random.bit_generator.state = snap["np_random"]
        return obs

    def _fit_to_cluster(self, workload):
        """A trace that clips or drops over-long requests does so at this cluster's limit."""
        if getattr(workload, "overlong", "error") != "error":
            return workload.with_token_limit(self.cluster.request_token_limit())
        return workload

    def configure(self, workload: Optional[Mapping[str, Any]] = None, reward: Optional[Mapping[str, Any]] = None) -> None:
        """Swap the workload and/or reward (a curriculum stage); takes effect at the next reset()."""
        if workload is not None:
            self.workload = self._fit_to_cluster(make_workload(workload))
            self._workload_spec = workload_spec(workload)
            # each replica's relative throughput for the new lengths (a reward-only stage keeps them)
            self.replica_speed = replica_speeds(self.cluster, self._workload_spec)
        if reward is not None:
            self.reward = make_reward(reward)

    # --- helpers -----------------------------------------------------------------------------

    def _observe(self) -> Dict[str, np.ndarray]:
        request = request_vector(self._request, self._predicted)
        return {
            "features": self.features(self._state, request, self.driver.now),
            "replicas": self._state.astype(np.float32),
            "request": request,
        }

    def _info(self) -> Dict[str, Any]:
        req = self._request
        return {
            "request_id": -1 if req is None else int(req.id),
            "time": float(self.driver.now),
            "episode_seed": -1 if self.episode_seed is None else self.episode_seed,
        }


def run_episode(env: VidurRoutingEnv, policy, seed: Optional[int] = None, trace=None) -> Dict[str, float]:
    """Run one whole episode with `policy(obs) -> action` (heuristics included); returns metrics."""
    options = {"trace": trace, "episode_seed": seed} if trace is not None else None
    obs, _ = env.reset(seed=seed, options=options)
    if hasattr(policy, "reset"):
        policy.reset(seed)
    if hasattr(policy, "bind"):  # a planner reads the simulation itself (routing/lookahead.py)
        policy.bind(env)
    while True:
        obs, _, terminated, truncated, info = env.step(policy(obs))
        if terminated or truncated:
            return info["episode_metrics"]
