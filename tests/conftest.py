"""Shared fixtures. Real servers (PostgreSQL, Redis, SeaweedFS) come from `tests/services.py`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings, get_settings

pytest_plugins = ["tests.services"]


@pytest.fixture
def embedded_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings for embedded mode with all state in this test's own folder."""
    for name in ("DATABASE_URL", "BROKER_URL", "BLOB_URL"):
        monkeypatch.delenv(f"ROOMFIT_{name}", raising=False)
    monkeypatch.setenv("ROOMFIT_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file, then a new database on the test PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'roomfit.db'}"
    return request.getfixturevalue("fresh_postgres_url")
