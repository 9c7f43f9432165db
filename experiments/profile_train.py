"""Where a training run's time goes: cProfile of `vidur_ppo.train` in one process, by component.

    python experiments/profile_train.py [--updates 10] [overrides ...]

Runs `experiment=headline` in-process with synchronous vector envs (so the env work is visible to the
profiler, not hidden in worker processes), BC included, and sums each function's own
time (tottime) into components: vidur's simulator (events, schedulers, entities), the driver's
state read-out, feature building, rewards, the execution-time predictor, the torch model and
update, and the rest. Writes experiments/results/profile_train.{md,json}.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import tempfile
import time
from pathlib import Path

from common import arg_parser  # experiments/common.py, next to this script

ROOT = Path(__file__).resolve().parents[1]
OTHER = "other (Python runtime, logging, ...)"
COMPONENTS = [  # first match wins: (label, path fragment)
    ("execution-time predictor (roofline)", "vidur_ppo/sim/predictor"),
    ("driver: replica state read-out", "vidur_ppo/sim/driver"),
    ("feature building", "vidur_ppo/routing/features"),
    ("rewards + safety", "vidur_ppo/routing/rewards"), ("rewards + safety", "vidur_ppo/routing/safety"),
    ("env wrapper (gymnasium)", "vidur_ppo/routing/env"), ("env wrapper (gymnasium)", "gymnasium/"),
    ("vidur simulator (events, schedulers, entities)", "vidur/"),
    ("torch (model forward + PPO update)", "torch/"), ("torch (model forward + PPO update)", "vidur_ppo/models"),
    # BC, the curriculum and the vector envs sit in vidur_ppo/ppo/ but are Python glue, not torch
    (OTHER, "vidur_ppo/ppo/bc"), (OTHER, "vidur_ppo/ppo/curriculum"), (OTHER, "vidur_ppo/ppo/vector"),
    ("torch (model forward + PPO update)", "vidur_ppo/ppo"),
    ("torch (model forward + PPO update)", "vidur_ppo/routing/credit"),  # decision credit, applied in the PPO loop
    ("numpy", "numpy/"),
]


def component(filename: str, name: str) -> str:
    if filename == "~":  # C built-ins: torch ops (incl. autograd's backward), numpy, Python's own
        return ("torch (model forward + PPO update)" if "torch" in name else
                "numpy" if "numpy" in name else OTHER)
    key = f"{filename}:{name}"
    for label, frag in COMPONENTS:
        if frag in key:
            return label
    return OTHER


def main() -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--updates", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    from hydra import compose, initialize_config_dir

    from vidur_ppo.config import register_configs
    from vidur_ppo.train import run

    register_configs()
    overrides = ["experiment=headline", "ppo.vector_mode=sync", f"ppo.num_updates={args.updates}",
                 "eval.seeds=1", "eval.baselines=[round_robin]", "logger.progress=false", *args.overrides]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    prof = cProfile.Profile()
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        prof.enable()
        run(cfg, Path(tmp))
        prof.disable()
    wall = time.time() - t0
    st = pstats.Stats(prof)
    total = sum(v[2] for v in st.stats.values())
    parts: dict = {}
    for (filename, _, name), (_, _, tottime, _, _) in st.stats.items():
        c = component(filename, name)
        parts[c] = parts.get(c, 0.0) + tottime
    top = sorted(((v[2], f"{Path(k[0]).name}:{k[1]}({k[2]})") for k, v in st.stats.items()), reverse=True)[:15]
    rows = sorted(parts.items(), key=lambda kv: -kv[1])
    cmd = "python experiments/profile_train.py " + " ".join([f"--updates {args.updates}", *args.overrides])
    md = ["# Where training time goes (cProfile)", "",
          f"Command: `{cmd}`: {args.updates} PPO updates of 4 envs x 128 decisions, synchronous envs in one "
          f"process (the whole run: BC demonstrations and warm start, PPO with the BC anchor, a 1-trace evaluation), {wall:.0f} s wall "
          "under the profiler on 2 cores. Own time (tottime) summed per component.", "",
          "| component | seconds | share |", "|---|---:|---:|"]
    md += [f"| {c} | {s:.1f} | {100 * s / total:.0f}% |" for c, s in rows]
    md += ["", "Top functions by own time:", "", "| function | seconds |", "|---|---:|"]
    md += [f"| `{f}` | {s:.2f} |" for s, f in top]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile_train.md").write_text("\n".join(md) + "\n")
    (args.out / "profile_train.json").write_text(json.dumps({"command": cmd, "wall_s": wall, "components_s": parts,
                                                             "top": [[f, s] for s, f in top]}, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
