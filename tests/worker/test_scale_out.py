"""Scale-out on one machine: PostgreSQL, Redis, SeaweedFS, one API (`roomfit serve`) and three
preview worker processes (tiny model). Twelve previews of three subjects, posted through the API,
all finish; every worker painted some; each loaded the base model exactly once."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.tables import Job, Preview
from tests.api.served import served_api
from tests.worker.conftest import png_bytes, product_photo
from tests.worker.stack import Stack, ready_subject_with_random_adapter, wait_for

pytestmark = pytest.mark.integration

WORKERS, SUBJECTS, PREVIEWS = 3, 3, 12
# the API process's own settings (served_env sets these itself)
_SERVED_SETS = {"ROOMFIT_VAR_DIR", "ROOMFIT_RATE_LIMIT", "ROOMFIT_LOG_LEVEL"}


@pytest.mark.slow
def test_three_preview_workers_share_twelve_previews(
    distributed_stack: Stack, shared_models_dir: Path
) -> None:
    stack = distributed_stack
    workers = [stack.start_worker("preview") for _ in range(WORKERS)]
    for worker in workers:
        worker.wait_ready()  # all three listening before the burst, so each can take a turn
    settings = {k.removeprefix("ROOMFIT_").lower(): v for k, v in stack.env.items() if k not in _SERVED_SETS}
    with served_api(stack.folder, **settings) as api:
        subjects = [
            ready_subject_with_random_adapter(stack, api.tenant_id, shared_models_dir, seed=seed)
            for seed in range(SUBJECTS)
        ]
        room, _ = product_photo(11, size=(96, 72))
        mask = np.zeros((room.height, room.width), dtype=np.uint8)
        mask[12:50, 20:70] = 255
        posted = []
        for index in range(PREVIEWS):
            answer = api.post(
                "/v1/previews",
                data={"subject_id": subjects[index % SUBJECTS], "seed": str(index)},
                files=[
                    ("room", ("room.png", png_bytes(room), "image/png")),
                    ("mask", ("mask.png", png_bytes(Image.fromarray(mask)), "image/png")),
                ],
            )
            assert answer.status_code == 202, answer.text
            posted.append(answer.json()["id"])

        def all_finished() -> list[Preview] | None:
            with stack.session() as session:
                rows = [session.get(Preview, pid) for pid in posted]
                done = all(r is not None and r.status in ("succeeded", "failed") for r in rows)
                return rows if done else None  # type: ignore[return-value]

        rows = wait_for(all_finished, 180, "all twelve previews")
        errors = [(r.error_code, r.error_message) for r in rows]
        assert [r.status for r in rows] == ["succeeded"] * PREVIEWS, errors
        for row in rows:  # painted inside the mask only
            result = np.asarray(Image.open(io.BytesIO(stack.blobs.get(row.result_key))).convert("RGB"))
            outside = mask == 0
            assert np.array_equal(result[outside], np.asarray(room)[outside])

        with stack.session() as session:
            jobs = [session.get(Job, r.job_id) for r in rows]
        assert all(job is not None and job.attempts == 1 for job in jobs)
        painted_by = Counter(job.worker for job in jobs if job is not None)
        assert len(painted_by) == WORKERS, f"previews per worker: {dict(painted_by)}"
        assert sum(painted_by.values()) == PREVIEWS
        print(f"previews per worker: {sorted(painted_by.values())}")

    for worker in workers:  # one model per process, loaded once, reused by every preview it painted
        assert worker.log().count("loading base model tiny") == 1, worker.log()[-2000:]
