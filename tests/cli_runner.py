"""Many CLI invocations in one interpreter: `python -m <module> argv...` through runpy, as `-m` does,
each with its own exit code and stderr. Why: a fresh process pays ~5 s of torch/vidur imports, and
a refusal or a short run is a fraction of that."""

import json
import subprocess
import sys
from typing import List, Sequence, Tuple

RUNNER = """
import contextlib, io, json, os, runpy, sys
from hydra.core.global_hydra import GlobalHydra
out = []
for module, argv, env in json.loads(sys.argv[1]):
    GlobalHydra.instance().clear()
    sys.argv = [module, *argv]
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    err, code = io.StringIO(), 0
    with contextlib.redirect_stderr(err):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:  # noqa: BLE001 - reported as a failure of the case
            code, _ = 99, err.write(f"Traceback: {exc!r}")
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    out.append((code, err.getvalue()))
print(json.dumps(out))
"""


def run_cli(calls: Sequence[Tuple[str, List[str]] | Tuple[str, List[str], dict]], cwd=None,
            timeout: float = 600) -> List[Tuple[int, str]]:
    """(exit code, stderr) of each (module, argv[, extra environment]) call, in order."""
    payload = [[c[0], list(c[1]), dict(c[2]) if len(c) > 2 else {}] for c in calls]
    out = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(payload)], capture_output=True, text=True,
                         timeout=timeout, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return [tuple(r) for r in json.loads(out.stdout.strip().splitlines()[-1])]
