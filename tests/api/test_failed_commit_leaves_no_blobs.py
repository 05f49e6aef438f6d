"""A POST that stored its images but whose transaction then fails to commit (the database went away
between the flush and the commit) keeps nothing: no rows, and no blobs either. A preview's room
photo is a shopper's home: stored under an id no row names, nothing would ever delete it (retention
and DELETE find blobs through their rows)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.tables import Preview, Subject
from tests.api.conftest import ApiEnv, photos_files, post_preview, ready_subject


def _commits_fail(env: ApiEnv) -> None:
    class Failing(Session):
        def commit(self) -> None:
            raise OperationalError("COMMIT", {}, RuntimeError("the database went away"))

    env.app.state.sessions = sessionmaker(bind=env.app.state.engine, class_=Failing, expire_on_commit=False)


def _stored(env: ApiEnv) -> list[str]:
    return env.blobs.list(f"tenants/{env.a.tenant_id}/")


def test_a_preview_whose_commit_fails_keeps_no_room_photo(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    subject_id = ready_subject(env, env.a)
    sessions = env.app.state.sessions
    _commits_fail(env)
    response = post_preview(env, env.a, subject_id)
    assert response.status_code == 503, response.text
    env.app.state.sessions = sessions
    with env.session() as session:
        assert session.scalar(select(func.count()).select_from(Preview)) == 0
    assert _stored(env) == []


def test_a_subject_whose_commit_fails_keeps_no_photos(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    sessions = env.app.state.sessions
    _commits_fail(env)
    form = {"name": "sofa"}
    response = env.client.post("/v1/subjects", headers=env.a.auth(), data=form, files=photos_files(2))
    assert response.status_code == 503, response.text
    env.app.state.sessions = sessions
    with env.session() as session:
        assert session.scalar(select(func.count()).select_from(Subject)) == 0
    assert _stored(env) == []
