"""The FastAPI application: `create_app()` is the one place it is assembled."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from api.problems import install_problem_handlers
from api.routes import health
from core.blobstore import blob_store_from_settings
from core.db import engine_for
from core.queue import make_celery
from core.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = FastAPI(
        title="roomfit",
        version="1.0",
        summary="Paint a shop's own product into a shopper's room photo.",
        description="REST contract v1. Errors are application/problem+json with a stable `code`.",
    )
    app.state.settings = settings
    app.state.engine = engine_for(settings.resolved_database_url)
    app.state.blobs = blob_store_from_settings(settings)
    app.state.celery = make_celery(settings)
    install_problem_handlers(app)
    app.include_router(health.router)
    return app
