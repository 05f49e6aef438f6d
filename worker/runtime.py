"""What a worker process holds for its whole life: settings, database, blob store, and the model.

A GPU worker loads the base model once (at start, so a model that cannot be found stops the worker
with a message naming the setting, instead of failing every job) and reuses it for every task. The
preview pool keeps the `Painter` (base model + AdapterCache + FullWeightsSlot: one full fine-tune
cached, plus a CPU copy of the base UNet once one is painted); the train pool keeps the base model.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from core.blobstore import BlobStore, blob_store_from_settings
from core.db import engine_for, session_factory
from core.settings import Settings, get_settings

if TYPE_CHECKING:
    from celery import Celery

    from models import BaseModel, Painter
    from models.detector import Detector

log = logging.getLogger("roomfit.worker")
# Full fine-tunes a preview worker keeps ready in host memory (one UNet each: 1.7 GB fp16 for the
# real one); another subject's is read from the blob store again.
FULL_WEIGHTS_CACHED = 1


class Runtime:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.history_sweep_due = 0.0  # time.monotonic() of this process's next history sweep (reconciler)
        self._lock = threading.Lock()

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return session_factory(engine_for(self.settings.resolved_database_url))

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session:
            yield session

    @cached_property
    def blobs(self) -> BlobStore:
        return blob_store_from_settings(self.settings)

    @cached_property
    def celery(self) -> Celery:
        """A Celery app on this runtime's broker, for sending (the worker's own app consumes)."""
        from core.queue import make_celery

        return make_celery(self.settings)

    @property
    def models_dir(self) -> Path:
        return self.settings.resolved_models_dir

    @cached_property
    def base_model(self) -> BaseModel:
        from models import get_base_model

        s = self.settings
        log.info("loading base model %s (device %s, dtype %s)", s.base_model, s.device, s.dtype)
        return get_base_model(
            s.base_model,
            device=s.device,
            dtype=s.dtype,
            tiny_dir=self.models_dir / "tiny-pbe",
            compile=s.compile,
        )

    @cached_property
    def detector(self) -> Detector:
        from models.detector import load_detector

        s = self.settings
        return load_detector(s.detector, device=s.device, tiny_dir=self.models_dir / "tiny-detr")

    @cached_property
    def painter(self) -> Painter:
        from models import Painter
        from worker.adapter_sweep import start_adapter_sweeper

        with self._lock:
            painter = Painter(
                self.base_model,
                lora_rank=self.settings.lora_rank,
                cache_bytes=self.settings.adapter_cache_bytes,
                disk_dir=self.models_dir / "adapter-cache",
                loader=self.blobs.get,
                full_weights_cached=FULL_WEIGHTS_CACHED,
                adapter_slots=self.settings.adapter_slots,
            )
            painter.adapters.disk_bytes = self.settings.adapter_disk_bytes  # shared by this machine's workers
            start_adapter_sweeper(self, painter)  # deleted / retrained subjects' adapters let go
            return painter

    @property
    def loaded_painter(self) -> Painter | None:
        """The painter if this process has loaded one (a worker serving previews), without loading it."""
        return self.__dict__.get("painter")


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The process's runtime (one per worker process)."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime()
    return _runtime


def reset_runtime(runtime: Runtime | None = None) -> None:
    """Tests run tasks in-process against their own settings."""
    global _runtime
    _runtime = runtime
