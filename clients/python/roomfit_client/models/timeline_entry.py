from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.timeline_entry_event import TimelineEntryEvent

T = TypeVar("T", bound="TimelineEntry")


@_attrs_define
class TimelineEntry:
    """
    Attributes:
        at (datetime.datetime):
        event (TimelineEntryEvent): queued (created, retried or handed back), claimed (a worker took it: a new attempt),
            stage (its stage moved), finished (succeeded, failed or cancelled)
        status (str): the subject's or preview's status then
        stage (None | str):
        attempt (int): 0 before the first claim, then 1, 2, …
    """

    at: datetime.datetime
    event: TimelineEntryEvent
    status: str
    stage: None | str
    attempt: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        at = self.at.isoformat()

        event = self.event.value

        status = self.status

        stage: None | str
        stage = self.stage

        attempt = self.attempt

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "at": at,
                "event": event,
                "status": status,
                "stage": stage,
                "attempt": attempt,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        at = datetime.datetime.fromisoformat(d.pop("at"))

        event = TimelineEntryEvent(d.pop("event"))

        status = d.pop("status")

        def _parse_stage(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        stage = _parse_stage(d.pop("stage"))

        attempt = d.pop("attempt")

        timeline_entry = cls(
            at=at,
            event=event,
            status=status,
            stage=stage,
            attempt=attempt,
        )

        timeline_entry.additional_properties = d
        return timeline_entry

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
