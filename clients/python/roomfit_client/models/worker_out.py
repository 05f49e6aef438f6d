from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="WorkerOut")


@_attrs_define
class WorkerOut:
    """
    Attributes:
        name (str):
        online (bool | None): answered Celery's ping just now; null if not asked
        running_jobs (int):
        last_heartbeat (datetime.datetime | None):
        queues (list[str]):
    """

    name: str
    online: bool | None
    running_jobs: int
    last_heartbeat: datetime.datetime | None
    queues: list[str]
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        name = self.name

        online: bool | None
        online = self.online

        running_jobs = self.running_jobs

        last_heartbeat: None | str
        if isinstance(self.last_heartbeat, datetime.datetime):
            last_heartbeat = self.last_heartbeat.isoformat()
        else:
            last_heartbeat = self.last_heartbeat

        queues = self.queues

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "name": name,
                "online": online,
                "running_jobs": running_jobs,
                "last_heartbeat": last_heartbeat,
                "queues": queues,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        name = d.pop("name")

        def _parse_online(data: object) -> bool | None:
            if data is None:
                return data
            return cast(bool | None, data)

        online = _parse_online(d.pop("online"))

        running_jobs = d.pop("running_jobs")

        def _parse_last_heartbeat(data: object) -> datetime.datetime | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                last_heartbeat_type_0 = datetime.datetime.fromisoformat(data)

                return last_heartbeat_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None, data)

        last_heartbeat = _parse_last_heartbeat(d.pop("last_heartbeat"))

        queues = cast(list[str], d.pop("queues"))

        worker_out = cls(
            name=name,
            online=online,
            running_jobs=running_jobs,
            last_heartbeat=last_heartbeat,
            queues=queues,
        )

        worker_out.additional_properties = d
        return worker_out

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
