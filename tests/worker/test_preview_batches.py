"""Previews of different products painted together, on real worker processes: sixteen previews of
four subjects, queued at once for one preview worker, go through at most four UNet batches; one whose
room was removed fails alone with its code; a worker killed mid-batch loses no job of its batch."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.tables import Job, Preview
from tests.worker.conftest import make_tenant, submit_preview
from tests.worker.stack import Stack, ready_subject_with_random_adapter, wait_for

pytestmark = pytest.mark.integration

FINAL = ("succeeded", "failed", "cancelled")


def _rows(stack: Stack, preview_ids: list[str]) -> list[tuple[Preview, Job]]:
    with stack.session() as session:
        previews = [session.get(Preview, pid) for pid in preview_ids]
        return [(p, session.get(Job, p.job_id)) for p in previews]  # type: ignore[union-attr,misc]


def _all_final(stack: Stack, preview_ids: list[str]) -> list[tuple[Preview, Job]] | None:
    rows = _rows(stack, preview_ids)
    return rows if all(p.status in FINAL for p, _ in rows) else None


def _outside_mask_is_the_room(stack: Stack, preview: Preview, room: Image.Image, mask: np.ndarray) -> None:
    result = np.asarray(Image.open(io.BytesIO(stack.blobs.get(preview.result_key))).convert("RGB"))
    assert np.array_equal(result[~mask], np.asarray(room)[~mask])


def _four_products(stack: Stack, models_dir: Path) -> tuple[str, list[str]]:
    """A tenant with four ready subjects, each with its own adapter."""
    tenant_id = make_tenant(stack)
    return tenant_id, [
        ready_subject_with_random_adapter(stack, tenant_id, models_dir, seed=s) for s in range(4)
    ]


@pytest.mark.slow
def test_sixteen_previews_of_four_products_in_at_most_four_batches(
    distributed_stack: Stack, shared_models_dir: Path
) -> None:
    stack = distributed_stack
    tenant_id, subjects = _four_products(stack, shared_models_dir)
    submitted = [submit_preview(stack, tenant_id, subjects[i % 4], seed=i) for i in range(16)]
    broken = submitted[5]
    stack.blobs.delete(stack.row(Preview, broken[0]).room_key)  # its room removed behind the service's back

    worker = stack.start_worker("preview", ROOMFIT_PREVIEW_BATCH="4")  # all 16 wait before it starts
    ids = [preview_id for preview_id, *_ in submitted]
    rows = wait_for(lambda: _all_final(stack, ids), 240, "all sixteen previews")

    by_id = {p.id: (p, job) for p, job in rows}
    failed, job = by_id[broken[0]]
    assert (failed.status, failed.error_code) == ("failed", "image_unreadable"), worker.log()[-3000:]
    assert job.attempts == 1
    painted = [(p, j) for p, j in rows if p.id != broken[0]]
    assert [p.status for p, _ in painted] == ["succeeded"] * 15, [
        (p.error_code, p.error_message) for p, _ in rows
    ]
    batches: dict[str, list[Job]] = {}
    for _, j in painted:
        batches.setdefault(j.timings["batch_id"], []).append(j)
    assert len(batches) <= 4, {b: len(js) for b, js in batches.items()}
    for members in batches.values():  # each job records its batch's size: the rows painted together
        assert all(j.timings["batch_size"] == len(members) for j in members)
    assert any(len({j.subject_id for j in members}) > 1 for members in batches.values())  # mixed
    for preview_id, _, room, mask in submitted:
        if preview_id != broken[0]:
            _outside_mask_is_the_room(stack, by_id[preview_id][0], room, mask)
    print(f"batch sizes: {sorted(len(m) for m in batches.values())}")


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_no_job_of_it(
    distributed_stack: Stack, shared_models_dir: Path
) -> None:
    stack = distributed_stack
    tenant_id, subjects = _four_products(stack, shared_models_dir)
    submitted = [submit_preview(stack, tenant_id, subjects[i], seed=i, steps=80) for i in range(4)]
    first = stack.start_worker("preview", ROOMFIT_PREVIEW_BATCH="4")  # finds all four queued
    ids = [preview_id for preview_id, *_ in submitted]

    def batch_painting() -> bool:
        return all(j.stage == "painting" and (j.progress or 0) > 0.06 for _, j in _rows(stack, ids))

    wait_for(batch_painting, 120, "the four previews to be painting together")
    first.kill9()
    assert all(j.status == "running" for _, j in _rows(stack, ids))  # the database still believes in it

    stack.start_worker("preview", ROOMFIT_PREVIEW_BATCH="4")  # its reconciler re-sends the lost jobs
    rows = wait_for(lambda: _all_final(stack, ids), 240, "the batch to be painted again")
    assert [(p.status, j.attempts) for p, j in rows] == [("succeeded", 2)] * 4
    for (preview_id, _, room, mask), (preview, _) in zip(submitted, rows, strict=True):
        assert preview.id == preview_id
        _outside_mask_is_the_room(stack, preview, room, mask)
