"""The demo shop of embedded mode (`roomfit up`): `/`, a shop page with the storefront widget, and
`/demo/subjects`, where a product is made from photos and seen training; with `/demo/api/*`, the
few routes a shop's own backend would have, acting as tenant `dev` on the server side.

A shop keeps its secret key on its own server; this stands in for that server, so it needs no key
and is held in tighter than `/v1`: only in embedded mode, only for a browser on this machine (a
loopback client asking for `127.0.0.1` or `localhost`, which also shuts out DNS rebinding), and
only from its own pages (a request that names another `Origin` is refused, so another site can
neither post to it nor read it). Anywhere else every route here answers 404.

The widget on `/` uses the dev tenant's publishable key, which `roomfit up` writes to
`{var_dir}/dev-publishable-key.txt` on its first start. Browsers send no `Origin` on a same-origin
GET, and a publishable key needs one, so the page points the widget at this same service under its
other loopback name (`localhost` for a page on `127.0.0.1`, and the other way round): a real
cross-origin embed, as on a shop. Both names are listed on the dev key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from api.deps import BlobsDep, CeleryDep, SessionDep, SettingsDep
from api.html_pages import page
from api.multipart import FormLimits, ParsedForm, read_form
from api.problems import FORBIDDEN, NOT_FOUND, TOO_MANY_PHOTOS
from api.schemas import JobOut, SubjectOut, SubjectPage
from api.services import jobs, subjects
from api.transaction import after_commit
from core.accounts import tenant_by_name_or_id
from core.repository import TenantRepository
from core.tables import Subject

router = APIRouter(include_in_schema=False)

DEV_TENANT = "dev"
KEY_FILE = "dev-publishable-key.txt"  # written by cli.embedded._bootstrap_dev_tenant
_LOOPBACK_HOST = re.compile(r"(127\.0\.0\.1|localhost)(:[0-9]{1,5})?")
_LOOPBACK_CLIENTS = frozenset({"127.0.0.1", "::1"})
_KEY = re.compile(r"pk_[A-Za-z0-9_\-]{20,100}")


@dataclass(frozen=True)
class Demo:
    origin: str  # the page's own origin, e.g. http://127.0.0.1:8000
    api: str  # the same service under its other loopback name: where the widget sends requests


def get_demo(request: Request, settings: SettingsDep) -> Demo:
    """The demo's two origins; 404 unless embedded and asked from this machine for a loopback name."""
    host = request.headers.get("host", "").lower()
    client = request.client.host if request.client else ""
    if not settings.embedded or client not in _LOOPBACK_CLIENTS or not _LOOPBACK_HOST.fullmatch(host):
        raise NOT_FOUND("the demo shop is served only by `roomfit up`, to a browser on the same machine")
    origin = f"http://{host}"
    sent = request.headers.get("origin")
    if (sent is not None or request.method == "POST") and sent != origin:
        raise FORBIDDEN("the demo shop answers its own pages only")
    name, colon, port = host.partition(":")
    other = "localhost" if name == "127.0.0.1" else "127.0.0.1"
    return Demo(origin=origin, api=f"http://{other}{colon}{port}")


DemoDep = Annotated[Demo, Depends(get_demo)]


def get_dev_repo(_: DemoDep, session: SessionDep) -> TenantRepository:
    tenant = tenant_by_name_or_id(session, DEV_TENANT)
    if tenant is None:
        raise NOT_FOUND(
            "there is no tenant `dev`: `roomfit up` makes it on its first start in an empty folder"
        )
    return TenantRepository(session, tenant.id)


DevRepo = Annotated[TenantRepository, Depends(get_dev_repo)]


class DemoSubject(BaseModel):
    subject: SubjectOut
    job_id: str | None  # its latest training job, whose loss points the page draws


def _with_job(repo: TenantRepository, subject: Subject) -> DemoSubject:
    trainings = sorted((j for j in repo.jobs_of_subject(subject.id) if j.kind == "train"), key=lambda j: j.id)
    return DemoSubject(subject=SubjectOut.of(subject), job_id=trainings[-1].id if trainings else None)


# --- pages --------------------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
def shop_page(demo: DemoDep) -> HTMLResponse:
    return page("demo.html", {"script-src": [f"{demo.origin}/widget/v1.js"], "connect-src": [demo.api]})


@router.get("/demo/subjects", response_class=HTMLResponse)
def subjects_page(_: DemoDep) -> HTMLResponse:
    return page("demo-subjects.html")


# --- the shop's backend -------------------------------------------------------------------------
@router.get("/demo/api/config")
def config(demo: DemoDep, settings: SettingsDep) -> dict[str, Any]:
    """What the pages need: the model in use, the dev publishable key (public by design), and where
    the widget sends its requests."""
    key_file = settings.var_dir.resolve() / KEY_FILE
    try:
        key = key_file.read_text(encoding="utf-8").strip()
    except OSError:
        key = ""
    return {
        "tiny": settings.is_tiny,
        "base_model": settings.base_model,
        "api": demo.api,
        "publishable_key": key if _KEY.fullmatch(key) else None,
        "key_file": str(key_file),
        "make_key": (
            f"roomfit keys create --tenant dev --kind publishable --origin {demo.origin} --origin {demo.api}"
        ),
    }


@router.get("/demo/api/subjects", response_model=SubjectPage)
def list_subjects(repo: DevRepo) -> SubjectPage:
    rows, next_cursor = repo.subjects_page(status=None, limit=100, cursor=None)
    return SubjectPage(items=[SubjectOut.of(r) for r in rows], next_cursor=next_cursor)


@router.post("/demo/api/subjects", status_code=202, response_model=DemoSubject)
async def create_subject(
    request: Request, repo: DevRepo, blobs: BlobsDep, celery: CeleryDep, settings: SettingsDep
) -> DemoSubject:
    """What a shop's backend does with its secret key: POST /v1/subjects, here through the service."""
    most = subjects.MAX_PHOTOS
    limits = FormLimits(
        max_file_bytes=settings.max_upload_bytes,
        file_fields={"photos": (most, TOO_MANY_PHOTOS(f"at most {most} photos per subject"))},
    )
    form = await read_form(request, limits)

    def create(form: ParsedForm) -> DemoSubject:
        done = subjects.create_subject(repo, blobs, celery, settings, form)
        after_commit(repo.session, done.after_commit)  # the job id goes to the broker once committed
        return _with_job(repo, done.row)

    try:
        return await run_in_threadpool(create, form)
    finally:
        form.close()


@router.get("/demo/api/subjects/{subject_id}", response_model=DemoSubject)
def get_subject(subject_id: str, repo: DevRepo) -> DemoSubject:
    return _with_job(repo, subjects.find_subject(repo, subject_id))


@router.get("/demo/api/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, repo: DevRepo) -> JobOut:
    return JobOut.of(jobs.find_job(repo, job_id))
