"""What `roomfit worker` does before it takes its first task."""

from __future__ import annotations

import logging

from worker import metrics
from worker.heartbeat import Heartbeat, start_heartbeat
from worker.reconciler import start_reconciler
from worker.runtime import get_runtime

log = logging.getLogger("roomfit.worker")


def prepare_worker(queues: list[str]) -> Heartbeat:
    """Load the model this worker's queues need (a missing model stops it here, naming the
    setting), then start the reconciler loop, the heartbeat (worker.heartbeat; the caller signs
    it off when the worker stops) and, when asked, the /metrics server."""
    runtime = get_runtime()
    runtime.blobs.ping()
    if "preview" in queues:
        runtime.painter  # noqa: B018  (loads the base model and injects LoRA once)
    elif "train" in queues:
        runtime.base_model  # noqa: B018
    start_reconciler(runtime)
    heartbeat = start_heartbeat(runtime, queues)
    # Here, in the process that runs the tasks (solo or threads pool, see worker.metrics).
    metrics.serve(runtime.settings.worker_metrics_port, runtime.settings.worker_metrics_host)
    log.info("worker %s ready for %s", runtime.name, ",".join(queues))
    return heartbeat
