from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.preview_out_mode import PreviewOutMode
from ..models.preview_out_status import PreviewOutStatus

if TYPE_CHECKING:
    from ..models.error_info import ErrorInfo
    from ..models.preview_out_timings import PreviewOutTimings


T = TypeVar("T", bound="PreviewOut")


@_attrs_define
class PreviewOut:
    """
    Attributes:
        id (str):
        subject_id (str):
        status (PreviewOutStatus):
        progress (float):
        mode (PreviewOutMode): what it is painted with: `adapter` (the subject's adapter) or `zero_shot` (the base model
            and the subject's reference crop). Set at POST from the subject's status; the worker decides again when it
            paints (an `auto` preview whose subject became ready meanwhile is painted with its adapter) and records what it
            painted with
        adapter_version (int | None): the subject's adapter version it is (was) painted with; null for `zero_shot`
        result_url (None | str): where the PNG is once `succeeded`
        error (ErrorInfo | None):
        seed (int):
        steps (int | None): sampling steps; null: the service default
        guidance_scale (float | None): null: the service default
        width (int):
        height (int):
        timings (PreviewOutTimings):
        created_at (datetime.datetime):
        updated_at (datetime.datetime):
        expires_at (datetime.datetime | None): when this preview, its room photo, mask and result, will be deleted:
            `ROOMFIT_PREVIEW_RETENTION_DAYS` after it finished; null while it is queued or running, or when the service
            keeps previews until they are deleted
    """

    id: str
    subject_id: str
    status: PreviewOutStatus
    progress: float
    mode: PreviewOutMode
    adapter_version: int | None
    result_url: None | str
    error: ErrorInfo | None
    seed: int
    steps: int | None
    guidance_scale: float | None
    width: int
    height: int
    timings: PreviewOutTimings
    created_at: datetime.datetime
    updated_at: datetime.datetime
    expires_at: datetime.datetime | None
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.error_info import ErrorInfo

        id = self.id

        subject_id = self.subject_id

        status = self.status.value

        progress = self.progress

        mode = self.mode.value

        adapter_version: int | None
        adapter_version = self.adapter_version

        result_url: None | str
        result_url = self.result_url

        error: dict[str, Any] | None
        if isinstance(self.error, ErrorInfo):
            error = self.error.to_dict()
        else:
            error = self.error

        seed = self.seed

        steps: int | None
        steps = self.steps

        guidance_scale: float | None
        guidance_scale = self.guidance_scale

        width = self.width

        height = self.height

        timings = self.timings.to_dict()

        created_at = self.created_at.isoformat()

        updated_at = self.updated_at.isoformat()

        expires_at: None | str
        if isinstance(self.expires_at, datetime.datetime):
            expires_at = self.expires_at.isoformat()
        else:
            expires_at = self.expires_at

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "id": id,
                "subject_id": subject_id,
                "status": status,
                "progress": progress,
                "mode": mode,
                "adapter_version": adapter_version,
                "result_url": result_url,
                "error": error,
                "seed": seed,
                "steps": steps,
                "guidance_scale": guidance_scale,
                "width": width,
                "height": height,
                "timings": timings,
                "created_at": created_at,
                "updated_at": updated_at,
                "expires_at": expires_at,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.error_info import ErrorInfo
        from ..models.preview_out_timings import PreviewOutTimings

        d = dict(src_dict)
        id = d.pop("id")

        subject_id = d.pop("subject_id")

        status = PreviewOutStatus(d.pop("status"))

        progress = d.pop("progress")

        mode = PreviewOutMode(d.pop("mode"))

        def _parse_adapter_version(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        adapter_version = _parse_adapter_version(d.pop("adapter_version"))

        def _parse_result_url(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        result_url = _parse_result_url(d.pop("result_url"))

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

        seed = d.pop("seed")

        def _parse_steps(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        steps = _parse_steps(d.pop("steps"))

        def _parse_guidance_scale(data: object) -> float | None:
            if data is None:
                return data
            return cast(float | None, data)

        guidance_scale = _parse_guidance_scale(d.pop("guidance_scale"))

        width = d.pop("width")

        height = d.pop("height")

        timings = PreviewOutTimings.from_dict(d.pop("timings"))

        created_at = datetime.datetime.fromisoformat(d.pop("created_at"))

        updated_at = datetime.datetime.fromisoformat(d.pop("updated_at"))

        def _parse_expires_at(data: object) -> datetime.datetime | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                expires_at_type_0 = datetime.datetime.fromisoformat(data)

                return expires_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None, data)

        expires_at = _parse_expires_at(d.pop("expires_at"))

        preview_out = cls(
            id=id,
            subject_id=subject_id,
            status=status,
            progress=progress,
            mode=mode,
            adapter_version=adapter_version,
            result_url=result_url,
            error=error,
            seed=seed,
            steps=steps,
            guidance_scale=guidance_scale,
            width=width,
            height=height,
            timings=timings,
            created_at=created_at,
            updated_at=updated_at,
            expires_at=expires_at,
        )

        preview_out.additional_properties = d
        return preview_out

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
