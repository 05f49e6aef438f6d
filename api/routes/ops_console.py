"""`/ops`: the ops console's page (HTML; it reads `/v1/ops/*` with the key the operator signs in with)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.html_pages import page

router = APIRouter(tags=["ops"], include_in_schema=False)


@router.get("/ops", response_class=HTMLResponse)
def ops_page() -> HTMLResponse:
    return page("ops.html")
