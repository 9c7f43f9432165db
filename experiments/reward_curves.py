"""Each reward option's latency term against latency / SLO (experiments/results/reward_curves.png).

    python experiments/reward_curves.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common import arg_parser
from vidur_ppo.eval.plotting import pyplot
from vidur_ppo.routing.rewards import REWARDS, make_reward

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    plt = pyplot()
    x = np.linspace(0.0, 2.5, 501)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name in REWARDS:
        r = make_reward(name)
        w = r.weights["latency"]
        y = np.clip(w * r.latency_term(x), -r.clip, r.clip)
        ax.plot(x, y, lw=2, label=f"{name} (weight {w:g}, clip ±{r.clip:g})")
    ax.axvline(1.0, color="grey", ls=":", lw=1)
    ax.axvspan(1.1, 1.3, color="orange", alpha=0.12, label="1.1-1.3x SLO")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("latency / SLO (per completed request)")
    ax.set_ylabel("weighted latency term of the reward")
    ax.set_title("Reward options vs latency (legacy saturates at ~1.1x SLO)")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    out = ROOT / "experiments" / "results" / "reward_curves.png"
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    arg_parser(__doc__).parse_args()  # --help says what it draws instead of drawing it
    main()
