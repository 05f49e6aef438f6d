"""Fixtures for the API tests: a migrated database (SQLite and PostgreSQL), a local blob store, the
filesystem broker under the test's folder, two tenants with their keys, and image makers."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session

from api.app import create_app
from core.accounts import create_key, create_tenant
from core.blob_keys import preview_result_key
from core.blobstore import BlobStore
from core.ids import new_id
from core.migrate import upgrade
from core.settings import Settings
from core.tables import Preview, Subject, SubjectPhoto
from core.webhook_urls import system_resolver

ORIGIN_A = "https://shop-a.example"
ORIGIN_B = "https://shop-b.example"


@dataclass
class Shop:
    tenant_id: str
    secret: str
    publishable: str
    publishable_id: str
    secret_id: str
    origin: str

    def auth(self, kind: str = "secret") -> dict[str, str]:
        if kind == "publishable":
            return {"Authorization": f"Bearer {self.publishable}", "Origin": self.origin}
        return {"Authorization": f"Bearer {self.secret}"}


@dataclass
class ApiEnv:
    client: TestClient
    settings: Settings
    a: Shop
    b: Shop
    ops_key: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def app(self) -> Any:
        return self.client.app

    @property
    def blobs(self) -> BlobStore:
        return self.app.state.blobs  # type: ignore[no-any-return]

    def session(self) -> Session:
        return self.app.state.sessions()  # type: ignore[no-any-return]

    def ops(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.ops_key}"}


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "var_dir": tmp_path / "var",
        "database_url": database_url,
        "blob_url": f"file://{tmp_path / 'blobs'}",
        "broker_url": "",  # Celery's filesystem transport under var/broker: messages are files to look at
        "rate_limit": "100000/minute",
        **overrides,
    }
    return Settings(**values)


def _shop(session: Session, name: str, origin: str) -> Shop:
    tenant = create_tenant(session, name)
    secret_row, secret = create_key(session, kind="secret", tenant=tenant)
    pub_row, publishable = create_key(session, kind="publishable", tenant=tenant, origins=[origin])
    return Shop(tenant.id, secret, publishable, pub_row.id, secret_row.id, origin)


# Shops' webhook hosts: DNS is the outside world, so `*.example` names resolve here to a public
# documentation address; literal addresses still go through the system's resolver.
PUBLIC_EXAMPLE_ADDRESS = "93.184.216.34"


def example_resolver(host: str, port: int) -> list[str]:
    if host.endswith(".example"):
        return [PUBLIC_EXAMPLE_ADDRESS]
    return system_resolver(host, port)


def build_env(settings: Settings) -> Iterator[ApiEnv]:
    upgrade(settings.resolved_database_url)
    app = create_app(settings)
    app.state.resolve = example_resolver
    with app.state.sessions() as session:
        a = _shop(session, "shop-a", ORIGIN_A)
        b = _shop(session, "shop-b", ORIGIN_B)
        _, ops_key = create_key(session, kind="ops", tenant=None)
        session.commit()
    with TestClient(app) as client:
        yield ApiEnv(client=client, settings=settings, a=a, b=b, ops_key=ops_key)
    app.state.engine.dispose()


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> Iterator[ApiEnv]:
    """The app on SQLite, then on PostgreSQL (the `database_url` fixture is parametrized)."""
    yield from build_env(make_settings(tmp_path, database_url))


@pytest.fixture
def sqlite_env(tmp_path: Path) -> Iterator[ApiEnv]:
    """The app on SQLite only, for tests of HTTP behaviour that the database cannot change."""
    yield from build_env(make_settings(tmp_path, f"sqlite:///{tmp_path / 'roomfit.db'}"))


# --- images ------------------------------------------------------------------------------------


def image_bytes(width: int = 64, height: int = 48, fmt: str = "PNG", mode: str = "RGB", **save: Any) -> bytes:
    rng = np.random.default_rng(width * 1000 + height)
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "CMYK": 4}[mode]
    data = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    image = Image.fromarray(data[..., 0] if channels == 1 else data, mode)
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def mask_bytes(
    width: int = 64, height: int = 48, box: tuple[int, int, int, int] | None = (8, 8, 32, 32)
) -> bytes:
    mask = np.zeros((height, width), dtype=np.uint8)
    if box is not None:
        x0, y0, x1, y1 = box
        mask[y0:y1, x0:x1] = 255
    out = io.BytesIO()
    Image.fromarray(mask, "L").save(out, "PNG")
    return out.getvalue()


def photos_files(count: int = 2, **kwargs: Any) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("photos", (f"p{i}.png", image_bytes(64 + i, 48, **kwargs), "image/png")) for i in range(count)]


# --- rows the worker would write ---------------------------------------------------------------


def ready_subject(env: ApiEnv, shop: Shop, name: str = "sofa") -> str:
    """A subject as the worker leaves it after training: ready, with an adapter."""
    with env.session() as session:
        subject = Subject(
            id=new_id("sub"),
            tenant_id=shop.tenant_id,
            name=name,
            status="ready",
            progress=1.0,
            adapter_version=1,
            adapter_key=f"tenants/{shop.tenant_id}/subjects/x/adapter/1.safetensors",
            adapter_bytes=1234,
            adapter_sha256="0" * 64,
            adapter_rank=4,
            adapter_base_model="tiny",
        )
        session.add(subject)
        session.add(
            SubjectPhoto(
                id=new_id("pho"),
                tenant_id=shop.tenant_id,
                subject_id=subject.id,
                index=0,
                blob_key="k",
                width=64,
                height=48,
                box=[1, 2, 30, 40],
                score=0.9,
                label="couch",
                source="detected",
            )
        )
        session.commit()
        return subject.id


def post_preview(env: ApiEnv, shop: Shop, subject_id: str, kind: str = "secret", **form: Any) -> Any:
    """POST /v1/previews of a small room and mask; the response, whatever it is."""
    return env.client.post(
        "/v1/previews",
        headers=shop.auth(kind),
        data={"subject_id": subject_id, **{k: str(v) for k, v in form.items()}},
        files=[
            ("room", ("room.png", image_bytes(64, 48), "image/png")),
            ("mask", ("mask.png", mask_bytes(64, 48), "image/png")),
        ],
    )


def create_preview(
    env: ApiEnv, shop: Shop, subject_id: str, kind: str = "secret", **form: Any
) -> dict[str, Any]:
    response = post_preview(env, shop, subject_id, kind, **form)
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def succeed_preview(env: ApiEnv, preview_id: str) -> bytes:
    """Mark a preview succeeded with a result blob, as the preview worker would."""
    with env.session() as session:
        preview = session.get(Preview, preview_id)
        assert preview is not None
        key = preview_result_key(preview.tenant_id, preview.id)
        png = image_bytes(preview.width, preview.height)
        env.blobs.put(key, png, "image/png")
        preview.status = "succeeded"
        preview.progress = 1.0
        preview.result_key = key
        session.commit()
    return png


def http_scope(method: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
    """The ASGI scope of a request to the app from a loopback client (no query string)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
        "state": {},
    }


def set_row(env: ApiEnv, model: type, object_id: str, **values: Any) -> None:
    """Change a row's columns and commit, as a worker would."""
    with env.session() as session:
        row = session.get(model, object_id)
        assert row is not None
        for name, value in values.items():
            setattr(row, name, value)
        session.commit()


def asgi_request(
    env: ApiEnv, method: str, path: str, headers: dict[str, str], body: Iterator[bytes]
) -> tuple[int, dict[str, Any]]:
    """Drive the ASGI app with a body it pulls chunk by chunk (TestClient would read it all first):
    the status and the JSON answer."""
    messages: list[dict[str, Any]] = []
    chunks = iter(body)

    async def receive() -> dict[str, Any]:
        piece = next(chunks, None)
        if piece is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": piece, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    anyio.run(env.app, http_scope(method, path, headers), receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], json.loads(payload)
