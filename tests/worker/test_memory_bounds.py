"""Rooms and product photos of extreme shapes, on real worker processes: memory stays bounded.

The issue ("Safe to face the public", finding 1): a 17 KB JPEG room of 65000x2 with a full mask
grew the preview worker past 18 GB until the kernel killed it (16000x2: 0.6 -> 2.4 GB), because
the engine built its crop square at full scale. Here the jobs are stored as the API stores them
(rows, blobs, the queue), not POSTed: the API has shape limits of its own, and this test is about
what the worker does with whatever reaches it. Peak RSS is the worker process's VmHWM (`roomfit
worker` runs Celery's solo pool in its own process, so the PID `Stack` started is the worker).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.tables import Preview, Subject
from tests.worker.conftest import make_tenant, product_photo, submit_preview, submit_subject
from tests.worker.stack import Stack, WorkerProcess, wait_for

pytestmark = pytest.mark.integration

# Measured (tiny model, CPU): painting a 65000x2 or 16000x2 room grows the warm preview worker by
# a few MiB, and training on a 16000x2 photo the train worker by about as much (see
# BENCHMARKS.md, "Engine memory across room shapes"); before the fix 16000x2 alone took +2.4 GB.
# 300 MB leaves room for allocator noise and still fails the old behaviour eightfold.
GROWTH_BOUND_KIB = 300 * 1024


def peak_rss_kib(worker: WorkerProcess) -> int:
    """The worker process's peak resident memory so far (VmHWM), in KiB."""
    assert worker.process is not None and worker.process.poll() is None, worker.log()[-3000:]
    for line in Path(f"/proc/{worker.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def gradient_room(width: int, height: int) -> Image.Image:
    """A smooth room, small as a JPEG as in the issue (65000x2: ~150 KB, 16000x2: ~40 KB)."""
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = np.linspace(0, 255, width).astype(np.uint8)[None, :]
    pixels[..., 1] = np.linspace(0, 255, height).astype(np.uint8)[:, None]
    pixels[..., 2] = 90
    return Image.fromarray(pixels)


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def finished(stack: Stack, model: type, id_: str):  # type: ignore[no-untyped-def]
    with stack.session() as session:
        row = session.get(model, id_)
        return row if row is not None and row.status in ("ready", "succeeded", "failed") else None


def train(
    stack: Stack, worker: WorkerProcess, tenant_id: str, photos: list[tuple[Image.Image, list[int]]]
) -> str:
    """A subject with these photos and boxes, trained on `worker` to `ready`; its id."""
    subject_id, _ = submit_subject(stack, tenant_id, photos=photos)
    subject = wait_for(lambda: finished(stack, Subject, subject_id), 300, f"subject {subject_id} to train")
    assert subject.status == "ready", (subject.error_code, subject.error_message, worker.log()[-3000:])
    return subject_id


def preview(
    stack: Stack, worker: WorkerProcess, tenant_id: str, subject_id: str, room: bytes, mask: np.ndarray
) -> Image.Image:
    """The stored result of painting `room` (encoded JPEG) inside `mask` ([H,W] bool)."""
    preview_id, _, _, _ = submit_preview(
        stack, tenant_id, subject_id, seed=3, room=(room, "image/jpeg"), mask=mask
    )
    height, width = mask.shape
    row = wait_for(lambda: finished(stack, Preview, preview_id), 180, f"preview of a {width}x{height} room")
    assert row.status == "succeeded", (row.error_code, row.error_message, worker.log()[-3000:])
    return Image.open(io.BytesIO(stack.blobs.get(row.result_key))).convert("RGB")


def check_painted(result: Image.Image, room: bytes, mask: np.ndarray) -> None:
    pixels, original = np.asarray(result), np.asarray(Image.open(io.BytesIO(room)).convert("RGB"))
    assert pixels.shape == original.shape  # the room's size
    assert np.array_equal(pixels[~mask], original[~mask])  # untouched outside the mask
    assert (pixels[mask] != original[mask]).any()  # and painted inside it


def test_extreme_rooms_and_photos_keep_the_workers_memory_bounded(embedded_stack: Stack) -> None:
    stack = embedded_stack
    tenant_id = make_tenant(stack)
    trainer = stack.start_worker("train")
    painter = stack.start_worker("preview,default")
    trainer.wait_ready()
    painter.wait_ready()

    # Training: a normal subject sets the warm baseline, then one with a 16000x2 product photo.
    subject_id = train(stack, trainer, tenant_id, [product_photo(0), product_photo(1)])
    trained_warm = peak_rss_kib(trainer)
    thin_photo = gradient_room(16_000, 2)
    train(stack, trainer, tenant_id, [product_photo(0), (thin_photo, [4_000, 0, 12_000, 2])])
    trained_peak = peak_rss_kib(trainer)
    assert trained_peak - trained_warm <= GROWTH_BOUND_KIB, (trained_warm, trained_peak)

    # Previews: a normal room sets the warm baseline (model loaded, adapter cached, one paint).
    normal = jpeg_bytes(gradient_room(320, 240))
    mask = np.zeros((240, 320), bool)
    mask[60:180, 80:240] = True
    check_painted(preview(stack, painter, tenant_id, subject_id, normal, mask), normal, mask)
    warm = peak_rss_kib(painter)

    for width in (65_000, 16_000):
        room = jpeg_bytes(gradient_room(width, 2))
        full = np.ones((2, width), bool)  # the full mask
        check_painted(preview(stack, painter, tenant_id, subject_id, room, full), room, full)
        # most of the room, so that pixels outside the mask are there to stay unchanged
        most = full.copy()
        most[:, : width // 10] = False
        most[1, -width // 10 :] = False
        check_painted(preview(stack, painter, tenant_id, subject_id, room, most), room, most)

    peak = peak_rss_kib(painter)
    assert peak - warm <= GROWTH_BOUND_KIB, (warm, peak)
    print(f"\npreview worker VmHWM: warm {warm >> 10} MiB, after the extreme rooms {peak >> 10} MiB")
    print(
        f"train worker VmHWM: warm {trained_warm >> 10} MiB, after a 16000x2 photo {trained_peak >> 10} MiB"
    )
