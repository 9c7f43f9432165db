"""W&B (real wandb, no network): the final evaluation metrics and the objective are in the offline
run's files, and an online run whose server does not answer falls back to offline within 15 s.
Each case runs in its own process: wandb keeps process-wide state."""

import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402

OBJECTIVE = "event/eval/ppo_e2e_p99"
# What train.py does: per-update rows, the report's table, then the final `eval` event.
SCRIPT = """
import sys
from pathlib import Path
from vidur_ppo.runlog import LoggerConfig, RunLogger
logger = RunLogger(Path(sys.argv[1]), {"seed": 0}, LoggerConfig(wandb=True))
for update in (1, 2):
    logger.log({"update": update, "loss": 1.0 / update})
logger.log_table("eval/summary", [{"scheduler": "ppo", "seed": 100000, "e2e_p99": 12.5}])
logger.event("eval", 2, ppo_e2e_p99=12.5)
logger.close()
"""


def _run(run_dir, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and "proxy" not in k.lower()}
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(run_dir)], capture_output=True, text=True, timeout=120,
                         env={**clean, "WANDB_SILENT": "true", **env})
    assert out.returncode == 0, out.stderr[-3000:]
    return out, time.monotonic() - start


def _records(path: Path):
    """The records of a .wandb file (a LevelDB-style log of protobuf `Record`s in 32 KiB blocks)."""
    data, pos, buf = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):  # block trailer / padding
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def _offline_run(run_dir: Path):
    """The objective in the offline run's history and summary, and the eval table's file."""
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((run_dir / "wandb").iterdir())
    history, summary = {}, {}
    for r in _records(next(runs[0].glob("run-*.wandb"))):
        if r.WhichOneof("record_type") == "history":
            history.update({i.key or "/".join(i.nested_key): i.value_json for i in r.history.item})
        elif r.WhichOneof("record_type") == "summary":
            summary.update({i.key or "/".join(i.nested_key): i.value_json for i in r.summary.update})
    assert float(history.get(OBJECTIVE, "nan")) == 12.5, sorted(history)
    assert float(summary.get(OBJECTIVE, "nan")) == 12.5, sorted(summary)
    assert list(runs[0].glob("files/media/table/eval/summary_*.table.json"))
    return runs[0]


def test_offline_run_stores_the_final_eval_and_the_objective(tmp_path):
    out, _ = _run(tmp_path, WANDB_MODE="offline")
    _offline_run(tmp_path)
    assert "warning" not in out.stderr
    assert (tmp_path / "events.csv").read_text().count("eval") == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_online_without_a_server_falls_back_to_offline_quickly(tmp_path):
    out, took = _run(tmp_path, WANDB_MODE="online", WANDB_BASE_URL=f"http://127.0.0.1:{_closed_port()}",
                     WANDB_API_KEY="x" * 40)
    run = _offline_run(tmp_path)
    assert took < 15, took
    warning = [line for line in out.stderr.splitlines() if "W&B" in line]
    assert len(warning) == 1 and "unreachable; logging offline" in warning[0] and f"wandb sync {run}" in warning[0]


def test_online_with_a_server_that_never_answers_falls_back_and_exits_quickly(tmp_path):
    with socket.socket() as server:  # accepts connections (the kernel's backlog), never answers
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        out, took = _run(tmp_path, WANDB_MODE="online", WANDB_BASE_URL=f"http://127.0.0.1:{server.getsockname()[1]}",
                         WANDB_API_KEY="x" * 40)
    _offline_run(tmp_path)
    assert took < 15, took
    assert "unreachable; logging offline" in out.stderr
