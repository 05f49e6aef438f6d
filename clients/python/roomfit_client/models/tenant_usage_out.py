from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="TenantUsageOut")


@_attrs_define
class TenantUsageOut:
    """
    Attributes:
        tenant_id (str):
        name (str):
        created_today (int):
        queued_now (int):
        running_now (int):
        failed_today (int):
    """

    tenant_id: str
    name: str
    created_today: int
    queued_now: int
    running_now: int
    failed_today: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        tenant_id = self.tenant_id

        name = self.name

        created_today = self.created_today

        queued_now = self.queued_now

        running_now = self.running_now

        failed_today = self.failed_today

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "tenant_id": tenant_id,
                "name": name,
                "created_today": created_today,
                "queued_now": queued_now,
                "running_now": running_now,
                "failed_today": failed_today,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        tenant_id = d.pop("tenant_id")

        name = d.pop("name")

        created_today = d.pop("created_today")

        queued_now = d.pop("queued_now")

        running_now = d.pop("running_now")

        failed_today = d.pop("failed_today")

        tenant_usage_out = cls(
            tenant_id=tenant_id,
            name=name,
            created_today=created_today,
            queued_now=queued_now,
            running_now=running_now,
            failed_today=failed_today,
        )

        tenant_usage_out.additional_properties = d
        return tenant_usage_out

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
