"""Shared by the experiment scripts: suites run into experiments/results/<name>/ and their sections,
results files, and eval configs composed as `python -m vidur_ppo.evaluate` composes them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Sequence


def arg_parser(doc: str) -> argparse.ArgumentParser:
    """A script's parser whose --help shows its whole docstring, line breaks kept (a docstring's first
    line alone often stops mid-sentence)."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def suite_section(policies, ev, results: Path, name: str):
    """Run a suite (`eval/suite.run_suite`, with a progress bar) into results/<name>/ and return its
    generalisation section (figure links relative to results/) and the failed scenarios."""
    from tqdm.auto import tqdm

    from vidur_ppo.eval.suite import run_suite, suite_size

    bar = tqdm(total=suite_size(policies, ev), desc=name)
    _, failed = run_suite(policies, ev, results / name, progress=lambda: bar.update(1))
    bar.close()
    return render_section(policies, ev, results, name), failed


def add_heuristics(policies, ev, results: Path, name: str, heuristics: Sequence[str]):
    """Run more heuristics on a finished suite's traces (same scenarios and seeds, so every comparison
    stays paired; capacity bisections too), add their rows to its CSVs and re-render it."""
    import pandas as pd
    from tqdm.auto import tqdm

    from vidur_ppo.eval.suite import CSV_FLOAT_FORMAT, capacity_job, capacity_jobs, run_jobs, suite_jobs

    out_dir = results / name
    jobs = [(*job[:3], list(heuristics), False, job[5], False) for job in suite_jobs(policies, ev)]
    cjobs = [job for job in capacity_jobs(policies, ev, list(heuristics)) if job[2] is None]
    bar = tqdm(total=len(jobs) + len(cjobs), desc=f"{name}: {', '.join(heuristics)}")
    new = [r for res in run_jobs(jobs, ev.workers, bar.update) for r in res["rows"]]
    for csv, extra in (("metrics.csv", new), ("capacity.csv", run_jobs(cjobs, ev.workers, bar.update, fn=capacity_job))):
        if extra and (out_dir / csv).exists():
            old = pd.read_csv(out_dir / csv)
            old = old[~old["scheduler"].isin(list(heuristics))]
            pd.concat([old, pd.DataFrame(extra)], ignore_index=True).to_csv(out_dir / csv, index=False,
                                                                             float_format=CSV_FLOAT_FORMAT)
    bar.close()
    return render_section(policies, ev, results, name)


def add_policies(policies, ev, out_dir: Path) -> None:
    """Run more policies (name -> run dir) on a finished suite's traces (same scenarios and seeds, so every
    comparison stays paired; capacity bisections and `eval.guard`'s guarded twins too) and add their rows to its
    CSVs, replacing any of the same name: a new candidate does not re-run every heuristic."""
    import pandas as pd
    from tqdm.auto import tqdm

    from vidur_ppo.eval.suite import CSV_FLOAT_FORMAT, capacity_job, capacity_jobs, run_jobs, suite_jobs

    jobs = [(*job[:3], [], *job[4:]) for job in suite_jobs(policies, ev)]
    cjobs = capacity_jobs(policies, ev, [])
    bar = tqdm(total=len(jobs) + len(cjobs), desc=f"{out_dir.name}: {', '.join(policies)}")
    new = [r for res in run_jobs(jobs, ev.workers, bar.update) for r in res["rows"]]
    names = {r["scheduler"] for r in new}
    for csv, extra in (("metrics.csv", new), ("capacity.csv", run_jobs(cjobs, ev.workers, bar.update, fn=capacity_job))):
        old = pd.read_csv(out_dir / csv)
        old = old[~old["scheduler"].isin(names)]
        pd.concat([old, pd.DataFrame(extra)], ignore_index=True).to_csv(out_dir / csv, index=False,
                                                                         float_format=CSV_FLOAT_FORMAT)
    bar.close()


def render_section(policies, ev, results: Path, name: str) -> str:
    """report.md of results/<name>/ re-rendered from its CSVs, and its generalisation section."""
    import pandas as pd

    from vidur_ppo.eval.matrix import generalisation_report
    from vidur_ppo.eval.report import suite_report
    from vidur_ppo.eval.suite import suite_jobs

    out_dir = results / name
    rows = pd.read_csv(out_dir / "metrics.csv")
    capacity = pd.read_csv(out_dir / "capacity.csv").fillna({"censored": ""}) if (out_dir / "capacity.csv").exists() else None
    jobs = suite_jobs(policies, ev)
    by_job = {k: g.to_dict("records") for k, g in rows.groupby(["scenario", "seed"])}
    done = [{"rows": by_job.get((job[1]["name"], job[2]), []), "errors": [], "details": None} for job in jobs]
    (out_dir / "report.md").write_text(suite_report(policies, ev, jobs, done, out_dir, {}, capacity))
    section = generalisation_report(rows, capacity, out_dir)
    return section.replace("](generalisation_heatmap", f"]({name}/generalisation_heatmap")


def write_results(path: Path, header: List[str], section: str, failed: Dict[str, List[str]], wall: float) -> None:
    """results/<name>.md: the header, any failed scenarios, the suite's section; printed too."""
    md = list(header)
    if failed:
        md += ["Failed scenarios: " + "; ".join(f"{k}: {v}" for k, v in failed.items()), ""]
    path.write_text("\n".join(md) + section + "\n")
    print(section)
    print(f"\nwritten: {path} ({wall / 60:.1f} min)", file=sys.stderr)


def eval_config(name: str, overrides: Sequence[str] = ()):
    """conf/eval/<name>.yaml with command-line overrides, as a validated EvalConfig."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from vidur_ppo.config import register_configs

    register_configs()
    with initialize_config_dir(str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        return OmegaConf.to_object(compose("evaluate", overrides=[f"eval={name}", *overrides]).eval)
