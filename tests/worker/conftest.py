"""Fixtures for worker tests: a distributed stack (PostgreSQL, Redis, SeaweedFS) and an embedded one."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy.orm import Session

from core import job_state
from core.blob_keys import photo_key, preview_mask_key, preview_room_key
from core.blobstore import BlobStore
from core.ids import new_id
from core.migrate import upgrade
from core.queue import enqueue
from core.settings import Settings
from core.tables import Job, Preview, Subject, SubjectPhoto, Tenant
from tests.services import RedisServer, S3Settings
from tests.worker.stack import Stack
from worker.runtime import Runtime, reset_runtime

# Short leases so a killed worker's job is picked up within seconds, and a training long enough on
# the tiny model to be interrupted in its middle.
COMMON_ENV = {
    "ROOMFIT_BASE_MODEL": "tiny",
    "ROOMFIT_DETECTOR": "tiny",
    "ROOMFIT_DEVICE": "cpu",
    "ROOMFIT_LEASE_SECONDS": "6",
    "ROOMFIT_PREVIEW_STEPS": "2",
    "ROOMFIT_TRAIN_STEPS": "6",
    "ROOMFIT_LOG_LEVEL": "INFO",
    "ROOMFIT_RATE_LIMIT": "100000/minute",  # the tests poll; rate limits have tests of their own
}


@pytest.fixture(scope="session")
def shared_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny models built once per session, so each worker process only loads them."""
    from models import ensure_tiny_model

    folder = tmp_path_factory.mktemp("worker-models")
    ensure_tiny_model(folder / "tiny-pbe")
    return folder


@pytest.fixture
def distributed_stack(
    fresh_postgres_url: str,
    redis_server: RedisServer,
    s3_settings: S3Settings,
    shared_models_dir: Path,
    tmp_path: Path,
) -> Iterator[Stack]:
    env = {
        **COMMON_ENV,
        "ROOMFIT_VAR_DIR": str(tmp_path / "var"),
        "ROOMFIT_MODELS_DIR": str(shared_models_dir),
        "ROOMFIT_DATABASE_URL": fresh_postgres_url,
        "ROOMFIT_BROKER_URL": redis_server.url,
        "ROOMFIT_BLOB_URL": f"s3://worker-{secrets.token_hex(4)}",
        "ROOMFIT_S3_ENDPOINT_URL": s3_settings.endpoint,
        "ROOMFIT_S3_ACCESS_KEY_ID": s3_settings.access_key,
        "ROOMFIT_S3_SECRET_ACCESS_KEY": s3_settings.secret_key,
        "ROOMFIT_S3_REGION": s3_settings.region,
    }
    stack = Stack(env=env, folder=tmp_path)
    upgrade(fresh_postgres_url)
    try:
        yield stack
    finally:
        stack.stop_all()


@pytest.fixture
def embedded_stack(shared_models_dir: Path, tmp_path: Path) -> Iterator[Stack]:
    env = {
        **COMMON_ENV,
        "ROOMFIT_VAR_DIR": str(tmp_path / "var"),
        "ROOMFIT_MODELS_DIR": str(shared_models_dir),
    }
    stack = Stack(env=env, folder=tmp_path)
    upgrade(stack.settings.resolved_database_url)
    try:
        yield stack
    finally:
        stack.stop_all()


# --- making work, as the API does -----------------------------------------------------------


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def product_photo(seed: int, size: tuple[int, int] = (96, 80)) -> tuple[Image.Image, list[int]]:
    """A striped 'product' on a noisy background, and its box."""
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    x0, y0 = int(rng.integers(5, width // 3)), int(rng.integers(5, height // 3))
    x1, y1 = x0 + width // 2, y0 + height // 2
    stripes = (np.arange(x1 - x0)[None, :] // 4 % 2) * 200 + 30
    pixels[y0:y1, x0:x1] = (
        np.stack([stripes, stripes // 2, 255 - stripes], -1).repeat(y1 - y0, 0).astype(np.uint8)
    )
    return Image.fromarray(pixels), [x0, y0, x1, y1]


def make_tenant(stack: Stack) -> str:
    with stack.session() as session:
        tenant = Tenant(id=new_id("ten"), name=new_id("shop"))
        session.add(tenant)
        session.commit()
        return tenant.id


def add_photos(
    session: Session,
    blobs: BlobStore,
    tenant_id: str,
    subject_id: str,
    photos: list[tuple[Image.Image, list[int]]],
) -> None:
    """The photos to the blob store and their rows (boxes given), as the API stores them."""
    for index, (image, box) in enumerate(photos):
        key = photo_key(tenant_id, subject_id, index, "png")
        blobs.put(key, png_bytes(image), content_type="image/png")
        session.add(
            SubjectPhoto(
                id=new_id("pho"),
                tenant_id=tenant_id,
                subject_id=subject_id,
                index=index,
                blob_key=key,
                width=image.width,
                height=image.height,
                box=box,
                source="given",
            )
        )


def submit_subject(
    stack: Stack,
    tenant_id: str,
    n_photos: int = 2,
    steps: int | None = None,
    photos: list[tuple[Image.Image, list[int]]] | None = None,
) -> tuple[str, str]:
    """Photos (generated, or these with their boxes) to the blob store, subject + photo + job rows,
    the job id to the `train` queue."""
    blobs = stack.blobs
    subject_id, job_id = new_id("sub"), new_id("job")
    photos = photos if photos is not None else [product_photo(index) for index in range(n_photos)]
    with stack.session() as session:
        subject = Subject(id=subject_id, tenant_id=tenant_id, name="striped sofa", label="couch")
        session.add(subject)
        session.flush()
        add_photos(session, blobs, tenant_id, subject_id, photos)
        params = {"steps": steps} if steps else {}
        session.add(Job(id=job_id, tenant_id=tenant_id, kind="train", subject_id=subject_id, params=params))
        session.commit()
    enqueue(stack.celery, "train", job_id)
    return subject_id, job_id


def submit_preview(
    stack: Stack,
    tenant_id: str,
    subject_id: str,
    seed: int = 7,
    room: tuple[bytes, str] | None = None,
    mask: np.ndarray | None = None,
    steps: int | None = None,
) -> tuple[str, str, Image.Image, np.ndarray]:
    """Room + mask to the blob store, preview + job rows, the job id to the `preview` queue. The
    room is generated unless given as (encoded bytes, content type); the mask ([H,W] bool) likewise.
    `steps`: sampling steps (None: the worker's default)."""
    blobs = stack.blobs
    if room is None:
        image, _ = product_photo(100 + seed, size=(101, 77))
        room = (png_bytes(image), "image/png")
    else:
        image = Image.open(io.BytesIO(room[0]))
    if mask is None:
        mask = np.zeros((image.height, image.width), dtype=bool)
        mask[20:60, 30:80] = True
    preview_id, job_id = new_id("prv"), new_id("job")
    room_key, mask_key = preview_room_key(tenant_id, preview_id), preview_mask_key(tenant_id, preview_id)
    blobs.put(room_key, room[0], content_type=room[1])
    blobs.put(mask_key, png_bytes(Image.fromarray(mask.astype(np.uint8) * 255)), content_type="image/png")
    with stack.session() as session:
        session.add(
            Preview(
                id=preview_id,
                tenant_id=tenant_id,
                subject_id=subject_id,
                job_id=job_id,
                seed=seed,
                steps=steps,
                width=image.width,
                height=image.height,
                room_key=room_key,
                mask_key=mask_key,
            )
        )
        session.flush()
        session.add(
            Job(id=job_id, tenant_id=tenant_id, kind="preview", preview_id=preview_id, subject_id=subject_id)
        )
        session.commit()
    enqueue(stack.celery, "preview", job_id)
    return preview_id, job_id, image, mask


@contextmanager
def in_process_runtime(tmp_path: Path, **settings: object) -> Iterator[Runtime]:
    """This process's worker runtime on an embedded database of its own (what tasks would use)."""
    runtime = Runtime(Settings(_env_file=None, var_dir=tmp_path / "var", **settings))  # type: ignore[call-arg]
    upgrade(runtime.settings.resolved_database_url)
    reset_runtime(runtime)
    try:
        yield runtime
    finally:
        reset_runtime(None)


def training_job(runtime: Runtime) -> str:
    """A queued training job of a new shop's subject (no photos): its id."""
    with runtime.session() as session:
        tenant = Tenant(id=new_id("ten"), name="shop")
        subject = Subject(id=new_id("sub"), tenant_id=tenant.id, name="sofa", tenant=tenant)
        job = Job(id=new_id("job"), tenant_id=tenant.id, kind="train", subject_id=subject.id, tenant=tenant)
        session.add_all([tenant, subject, job])
        session.commit()
        return job.id


def claimed_training(runtime: Runtime) -> job_state.Claim:
    """A training job of a new shop's subject, claimed by this runtime's worker."""
    job_id = training_job(runtime)
    with runtime.session() as session:
        held = job_state.claim(session, job_id, runtime.name, runtime.settings.lease_seconds, max_attempts=3)
    assert held is not None
    return held


@contextmanager
def painting_runtime(tmp_path: Path, models_dir: Path, **settings: object) -> Iterator[Runtime]:
    """An in-process runtime that paints with the tiny models, 2 steps a preview."""
    tiny = {"base_model": "tiny", "detector": "tiny", "device": "cpu", "preview_steps": 2}
    with in_process_runtime(tmp_path, models_dir=models_dir, **{**tiny, **settings}) as runtime:
        yield runtime
