from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.ops_job_out_kind import OpsJobOutKind
from ..models.ops_job_out_status import OpsJobOutStatus

if TYPE_CHECKING:
    from ..models.error_info import ErrorInfo
    from ..models.ops_job_out_timings import OpsJobOutTimings
    from ..models.timeline_entry import TimelineEntry


T = TypeVar("T", bound="OpsJobOut")


@_attrs_define
class OpsJobOut:
    """
    Attributes:
        id (str):
        tenant_id (str):
        kind (OpsJobOutKind):
        subject_id (None | str):
        preview_id (None | str):
        status (OpsJobOutStatus):
        stage (None | str):
        progress (float):
        attempts (int):
        worker (None | str):
        cancel_requested (bool):
        timings (OpsJobOutTimings):
        loss (list[list[float]]): training loss points as [step, loss]
        error (ErrorInfo | None):
        created_at (datetime.datetime):
        updated_at (datetime.datetime):
        enqueued_at (datetime.datetime | None):
        started_at (datetime.datetime | None):
        finished_at (datetime.datetime | None):
        heartbeat_at (datetime.datetime | None):
        timeline (list[TimelineEntry]): oldest first
    """

    id: str
    tenant_id: str
    kind: OpsJobOutKind
    subject_id: None | str
    preview_id: None | str
    status: OpsJobOutStatus
    stage: None | str
    progress: float
    attempts: int
    worker: None | str
    cancel_requested: bool
    timings: OpsJobOutTimings
    loss: list[list[float]]
    error: ErrorInfo | None
    created_at: datetime.datetime
    updated_at: datetime.datetime
    enqueued_at: datetime.datetime | None
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    heartbeat_at: datetime.datetime | None
    timeline: list[TimelineEntry]
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.error_info import ErrorInfo

        id = self.id

        tenant_id = self.tenant_id

        kind = self.kind.value

        subject_id: None | str
        subject_id = self.subject_id

        preview_id: None | str
        preview_id = self.preview_id

        status = self.status.value

        stage: None | str
        stage = self.stage

        progress = self.progress

        attempts = self.attempts

        worker: None | str
        worker = self.worker

        cancel_requested = self.cancel_requested

        timings = self.timings.to_dict()

        loss = []
        for loss_item_data in self.loss:
            loss_item = loss_item_data

            loss.append(loss_item)

        error: dict[str, Any] | None
        if isinstance(self.error, ErrorInfo):
            error = self.error.to_dict()
        else:
            error = self.error

        created_at = self.created_at.isoformat()

        updated_at = self.updated_at.isoformat()

        enqueued_at: None | str
        if isinstance(self.enqueued_at, datetime.datetime):
            enqueued_at = self.enqueued_at.isoformat()
        else:
            enqueued_at = self.enqueued_at

        started_at: None | str
        if isinstance(self.started_at, datetime.datetime):
            started_at = self.started_at.isoformat()
        else:
            started_at = self.started_at

        finished_at: None | str
        if isinstance(self.finished_at, datetime.datetime):
            finished_at = self.finished_at.isoformat()
        else:
            finished_at = self.finished_at

        heartbeat_at: None | str
        if isinstance(self.heartbeat_at, datetime.datetime):
            heartbeat_at = self.heartbeat_at.isoformat()
        else:
            heartbeat_at = self.heartbeat_at

        timeline = []
        for timeline_item_data in self.timeline:
            timeline_item = timeline_item_data.to_dict()
            timeline.append(timeline_item)

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "id": id,
                "tenant_id": tenant_id,
                "kind": kind,
                "subject_id": subject_id,
                "preview_id": preview_id,
                "status": status,
                "stage": stage,
                "progress": progress,
                "attempts": attempts,
                "worker": worker,
                "cancel_requested": cancel_requested,
                "timings": timings,
                "loss": loss,
                "error": error,
                "created_at": created_at,
                "updated_at": updated_at,
                "enqueued_at": enqueued_at,
                "started_at": started_at,
                "finished_at": finished_at,
                "heartbeat_at": heartbeat_at,
                "timeline": timeline,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.error_info import ErrorInfo
        from ..models.ops_job_out_timings import OpsJobOutTimings
        from ..models.timeline_entry import TimelineEntry

        d = dict(src_dict)
        id = d.pop("id")

        tenant_id = d.pop("tenant_id")

        kind = OpsJobOutKind(d.pop("kind"))

        def _parse_subject_id(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        subject_id = _parse_subject_id(d.pop("subject_id"))

        def _parse_preview_id(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        preview_id = _parse_preview_id(d.pop("preview_id"))

        status = OpsJobOutStatus(d.pop("status"))

        def _parse_stage(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        stage = _parse_stage(d.pop("stage"))

        progress = d.pop("progress")

        attempts = d.pop("attempts")

        def _parse_worker(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        worker = _parse_worker(d.pop("worker"))

        cancel_requested = d.pop("cancel_requested")

        timings = OpsJobOutTimings.from_dict(d.pop("timings"))

        loss = []
        _loss = d.pop("loss")
        for loss_item_data in _loss:
            loss_item = cast(list[float], loss_item_data)

            loss.append(loss_item)

        def _parse_error(data: object) -> ErrorInfo | None:
            if data is None:
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                error_type_0 = ErrorInfo.from_dict(data)

                return error_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(ErrorInfo | None, data)

        error = _parse_error(d.pop("error"))

        created_at = datetime.datetime.fromisoformat(d.pop("created_at"))

        updated_at = datetime.datetime.fromisoformat(d.pop("updated_at"))

        def _parse_enqueued_at(data: object) -> datetime.datetime | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                enqueued_at_type_0 = datetime.datetime.fromisoformat(data)

                return enqueued_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None, data)

        enqueued_at = _parse_enqueued_at(d.pop("enqueued_at"))

        def _parse_started_at(data: object) -> datetime.datetime | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                started_at_type_0 = datetime.datetime.fromisoformat(data)

                return started_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None, data)

        started_at = _parse_started_at(d.pop("started_at"))

        def _parse_finished_at(data: object) -> datetime.datetime | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                finished_at_type_0 = datetime.datetime.fromisoformat(data)

                return finished_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None, data)

        finished_at = _parse_finished_at(d.pop("finished_at"))

        def _parse_heartbeat_at(data: object) -> datetime.datetime | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                heartbeat_at_type_0 = datetime.datetime.fromisoformat(data)

                return heartbeat_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None, data)

        heartbeat_at = _parse_heartbeat_at(d.pop("heartbeat_at"))

        timeline = []
        _timeline = d.pop("timeline")
        for timeline_item_data in _timeline:
            timeline_item = TimelineEntry.from_dict(timeline_item_data)

            timeline.append(timeline_item)

        ops_job_out = cls(
            id=id,
            tenant_id=tenant_id,
            kind=kind,
            subject_id=subject_id,
            preview_id=preview_id,
            status=status,
            stage=stage,
            progress=progress,
            attempts=attempts,
            worker=worker,
            cancel_requested=cancel_requested,
            timings=timings,
            loss=loss,
            error=error,
            created_at=created_at,
            updated_at=updated_at,
            enqueued_at=enqueued_at,
            started_at=started_at,
            finished_at=finished_at,
            heartbeat_at=heartbeat_at,
            timeline=timeline,
        )

        ops_job_out.additional_properties = d
        return ops_job_out

    @property
    def additional_keys(self) -> list[str]:
        return list(self.additional_properties.keys())

    def __getitem__(self, key: str) -> Any:
        return self.additional_properties[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.additional_properties[key] = value

    def __delitem__(self, key: str) -> None:
        del self.additional_properties[key]

    def __contains__(self, key: str) -> bool:
        return key in self.additional_properties
