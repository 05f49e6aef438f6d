"""The request's transaction (api/transaction.py): committed before the response is sent, with the
after-commit work (sending the job id) between the two; a commit that fails answers 503."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Message, Receive, Scope, Send

from core.tables import Subject, Webhook
from tests.api.conftest import ApiEnv, photos_files


def _recording(env: ApiEnv, events: list[str], session_class: type[Session]) -> TestClient:
    """A client whose app notes when a session commits and when the response starts."""
    env.app.state.sessions = sessionmaker(
        bind=env.app.state.engine, class_=session_class, expire_on_commit=False
    )
    app = env.app

    async def noting(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_noted(message: Message) -> None:
            if message["type"] == "http.response.start":
                events.append(f"response {message['status']}")
            await send(message)

        await app(scope, receive, send_noted)

    return TestClient(noting)


def test_commit_then_after_commit_work_then_response(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    events: list[str] = []

    class Noting(Session):
        def commit(self) -> None:
            super().commit()
            events.append("commit")

    send_task = env.app.state.celery.send_task

    def send_noted(*args: Any, **kwargs: Any) -> Any:
        events.append("enqueue")
        return send_task(*args, **kwargs)

    env.app.state.celery.send_task = send_noted
    client = _recording(env, events, Noting)
    response = client.post("/v1/subjects", headers=env.a.auth(), data={"name": "sofa"}, files=photos_files(1))
    assert response.status_code == 202, response.text
    # The rows are committed, then the job id is sent (its enqueued_at committed in turn), then the
    # answer goes out: a client that GETs at once finds the subject.
    assert events == ["commit", "enqueue", "commit", "response 202"]
    got = client.get(response.headers["location"], headers=env.a.auth())
    assert got.status_code == 200 and got.json()["id"] == response.json()["id"]


def test_a_failed_commit_answers_503_and_keeps_nothing(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    events: list[str] = []

    class Failing(Session):
        def commit(self) -> None:
            raise OperationalError("COMMIT", {}, RuntimeError("the database went away"))

    client = _recording(env, events, Failing)
    put = client.put("/v1/webhook", headers=env.a.auth(), json={"url": "https://shop.example/hook"})
    assert put.status_code == 503 and put.json()["code"] == "service_unavailable"
    created = client.post("/v1/subjects", headers=env.a.auth(), data={"name": "sofa"}, files=photos_files(1))
    assert created.status_code == 503
    with env.session() as session:
        assert session.scalars(select(Webhook)).first() is None
        assert session.scalar(select(func.count()).select_from(Subject)) == 0
    assert events == ["response 503", "response 503"]
