from __future__ import annotations

from collections.abc import Mapping
from io import BytesIO
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from .. import types
from ..models.create_preview_body_mode import CreatePreviewBodyMode
from ..types import UNSET, File, Unset

T = TypeVar("T", bound="CreatePreviewBody")


@_attrs_define
class CreatePreviewBody:
    """
    Attributes:
        subject_id (str):
        room (File): JPEG, PNG or WebP; at most 20 MiB (`ROOMFIT_MAX_UPLOAD_BYTES`) and 40 megapixels
            (`ROOMFIT_MAX_PIXELS`), else 413 `image_too_large`; longest side at most 12000 px (`ROOMFIT_MAX_SIDE`) and long
            side / short side at most 10 (`ROOMFIT_MAX_ASPECT_RATIO`), else 422 `image_shape_not_allowed`; all the images of
            the request together at most 160 megapixels (`ROOMFIT_MAX_REQUEST_PIXELS`), else 413 `request_too_large`.
            Checked from the header before decoding. Sides are counted after the EXIF orientation (a quarter turn swaps
            them; the limits hold either way).
        mask (File): PNG of exactly the room's size after the room's EXIF orientation. Which pixels paint (docs/api.md,
            'Masks: which pixels paint'): with transparency (an alpha channel or a tRNS chunk, some alpha below 255) those
            of alpha >= 128; fully opaque, every pixel that is not black (any channel above 0). One that paints nothing: 422
            mask_empty. The same limits as the room; its pixels count towards the request's.
        seed (int | Unset): default: random, returned in the answer
        steps (int | Unset): sampling steps; default: the service's
        guidance_scale (float | Unset): classifier-free guidance; default: the service's
        mode (CreatePreviewBodyMode | Unset): what to paint with: `auto` the subject's adapter when it is ready, zero-
            shot (the base model and the subject's reference crop) while it trains; `adapter` only the adapter (409
            `subject_not_ready` until ready); `zero_shot` the base model and the reference crop, also once ready. A subject
            not yet annotated (queued, annotating), failed or cancelled: 409 `subject_not_ready` Default:
            CreatePreviewBodyMode.AUTO.
    """

    subject_id: str
    room: File
    mask: File
    seed: int | Unset = UNSET
    steps: int | Unset = UNSET
    guidance_scale: float | Unset = UNSET
    mode: CreatePreviewBodyMode | Unset = CreatePreviewBodyMode.AUTO
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        subject_id = self.subject_id

        room = self.room.to_tuple()

        mask = self.mask.to_tuple()

        seed = self.seed

        steps = self.steps

        guidance_scale = self.guidance_scale

        mode: str | Unset = UNSET
        if not isinstance(self.mode, Unset):
            mode = self.mode.value

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "subject_id": subject_id,
                "room": room,
                "mask": mask,
            }
        )
        if seed is not UNSET:
            field_dict["seed"] = seed
        if steps is not UNSET:
            field_dict["steps"] = steps
        if guidance_scale is not UNSET:
            field_dict["guidance_scale"] = guidance_scale
        if mode is not UNSET:
            field_dict["mode"] = mode

        return field_dict

    def to_multipart(self) -> types.RequestFiles:
        files: types.RequestFiles = []

        files.append(
            ("subject_id", (None, str(self.subject_id).encode(), "text/plain"))
        )

        files.append(("room", self.room.to_tuple()))

        files.append(("mask", self.mask.to_tuple()))

        if not isinstance(self.seed, Unset):
            files.append(("seed", (None, str(self.seed).encode(), "text/plain")))

        if not isinstance(self.steps, Unset):
            files.append(("steps", (None, str(self.steps).encode(), "text/plain")))

        if not isinstance(self.guidance_scale, Unset):
            files.append(
                (
                    "guidance_scale",
                    (None, str(self.guidance_scale).encode(), "text/plain"),
                )
            )

        if not isinstance(self.mode, Unset):
            files.append(("mode", (None, str(self.mode.value).encode(), "text/plain")))

        for prop_name, prop in self.additional_properties.items():
            files.append((prop_name, (None, str(prop).encode(), "text/plain")))

        return files

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        subject_id = d.pop("subject_id")

        room = File(payload=BytesIO(d.pop("room")))

        mask = File(payload=BytesIO(d.pop("mask")))

        seed = d.pop("seed", UNSET)

        steps = d.pop("steps", UNSET)

        guidance_scale = d.pop("guidance_scale", UNSET)

        _mode = d.pop("mode", UNSET)
        mode: CreatePreviewBodyMode | Unset
        if isinstance(_mode, Unset):
            mode = UNSET
        else:
            mode = CreatePreviewBodyMode(_mode)

        create_preview_body = cls(
            subject_id=subject_id,
            room=room,
            mask=mask,
            seed=seed,
            steps=steps,
            guidance_scale=guidance_scale,
            mode=mode,
        )

        create_preview_body.additional_properties = d
        return create_preview_body

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
