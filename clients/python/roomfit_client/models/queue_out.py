from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.queue_out_counts import QueueOutCounts


T = TypeVar("T", bound="QueueOut")


@_attrs_define
class QueueOut:
    """
    Attributes:
        kind (str):
        counts (QueueOutCounts): jobs per status
        broker_length (int | None): messages waiting in the broker for this queue (Redis LLEN; in embedded mode, the
            filesystem broker's message files); null where the broker cannot be read
        oldest_queued_at (datetime.datetime | None): since when the longest-waiting queued job has waited; null when
            none waits
        oldest_queued_seconds (float | None): how long that is, in seconds; null when none waits
        workers (int): online workers consuming this queue
    """

    kind: str
    counts: QueueOutCounts
    broker_length: int | None
    oldest_queued_at: datetime.datetime | None
    oldest_queued_seconds: float | None
    workers: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        kind = self.kind

        counts = self.counts.to_dict()

        broker_length: int | None
        broker_length = self.broker_length

        oldest_queued_at: None | str
        if isinstance(self.oldest_queued_at, datetime.datetime):
            oldest_queued_at = self.oldest_queued_at.isoformat()
        else:
            oldest_queued_at = self.oldest_queued_at

        oldest_queued_seconds: float | None
        oldest_queued_seconds = self.oldest_queued_seconds

        workers = self.workers

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "kind": kind,
                "counts": counts,
                "broker_length": broker_length,
                "oldest_queued_at": oldest_queued_at,
                "oldest_queued_seconds": oldest_queued_seconds,
                "workers": workers,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.queue_out_counts import QueueOutCounts

        d = dict(src_dict)
        kind = d.pop("kind")

        counts = QueueOutCounts.from_dict(d.pop("counts"))

        def _parse_broker_length(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        broker_length = _parse_broker_length(d.pop("broker_length"))

        def _parse_oldest_queued_at(data: object) -> datetime.datetime | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                oldest_queued_at_type_0 = datetime.datetime.fromisoformat(data)

                return oldest_queued_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None, data)

        oldest_queued_at = _parse_oldest_queued_at(d.pop("oldest_queued_at"))

        def _parse_oldest_queued_seconds(data: object) -> float | None:
            if data is None:
                return data
            return cast(float | None, data)

        oldest_queued_seconds = _parse_oldest_queued_seconds(
            d.pop("oldest_queued_seconds")
        )

        workers = d.pop("workers")

        queue_out = cls(
            kind=kind,
            counts=counts,
            broker_length=broker_length,
            oldest_queued_at=oldest_queued_at,
            oldest_queued_seconds=oldest_queued_seconds,
            workers=workers,
        )

        queue_out.additional_properties = d
        return queue_out

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
