"""The request's transaction: one session per request, committed on success, rolled back on error.

This is the one owner of the commit (as in Polar's `server/polar/postgres.py`): routes and services
add, change and flush rows and never commit. What must happen only once the rows are durable (send
a job id to the broker, remove blobs of a deleted subject) is registered with `after_commit`; what
must undo work outside the transaction when it fails (release a claimed Idempotency-Key) with
`after_rollback`.

`api.deps.SessionDep` runs `request_transaction` with FastAPI's `scope="function"`: its exit code
runs when the route has returned and *before* the response is sent, so a client that reads a 202
and at once GETs the new id finds the row, and a commit that fails answers 503 instead of a 202
for rows that are not there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("roomfit.api.transaction")

Action = Callable[[], None]

_AFTER_COMMIT = "roomfit.after_commit"
_AFTER_ROLLBACK = "roomfit.after_rollback"


def after_commit(session: Session, actions: list[Action]) -> None:
    """Run these once the request's transaction has committed (never if it rolls back)."""
    session.info.setdefault(_AFTER_COMMIT, []).extend(actions)


def after_rollback(session: Session, action: Action) -> None:
    """Run this if the request's transaction rolls back (never if it commits)."""
    session.info.setdefault(_AFTER_ROLLBACK, []).append(action)


def request_transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    session = sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        _run(session.info.pop(_AFTER_ROLLBACK, []), "after-rollback")
        raise
    else:
        _run(session.info.pop(_AFTER_COMMIT, []), "after-commit")
    finally:
        session.close()


def _run(actions: list[Action], what: str) -> None:
    for action in actions:
        try:
            action()
        except Exception:  # the answer stands; what failed is logged (and retried by its owner)
            log.exception("%s action failed", what)
