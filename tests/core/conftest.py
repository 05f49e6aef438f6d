"""Fixtures of the core tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from core.db import make_engine, session_factory
from core.migrate import upgrade


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    """A session on a freshly migrated database: SQLite, and PostgreSQL where the run has one."""
    upgrade(database_url)
    engine = make_engine(database_url)
    with session_factory(engine)() as s:
        yield s
    engine.dispose()
