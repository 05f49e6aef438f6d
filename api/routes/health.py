"""Liveness, readiness and metrics: what Kubernetes probes and Prometheus scrape."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

log = logging.getLogger("roomfit.api")
router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Database, broker and blob store are reachable")
def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    checks: dict[str, str] = {}
    for name, check in (
        ("database", lambda: _check_database(state.engine)),
        ("broker", lambda: _check_broker(state.celery)),
        ("blob_store", lambda: state.blobs.ping()),
    ):
        started = time.perf_counter()
        try:
            check()
            checks[name] = f"ok ({(time.perf_counter() - started) * 1000:.0f} ms)"
        except Exception as exc:  # any failure means "not ready"; the reason goes to the body
            log.warning("readiness check %s failed: %s", name, exc)
            checks[name] = f"error: {type(exc).__name__}: {exc}"[:300]
    ready = all(v.startswith("ok") for v in checks.values())
    return JSONResponse({"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503)


def _check_database(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _check_broker(celery) -> None:  # type: ignore[no-untyped-def]
    with celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
