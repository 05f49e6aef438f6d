from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="AdapterCacheOut")


@_attrs_define
class AdapterCacheOut:
    """
    Attributes:
        hits (int):
        misses (int):
        swap_seconds_mean (float | None): mean seconds spent putting a painted batch's adapters in place; null before
            the first
    """

    hits: int
    misses: int
    swap_seconds_mean: float | None
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        hits = self.hits

        misses = self.misses

        swap_seconds_mean: float | None
        swap_seconds_mean = self.swap_seconds_mean

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "hits": hits,
                "misses": misses,
                "swap_seconds_mean": swap_seconds_mean,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        hits = d.pop("hits")

        misses = d.pop("misses")

        def _parse_swap_seconds_mean(data: object) -> float | None:
            if data is None:
                return data
            return cast(float | None, data)

        swap_seconds_mean = _parse_swap_seconds_mean(d.pop("swap_seconds_mean"))

        adapter_cache_out = cls(
            hits=hits,
            misses=misses,
            swap_seconds_mean=swap_seconds_mean,
        )

        adapter_cache_out.additional_properties = d
        return adapter_cache_out

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
