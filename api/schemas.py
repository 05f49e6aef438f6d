"""Request and response bodies (pydantic), with the examples the OpenAPI document shows."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from core.previews import PaintMode, RequestedMode, expires_at
from core.tables import Job, Preview, Subject, SubjectPhoto, Webhook

SubjectStatus = Literal["queued", "annotating", "training", "ready", "failed", "cancelled"]
PreviewStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
SUBJECT_STATUSES: tuple[str, ...] = SubjectStatus.__args__  # type: ignore[attr-defined]
JOB_STATUSES: tuple[str, ...] = JobStatus.__args__  # type: ignore[attr-defined]

MAX_SEED = 2**32 - 1
MAX_STEPS = 100
MAX_GUIDANCE = 20.0


class FieldError(BaseModel):
    """One invalid part of the request, in a `validation_error` problem's `errors`."""

    loc: list[str] = Field(description='where, e.g. `["query", "limit"]`, or a form field\'s name')
    msg: str = Field(examples=["Input should be less than or equal to 100"])
    type: str | None = Field(None, examples=["less_than_equal"])


# The OpenAPI document lists the registry's codes (api.problems) as `code`'s enum (api.openapi).
class Problem(BaseModel):
    """RFC 9457 problem document; `code` is the stable word to switch on (later versions may add
    codes, never change one)."""

    type: str = Field(examples=["https://roomfit.dev/problems/subject_not_ready"])
    title: str = Field(examples=["Subject not ready"])
    status: int = Field(examples=[409])
    detail: str = Field(examples=["subject sub_01JD... is training; previews need a ready subject"])
    code: str = Field(examples=["subject_not_ready"])
    errors: list[FieldError] | None = Field(
        None, description="`validation_error` only: every invalid part of the request, the first is `detail`"
    )

    model_config = ConfigDict(extra="allow")


class ErrorInfo(BaseModel):
    code: str = Field(examples=["no_object_found"])
    message: str | None = Field(examples=["no couch found in photo 2"])


class _Tracked(Protocol):
    """A subject, preview or job row: what the workers report on it."""

    progress: float
    error_code: str | None
    error_message: str | None


def _error(row: _Tracked) -> ErrorInfo | None:
    return ErrorInfo(code=row.error_code, message=row.error_message) if row.error_code else None


def _progress(row: _Tracked) -> float:
    """0..1, whatever a worker wrote."""
    return max(0.0, min(1.0, row.progress or 0.0))


class PhotoOut(BaseModel):
    index: int = Field(examples=[0])
    width: int = Field(examples=[1024])
    height: int = Field(examples=[768])
    box: list[float] | None = Field(
        description="[x0, y0, x1, y1] in pixels; null until known", examples=[[10, 20, 500, 600]]
    )
    score: float | None = Field(examples=[0.97])
    label: str | None = Field(examples=["couch"])
    source: Literal["given", "detected"] | None = Field(examples=["detected"])

    @classmethod
    def of(cls, row: SubjectPhoto) -> PhotoOut:
        return cls(
            index=row.index,
            width=row.width,
            height=row.height,
            box=[float(v) for v in row.box] if row.box else None,
            score=row.score,
            label=row.label,
            source=row.source,  # type: ignore[arg-type]
        )


class AdapterOut(BaseModel):
    bytes: int | None = Field(examples=[3276800])
    sha256: str | None = Field(examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"])
    rank: int | None = Field(examples=[4])
    base_model: str | None = Field(examples=["Fantasy-Studio/Paint-by-Example"])


class SubjectOut(BaseModel):
    id: str = Field(examples=["sub_01JD6Y3ZC6T4VY1X9N8K2M7Q5R"])
    name: str = Field(examples=["Oslo 3-seat sofa, sage"])
    external_id: str | None = Field(examples=["SKU-4411"])
    label: str | None = Field(examples=["couch"])
    status: SubjectStatus = Field(examples=["queued"])
    progress: float = Field(ge=0, le=1, examples=[0.0])
    stage: str | None = Field(examples=[None])
    photos: list[PhotoOut]
    adapter: AdapterOut | None
    error: ErrorInfo | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Subject) -> SubjectOut:
        return cls(
            id=row.id,
            name=row.name,
            external_id=row.external_id,
            label=row.label,
            status=row.status,  # type: ignore[arg-type]
            progress=_progress(row),
            stage=row.stage,
            photos=[PhotoOut.of(p) for p in row.photos],
            adapter=AdapterOut(
                bytes=row.adapter_bytes,
                sha256=row.adapter_sha256,
                rank=row.adapter_rank,
                base_model=row.adapter_base_model,
            )
            if row.adapter_key
            else None,
            error=_error(row),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class SubjectStatusOut(BaseModel):
    """What a publishable key sees of a subject: enough for a widget to wait for `ready`."""

    id: str = Field(examples=["sub_01JD6Y3ZC6T4VY1X9N8K2M7Q5R"])
    status: SubjectStatus = Field(examples=["ready"])
    progress: float = Field(ge=0, le=1, examples=[1.0])
    stage: str | None = Field(examples=[None])
    error: ErrorInfo | None

    @classmethod
    def of(cls, row: Subject) -> SubjectStatusOut:
        return cls(
            id=row.id,
            status=row.status,  # type: ignore[arg-type]
            progress=_progress(row),
            stage=row.stage,
            error=_error(row),
        )


class SubjectPage(BaseModel):
    items: list[SubjectOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class SubjectForm(BaseModel):
    """The text fields of `POST /v1/subjects` (validated after the upload is read)."""

    model_config = ConfigDict(str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    external_id: str | None = Field(None, min_length=1, max_length=200)
    label: str | None = Field(None, min_length=1, max_length=100)


class PreviewForm(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True, allow_inf_nan=False)

    subject_id: str = Field(min_length=1, max_length=40)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    guidance_scale: float | None = Field(None, ge=0.0, le=MAX_GUIDANCE)
    mode: RequestedMode = "auto"


# alike: fields and `of` read like SubjectOut's and JobOut's on purpose: each schema lists its own
# fields in the order its JSON has them, rather than inheriting shared ones (pydantic puts those first).
class PreviewOut(BaseModel):
    id: str = Field(examples=["prv_01JD6Y5B0M9Z8S4W2T1V3X7Y6Q"])
    subject_id: str = Field(examples=["sub_01JD6Y3ZC6T4VY1X9N8K2M7Q5R"])
    status: PreviewStatus = Field(examples=["queued"])
    progress: float = Field(ge=0, le=1, examples=[0.0])
    mode: PaintMode = Field(
        description="what it is painted with: `adapter` (the subject's adapter) or `zero_shot` (the base "
        "model and the subject's reference crop). Set at POST from the subject's status; the worker "
        "decides again when it paints (an `auto` preview whose subject became ready meanwhile is "
        "painted with its adapter) and records what it painted with",
        examples=["adapter"],
    )
    adapter_version: int | None = Field(
        description="the subject's adapter version it is (was) painted with; null for `zero_shot`",
        examples=[1],
    )
    result_url: str | None = Field(
        description="where the PNG is once `succeeded`",
        examples=["/v1/previews/prv_01JD6Y5B0M9Z8S4W2T1V3X7Y6Q/result"],
    )
    error: ErrorInfo | None
    seed: int = Field(ge=0, le=MAX_SEED, examples=[1234])
    steps: int | None = Field(description="sampling steps; null: the service default", examples=[30])
    guidance_scale: float | None = Field(description="null: the service default", examples=[5.0])
    width: int = Field(examples=[1600])
    height: int = Field(examples=[1200])
    timings: dict[str, Any] = Field(examples=[{"load_adapter": 0.03, "sample": 2.4}])
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = Field(
        description="when this preview, its room photo, mask and result, will be deleted: "
        "`ROOMFIT_PREVIEW_RETENTION_DAYS` after it finished; null while it is queued or running, or when "
        "the service keeps previews until they are deleted",
        examples=["2026-12-30T09:00:00Z"],
    )

    @classmethod
    def of(cls, row: Preview, retention_days: float) -> PreviewOut:
        return cls(
            id=row.id,
            subject_id=row.subject_id,
            status=row.status,  # type: ignore[arg-type]
            progress=_progress(row),
            mode=row.mode,  # type: ignore[arg-type]
            adapter_version=row.adapter_version,
            result_url=f"/v1/previews/{row.id}/result"
            if row.status == "succeeded" and row.result_key
            else None,
            error=_error(row),
            seed=row.seed,
            steps=row.steps,
            guidance_scale=row.guidance_scale,
            width=row.width,
            height=row.height,
            timings=dict(row.timings or {}),
            created_at=row.created_at,
            updated_at=row.updated_at,
            expires_at=expires_at(row, retention_days),
        )


class JobOut(BaseModel):
    id: str = Field(examples=["job_01JD6Y3ZC7A1B2C3D4E5F6G7H8"])
    tenant_id: str = Field(examples=["ten_01JD6Y2Q4S5T6V7W8X9Y0Z1A2B"])
    kind: Literal["train", "preview"] = Field(examples=["train"])
    subject_id: str | None
    preview_id: str | None
    status: JobStatus = Field(examples=["running"])
    stage: str | None = Field(examples=["training"])
    progress: float = Field(ge=0, le=1, examples=[0.42])
    attempts: int = Field(examples=[1])
    worker: str | None = Field(examples=["celery@gpu-0"])
    cancel_requested: bool
    timings: dict[str, Any] = Field(examples=[{"annotate": 1.2, "train": 300.5}])
    loss: list[list[float]] = Field(
        description="training loss points as [step, loss]", examples=[[[10, 0.21]]]
    )
    error: ErrorInfo | None
    created_at: datetime
    updated_at: datetime
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None

    @classmethod
    def of(cls, row: Job) -> JobOut:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            kind=row.kind,  # type: ignore[arg-type]
            subject_id=row.subject_id,
            preview_id=row.preview_id,
            status=row.status,  # type: ignore[arg-type]
            stage=row.stage,
            progress=_progress(row),
            attempts=row.attempts,
            worker=row.worker,
            cancel_requested=bool(row.cancel_requested),
            timings=dict(row.timings or {}),
            # A diverged step's loss (NaN, infinity) has no JSON: left out, not a 500 or a null.
            loss=[[float(step), float(loss)] for step, loss in row.loss_points or () if math.isfinite(loss)],
            error=_error(row),
            created_at=row.created_at,
            updated_at=row.updated_at,
            enqueued_at=row.enqueued_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            heartbeat_at=row.heartbeat_at,
        )


class WebhookIn(BaseModel):
    url: str = Field(min_length=8, max_length=2000, examples=["https://shop.example/hooks/roomfit"])


class WebhookOut(BaseModel):
    url: str = Field(examples=["https://shop.example/hooks/roomfit"])
    events: list[str] = Field(
        examples=[["subject.ready", "subject.failed", "preview.succeeded", "preview.failed"]]
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Webhook) -> WebhookOut:
        return cls(
            url=row.url, events=list(WEBHOOK_EVENTS), created_at=row.created_at, updated_at=row.updated_at
        )


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="signing secret, shown only in this answer", examples=["whsec_3q2+7w0Jc5x8r1Zk..."]
    )


WEBHOOK_EVENTS = ("subject.ready", "subject.failed", "preview.succeeded", "preview.failed")
