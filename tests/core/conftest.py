"""Fixtures of the core tests: a migrated session, and a blob store in each of its two homes."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from core.blobstore import BlobStore, LocalBlobStore
from core.db import make_engine, session_factory
from core.migrate import upgrade
from core.s3_blobstore import S3BlobStore
from tests.services import S3Settings


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    """A session on a freshly migrated database: SQLite, and PostgreSQL where the run has one."""
    upgrade(database_url)
    engine = make_engine(database_url)
    with session_factory(engine)() as s:
        yield s
    engine.dispose()


@pytest.fixture(scope="session")
def s3_bucket(s3_settings: S3Settings) -> str:
    """One bucket per test run, so runs against a shared S3 never see each other's objects."""
    return f"roomfit-test-{secrets.token_hex(6)}"


def s3_store(settings: S3Settings, bucket: str, prefix: str = "") -> S3BlobStore:
    return S3BlobStore(
        bucket,
        endpoint_url=settings.endpoint,
        region=settings.region,
        access_key=settings.access_key,
        secret_key=settings.secret_key,
        prefix=prefix,
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
        return
    settings: S3Settings = request.getfixturevalue("s3_settings")
    bucket: str = request.getfixturevalue("s3_bucket")
    # Each test under a prefix of its own in the run's bucket: tests stay independent, and the
    # store's prefix handling is exercised by every test.
    s3 = s3_store(settings, bucket, prefix=f"t-{secrets.token_hex(4)}")
    yield s3
    s3.delete_prefix("tenants")
    s3.delete_prefix("a")
