from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="AdapterOut")


@_attrs_define
class AdapterOut:
    """
    Attributes:
        bytes_ (int | None):
        sha256 (None | str):
        rank (int | None):
        base_model (None | str):
    """

    bytes_: int | None
    sha256: None | str
    rank: int | None
    base_model: None | str
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        bytes_: int | None
        bytes_ = self.bytes_

        sha256: None | str
        sha256 = self.sha256

        rank: int | None
        rank = self.rank

        base_model: None | str
        base_model = self.base_model

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "bytes": bytes_,
                "sha256": sha256,
                "rank": rank,
                "base_model": base_model,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)

        def _parse_bytes_(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        bytes_ = _parse_bytes_(d.pop("bytes"))

        def _parse_sha256(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        sha256 = _parse_sha256(d.pop("sha256"))

        def _parse_rank(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        rank = _parse_rank(d.pop("rank"))

        def _parse_base_model(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        base_model = _parse_base_model(d.pop("base_model"))

        adapter_out = cls(
            bytes_=bytes_,
            sha256=sha256,
            rank=rank,
            base_model=base_model,
        )

        adapter_out.additional_properties = d
        return adapter_out

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
