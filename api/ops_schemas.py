"""Bodies of `/v1/ops/*` (pydantic), apart from the tenant-facing ones in `api.schemas`."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from api.schemas import JobOut


class QueueOut(BaseModel):
    kind: str = Field(examples=["train"])
    counts: dict[str, int] = Field(description="jobs per status", examples=[{"queued": 3, "running": 1}])
    broker_length: int | None = Field(
        description="messages waiting in the broker for this queue (Redis LLEN; in embedded mode, the "
        "filesystem broker's message files); null where the broker cannot be read",
        examples=[3],
    )
    oldest_queued_at: datetime | None = Field(
        description="since when the longest-waiting queued job has waited; null when none waits"
    )
    oldest_queued_seconds: float | None = Field(
        description="how long that is, in seconds; null when none waits", examples=[42.5]
    )
    workers: int = Field(description="online workers consuming this queue", examples=[1])


class QueuesOut(BaseModel):
    queues: list[QueueOut]


class AdapterCacheOut(BaseModel):
    hits: int = Field(examples=[120])
    misses: int = Field(examples=[7])
    swap_seconds_mean: float | None = Field(
        description="mean seconds spent putting a painted batch's adapters in place; null before the first",
        examples=[0.012],
    )


class GpuOut(BaseModel):
    used_bytes: int = Field(description="CUDA memory this process holds reserved", examples=[6442450944])
    total_bytes: int = Field(description="the device's memory", examples=[150754820096])


class WorkerOut(BaseModel):
    name: str = Field(description="`<host>:<pid>`, as a job's `worker`", examples=["gpu-0:4121"])
    host: str = Field(examples=["gpu-0"])
    pid: int = Field(examples=[4121])
    queues: list[str] = Field(examples=[["preview"]])
    online: bool = Field(
        description="false once its last heartbeat is older than its window, or since it stopped cleanly"
    )
    current_jobs: list[str] = Field(description="ids of the jobs it runs now")
    running_jobs: int = Field(examples=[1])
    base_model: str | None = Field(examples=["Fantasy-Studio/Paint-by-Example"])
    adapter_cache: AdapterCacheOut
    gpu: GpuOut | None = Field(description="null without CUDA")
    started_at: datetime
    last_heartbeat: datetime


class WorkersOut(BaseModel):
    workers: list[WorkerOut]


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


TimelineEvent = Literal["queued", "claimed", "stage", "finished"]


class TimelineEntry(BaseModel):
    at: datetime
    event: TimelineEvent = Field(
        description="queued (created, retried or handed back), claimed (a worker took it: a new attempt), "
        "stage (its stage moved), finished (succeeded, failed or cancelled)",
        examples=["claimed"],
    )
    status: str = Field(description="the subject's or preview's status then", examples=["annotating"])
    stage: str | None = Field(examples=["annotating"])
    attempt: int = Field(description="0 before the first claim, then 1, 2, …", examples=[1])


class OpsJobOut(JobOut):
    timeline: list[TimelineEntry] = Field(description="oldest first")


class TenantUsageOut(BaseModel):
    tenant_id: str = Field(examples=["ten_01JD6Y2Q4S5T6V7W8X9Y0Z1A2B"])
    name: str = Field(examples=["shop-a"])
    created_today: int = Field(examples=[40])
    queued_now: int = Field(examples=[3])
    running_now: int = Field(examples=[1])
    failed_today: int = Field(examples=[2])


class UsageOut(BaseModel):
    day: date = Field(description="today, UTC")
    tenants: list[TenantUsageOut]
