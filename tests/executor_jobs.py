"""Job functions of tests/test_executor.py and tests/test_ray_cluster.py, in a module that imports almost
nothing, so a spawned local worker starts in a fraction of a second (Ray ships them by value)."""

import os
import signal
from pathlib import Path


def die_once(job):
    """The first call (of any job) SIGKILLs its own worker process; the marker file says it happened.
    Every other call is the suite job itself."""
    from vidur_ppo.eval.suite import safe_suite_job

    marker, suite_job = job
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return safe_suite_job(suite_job)
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def recorded(job):
    """A job that leaves a file per run, so a test sees which jobs ran."""
    runs, seed = job
    (Path(runs) / str(seed)).touch()
    return {"seed": seed, "square": seed * seed}


def environment_variable(name):
    """The worker's value of an environment variable."""
    return os.environ.get(name)


def sleep_for(seconds):
    """A long job: what a stop must not wait for."""
    import time

    time.sleep(seconds)
    return seconds
