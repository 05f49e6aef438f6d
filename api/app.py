"""The FastAPI application: `create_app()` is the one place it is assembled."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import Counter, Histogram
from starlette.types import Scope

from api import access_log
from api.access_log import with_request_ids
from api.cors import KeyOriginCORS, listed_origin_check
from api.event_streams import Feed
from api.fast_reads import FastPreviewRead
from api.openapi import install_document
from api.ops_metrics import install_ops_metrics
from api.problems import install_problem_handlers
from api.rate_limit import RateLimiter
from api.routes import demo, docs, events, health, jobs, ops, ops_console, previews, subjects, webhook, widget
from core import logs
from core.async_db import PerLoop, async_reader, listen_conninfo
from core.blobstore import blob_store_from_settings
from core.db import engine_for, session_factory
from core.queue import make_celery
from core.settings import Settings, get_settings
from core.webhook_urls import resolve_with_deadline

DESCRIPTION = """\
REST contract v1 (docs/api.md in the repository). Authenticate every `/v1` call with
`Authorization: Bearer <key>`: secret keys (`sk_`) may do everything of their tenant; publishable
keys (`pk_`) may create previews of ready subjects, read the previews they made and a subject's
status, only from their listed origins; ops keys (`ok_`) may use `/v1/ops/*` and read every
tenant's jobs.

Errors are `application/problem+json` with a stable snake_case `code`. Every POST accepts an
`Idempotency-Key` header. Past the per-key rate limit, 429 with `Retry-After`.
"""

REQUESTS = Counter("roomfit_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("roomfit_http_request_seconds", "HTTP request latency", ["method", "route"])
# A label value per method a client makes up would grow the series without bound: those are "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def count_request(scope: Scope, status: int, seconds: float) -> None:
    """Count and time a request by its route template (never the raw path: ids would explode the
    labels; "unmatched" when no route matched). Called by api.access_log's outermost middleware, so
    the fast read path (api.fast_reads) and 500s are counted too."""
    template = getattr(scope.get("route"), "path", "unmatched")
    method = scope["method"] if scope["method"] in METHODS else "other"
    REQUESTS.labels(method, template, str(status)).inc()
    LATENCY.labels(method, template).observe(seconds)


_gc_tuned = False


def tune_gc() -> None:
    """Once per process, when the server starts: the objects of startup (modules, the app, its
    routes and models; some hundred thousand) go to the permanent generation, and collections run
    less often. A full collection walked all of them, under load every second or so, and stalled
    every request in flight: p99 of `GET /v1/previews/{id}` 220 ms before, 67 ms after, at 50
    clients (BENCHMARKS.md). Requests make little cyclic garbage; what they make is still collected."""
    global _gc_tuned
    if not _gc_tuned:
        _gc_tuned = True
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 20, 1_000)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    tune_gc()
    yield
    await app.state.reader.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logs.configure(settings.log_level)  # JSON lines or text (ROOMFIT_LOG_FORMAT), with the request's ids
    app = FastAPI(
        title="roomfit",
        version="1.0",
        summary="Paint a shop's own product into a shopper's room photo.",
        description=DESCRIPTION,
        docs_url=None,  # /docs and /redoc: api.routes.docs, from shipped files
        redoc_url=None,
        lifespan=lifespan,
    )
    access_log.install()
    app.state.settings = settings
    app.state.engine = engine_for(settings.resolved_database_url)
    app.state.sessions = session_factory(app.state.engine)
    app.state.reader = async_reader(app.state.engine, settings.database_read_connections)
    app.state.feeds = PerLoop(lambda: Feed(app.state.reader, listen_conninfo(app.state.engine)))
    app.state.blobs = blob_store_from_settings(settings)
    app.state.celery = make_celery(settings)
    app.state.rate_limiter = RateLimiter.from_settings(settings)
    app.state.resolve = resolve_with_deadline  # webhook hosts
    install_problem_handlers(app)
    install_document(app)  # /openapi.json: one Problem schema, Idempotency-Replayed
    for module in (health, subjects, previews, events, jobs, ops, ops_console, webhook, widget, demo, docs):
        app.include_router(module.router)
    app.add_middleware(FastPreviewRead)
    app.add_middleware(KeyOriginCORS, is_listed=listed_origin_check(app.state.sessions))
    install_ops_metrics(app)  # queue depths, oldest job, live workers, webhook backlog
    # Outermost, outside Starlette's error middleware: a 500 carries its X-Request-ID, is logged and counted.
    app.build_middleware_stack = with_request_ids(app.build_middleware_stack, count_request)  # type: ignore[method-assign]
    return app
