"""A deleted subject's adapter, and a retrained subject's old version, leave a real preview worker
process's memory and its machine's disk folder (worker/adapter_sweep.py), in distributed mode
(PostgreSQL, Redis, S3) and embedded mode (SQLite, filesystem broker, blob folder) alike."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import pytest
import torch

from api.services.subjects import delete_subject
from core import subjects
from core.blob_keys import adapter_key
from core.db import engine_for, session_factory
from core.migrate import upgrade
from core.repository import TenantRepository
from core.subjects import AdapterRecord
from core.tables import Preview, Subject, Tenant
from models import get_base_model, write_adapter
from models.adapter_disk import AdapterDiskTier
from models.lora import lora_parameters, lora_spec_of
from tests.worker.conftest import make_tenant, submit_preview
from tests.worker.stack import Stack, WorkerProcess, ready_subject_with_random_adapter, wait_for
from worker.adapter_sweep import ADAPTER_SWEEP_SECONDS, stale_adapter_ids

TIERS = re.compile(
    r"\(memory: (?P<memory>[^;]*); disk: (?P<disk>[^;]*); full fine-tunes: [^;]*; bank: [^)]*\)"
)


def paint(stack: Stack, worker: WorkerProcess, tenant_id: str, subject_id: str) -> None:
    preview_id, *_ = submit_preview(stack, tenant_id, subject_id)

    def done() -> Preview | None:
        with stack.session() as session:
            row = session.get(Preview, preview_id)
            return row if row is not None and row.status in ("succeeded", "failed") else None

    row = wait_for(done, 120, "the preview to finish")
    assert row.status == "succeeded", (row.error_code, row.error_message, worker.log()[-3000:])


def current_key(stack: Stack, subject_id: str) -> str:
    with stack.session() as session:
        row = session.get(Subject, subject_id)
        assert row is not None and row.adapter_key
        return row.adapter_key


def retrain(stack: Stack, tenant_id: str, subject_id: str, models_dir: Path) -> str:
    """What a finished training does (worker/train_job.py): version 2's blob, then `mark_ready`."""
    base = get_base_model("tiny", device="cpu", tiny_dir=models_dir / "tiny-pbe")
    generator = torch.Generator().manual_seed(99)
    data = write_adapter(
        {k: torch.randn(tuple(p.shape), generator=generator) for k, p in lora_parameters(base.unet).items()},
        reference_embedding=torch.randn((1, base.image_encoder.proj_size), generator=generator),
        base_model_id=base.model_id,
        base_weights_hash=base.weights_hash,
        spec=lora_spec_of(base.unet),
    )
    key = adapter_key(tenant_id, subject_id, 2)
    stack.blobs.put(key, data, content_type="application/octet-stream")
    with stack.session() as session:
        row = TenantRepository(session, tenant_id).get(Subject, subject_id)
        assert row is not None
        record = AdapterRecord(2, key, len(data), hashlib.sha256(data).hexdigest(), 4, base.model_id)
        subjects.mark_ready(row, record)
        session.commit()
    return key


def dropped_from(worker: WorkerProcess, adapter_id: str) -> dict[str, str] | None:
    """The worker's log line that says it dropped `adapter_id`, as {tier: ids}."""
    for line in worker.log().splitlines():
        found = TIERS.search(line)
        if found and "adapter sweep: dropped" in line and adapter_id in line:
            return found.groupdict()
    return None


def check_subjects_are_let_go(stack: Stack, models_dir: Path) -> dict[str, float]:
    tenant_id = make_tenant(stack)
    deleted = ready_subject_with_random_adapter(stack, tenant_id, models_dir, seed=3)
    retrained = ready_subject_with_random_adapter(stack, tenant_id, models_dir, seed=4)
    old = {s: current_key(stack, s) for s in (deleted, retrained)}
    worker = stack.start_worker("preview")
    worker.wait_ready()
    for subject_id in (deleted, retrained):
        paint(stack, worker, tenant_id, subject_id)
    disk = AdapterDiskTier(stack.settings.resolved_models_dir / "adapter-cache")
    assert {old[deleted], old[retrained]} <= set(disk.ids())
    timings: dict[str, float] = {}

    # Deleted, as DELETE /v1/subjects/{id} does: rows now, blobs after the commit.
    with stack.session() as session:
        done = delete_subject(TenantRepository(session, tenant_id), stack.blobs, deleted)
        session.commit()
    for after in done.after_commit:
        after()
    started = time.monotonic()
    tiers = wait_for(lambda: dropped_from(worker, old[deleted]), 6 * ADAPTER_SWEEP_SECONDS, "the sweep")
    timings["deleted"] = time.monotonic() - started
    assert old[deleted] in tiers["memory"].split() and old[deleted] in tiers["disk"].split(), tiers
    assert old[deleted] not in disk.ids() and not disk.path(old[deleted]).exists()
    assert old[retrained] in disk.ids()  # the other subject's adapter stays

    # Retrained: version 2 becomes current; the next preview paints it, version 1 goes everywhere.
    new = retrain(stack, tenant_id, retrained, models_dir)
    started = time.monotonic()
    paint(stack, worker, tenant_id, retrained)
    tiers = wait_for(lambda: dropped_from(worker, old[retrained]), 6 * ADAPTER_SWEEP_SECONDS, "the sweep")
    timings["retrained"] = time.monotonic() - started
    assert old[retrained] in tiers["memory"].split() and old[retrained] in tiers["disk"].split(), tiers
    assert old[retrained] not in disk.ids() and not disk.path(old[retrained]).exists()
    assert new in disk.ids()  # painted with version 2, which stays
    time.sleep(ADAPTER_SWEEP_SECONDS + 1)  # another pass keeps what is current
    assert new in disk.ids() and dropped_from(worker, new) is None
    assert "adapter sweep failed" not in worker.log()
    return timings


@pytest.mark.integration
@pytest.mark.slow
def test_a_distributed_worker_lets_go_of_deleted_and_retrained_subjects(
    distributed_stack: Stack, shared_models_dir: Path
) -> None:
    timings = check_subjects_are_let_go(distributed_stack, shared_models_dir)
    print(f"distributed: dropped {timings} seconds after the change")


@pytest.mark.integration
@pytest.mark.slow
def test_an_embedded_worker_lets_go_of_deleted_and_retrained_subjects(
    embedded_stack: Stack, shared_models_dir: Path
) -> None:
    timings = check_subjects_are_let_go(embedded_stack, shared_models_dir)
    print(f"embedded: dropped {timings} seconds after the change")


def test_stale_ids_are_those_no_subject_paints_now(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'roomfit.db'}"
    upgrade(url)
    with session_factory(engine_for(url))() as session:
        session.add_all([Tenant(id="ten_a", name="a"), Tenant(id="ten_b", name="b")])
        session.flush()
        session.add_all(
            [
                Subject(
                    id="sub_ready",
                    tenant_id="ten_a",
                    name="s",
                    status="ready",
                    adapter_version=2,
                    adapter_key=adapter_key("ten_a", "sub_ready", 2),
                ),
                Subject(id="sub_new", tenant_id="ten_a", name="s", status="training"),
            ]
        )
        session.commit()
        held = [
            adapter_key("ten_a", "sub_ready", 2),  # current: kept
            adapter_key("ten_a", "sub_ready", 1),  # retrained since
            adapter_key("ten_a", "sub_new", 1),  # a version that never became current
            adapter_key("ten_a", "sub_gone", 3),  # deleted
            adapter_key("ten_b", "sub_ready", 2),  # another tenant's id never names this subject
            "sofa.safetensors",  # not a subject's adapter (roomfit paint --adapter): not the sweep's
        ]
        assert stale_adapter_ids(session, held) == held[1:5]
