"""Liveness, readiness and metrics: what Kubernetes probes and Prometheus scrape."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from sqlalchemy import Engine, text

from api import scrape
from api.deps import BlobsDep, CeleryDep, EngineDep
from core.queue import check_broker

log = logging.getLogger("roomfit.api")
router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    """The answer of /readyz, 200 or 503."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(
        description="per dependency (`database`, `broker`, `blob_store`): `ok (N ms)` or `error: ...`",
        examples=[{"database": "ok (1 ms)", "broker": "ok (2 ms)", "blob_store": "ok (3 ms)"}],
    )


@router.get("/healthz", response_model=Health, operation_id="get_health", summary="The process is up")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    operation_id="get_readiness",
    summary="Database, broker and blob store are reachable",
    responses={503: {"model": Readiness, "description": "A dependency is unreachable; `checks` says which."}},
)
def readyz(engine: EngineDep, celery: CeleryDep, blobs: BlobsDep) -> JSONResponse:
    checks: dict[str, str] = {}
    probes: tuple[tuple[str, Callable[[], None]], ...] = (
        ("database", lambda: _check_database(engine)),
        ("broker", lambda: check_broker(celery)),
        ("blob_store", blobs.ping),
    )
    for name, check in probes:
        started = time.perf_counter()
        try:
            check()
            checks[name] = f"ok ({(time.perf_counter() - started) * 1000:.0f} ms)"
        except Exception as exc:  # any failure means "not ready"; the reason goes to the body
            log.warning("readiness check %s failed: %s", name, exc)
            checks[name] = f"error: {type(exc).__name__}: {exc}"[:300]
    ready = all(v.startswith("ok") for v in checks.values())
    return JSONResponse({"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503)


def _check_database(engine: Engine) -> None:
    # The engine, not the request's session: readiness must not open a transaction to commit.
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
def metrics() -> Response:
    return Response(scrape.latest(), media_type=CONTENT_TYPE_LATEST)  # one process or several (api.scrape)
