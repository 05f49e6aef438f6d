"""roomfit's settings: one pydantic-settings class, read from `ROOMFIT_*` variables and `.env`.

Embedded defaults keep every piece of state under `./var` of the working folder (SQLite, the
`filesystem://` broker, a local blob folder), so `roomfit up` needs no service. Distributed mode is
the same code with URLs pointing at PostgreSQL, Redis and S3.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, computed_field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class InvalidSetting(ValueError):
    """A setting whose value passed its field's check but cannot be used where it is read (its
    message names the variable, never a secret in its value); the CLI answers `invalid_settings`."""


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROOMFIT_", env_file=".env", extra="ignore")

    # --- where state lives -------------------------------------------------------------------
    var_dir: Path = Field(
        Path("var"),
        description="Folder for embedded-mode state (database, broker, blobs, caches).",
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy URL. Empty: SQLite at {var_dir}/roomfit.db. "
        "Distributed: postgresql+psycopg://user:pass@host/db.",
    )
    database_read_connections: int = Field(
        4,
        ge=1,
        le=100,
        description="PostgreSQL connections one API process keeps for its hot reads (key lookups, "
        "status reads, event streams); more reads wait their turn. A process serves about 2,500 of "
        "them a second at 0.1-0.5 ms each, so a few keep up, and fewer backends competing for the "
        "database's cores shorten the slowest reads (BENCHMARKS.md).",
    )
    broker_url: str = Field(
        "",
        description="Celery broker. Empty: filesystem:// under {var_dir}/broker. Distributed: redis://host:6379/0.",
    )
    blob_url: str = Field(
        "",
        description="Blob store. Empty: local folder {var_dir}/blobs. `s3://BUCKET` for S3 (AWS, MinIO, "
        "SeaweedFS); `file:///abs/path` for another folder.",
    )
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint for MinIO/SeaweedFS; None for AWS.")
    s3_public_endpoint_url: str | None = Field(
        None,
        description="S3 endpoint as browsers reach it, for presigned result URLs (e.g. "
        "https://s3.shop.example); None: the same as s3_endpoint_url.",
    )
    s3_region: str = Field("us-east-1", description="S3 region.")
    s3_access_key_id: str | None = Field(None, description="S3 access key (else boto3's usual chain).")
    s3_secret_access_key: str | None = Field(None, description="S3 secret key (else boto3's usual chain).")
    presign_seconds: int = Field(300, ge=10, le=7 * 24 * 3600, description="Life of a presigned result URL.")

    # --- models ------------------------------------------------------------------------------
    base_model: str = Field(
        "tiny",
        description="Inpainting base: a Hugging Face id (Fantasy-Studio/Paint-by-Example), a local "
        "folder, or `tiny` (random weights, same architecture; images are noise).",
    )
    models_dir: Path | None = Field(
        None,
        description="Folder for built `tiny` models and the adapter disk cache. None: {var_dir}/models.",
    )
    detector: str = Field("tiny", description="DETR detector: facebook/detr-resnet-50, a folder, or `tiny`.")
    device: str = Field("auto", description="torch device: auto, cpu, cuda, cuda:1 ...")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weights dtype: auto = fp16 on CUDA, fp32 on CPU."
    )
    compile: bool = Field(
        False,
        description="Paint through a torch.compile'd UNet (inductor). The first preview of each batch size "
        "waits for compilation (minutes on the real model); adapter swaps and mixed batches never "
        "recompile. Training stays eager.",
    )
    train_steps: int | None = Field(
        None, ge=1, description="Default LoRA training steps. None: 400 for real models, 20 for tiny."
    )
    preview_steps: int | None = Field(
        None, ge=1, le=200, description="Default sampling steps. None: 30 for real models, 4 for tiny."
    )
    train_mode: Literal["lora", "full"] = Field(
        "lora",
        description="What training learns: `lora` (a LoRA adapter, 1.6 MB) or `full` (every UNet weight, "
        "the paper's whole-params row). Full files are ~3.4 GB for the real UNet, and the preview "
        "workers need host memory for them: a copy of the base UNet plus the cached fine-tune.",
    )
    train_micro_batch: int | None = Field(
        None,
        ge=1,
        description="Pairs per forward pass while training; gradients accumulate to the batch. None: the "
        "whole batch, halved automatically when the GPU runs out of memory.",
    )
    lora_rank: int = Field(4, ge=1, le=128, description="LoRA rank of every adapter of the base model.")
    adapter_cache_bytes: int = Field(
        512 * 1024 * 1024, ge=0, description="In-memory LRU of adapters, bounded in bytes."
    )
    adapter_disk_bytes: int = Field(
        2 * 1024 * 1024 * 1024,
        ge=0,
        description="The adapter files a worker machine keeps on disk under {models_dir}/adapter-cache, "
        "bounded in bytes (least recently used go first; shared by the worker processes of one machine).",
    )
    adapter_slots: int = Field(
        8,
        ge=1,
        le=64,
        description="Adapters a preview worker holds on its device at once, so that one UNet batch may "
        "paint previews of that many different products.",
    )
    preview_batch: int = Field(
        4, ge=1, le=64, description="Most previews a preview worker paints in one UNet batch."
    )
    preview_batch_window_ms: int = Field(
        30,
        ge=0,
        le=1000,
        description="How long a preview worker waits for more queued previews to fill a batch, once "
        "another preview was queued beside the first (a lone preview is painted at once).",
    )

    # --- API ---------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address `roomfit up` / `serve` bind to.")
    port: int = Field(8000, ge=0, le=65535, description="Port `roomfit up` / `serve` bind to.")
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Largest accepted image file.")
    max_pixels: int = Field(40_000_000, ge=1, description="Largest accepted image, in pixels (decoded).")
    max_side: int = Field(
        12_000, ge=64, description="Longest accepted side of an image, in pixels (after EXIF orientation)."
    )
    max_aspect_ratio: float = Field(
        10.0, ge=1.0, description="Largest accepted ratio of an image's longer side to its shorter side."
    )
    max_request_pixels: int = Field(
        160_000_000,
        ge=1,
        description="Pixels all the images of one request may decode to together (8 photos of 20 MP).",
    )
    api_memory_budget_bytes: int = Field(
        768 * 1024 * 1024,
        ge=0,
        description="Memory the image checks of one API process may hold at once; past it, 503 with "
        "Retry-After instead of growing. 0: no budget.",
    )
    rate_limit: str = Field(
        "600/minute",
        description="Per-key rate limit (limits' syntax). Widgets poll a preview a few times a second.",
    )
    # le: each record's expiry is now + this, which a datetime must hold (a year is plenty)
    idempotency_hours: int = Field(
        24, ge=24, le=366 * 24, description="How long Idempotency-Key records are kept."
    )
    worker_metrics_port: int = Field(
        0, ge=0, le=65535, description="A worker process serves Prometheus /metrics on this port; 0: off."
    )
    worker_metrics_host: str = Field("0.0.0.0", description="The address a worker's /metrics binds.")
    max_event_streams: int = Field(
        5000, ge=1, description="Open `/events` streams one API process holds; past it, 503 `server_busy`."
    )
    max_event_streams_per_tenant: int = Field(
        1000,
        ge=1,
        description="Open `/events` streams one API process holds for one tenant; past it, 429 "
        "`rate_limited`.",
    )
    event_heartbeat_seconds: float = Field(
        15.0, gt=0, le=300, description="A comment line on a quiet `/events` stream, so proxies keep it open."
    )

    # --- quotas (per tenant and per publishable key) ---------------------------------------------
    max_queued_previews_per_tenant: int = Field(
        200, ge=1, description="A tenant's previews queued or running at once; past it, 429 too_many_jobs."
    )
    max_queued_previews_per_key: int = Field(
        20, ge=1, description="Previews queued or running at once made by one publishable key."
    )
    max_queued_trainings_per_tenant: int = Field(
        20, ge=1, description="A tenant's subjects queued or training at once; past it, 429 too_many_jobs."
    )
    publishable_max_steps: int = Field(
        50, ge=1, le=100, description="Most sampling steps a publishable key may ask for (secret keys: 100)."
    )

    # --- retention: a preview holds a shopper's photo of their own room ---------------------------
    preview_retention_days: float = Field(
        30.0,
        ge=0,
        le=36500,
        description="Days a finished preview (succeeded, failed or cancelled) is kept: then its room photo, "
        "mask, result and renditions are deleted, and its row (a later read is 404). 0 keeps previews "
        "until they are deleted (`DELETE /v1/previews/{id}`, or with their subject). The job rows of deleted "
        "previews and subjects, and settled webhook deliveries, are deleted as long after they ended.",
    )

    # --- webhooks ------------------------------------------------------------------------------
    webhook_timeout_seconds: float = Field(
        5.0, gt=0, le=30, description="Deadline of one webhook attempt's whole HTTP exchange."
    )
    webhook_max_pending: int = Field(
        1000, ge=1, description="Undelivered webhook events kept per tenant; past it, new ones fail."
    )
    webhook_allow_private: bool = Field(
        False,
        description="Development only: allow http:// and non-public addresses (loopback, private ranges) "
        "as webhook URLs. Never in production: it lets a tenant aim the workers at your network.",
    )

    # --- jobs --------------------------------------------------------------------------------
    # le: a claim stamps now + lease, and a dead worker's job waits that long to be passed on
    lease_seconds: int = Field(
        60, ge=5, le=24 * 3600, description="A job whose heartbeat is older than this is orphaned."
    )
    max_attempts: int = Field(3, ge=1, description="Attempts before a job fails with too_many_attempts.")
    train_timeout_seconds: int = Field(3600, ge=10, description="Deadline of one training job.")
    preview_timeout_seconds: int = Field(300, ge=5, description="Deadline of one preview job.")
    shutdown_grace_seconds: int = Field(
        30,
        ge=1,
        description="After SIGTERM a worker takes no new job and lets a running preview finish for at most "
        "this long, else hands it back (re-queued); a running training checkpoints and is handed back at "
        "once. Set the pod's terminationGracePeriodSeconds (compose: stop_grace_period) above it.",
    )
    worker_heartbeat_seconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description="How often a worker process writes its heartbeat row (queues, current jobs, adapter "
        "cache, GPU memory); three missed in a row and `/v1/ops/workers` reports it offline.",
    )
    worker_forget_seconds: float = Field(
        600.0,
        ge=0,
        # now - this must be a datetime: past it every reconciler pass failed at its first step
        le=366 * 24 * 3600,
        description="How long an offline worker stays listed (`online: false`) after its last heartbeat "
        "before it is dropped from `/v1/ops/workers` and its row deleted.",
    )
    log_level: str = Field(
        "INFO", description="Log level of the API and workers: DEBUG, INFO, WARNING, ERROR or CRITICAL."
    )

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        # The level goes to logging, uvicorn and Celery: the names all three know, checked here so
        # that a typo is `invalid_settings` and not a crash as the process sets up its logging.
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)} (any case)")
        return level

    @field_validator("rate_limit")
    @classmethod
    def _parsable_rate_limit(cls, value: str) -> str:
        # api.rate_limit parses it as the API starts; nonsense there was a traceback, not a message.
        from limits import parse

        try:
            amount = parse(value).amount
        except ValueError as exc:
            raise ValueError(f"not a rate limit such as 600/minute: {exc}") from None
        if amount < 1:
            raise ValueError("a rate limit allows at least one request")
        return value

    @computed_field  # type: ignore[prop-decorator]
    @property
    def embedded(self) -> bool:
        """True when the broker is Celery's filesystem transport (the one-machine mode)."""
        return self.resolved_broker_url.startswith("filesystem://")

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'roomfit.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return (self.var_dir / "broker").resolve()

    @property
    def resolved_blob_url(self) -> str:
        return self.blob_url or f"file://{(self.var_dir / 'blobs').resolve()}"

    @property
    def resolved_models_dir(self) -> Path:
        return (self.models_dir or self.var_dir / "models").resolve()

    @property
    def is_tiny(self) -> bool:
        return self.base_model == "tiny"

    @property
    def default_train_steps(self) -> int:
        return self.train_steps_for(self.base_model)

    @property
    def default_preview_steps(self) -> int:
        return self.preview_steps_for(self.base_model)

    # The defaults follow the model actually used: `roomfit train --base-model X` takes X's.
    def train_steps_for(self, base_model: str) -> int:
        return self.train_steps or (20 if base_model == "tiny" else 400)

    def preview_steps_for(self, base_model: str) -> int:
        return self.preview_steps or (4 if base_model == "tiny" else 30)


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once. Tests call `get_settings.cache_clear()` after changing env."""
    return Settings()
