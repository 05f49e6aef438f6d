"""A baseline for `bench_api_load.py`, NOT part of roomfit: the same status read written the way
full-stack-fastapi-template writes its routes, on roomfit's own database.

What the template does, kept here: a sync `get_db` dependency yielding one `Session` per request
(FastAPI runs it and the route in its thread pool), the caller's key looked up by its SHA-256 (the
template looks a user up from its token the same way: one indexed query), the row fetched with
`session.get`, a pydantic model with `from_attributes` as the response. So the peer makes the same
two indexed queries as roomfit's `GET /v1/previews/{id}` did before its read path was rewritten.

`constant_app` is the framework's ceiling on this machine: FastAPI returning a constant.

    uvicorn bench.peer_app:create_app --factory   # PEER_DATABASE_URL names the database
    uvicorn bench.peer_app:constant_app --factory
"""

# No `from __future__ import annotations`: FastAPI must resolve the aliases defined inside
# create_app, as the template defines them at module level.
import hashlib
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel, ConfigDict
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from core.tables import ApiKey, Preview


class PreviewPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    subject_id: str
    status: str
    mode: str
    adapter_version: int | None
    seed: int
    steps: int | None
    guidance_scale: float | None
    width: int
    height: int
    timings: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


def create_app() -> FastAPI:
    # The template's engine, with a pool as large as FastAPI's thread pool (40): with the default
    # 5 + 10, sync dependencies that hold a connection until the response is sent deadlock the
    # thread pool under 50 concurrent clients (measured: one request in 10 s with one worker).
    engine = create_engine(os.environ["PEER_DATABASE_URL"], pool_size=20, max_overflow=20)

    def get_db() -> Iterator[Session]:
        with Session(engine) as session:
            yield session

    session_dep = Annotated[Session, Depends(get_db)]

    def get_current_key(
        session: session_dep, authorization: Annotated[str | None, Header()] = None
    ) -> ApiKey:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(status_code=401, detail="Not authenticated")
        digest = hashlib.sha256(token.encode()).hexdigest()
        key = session.execute(select(ApiKey).where(ApiKey.key_hash == digest)).scalars().first()
        if key is None or key.revoked_at is not None:
            raise HTTPException(status_code=401, detail="Could not validate credentials")
        return key

    app = FastAPI(title="template-style peer")

    @app.get("/v1/previews/{preview_id}", response_model=PreviewPublic)
    def read_preview(
        preview_id: str, session: session_dep, key: Annotated[ApiKey, Depends(get_current_key)]
    ) -> Any:
        preview = session.get(Preview, preview_id)
        if preview is None or preview.tenant_id != key.tenant_id:
            raise HTTPException(status_code=404, detail="Preview not found")
        return preview

    return app


def constant_app() -> FastAPI:
    app = FastAPI(title="framework ceiling")

    @app.get("/v1/previews/{preview_id}")
    async def read_preview(preview_id: str) -> dict[str, str]:
        return {"id": preview_id, "status": "queued"}

    return app
