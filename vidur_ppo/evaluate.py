"""Paired, held-out evaluation of a policy against the heuristics.

Every scheduler runs the same traces: one per evaluation seed, drawn from `eval.seed_base` up,
a range training never uses. Results are the mean over seeds with 95% CIs and the paired
difference against round-robin and against the best heuristic of each scenario.

    python -m vidur_ppo.evaluate checkpoint=<run dir> [eval=suite|default|smoke] [eval.seeds=5]

evaluates a trained run on a suite of scenarios (light/heavy load, 2/4/8 replicas, two workload
shapes, user traces) and writes report.md, metrics.csv and plots into <run dir>/evaluate_<suite>/.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from vidur_ppo.env import VidurRoutingEnv, run_episode
from vidur_ppo.heuristics import make_heuristic
from vidur_ppo.stats import mean_ci, paired_diff_ci

TABLE_METRICS = [("e2e_p50", "E2E P50"), ("e2e_p99", "E2E P99"), ("ttft_p90", "TTFT P90"),
                 ("ttft_p99", "TTFT P99"), ("tbt_p99", "TBT P99"), ("throughput_rps", "req/s")]


class TorchPolicy:
    """A trained actor as a policy `obs -> replica` (keeps its recurrent state per episode)."""

    name = "ppo"

    def __init__(self, model, deterministic: bool = True, seed: int = 0) -> None:
        self.model, self.deterministic = model, deterministic
        self.gen = torch.Generator().manual_seed(seed)
        self.reset()

    def reset(self, seed=None) -> None:
        self.state = self.model.initial_state(1)
        self.start = torch.ones((1, 1))
        self.attention_sum, self.attention_count = None, 0
        if seed is not None:
            self.gen.manual_seed(int(seed))

    @property
    def has_attention(self) -> bool:
        return hasattr(self.model, "attention_weights")

    @torch.no_grad()
    def __call__(self, obs) -> int:
        feats = torch.as_tensor(obs["features"]).view(1, 1, *obs["features"].shape)
        if self.has_attention:
            self.model.record_attention = True
        logits, _, self.state = self.model(feats, self.state, self.start, with_value=False)
        if self.has_attention and self.model.attention_weights() is not None:
            w = self.model.attention_weights()[0]
            self.attention_sum = w.clone() if self.attention_sum is None else self.attention_sum + w
            self.attention_count += 1
        self.start = torch.zeros((1, 1))
        if self.deterministic:
            return int(logits[0, 0].argmax())
        return int(torch.multinomial(torch.softmax(logits[0, 0], -1), 1, generator=self.gen))


def evaluate(env: VidurRoutingEnv, policies: Dict[str, Any], seeds: Sequence[int], progress=None,
             details: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """Run every policy (name -> policy or heuristic name) on the trace of every seed.

    `details`, if given, receives per-request E2E latencies of the first seed per scheduler
    (for CDF plots) and the attention map [R, R] averaged over that episode (attention models).
    """
    rows = []
    for i, seed in enumerate(seeds):
        trace = env.workload.generate(int(seed))
        for name, policy in policies.items():
            if isinstance(policy, str):
                policy = make_heuristic(policy)
            m = run_episode(env, policy, seed=int(seed), trace=trace)
            rows.append({"scheduler": name, "seed": int(seed), **m})
            if details is not None and i == 0:
                req = env.driver.per_request()
                details.setdefault("e2e", {})[name] = req["e2e"][req["completed"]]
                if getattr(policy, "attention_count", 0):
                    details.setdefault("attention", {})[name] = (policy.attention_sum / policy.attention_count).numpy()
            if progress:
                progress()
    return rows


def best_heuristic(rows: List[Dict[str, Any]], key: str = "e2e_p99") -> Optional[str]:
    """The heuristic with the lowest mean `key` (the bar a learned scheduler has to clear)."""
    from vidur_ppo.heuristics import HEURISTICS

    means = {n: np.mean([r[key] for r in rows if r["scheduler"] == n]) for n in HEURISTICS
             if any(r["scheduler"] == n for r in rows)}
    return min(means, key=means.get) if means else None


def _paired(rows, name, ref, key):
    mine = sorted((r for r in rows if r["scheduler"] == name), key=lambda r: r["seed"])
    base = sorted((r for r in rows if r["scheduler"] == ref), key=lambda r: r["seed"])
    if not base or name == ref:
        return "—"
    d, h = paired_diff_ci([r[key] for r in mine], [r[key] for r in base])
    return f"{100 * d:+.1f}% ± {100 * h:.1f}"


def summary_table(rows: List[Dict[str, Any]], reference: str = "round_robin") -> str:
    """Mean ± 95% CI per scheduler; paired E2E P99 / TTFT P90 differences vs round-robin and vs
    the best heuristic (negative = better)."""
    names = list(dict.fromkeys(r["scheduler"] for r in rows))
    best = best_heuristic(rows)
    head = ("| scheduler | " + " | ".join(label for _, label in TABLE_METRICS) +
            f" | E2E P99 vs {reference} | E2E P99 vs best ({best}) | TTFT P90 vs best |")
    lines = [head, "|---|" + "---:|" * (len(TABLE_METRICS) + 3)]
    for n in names:
        mine = [r for r in rows if r["scheduler"] == n]
        cells = []
        for key, _ in TABLE_METRICS:
            m, h = mean_ci([r[key] for r in mine])
            cells.append(f"{m:.3g} ± {h:.2g}")
        cells += [_paired(rows, n, reference, "e2e_p99"), _paired(rows, n, best, "e2e_p99"),
                  _paired(rows, n, best, "ttft_p90")]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_policy(run_dir, deterministic: bool = True):
    """The trained model of a run dir (its config.yaml + checkpoint.pt) as a policy, plus its config."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from vidur_ppo import checkpoint
    from vidur_ppo.models import make_model

    run_dir = Path(run_dir)
    ckpt = checkpoint.load(run_dir)
    if ckpt is None or not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a finished vidur-ppo run dir (needs config.yaml and checkpoint.pt)")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    model = make_model(OmegaConf.to_container(cfg.model, resolve=True), int(cfg.env.num_replicas),
                       len(ckpt["feature_names"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return TorchPolicy(model, deterministic=deterministic), cfg


def scenario_env(cfg, num_replicas: int | None = None, qps: float | None = None, num_requests: int | None = None,
                 workload=None, length_noise: float | None = None) -> VidurRoutingEnv:
    """The run's env, optionally on another cluster size / load / workload (QPS scales with the
    replica count unless given)."""
    from omegaconf import OmegaConf

    c = OmegaConf.to_container(cfg, resolve=True)
    cluster, wl = dict(c["env"]), dict(workload or c["workload"])
    if num_replicas is not None:
        if wl.get("kind") == "synthetic" and qps is None and wl.get("qps"):
            wl["qps"] = float(wl["qps"]) * num_replicas / cluster["num_replicas"]
            if wl.get("qps_max"):
                wl["qps_max"] = float(wl["qps_max"]) * num_replicas / cluster["num_replicas"]
        cluster["num_replicas"] = num_replicas
    if qps is not None:
        wl["qps"] = qps
        wl.pop("qps_max", None)  # a scenario's load is fixed
    if num_requests is not None and wl.get("kind") == "synthetic":
        wl["num_requests"] = num_requests
    noise = c.get("length_noise", 0.0) if length_noise is None else length_noise
    return VidurRoutingEnv(cluster=cluster, workload=wl, reward=c["reward"], features=c["features"],
                           slo_e2e=c["slo_e2e"], seed_limit=c["eval"]["seed_base"], length_noise=noise)


def eval_seeds(seed_base: int, count: int) -> List[int]:
    return [seed_base + i for i in range(count)]


def to_float_rows(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [{k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in r.items()} for r in rows]


# --- evaluation suites --------------------------------------------------------------------------

_POLICY_CACHE: Dict[str, Any] = {}


def _suite_job(args) -> Dict[str, Any]:
    """One (scenario, seed) of a suite, in a worker process: every scheduler on the same trace."""
    run_dir, scenario, seed, heuristics, sampled, num_requests = args
    torch.set_num_threads(1)
    if run_dir not in _POLICY_CACHE:
        _POLICY_CACHE[run_dir] = load_policy(run_dir)
    policy, cfg = _POLICY_CACHE[run_dir]
    wl = None
    if scenario.get("workload"):
        from omegaconf import OmegaConf

        wl = {**OmegaConf.to_container(cfg.workload, resolve=True), **dict(scenario["workload"])}
    r = scenario.get("num_replicas") or int(cfg.env.num_replicas)
    qps = scenario["qps_per_replica"] * r if scenario.get("qps_per_replica") else None
    env = scenario_env(cfg, num_replicas=r, qps=qps, num_requests=scenario.get("num_requests") or num_requests,
                       workload=wl, length_noise=scenario.get("length_noise"))
    env.safety.terminate = False
    tag = {"scenario": scenario["name"], "shape": "custom" if scenario.get("workload") else "trained", "replicas": r, "qps": float(env.workload.qps) if hasattr(env.workload, "qps")
           and env.workload.qps else float("nan")}
    details: Dict[str, Any] = {}
    out: Dict[str, Any] = {"rows": [], "errors": [], "details": None}
    learned = {"ppo": policy}
    if sampled:
        learned["ppo_sampled"] = TorchPolicy(policy.model, deterministic=False, seed=seed)
    for name, pol in learned.items():
        try:
            out["rows"] += [{**tag, **x} for x in evaluate(env, {name: pol}, [seed], details=details)]
        except ValueError as exc:  # e.g. the legacy GRU on another replica count
            out["errors"].append(f"{scenario['name']}: {name} cannot run here: {exc}")
    out["rows"] += [{**tag, **x} for x in evaluate(env, {h: h for h in heuristics}, [seed], details=details)]
    out["details"] = details
    return out


def run_suite(run_dir, eval_cfg, out_dir, progress=None) -> str:
    """Evaluate a run dir's policy on every scenario of a suite; write metrics.csv, report.md, plots."""
    from multiprocessing import get_context
    from pathlib import Path

    import pandas as pd
    from omegaconf import OmegaConf

    from vidur_ppo import report
    from vidur_ppo.heuristics import HEURISTICS

    run_dir, out_dir = str(run_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _, cfg = load_policy(run_dir)
    scenarios = list(eval_cfg.scenarios) or [{"name": "trained"}]
    scenarios = [OmegaConf.to_container(s, resolve=True) if not isinstance(s, dict) else s for s in scenarios]
    heuristics = [h for h in HEURISTICS if eval_cfg.all_heuristics or h in eval_cfg.baselines]
    seeds = eval_seeds(int(eval_cfg.seed_base), int(eval_cfg.seeds))
    jobs = [(run_dir, sc, s, heuristics, bool(eval_cfg.sampled), int(eval_cfg.num_requests)) for sc in scenarios for s in seeds]
    with get_context("spawn").Pool(max(1, int(eval_cfg.workers))) as pool:
        results = []
        for res in pool.imap(_suite_job, jobs):
            results.append(res)
            if progress:
                progress()
    rows = [r for res in results for r in res["rows"]]
    errors = sorted(set(e for res in results for e in res["errors"]))
    pd.DataFrame(rows).to_csv(out_dir / "metrics.csv", index=False)
    md = [f"# Evaluation of `{run_dir}`", "",
          f"{len(seeds)} held-out seeds from {eval_cfg.seed_base}, {eval_cfg.num_requests} requests per episode; "
          "every scheduler serves the same trace per seed. Mean ± 95% CI; \"vs\" columns are paired relative "
          "differences (negative = better than the reference). Times in seconds.", ""]
    if errors:
        md += ["Not evaluated:", ""] + [f"- {e}" for e in errors] + [""]
    figs = []
    for sc in scenarios:
        sub = [r for r in rows if r["scenario"] == sc["name"]]
        if not sub:
            continue
        md += [f"## {sc['name']} ({sub[0]['replicas']} replicas, {sub[0]['qps']:g} QPS)", "", summary_table(sub), ""]
        det = next((res["details"] for res, job in zip(results, jobs) if job[1]["name"] == sc["name"]), None)
        if det and det.get("e2e"):
            p = report.latency_cdfs(det["e2e"], out_dir / f"cdf_{sc['name']}.png", f"E2E CDF, {sc['name']}")
            md += [report.figure_links([p], out_dir), ""]
        if det and det.get("attention"):
            for name, w in det["attention"].items():
                p = report.attention_heatmap(w, out_dir / f"attention_{sc['name']}_{name}.png", f"{name}, {sc['name']}")
                md += [report.figure_links([p], out_dir), ""]
    p = report.p99_vs_load([r for r in rows if r.get("shape", "trained") == "trained"], out_dir / "p99_vs_load.png")
    if p:
        md += ["## E2E P99 vs load", "", report.figure_links([p], out_dir), ""]
        figs.append(p)
    text = "\n".join(md)
    (out_dir / "report.md").write_text(text)
    return text


def _main() -> None:
    import sys

    import hydra
    from omegaconf import DictConfig

    from vidur_ppo.config import ConfigError, EvalConfig, register_configs

    register_configs()

    @hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
    def main(cfg: DictConfig) -> None:
        from pathlib import Path

        from omegaconf import OmegaConf
        from tqdm.auto import tqdm

        try:
            ev: EvalConfig = OmegaConf.to_object(cfg.eval)
        except Exception as exc:  # noqa: BLE001 - one clear line
            print(f"config error: {str(exc).splitlines()[0]}", file=sys.stderr)
            sys.exit(2)
        run_dir = Path(cfg.checkpoint)
        try:
            load_policy(run_dir)
        except (FileNotFoundError, ConfigError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        out = Path(cfg.out) if cfg.out else run_dir / f"evaluate_{ev.name}"
        n = max(1, len(ev.scenarios)) * ev.seeds
        bar = tqdm(total=n, desc=f"evaluate {ev.name}")
        text = run_suite(run_dir, ev, out, progress=lambda: bar.update(1))
        bar.close()
        print(text)
        print(f"\nwritten: {out}/report.md, metrics.csv, *.png", file=sys.stderr)

    main()


if __name__ == "__main__":
    _main()
