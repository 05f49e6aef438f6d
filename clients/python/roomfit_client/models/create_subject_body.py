from __future__ import annotations

from collections.abc import Mapping
from io import BytesIO
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from .. import types
from ..types import UNSET, File, Unset

T = TypeVar("T", bound="CreateSubjectBody")


@_attrs_define
class CreateSubjectBody:
    """
    Attributes:
        name (str):  Example: Oslo sofa.
        photos (list[File]): 1 to 8 product photos (more: 422 `too_many_photos`)
        external_id (str | Unset): the shop's SKU; unique per tenant (409 `external_id_taken`)
        boxes (str | Unset): JSON list, one entry per photo: [x0, y0, x1, y1] in pixels of the photo after its EXIF
            orientation, or null to detect Example: [[10, 20, 500, 600], null].
        label (str | Unset): what the product is, a hint for the detector Example: couch.
    """

    name: str
    photos: list[File]
    external_id: str | Unset = UNSET
    boxes: str | Unset = UNSET
    label: str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        name = self.name

        photos = []
        for photos_item_data in self.photos:
            photos_item = photos_item_data.to_tuple()

            photos.append(photos_item)

        external_id = self.external_id

        boxes = self.boxes

        label = self.label

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "name": name,
                "photos": photos,
            }
        )
        if external_id is not UNSET:
            field_dict["external_id"] = external_id
        if boxes is not UNSET:
            field_dict["boxes"] = boxes
        if label is not UNSET:
            field_dict["label"] = label

        return field_dict

    def to_multipart(self) -> types.RequestFiles:
        files: types.RequestFiles = []

        files.append(("name", (None, str(self.name).encode(), "text/plain")))

        for photos_item_element in self.photos:
            files.append(("photos", photos_item_element.to_tuple()))

        if not isinstance(self.external_id, Unset):
            files.append(
                ("external_id", (None, str(self.external_id).encode(), "text/plain"))
            )

        if not isinstance(self.boxes, Unset):
            files.append(("boxes", (None, str(self.boxes).encode(), "text/plain")))

        if not isinstance(self.label, Unset):
            files.append(("label", (None, str(self.label).encode(), "text/plain")))

        for prop_name, prop in self.additional_properties.items():
            files.append((prop_name, (None, str(prop).encode(), "text/plain")))

        return files

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        name = d.pop("name")

        photos = []
        _photos = d.pop("photos")
        for photos_item_data in _photos:
            photos_item = File(payload=BytesIO(photos_item_data))

            photos.append(photos_item)

        external_id = d.pop("external_id", UNSET)

        boxes = d.pop("boxes", UNSET)

        label = d.pop("label", UNSET)

        create_subject_body = cls(
            name=name,
            photos=photos,
            external_id=external_id,
            boxes=boxes,
            label=label,
        )

        create_subject_body.additional_properties = d
        return create_subject_body

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
