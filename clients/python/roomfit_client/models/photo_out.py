from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.photo_out_source_type_0 import PhotoOutSourceType0

T = TypeVar("T", bound="PhotoOut")


@_attrs_define
class PhotoOut:
    """
    Attributes:
        index (int):
        width (int):
        height (int):
        box (list[float] | None): [x0, y0, x1, y1] in pixels; null until known
        score (float | None):
        label (None | str):
        source (None | PhotoOutSourceType0):
    """

    index: int
    width: int
    height: int
    box: list[float] | None
    score: float | None
    label: None | str
    source: None | PhotoOutSourceType0
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        index = self.index

        width = self.width

        height = self.height

        box: list[float] | None
        if isinstance(self.box, list):
            box = self.box

        else:
            box = self.box

        score: float | None
        score = self.score

        label: None | str
        label = self.label

        source: None | str
        if isinstance(self.source, PhotoOutSourceType0):
            source = self.source.value
        else:
            source = self.source

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "index": index,
                "width": width,
                "height": height,
                "box": box,
                "score": score,
                "label": label,
                "source": source,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        index = d.pop("index")

        width = d.pop("width")

        height = d.pop("height")

        def _parse_box(data: object) -> list[float] | None:
            if data is None:
                return data
            try:
                if not isinstance(data, list):
                    raise TypeError()
                box_type_0 = cast(list[float], data)

                return box_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(list[float] | None, data)

        box = _parse_box(d.pop("box"))

        def _parse_score(data: object) -> float | None:
            if data is None:
                return data
            return cast(float | None, data)

        score = _parse_score(d.pop("score"))

        def _parse_label(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        label = _parse_label(d.pop("label"))

        def _parse_source(data: object) -> None | PhotoOutSourceType0:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                source_type_0 = PhotoOutSourceType0(data)

                return source_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | PhotoOutSourceType0, data)

        source = _parse_source(d.pop("source"))

        photo_out = cls(
            index=index,
            width=width,
            height=height,
            box=box,
            score=score,
            label=label,
            source=source,
        )

        photo_out.additional_properties = d
        return photo_out

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
