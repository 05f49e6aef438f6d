"""What `/metrics` answers, with one API process per port or several (`roomfit serve --workers N`).

One process: prometheus_client's default registry (this process's counters, the process_* metrics
and the ops gauges of api.ops_metrics).

Several processes behind one port (uvicorn's workers share its socket, so each scrape reaches one
of them at random): prometheus_client's multiprocess mode. With `PROMETHEUS_MULTIPROC_DIR` set
before the processes start, every counter and histogram is kept in a file per process in that
folder, and a scrape sums the files of all of them, whichever process answers. The ops gauges are
read from the database at scrape time, the same in every process, so they are added once, from the
answering process. Not served in this mode: the process_* and python_* metrics (per process, they
would describe only whichever answered). No gauge of this process is kept in files, so a process
that exits needs no `mark_process_dead`; its counts stay in the sum, as counters must.

`prepare_multiprocess` is for the command that starts the processes: it sets the variable and
empties the folder of a previous run (prometheus_client's rule: stale files would be summed too).
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from api.ops_metrics import OpsCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The families of the ops gauges: computed at scrape time, shared state, never kept in files.
OPS_GAUGES = tuple(family.name for family in OpsCollector().describe())


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def latest() -> bytes:
    """The text of `/metrics`."""
    folder = multiprocess_dir()
    if folder is None:
        return generate_latest()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=folder)
    registry.register(REGISTRY.restricted_registry(OPS_GAUGES))  # type: ignore[arg-type]
    return generate_latest(registry)


def prepare_multiprocess(workers: int, default_dir: Path) -> Path | None:
    """Before the API's processes start: with several workers, or `PROMETHEUS_MULTIPROC_DIR` given,
    that folder (default `default_dir`) made, emptied of `*.db` files and set in the environment
    the workers inherit. None: one process, the default registry."""
    given = multiprocess_dir()
    if workers <= 1 and given is None:
        return None
    folder = Path(given) if given is not None else default_dir
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder
