"""A roomfit deployment for worker tests: settings for real services, and real worker processes.

`Stack` holds the environment (database, broker, blob store, models folder) that both the test
and the worker processes it starts read, so they see one deployment. `WorkerProcess` runs
`roomfit worker --queues ...` as a child process and stops it by PID (or kills it with SIGKILL,
which is the point of some tests).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
from sqlalchemy.orm import Session

from core.blob_keys import adapter_key
from core.blobstore import BlobStore, blob_store_from_settings
from core.db import engine_for, session_factory
from core.ids import new_id
from core.queue import make_celery
from core.settings import Settings
from core.tables import Base, Subject
from models import get_base_model, inject_lora, write_adapter
from models.lora import lora_parameters, lora_spec_of
from tests.services import S3Settings

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 120.0
FINAL = ("ready", "succeeded", "failed", "cancelled")  # statuses a subject, preview or job ends in
R = TypeVar("R", bound=Base)


@dataclass
class Stack:
    env: dict[str, str]
    folder: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        values = {
            k.removeprefix("ROOMFIT_").lower(): v for k, v in self.env.items() if k.startswith("ROOMFIT_")
        }
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    @contextmanager
    def session(self) -> Iterator[Session]:
        with session_factory(engine_for(self.settings.resolved_database_url))() as session:
            yield session

    def row(self, model: type[R], id_: str) -> R:
        """The row as the database has it now (detached); it must exist."""
        with self.session() as session:
            found = session.get(model, id_)
        assert found is not None, f"no {model.__name__} {id_}"
        return found

    def finished(self, model: type[R], id_: str) -> R | None:
        """The row once its status is final, else None (for `wait_for`)."""
        found = self.row(model, id_)
        return found if found.status in FINAL else None  # type: ignore[attr-defined]

    @property
    def blobs(self) -> BlobStore:
        return blob_store_from_settings(self.settings)

    @property
    def celery(self):  # type: ignore[no-untyped-def]
        return make_celery(self.settings)

    def start_worker(self, queues: str, **extra_env: str) -> WorkerProcess:
        worker = WorkerProcess(self, queues, extra_env)
        worker.start()
        self.workers.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()


@dataclass
class WorkerProcess:
    stack: Stack
    queues: str
    extra_env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self) -> None:
        name = f"{self.queues.replace(',', '-')}-{len(self.stack.workers)}-{time.monotonic_ns()}"
        self.log_path = self.stack.folder / f"worker-{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMFIT_")}
        env.update(self.stack.env)
        env.update(self.extra_env)
        env["PYTHONPATH"] = str(REPO)
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "worker", "--queues", self.queues, "--name", f"{name}@%h"],
                cwd=self.stack.folder,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            if " ready." in self.log():
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log()[-3000:]}")

    def kill9(self) -> None:
        """kill -9 of the worker's process group, mid-task if the test timed it so."""
        assert self.process is not None and self.process.poll() is None, "the worker is not running"
        self.stop()

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def stop(self) -> None:
        """At a test's end: SIGKILL. No task is worth finishing then, and Celery's cold shutdown
        (SIGQUIT) took 3 to 5 s a worker, most of it waiting for the consumer loop to look at its
        flag; across the worker tests that was about two minutes of CI. Graceful stops have tests
        of their own (test_graceful_stop.py), which send their own signals."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def tiny_distributed_env(folder: Path, database_url: str, redis_url: str, s3: S3Settings) -> dict[str, str]:
    """Settings of a tiny-model deployment on these servers (benches start their own stacks)."""
    return {
        "ROOMFIT_BASE_MODEL": "tiny",
        "ROOMFIT_DETECTOR": "tiny",
        "ROOMFIT_DEVICE": "cpu",
        "ROOMFIT_VAR_DIR": str(folder / "var"),
        "ROOMFIT_MODELS_DIR": str(folder / "models"),
        "ROOMFIT_DATABASE_URL": database_url,
        "ROOMFIT_BROKER_URL": redis_url,
        "ROOMFIT_BLOB_URL": "s3://bench",
        "ROOMFIT_S3_ENDPOINT_URL": s3.endpoint,
        "ROOMFIT_S3_ACCESS_KEY_ID": s3.access_key,
        "ROOMFIT_S3_SECRET_ACCESS_KEY": s3.secret_key,
        "ROOMFIT_S3_REGION": s3.region,
        "ROOMFIT_RATE_LIMIT": "100000/minute",
        "ROOMFIT_LOG_LEVEL": "WARNING",
    }


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):  # type: ignore[no-untyped-def]
    """Poll until `predicate()` is truthy; its value is returned. Fails naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def ready_subject_with_random_adapter(stack: Stack, tenant_id: str, models_dir: Path, seed: int = 3) -> str:
    """A `ready` subject whose adapter is random but well-formed, as training would leave it."""
    base = get_base_model("tiny", device="cpu", tiny_dir=models_dir / "tiny-pbe")
    if getattr(base.unet, "roomfit_lora", None) is None:
        base.lora = inject_lora(base.unet, rank=4)
    generator = torch.Generator().manual_seed(seed)
    lora = {
        k: torch.randn(tuple(p.shape), generator=generator) * 0.5
        for k, p in lora_parameters(base.unet).items()
    }
    data = write_adapter(
        lora,
        reference_embedding=torch.randn((1, base.image_encoder.proj_size), generator=generator),
        base_model_id=base.model_id,
        base_weights_hash=base.weights_hash,
        spec=lora_spec_of(base.unet),
    )
    subject_id = new_id("sub")
    key = adapter_key(tenant_id, subject_id, 1)
    stack.blobs.put(key, data, content_type="application/octet-stream")
    with stack.session() as session:
        session.add(
            Subject(
                id=subject_id,
                tenant_id=tenant_id,
                name="random",
                status="ready",
                adapter_version=1,
                adapter_key=key,
                adapter_bytes=len(data),
                adapter_sha256=hashlib.sha256(data).hexdigest(),
                adapter_rank=4,
                adapter_base_model="tiny",
            )
        )
        session.commit()
    return subject_id
