"""Generalisation-suite reporting on hand-built tables with known outcomes."""

import numpy as np
import pandas as pd
import pytest

from vidur_ppo.eval.matrix import (best_heuristics, capacity_gain, capacity_table_md, heatmap, matrix_md,
                                   paired_vs, relative_to_best, summary_line, win_tie_loss)

SEEDS = [3, 1, 4, 0, 2]
HARDNESS = {0: 1.0, 1: 1.1, 2: 0.9, 3: 1.05, 4: 0.95}  # per-seed trace difficulty, shared by all schedulers
JITTER = {0: 1.05, 1: 0.95, 2: 1.04, 3: 0.96, 4: 1.0}  # mean 1: noisy-equal to the reference


def _rows() -> pd.DataFrame:
    """Held-out "zeta": router clearly better (6 vs jsq 8 vs rr 10); "alpha": clearly worse (12);
    "mid": noisy-equal to jsq; training "train_a": round-robin is the best heuristic."""
    e2e = {
        ("zeta", "held_out"): {"round_robin": lambda s: 10, "jsq": lambda s: 8, "ppo_headline": lambda s: 6},
        ("alpha", "held_out"): {"round_robin": lambda s: 10, "jsq": lambda s: 8, "ppo_headline": lambda s: 12},
        ("mid", "held_out"): {"round_robin": lambda s: 10, "jsq": lambda s: 8,
                              "ppo_headline": lambda s: 8 * JITTER[s]},
        ("train_a", "train"): {"round_robin": lambda s: 5, "jsq": lambda s: 7, "ppo_headline": lambda s: 4},
    }
    out = []
    for (sc, split), scheds in e2e.items():
        for name, f in scheds.items():
            for s in SEEDS:
                v = f(s) * HARDNESS[s]
                out.append({"scenario": sc, "family": sc, "load": 0.8, "replicas": 4, "split": split,
                            "scheduler": name, "seed": s, "e2e_p99": v, "ttft_p99": v / 2, "ttft_p90": v / 3,
                            "slo_attainment": 1 / v, "goodput_rps": 10 / v})
    return pd.DataFrame(out)


def _capacity() -> pd.DataFrame:
    rows = [
        ("fam_h", 4, "held_out", "round_robin", 0.8, ""), ("fam_h", 4, "held_out", "ppo_headline", 1.0, ""),
        ("fam_h", 8, "held_out", "round_robin", 0.5, ""), ("fam_h", 8, "held_out", "ppo_headline", 0.55, ""),
        ("fam_g", 4, "held_out", "round_robin", 0.6, ""), ("fam_g", 4, "held_out", "ppo_headline", np.nan, ""),
        ("fam_t", 4, "train", "round_robin", 0.1, "<"), ("fam_t", 4, "train", "ppo_headline", 2.0, ">="),
        ("fam_t", 4, "train", "jsq", 0.9, ""),
    ]
    return pd.DataFrame(rows, columns=["family", "replicas", "split", "scheduler", "capacity", "censored"])


def test_best_heuristic_per_scenario_and_direction():
    rows = _rows()
    best = best_heuristics(rows)
    assert best.to_dict() == {"zeta": "jsq", "alpha": "jsq", "mid": "jsq", "train_a": "round_robin"}
    assert list(best.index) == ["zeta", "alpha", "mid", "train_a"]
    # higher is better for SLO attainment: the same choice, not its opposite
    assert best_heuristics(rows, "slo_attainment").to_dict() == best.to_dict()


def test_paired_vs_best_and_named_reference():
    rows = _rows()
    vs = paired_vs(rows, "ppo_headline", "best")
    assert vs["outcome"].to_dict() == {"zeta": "win", "alpha": "loss", "mid": "tie", "train_a": "win"}
    assert vs.loc["zeta", "diff"] == pytest.approx(-0.25) and vs.loc["zeta", "half"] == pytest.approx(0, abs=1e-12)
    assert vs.loc["alpha", "diff"] == pytest.approx(0.5) and vs.loc["mid", "half"] > abs(vs.loc["mid", "diff"])
    assert (vs["n"] == 5).all() and vs.loc["zeta", "reference"] == "jsq"
    assert paired_vs(rows, "ppo_headline", "round_robin")["outcome"].to_dict() == {
        "zeta": "win", "alpha": "loss", "mid": "win", "train_a": "win"}
    own = paired_vs(rows, "jsq", "best")
    assert own.loc["zeta", "diff"] == 0 and own.loc["zeta", "outcome"] == "tie"
    assert own.loc["train_a", "outcome"] == "loss"
    # higher-is-better metric: the router's better scenario is still a win
    assert paired_vs(rows, "ppo_headline", "best", "slo_attainment").loc["zeta", "outcome"] == "win"
    assert paired_vs(rows, "ppo_headline", "lor").empty


def test_win_tie_loss_matrix_and_markdown():
    wtl = win_tie_loss(_rows(), ["ppo_headline", "round_robin", "jsq"])
    assert list(wtl.columns) == ["round_robin", "jsq", "best"]
    assert wtl.loc["ppo_headline"].tolist() == ["2/0/1", "1/1/1", "1/1/1"]
    assert wtl.loc["round_robin"].tolist() == ["—", "0/0/3", "0/0/3"]
    assert wtl.loc["jsq"].tolist() == ["3/0/0", "—", "0/3/0"]
    assert win_tie_loss(_rows(), ["ppo_headline"], split="train").loc["ppo_headline", "best"] == "1/0/0"
    md = matrix_md(wtl).splitlines()
    assert md[0] == "| router | round_robin | jsq | best |"
    assert md[2] == "| ppo_headline | 2/0/1 | 1/1/1 | 1/1/1 |" and len(md) == 5


def test_relative_to_best_and_heatmap(tmp_path):
    rel = relative_to_best(_rows())
    assert list(rel.index) == ["zeta", "alpha", "mid", "train_a"]
    assert list(rel.columns) == ["ppo_headline", "round_robin", "jsq"]
    assert rel.loc["zeta"].tolist() == pytest.approx([-25.0, 25.0, 0.0])
    assert rel.loc["train_a", "jsq"] == pytest.approx(40.0)
    p = heatmap(rel, tmp_path / "rel.png", "E2E P99")
    assert p == tmp_path / "rel.png" and p.stat().st_size > 1000
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_capacity_gain_and_table():
    gain = capacity_gain(_capacity()).set_index(["family", "replicas", "scheduler"])
    assert gain.loc[("fam_h", 4, "ppo_headline"), "gain"] == pytest.approx(0.25)
    assert gain.loc[("fam_h", 8, "ppo_headline"), "gain"] == pytest.approx(0.10)
    assert np.isnan(gain.loc[("fam_g", 4, "ppo_headline"), "gain"])
    assert gain.loc[("fam_t", 4, "ppo_headline"), ["censored", "ref_censored"]].tolist() == [">=", "<"]
    md = capacity_table_md(_capacity()).splitlines()
    assert md[0] == "| family | replicas | split | ppo_headline | round_robin | jsq |"
    assert md[2] == "| fam_h | 4 | held_out | 1.00 (+25%) | 0.80 |  |"
    assert md[4] == "| fam_g | 4 | held_out | n/a | 0.60 |  |"
    assert md[5] == "| fam_t | 4 | train | >=2.00 (+1900%) | <0.10 | 0.90 (+800%) |"


def test_summary_line():
    line = summary_line(_rows(), _capacity(), "ppo_headline")
    assert line == ("ppo_headline: never worse than the best heuristic in 2 of 3 held-out scenarios "
                    "(E2E P99, paired 95% CI); capacity at SLO +17.5% vs round-robin on average "
                    "(2 held-out family/size pairs)")
    train = summary_line(_rows(), _capacity(), "ppo_headline", split="train")
    assert "in 1 of 1 training-family scenarios" in train and "+1900.0%" in train
    assert "capacity at SLO n/a" in summary_line(_rows(), _capacity(), "jsq") and "(0 held-out" in \
        summary_line(_rows(), _capacity(), "jsq")


def test_summary_line_without_capacity_says_na():
    rows = pd.DataFrame([{"scenario": "s", "family": "f", "load": 0.8, "replicas": 2, "split": "held_out",
                          "scheduler": n, "seed": k, "e2e_p99": v + k}
                         for k in range(3) for n, v in (("round_robin", 10.0), ("ppo", 9.0))])
    line = summary_line(rows, None, "ppo")
    assert "in 1 of 1 held-out scenarios" in line and "capacity at SLO n/a" in line
