"""What one API process's `/events` streams are bounded by, on a real `roomfit serve`: its share per
tenant (429 `rate_limited`: one shop, or whoever holds its public key, cannot take every stream) and
its total (503 `server_busy`); a closed stream frees its place."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
from sqlalchemy.orm import Session

from core.db import engine_for
from core.ids import new_id
from core.tables import Subject
from tests.api.served import ServedApi, _cli, served_api, served_env

CAPS = {"max_event_streams": "3", "max_event_streams_per_tenant": "2"}


def _queued_subject(api: ServedApi, tenant_id: str) -> str:
    """A subject waiting for a worker (none runs here), so its stream stays open."""
    engine = engine_for(f"sqlite:///{api.var_dir / 'roomfit.db'}")
    subject_id = new_id("sub")
    try:
        with Session(engine) as session:
            session.add(Subject(id=subject_id, tenant_id=tenant_id, name="lamp", status="queued"))
            session.commit()
    finally:
        engine.dispose()
    return subject_id


@contextlib.contextmanager
def _open(api: ServedApi, key: str, subject_id: str) -> Iterator[httpx.Response]:
    """A stream held open once the server counted it (its first event was sent)."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.stream("GET", f"{api.url}/v1/subjects/{subject_id}/events", headers=headers, timeout=30) as r:
        lines = r.iter_lines()  # kept: a closed line iterator would close the stream
        if r.status_code == 200:
            for line in lines:
                if line.startswith("event:"):
                    break
        else:
            r.read()
        yield r


def test_a_tenant_gets_its_share_of_streams_and_the_process_its_total(tmp_path: Path) -> None:
    with served_api(tmp_path, **CAPS) as api:
        env = served_env(api.var_dir, **CAPS)
        other_id = _cli(env, "tenants", "create", "other")["id"]
        other_key = _cli(env, "keys", "create", "--tenant", "other", "--kind", "secret")["key"]
        mine, theirs = _queued_subject(api, api.tenant_id), _queued_subject(api, other_id)

        with contextlib.ExitStack() as held:
            first = held.enter_context(_open(api, api.secret, mine))
            held.enter_context(_open(api, api.secret, mine))
            assert first.status_code == 200
            with _open(api, api.secret, mine) as refused:
                assert refused.status_code == 429
                assert refused.json()["code"] == "rate_limited" and refused.headers["retry-after"] == "5"
            with _open(api, other_key, theirs) as other:  # another shop is not held back by the first
                assert other.status_code == 200
                with _open(api, other_key, theirs) as busy:  # but the process's total is reached
                    assert busy.status_code == 503
                    assert busy.json()["code"] == "server_busy"
            first.close()

        # Every stream closed: the first shop's share is free again.
        for _ in range(50):
            with _open(api, api.secret, mine) as again:
                if again.status_code == 200:
                    break
        assert again.status_code == 200
