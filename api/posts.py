"""The one way a POST that creates or changes something runs: `PostDep.run(produce, form=...)`.

Every such POST (create a subject, train again, create a preview, retry or cancel a job) does the
same four things, here and only here:

1. read its body on the event loop — the multipart form when it takes one (`api.multipart`, with
   its limits), else at most `MAX_SMALL_BODY` bytes that only the Idempotency-Key digest looks at;
2. hop to the thread pool (the work below is blocking: database, blob store, image decoding);
3. run `produce` once per Idempotency-Key: claim the key, or answer a retry with the kept answer
   (the key's rules are in `api.idempotency`);
4. hand `produce`'s after-commit work to the request's transaction (`api.transaction`), and free
   the key if that transaction rolls back.

`produce` turns a service's `Done` into the HTTP answer with `answer()`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from api.deps import Caller, CallerDep, SessionDep, SettingsDep
from api.idempotency import Outcome, body_digest, claim, idempotency_key, keep, release, request_digest
from api.multipart import FormLimits, ParsedForm, read_form
from api.problems import PAYLOAD_TOO_LARGE
from api.services import Done
from api.transaction import after_commit, after_rollback
from core.repository import IdempotencyRepository

MAX_SMALL_BODY = 64 * 1024


def answer(done: Done[Any], body: BaseModel, *, status: int, location: str | None = None) -> Outcome:
    """What a service did as an HTTP answer: `body` as JSON with this status (and `Location` when
    it names a new resource), and the service's after-commit work."""
    headers = {"Location": location} if location else None
    response = JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)
    return Outcome(response, done.after_commit)


@dataclass(frozen=True)
class IdempotentPost:
    request: Request
    caller: Caller
    session: Session
    idempotency_hours: int

    async def run(
        self, produce: Callable[[ParsedForm], Outcome], *, form: FormLimits | None = None
    ) -> Response:
        """Read the body (the form `form` limits, or a small body), then run `produce` on it in the
        thread pool, once per Idempotency-Key. A POST without a form gets an empty one."""
        if form is not None:
            parsed = await read_form(self.request, form)
        else:
            parsed = ParsedForm(fields={}, files={}, digest=body_digest(await read_small_body(self.request)))
        try:
            return await run_in_threadpool(self._once, parsed.digest, lambda: produce(parsed))
        finally:
            parsed.close()

    def _once(self, digest: str, produce: Callable[[], Outcome]) -> Response:
        """Run `produce` once per (API key, Idempotency-Key); a retry gets the kept answer."""
        key = idempotency_key(self.request)
        if key is None:
            outcome = produce()
            after_commit(self.session, outcome.after_commit)
            return outcome.response
        records = IdempotencyRepository(self.session, self.caller.key_id)
        request_hash = request_digest(self.request.method, self.request.url.path, digest)
        record = claim(records, self.caller, key, self.request, request_hash, self.idempotency_hours)
        if isinstance(record, Response):
            return record
        # The claim is committed: if the request's transaction fails from here on, free the key.
        after_rollback(self.session, lambda: release(records, record.id))
        outcome = produce()
        keep(records, record, outcome.response)
        after_commit(self.session, outcome.after_commit)
        return outcome.response


async def get_post(
    request: Request, caller: CallerDep, session: SessionDep, settings: SettingsDep
) -> IdempotentPost:
    return IdempotentPost(request, caller, session, settings.idempotency_hours)


PostDep = Annotated[IdempotentPost, Depends(get_post)]


async def read_small_body(request: Request) -> bytes:
    """The body of a POST that takes none or a small one; refuse big ones as they stream."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_SMALL_BODY:
            raise PAYLOAD_TOO_LARGE(f"this request takes at most {MAX_SMALL_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
