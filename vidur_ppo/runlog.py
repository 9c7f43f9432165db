"""One logging interface, several sinks: CSV (always), Weights & Biases, TensorBoard.

CSV rows are flushed as they are written, so a crash loses nothing that was logged; on resume
the rows after the checkpoint's update are dropped first, so every update appears exactly once.
A failing W&B or TensorBoard sink is switched off with a warning; it never stops training.
W&B online falls back to offline (synced later with `wandb sync`) when the server does not answer,
so a run without network neither waits 90 s nor loses its W&B record.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from vidur_ppo.checks import StrEnum, choice

METRICS_CSV = "metrics.csv"
EVENTS_CSV = "events.csv"
WANDB_PROBE_S = 2.0  # an HTTP request to the W&B server before an online init
WANDB_INIT_S = 10.0  # wandb.init's own limit (90 s by default); probe + init + offline init < 15 s


class WandbMode(StrEnum):
    online = "online"
    offline = "offline"
    disabled = "disabled"


@dataclass
class LoggerConfig:
    name: str = "csv"
    csv: bool = True
    wandb: bool = False
    wandb_project: str = "vidur-ppo"
    wandb_mode: WandbMode = WandbMode.offline  # WANDB_MODE in the environment wins
    wandb_group: Optional[str] = None
    tensorboard: bool = False
    progress: bool = True  # progress bars on stderr

    def __post_init__(self) -> None:
        choice(self, "logger", "wandb_mode", WandbMode)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _reachable(url: str, timeout: float = WANDB_PROBE_S) -> bool:
    """Whether an HTTP server answers at `url` within `timeout` s (any status; proxies from the
    environment honoured): wandb.init online waits 90 s for one that does not, and a server that
    accepts but never answers would also hold the process at exit."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


def _truncate_csv(path: Path, key: str, last: int) -> None:
    """Keep only rows with `key` <= last (rows written after the checkpoint are replayed)."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, [r for r in reader if r.get(key) and int(float(r[key])) <= last]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields or [])
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


class CSVSink:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fields: Optional[List[str]] = None
        if path.exists() and path.stat().st_size > 0:
            with path.open(newline="") as f:
                self.fields = next(csv.reader(f), None)

    def write(self, row: Mapping[str, Any]) -> None:
        if self.fields is None:
            self.fields = list(row)
            with self.path.open("w", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fields).writeheader()
        new = [k for k in row if k not in self.fields]
        if new:  # a column appeared (e.g. a metric first seen later): rewrite with the wider header
            with self.path.open(newline="") as f:
                old = list(csv.DictReader(f))
            self.fields += new
            with self.path.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.fields)
                w.writeheader()
                w.writerows(old)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow({k: _plain(v) for k, v in row.items()})
            f.flush()
            os.fsync(f.fileno())


def _plain(v: Any) -> Any:
    try:
        return float(v) if not isinstance(v, (str, bool, int)) else v
    except (TypeError, ValueError):
        return str(v)


class RunLogger:
    """`log(row)` once per update (row["update"] is the step), `event(name, **data)` for
    occasional things (BC done, checkpoint, curriculum switch), `close()` at the end."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any], logger_cfg: Any,
                 resume_update: Optional[int] = None, wandb_id: Optional[str] = None,
                 group: Optional[str] = None, job_type: Optional[str] = None, tags: Optional[List[str]] = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_update is not None:
            _truncate_csv(self.run_dir / METRICS_CSV, "update", resume_update)
            _truncate_csv(self.run_dir / EVENTS_CSV, "update", resume_update)
        self.metrics = CSVSink(self.run_dir / METRICS_CSV)
        self.events = CSVSink(self.run_dir / EVENTS_CSV)
        self.wandb = None
        self.wandb_id = wandb_id
        self._step = 0  # the last W&B step written
        self.tb = None
        if logger_cfg.wandb:
            self._init_wandb(config, logger_cfg, group, job_type, tags)
        if logger_cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.run_dir / "tensorboard"))
            except Exception as exc:  # noqa: BLE001 - optional sink
                warnings.warn(f"TensorBoard logging off: {exc}")

    def _init_wandb(self, config: Mapping[str, Any], logger_cfg: Any, group: Optional[str] = None,
                    job_type: Optional[str] = None, tags: Optional[List[str]] = None) -> None:
        """wandb.init in the configured mode (WANDB_MODE wins); online, an unreachable server or
        a failing init (no API key, timeout) falls back to offline with one line on stderr."""
        try:
            import wandb

            mode = os.environ.get("WANDB_MODE", str(logger_cfg.wandb_mode))
            kwargs = dict(project=logger_cfg.wandb_project, group=logger_cfg.wandb_group or group,
                          job_type=job_type, tags=[t[:64] for t in (tags or [])][:20] or None, dir=str(self.run_dir),
                          config=dict(config), id=self.wandb_id, resume="allow")
            quiet = dict(silent=True, console="off")
            reason = None
            if mode == "online":
                url = wandb.setup().settings.base_url
                if not _reachable(url):
                    reason = f"W&B server {url} unreachable"
                else:
                    try:
                        self.wandb = wandb.init(mode=mode, settings=wandb.Settings(init_timeout=WANDB_INIT_S, **quiet),
                                                **kwargs)
                    except Exception as exc:  # noqa: BLE001 - no API key, timeout, server error
                        reason = f"W&B online init failed: {_first_line(exc)}"
            if reason:  # the process-wide mode too: W&B's own telemetry would wait on the server at exit
                mode = "offline"
                wandb.setup(wandb.Settings(mode=mode))
            if self.wandb is None:
                self.wandb = wandb.init(mode=mode, settings=wandb.Settings(**quiet), **kwargs)
            self.wandb_id = self.wandb.id
            if reason:
                print(f"warning: {reason}; logging offline, sync later: wandb sync {self.wandb.settings.sync_dir}",
                      file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - W&B never stops training
            warnings.warn(f"W&B logging off: {_first_line(exc)}")
            self.wandb = None

    def _safe(self, fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f"logging sink failed and is switched off: {exc}")
            if self.tb is not None and getattr(fn, "__self__", None) is self.tb:
                self.tb = None
            else:  # the run, or its summary
                self.wandb = None

    def _wandb_log(self, data: Mapping[str, Any], update: Optional[int] = None) -> None:
        """Every W&B write names its step, never below the last one: W&B silently drops a step
        below its current one (the final `eval` event was lost after the report's images)."""
        if self.wandb is not None:
            self._step = max(self._step, int(update or 0))
            self._safe(self.wandb.log, dict(data), step=self._step)

    def log(self, row: Mapping[str, Any]) -> None:
        self.metrics.write(row)
        step = int(row.get("update", 0))
        scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "update"}
        self._wandb_log(scalars, step)
        if self.tb is not None:
            for k, v in scalars.items():
                self._safe(self.tb.add_scalar, k, v, step)

    def event(self, name: str, update: int, **data: Any) -> None:
        """An occasional thing; its numbers are also set in the W&B run summary, so the final
        `eval` event (the tuning objective) is what run tables and sweeps show."""
        self.events.write({"update": update, "event": name, "data": json.dumps(data, default=str)})
        numbers = {f"event/{name}/{k}": v for k, v in data.items() if isinstance(v, (int, float))}
        self._wandb_log({f"event/{name}": 1, **numbers}, update)
        if self.wandb is not None and numbers:
            self._safe(self.wandb.summary.update, numbers)

    def log_table(self, name: str, rows: List[Dict[str, Any]]) -> None:
        if self.wandb is None or not rows:
            return
        try:
            import wandb

            cols = list(rows[0])
            self._wandb_log({name: wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in rows])})
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f"W&B table not logged: {exc}")

    def log_images(self, images: Mapping[str, Path]) -> None:
        if self.wandb is None or not images:
            return
        try:
            import wandb

            self._wandb_log({f"report/{k}": wandb.Image(str(v)) for k, v in images.items()})
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f"W&B images not logged: {exc}")

    def close(self) -> None:
        if self.wandb is not None:
            self._safe(self.wandb.finish)
        if self.tb is not None:
            self._safe(self.tb.close)
