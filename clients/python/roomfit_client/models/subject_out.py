from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.subject_out_status import SubjectOutStatus

if TYPE_CHECKING:
    from ..models.adapter_out import AdapterOut
    from ..models.error_info import ErrorInfo
    from ..models.photo_out import PhotoOut


T = TypeVar("T", bound="SubjectOut")


@_attrs_define
class SubjectOut:
    """
    Attributes:
        id (str):
        name (str):
        external_id (None | str):
        label (None | str):
        status (SubjectOutStatus):
        progress (float):
        stage (None | str):
        photos (list[PhotoOut]):
        adapter (AdapterOut | None):
        error (ErrorInfo | None):
        created_at (datetime.datetime):
        updated_at (datetime.datetime):
    """

    id: str
    name: str
    external_id: None | str
    label: None | str
    status: SubjectOutStatus
    progress: float
    stage: None | str
    photos: list[PhotoOut]
    adapter: AdapterOut | None
    error: ErrorInfo | None
    created_at: datetime.datetime
    updated_at: datetime.datetime
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.adapter_out import AdapterOut
        from ..models.error_info import ErrorInfo

        id = self.id

        name = self.name

        external_id: None | str
        external_id = self.external_id

        label: None | str
        label = self.label

        status = self.status.value

        progress = self.progress

        stage: None | str
        stage = self.stage

        photos = []
        for photos_item_data in self.photos:
            photos_item = photos_item_data.to_dict()
            photos.append(photos_item)

        adapter: dict[str, Any] | None
        if isinstance(self.adapter, AdapterOut):
            adapter = self.adapter.to_dict()
        else:
            adapter = self.adapter

        error: dict[str, Any] | None
        if isinstance(self.error, ErrorInfo):
            error = self.error.to_dict()
        else:
            error = self.error

        created_at = self.created_at.isoformat()

        updated_at = self.updated_at.isoformat()

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "id": id,
                "name": name,
                "external_id": external_id,
                "label": label,
                "status": status,
                "progress": progress,
                "stage": stage,
                "photos": photos,
                "adapter": adapter,
                "error": error,
                "created_at": created_at,
                "updated_at": updated_at,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.adapter_out import AdapterOut
        from ..models.error_info import ErrorInfo
        from ..models.photo_out import PhotoOut

        d = dict(src_dict)
        id = d.pop("id")

        name = d.pop("name")

        def _parse_external_id(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        external_id = _parse_external_id(d.pop("external_id"))

        def _parse_label(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        label = _parse_label(d.pop("label"))

        status = SubjectOutStatus(d.pop("status"))

        progress = d.pop("progress")

        def _parse_stage(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        stage = _parse_stage(d.pop("stage"))

        photos = []
        _photos = d.pop("photos")
        for photos_item_data in _photos:
            photos_item = PhotoOut.from_dict(photos_item_data)

            photos.append(photos_item)

        def _parse_adapter(data: object) -> AdapterOut | None:
            if data is None:
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                adapter_type_0 = AdapterOut.from_dict(data)

                return adapter_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(AdapterOut | None, data)

        adapter = _parse_adapter(d.pop("adapter"))

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

        subject_out = cls(
            id=id,
            name=name,
            external_id=external_id,
            label=label,
            status=status,
            progress=progress,
            stage=stage,
            photos=photos,
            adapter=adapter,
            error=error,
            created_at=created_at,
            updated_at=updated_at,
        )

        subject_out.additional_properties = d
        return subject_out

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
