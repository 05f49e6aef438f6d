from __future__ import annotations

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
        broker_length (int | None): messages waiting in the broker; null if unknown
    """

    kind: str
    counts: QueueOutCounts
    broker_length: int | None
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        kind = self.kind

        counts = self.counts.to_dict()

        broker_length: int | None
        broker_length = self.broker_length

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "kind": kind,
                "counts": counts,
                "broker_length": broker_length,
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

        queue_out = cls(
            kind=kind,
            counts=counts,
            broker_length=broker_length,
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
