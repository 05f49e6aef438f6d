"""`GET /v1/subjects` reads a page in a fixed number of queries, whatever its size: each subject's
photos were loaded one subject at a time (101 queries for a page of 100), so a page's cost grew with
`limit` and its photos were read at different moments from its subjects."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from tests.api.conftest import ApiEnv, ready_subject


@contextmanager
def _statements(env: ApiEnv) -> Iterator[list[str]]:
    """The SQL statements the app's engine runs within the block."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    engine = env.app.state.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_a_page_of_subjects_reads_their_photos_in_one_query(env: ApiEnv) -> None:
    made = [ready_subject(env, env.a, f"sofa {i}") for i in range(6)]
    with _statements(env) as seen:
        response = env.client.get("/v1/subjects?limit=5", headers=env.a.auth())
    assert response.status_code == 200, response.text
    page = response.json()
    newest = sorted(made, reverse=True)  # ids are time-ordered; two made in one millisecond, randomly
    assert [s["id"] for s in page["items"]] == newest[:5] and page["next_cursor"] == newest[4]
    assert all(len(s["photos"]) == 1 for s in page["items"])
    photo_reads = [s for s in seen if "FROM subject_photos" in s]
    assert len(photo_reads) == 1, photo_reads
