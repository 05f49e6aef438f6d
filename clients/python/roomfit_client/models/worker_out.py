from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.adapter_cache_out import AdapterCacheOut
    from ..models.gpu_out import GpuOut


T = TypeVar("T", bound="WorkerOut")


@_attrs_define
class WorkerOut:
    """
    Attributes:
        name (str): `<host>:<pid>`, as a job's `worker`
        host (str):
        pid (int):
        queues (list[str]):
        online (bool): false once its last heartbeat is older than its window, or since it stopped cleanly
        current_jobs (list[str]): ids of the jobs it runs now
        running_jobs (int):
        base_model (None | str):
        adapter_cache (AdapterCacheOut):
        gpu (GpuOut | None): null without CUDA
        started_at (datetime.datetime):
        last_heartbeat (datetime.datetime):
    """

    name: str
    host: str
    pid: int
    queues: list[str]
    online: bool
    current_jobs: list[str]
    running_jobs: int
    base_model: None | str
    adapter_cache: AdapterCacheOut
    gpu: GpuOut | None
    started_at: datetime.datetime
    last_heartbeat: datetime.datetime
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.gpu_out import GpuOut

        name = self.name

        host = self.host

        pid = self.pid

        queues = self.queues

        online = self.online

        current_jobs = self.current_jobs

        running_jobs = self.running_jobs

        base_model: None | str
        base_model = self.base_model

        adapter_cache = self.adapter_cache.to_dict()

        gpu: dict[str, Any] | None
        if isinstance(self.gpu, GpuOut):
            gpu = self.gpu.to_dict()
        else:
            gpu = self.gpu

        started_at = self.started_at.isoformat()

        last_heartbeat = self.last_heartbeat.isoformat()

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "name": name,
                "host": host,
                "pid": pid,
                "queues": queues,
                "online": online,
                "current_jobs": current_jobs,
                "running_jobs": running_jobs,
                "base_model": base_model,
                "adapter_cache": adapter_cache,
                "gpu": gpu,
                "started_at": started_at,
                "last_heartbeat": last_heartbeat,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.adapter_cache_out import AdapterCacheOut
        from ..models.gpu_out import GpuOut

        d = dict(src_dict)
        name = d.pop("name")

        host = d.pop("host")

        pid = d.pop("pid")

        queues = cast(list[str], d.pop("queues"))

        online = d.pop("online")

        current_jobs = cast(list[str], d.pop("current_jobs"))

        running_jobs = d.pop("running_jobs")

        def _parse_base_model(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        base_model = _parse_base_model(d.pop("base_model"))

        adapter_cache = AdapterCacheOut.from_dict(d.pop("adapter_cache"))

        def _parse_gpu(data: object) -> GpuOut | None:
            if data is None:
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                gpu_type_0 = GpuOut.from_dict(data)

                return gpu_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(GpuOut | None, data)

        gpu = _parse_gpu(d.pop("gpu"))

        started_at = datetime.datetime.fromisoformat(d.pop("started_at"))

        last_heartbeat = datetime.datetime.fromisoformat(d.pop("last_heartbeat"))

        worker_out = cls(
            name=name,
            host=host,
            pid=pid,
            queues=queues,
            online=online,
            current_jobs=current_jobs,
            running_jobs=running_jobs,
            base_model=base_model,
            adapter_cache=adapter_cache,
            gpu=gpu,
            started_at=started_at,
            last_heartbeat=last_heartbeat,
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
