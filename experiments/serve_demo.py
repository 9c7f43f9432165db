"""The trained router in Ray Serve (issue 26): simulated engine replicas driven over HTTP by one trace, routed once
by the learned router and once by Serve's default power-of-two router.

    python experiments/serve_demo.py [--policy RUN_DIR] [--family summarisation] [--load 0.8] [--duration 60] [--time-scale 1]

The Serve app (vidur_ppo/serve/deployment.py): an HTTP ingress in front of one engine replica per replica of the
policy's training cluster (the headline run: 2 A100 + 2 H100, Llama-2-7B), each a vidur replica served against the
wall clock (serve/engine.py: vLLM scheduling, KV blocks, the roofline execution-time model) reporting its state
every --stats-period seconds. The trace: the workload family --family, Poisson arrivals at --load of the cluster's
saturation throughput (routing/capacity.py) for --duration seconds, output lengths predicted as in training
(routing/length_predictor.py) and sent in each request body. Both routers get the same trace. Writes, under
experiments/results/:

  ray_serve.md / .json   TTFT and E2E P50/P90/P99 per router (the engine's simulated seconds), paired bootstrap 95%
                         CIs of learned - power-of-two, the learned router's decision overhead and fallback rate
  ray_serve.png          CDF of TTFT per router
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from common import arg_parser

ROOT = Path(__file__).resolve().parents[1]
NAME = "ray_serve"
DEFAULT_POLICY = ROOT / "multirun/headline/slo_router/seed0"
QUANTILES = (50, 90, 99)
BOOTSTRAP = 1000


def trace_for(spec, family: str, load: float, duration: float, seed: int):
    """(trace, predicted output lengths): `family` at rho=`load` of the policy's cluster for `duration` seconds."""
    from vidur_ppo.routing.capacity import qps_at_load
    from vidur_ppo.routing.length_predictor import LengthPredictor
    from vidur_ppo.workloads import make_workload
    from vidur_ppo.workloads.families import family_spec

    wl = {k: v for k, v in family_spec(family).items() if k not in ("load", "qps_max")}
    _, qps = qps_at_load(spec.cluster, wl, load)
    wl.update(qps=qps, num_requests=max(int(qps * duration), 10))
    trace = make_workload(wl).generate(seed)
    true = np.asarray(trace.num_decode_tokens)
    predicted = true if LengthPredictor(spec.length_predictor).exact else \
        LengthPredictor(spec.length_predictor).predict(true, seed)
    return trace, np.asarray(predicted), qps


def decision_overhead(run_dir: str, spec, decisions: int, seed: int) -> Dict[str, float]:
    """The learned router's decision (reports to observation to policy, `LearnedRouting.route`) timed alone, in
    this process before Ray starts, on the states of a real simulated episode of the policy's cluster: what a
    decision costs without the demo's own replicas competing for the CPU (serve/overhead.py, as
    experiments/bench_decision.py times it)."""
    from vidur_ppo.serve import overhead
    from vidur_ppo.serve.policy import LearnedRouting

    env = spec.for_suite_scenario({"name": "overhead"}, decisions + 10).make()
    ms = overhead.time_decisions(env, {"learned": LearnedRouting(run_dir)}, decisions, seed)[0]["learned"]
    return {"decisions": len(ms), **overhead.percentiles(ms)}


async def replay(url: str, trace, predicted, time_scale: float) -> List[Dict[str, Any]]:
    """POST every request of the trace at its arrival time (/ time_scale); the engine's answers, in trace order."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        start = time.monotonic()

        async def one(i: int) -> Dict[str, Any]:
            await asyncio.sleep(max(float(trace.arrived_at[i]) / time_scale - (time.monotonic() - start), 0.0))
            body = {"prompt_tokens": int(trace.num_prefill_tokens[i]), "output_tokens": int(trace.num_decode_tokens[i]),
                    "predicted_output_tokens": int(predicted[i])}
            sent = time.monotonic()
            async with session.post(url, json=body) as resp:
                out = await resp.json()
            return {**out, "client_e2e_s": time.monotonic() - sent}

        return await asyncio.gather(*(one(i) for i in range(len(trace.arrived_at))))


def run_router(name: str, run_dir, spec, speeds, trace, predicted, args) -> Dict[str, Any]:
    """Deploy the app with one router, replay the trace over HTTP, collect the answers and the router's report."""
    import aiohttp
    from ray import serve

    from vidur_ppo.serve.deployment import build_app

    serve.run(build_app(spec.cluster, speeds, run_dir, args.time_scale, args.stats_period), name=name,
              route_prefix="/")
    time.sleep(1.0)  # the replicas' first routing stats reach the ingress's router
    url = f"http://127.0.0.1:{args.port}/"
    served = asyncio.run(replay(url, trace, predicted, args.time_scale))

    async def router_stats():
        async with aiohttp.ClientSession() as s, s.get(url + "router_stats") as resp:
            return await resp.json()

    report = asyncio.run(router_stats())
    serve.delete(name)
    return {"served": served, "router": report}


def percentiles(x: np.ndarray) -> Dict[str, float]:
    return {f"p{q}": float(np.percentile(x, q)) for q in QUANTILES}


def paired_ci(a: np.ndarray, b: np.ndarray, q: int, rng: np.random.Generator) -> List[float]:
    """95% bootstrap CI of percentile q of a minus that of b, resampling the requests of the shared trace."""
    idx = rng.integers(0, len(a), size=(BOOTSTRAP, len(a)))
    diff = np.percentile(a[idx], q, axis=1) - np.percentile(b[idx], q, axis=1)
    return [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))]


def summarise(results: Dict[str, Dict[str, Any]], seed: int) -> Dict[str, Any]:
    rng = np.random.default_rng(seed)
    cols = {name: {m: np.array([s[m] for s in r["served"]]) for m in ("ttft", "e2e", "client_e2e_s")}
            for name, r in results.items()}
    out: Dict[str, Any] = {"routers": {}}
    for name, c in cols.items():
        out["routers"][name] = {"served": len(c["ttft"]), **{f"ttft_{k}": v for k, v in percentiles(c["ttft"]).items()},
                                **{f"e2e_{k}": v for k, v in percentiles(c["e2e"]).items()},
                                **{f"client_e2e_{k}": v for k, v in percentiles(c["client_e2e_s"]).items()},
                                "replica_share": np.bincount([s["replica"] for s in results[name]["served"]],
                                                             minlength=4).tolist()}
    if {"learned", "pow2"} <= set(cols):
        out["paired_ci_learned_minus_pow2"] = {
            f"{m}_p{q}": paired_ci(cols["learned"][m], cols["pow2"][m], q, rng) for m in ("ttft", "e2e") for q in QUANTILES}
    out["learned_router"] = results.get("learned", {}).get("router")
    return out


def write(summary: Dict[str, Any], results: Dict[str, Any], meta: Dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps({"meta": meta, **summary}, indent=1))
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        x = np.sort([s["ttft"] for s in r["served"]])
        ax.plot(x, np.arange(1, len(x) + 1) / len(x), label=name)
    ax.set_xscale("log")
    ax.set_xlabel("TTFT (s, simulated)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"Ray Serve, {meta['family']} at rho={meta['load']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"{NAME}.png", dpi=120)
    rows = ["| router | served | TTFT P50 | TTFT P90 | TTFT P99 | E2E P50 | E2E P90 | E2E P99 | requests per replica |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary["routers"].items():
        rows.append(f"| {name} | {s['served']} | " + " | ".join(f"{s[f'{m}_p{q}']:.3f}" for m in ("ttft", "e2e")
                                                              for q in QUANTILES) + f" | {s['replica_share']} |")
    ci = summary.get("paired_ci_learned_minus_pow2", {})
    lr = summary.get("learned_router") or {}
    oh = summary["decision_overhead_alone"]
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    text = f"""# The trained router in Ray Serve

`python experiments/serve_demo.py {meta['argv']}` ({meta['wall_s']:.0f} s). Ray {meta['ray']}, machine: {meta['machine']},
load average before / after: {meta['loadavg_before']} / {meta['loadavg_after']} (the demo's own processes: an
ingress, a proxy, {meta['replicas']} engine replicas simulating in real time and the HTTP client, on these cores).

Setup: an HTTP ingress and {meta['replicas']} simulated engine replicas (vidur replicas served against the wall clock,
`vidur_ppo/serve/engine.py`; cluster {meta['cluster']}), routing stats every {meta['stats_period_s']} s. Trace: family
`{meta['family']}`, Poisson arrivals at rho={meta['load']} of the cluster's saturation throughput ({meta['qps']:.2f} req/s),
{meta['requests']} requests, seed {meta['seed']}, time scale {meta['time_scale']}; the same trace for both routers. Times are
the engine's simulated seconds (arrival at the replica to first token / last token).

Policy: `{meta['policy']}` (features `{meta['features']}`, model `{meta['model']}`). multirun/ is git-ignored: on a fresh
clone train it with `python -m vidur_ppo.train experiment=slo_router seed=0 hydra.run.dir=multirun/headline/slo_router/seed0`
(the headline run; any run whose features are not `prefix` works, `--policy RUN_DIR`).

{chr(10).join(rows)}

Paired bootstrap 95% CIs, learned - power-of-two (s, {BOOTSTRAP} resamples of the trace's requests):
{chr(10).join(f"- {k}: [{v[0]:+.3f}, {v[1]:+.3f}]" for k, v in ci.items())}

Learned router: {lr.get('learned_decisions')} learned decisions, fallbacks {lr.get('fallbacks')} (rate
{fmt(lr.get('fallback_rate'))}); decision overhead P50 {fmt(lr.get('decision_ms_p50'))} ms, P99
{fmt(lr.get('decision_ms_p99'))} ms (stats to observation to policy, in the ingress, sharing the cores with the engines
it routes to). The same decision code timed alone before Ray started, on {oh['decisions']} states of a simulated
episode of the policy's cluster (serve/overhead.py): P50 {oh['p50_ms']:.2f} ms, P90 {oh['p90_ms']:.2f} ms, P99
{oh['p99_ms']:.2f} ms, max {oh['max_ms']:.2f} ms.

![TTFT CDF]({NAME}.png)
"""
    (out / f"{NAME}.md").write_text(text)


def main() -> None:
    p = arg_parser(__doc__)
    p.add_argument("--policy", default=str(DEFAULT_POLICY), help="trained run dir (features other than prefix)")
    p.add_argument("--family", default="summarisation",
                   help="workload family (conf/workload/<name>.yaml, synthetic); the default is held out of the headline router's training")
    p.add_argument("--load", type=float, default=0.8, help="rho: share of the cluster's saturation throughput")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of arrivals per router")
    p.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per wall-clock second")
    p.add_argument("--stats-period", type=float, default=0.1, help="request_routing_stats_period_s")
    p.add_argument("--seed", type=int, default=100_000)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--decisions", type=int, default=2000, help="decisions timed alone before the demo")
    p.add_argument("--out", default=str(ROOT / "experiments/results"))
    args = p.parse_args()

    import ray
    from ray import serve

    from vidur_ppo.build import env_spec
    from vidur_ppo.checkpoint import load_policy
    from vidur_ppo.routing.capacity import replica_speeds
    from vidur_ppo.serve.deployment import start_quietly

    started, load_before = time.time(), os.getloadavg()
    try:
        cfg = load_policy(args.policy)[1]
    except FileNotFoundError as exc:  # a fresh clone has no multirun/: say how to get a run dir
        p.exit(2, f"--policy: {exc}; train one with `python -m vidur_ppo.train experiment=slo_router seed=0 "
                  f"hydra.run.dir={DEFAULT_POLICY.relative_to(ROOT)}` or pass --policy <run dir>\n")
    spec = env_spec(cfg)
    speeds = list(replica_speeds(spec.cluster, spec.workload))
    trace, predicted, qps = trace_for(spec, args.family, args.load, args.duration, args.seed)
    print(f"{len(trace.arrived_at)} requests at {qps:.2f} req/s on {spec.cluster.num_replicas} replicas", file=sys.stderr)
    overhead = decision_overhead(args.policy, spec, args.decisions, args.seed)  # before Ray: nothing else running
    start_quietly(http_port=args.port)
    results = {}
    for name, run_dir in (("learned", args.policy), ("pow2", None)):
        results[name] = run_router(name, run_dir, spec, speeds, trace, predicted, args)
        print(f"{name}: served {len(results[name]['served'])}", file=sys.stderr)
    serve.shutdown()
    ray.shutdown()
    meta = {"argv": " ".join(sys.argv[1:]), "ray": ray.__version__, "machine": f"{platform.node()}, "
            f"{os.cpu_count()} cores", "loadavg_before": " ".join(f"{x:.2f}" for x in load_before),
            "loadavg_after": " ".join(f"{x:.2f}" for x in os.getloadavg()), "policy": args.policy,
            "features": cfg.features.name, "model": cfg.model.name, "replicas": spec.cluster.num_replicas,
            "cluster": spec.cluster.replicas or f"{spec.cluster.num_replicas} x {spec.cluster.device}",
            "family": args.family, "load": args.load, "qps": qps, "requests": len(trace.arrived_at),
            "seed": args.seed, "time_scale": args.time_scale, "stats_period_s": args.stats_period,
            "wall_s": time.time() - started}
    summary = summarise(results, args.seed)
    summary["decision_overhead_alone"] = overhead
    write(summary, results, meta, Path(args.out))
    print((Path(args.out) / f"{NAME}.md").read_text())


if __name__ == "__main__":
    main()
