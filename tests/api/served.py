"""A real `roomfit serve` process in a temporary folder, for measuring what requests cost it.

Embedded-mode settings (SQLite, the filesystem broker, local blobs) under a temporary
`ROOMFIT_VAR_DIR`; the schema, a tenant and a secret key are made with the command line, as an
operator would. The process's peak resident memory (`VmHWM`) and CPU time come from /proc, so a
test or a benchmark can see what one request cost the server, not the client.
Used by tests/api/test_public_limits.py and bench/bench_api_memory.py.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from PIL import Image

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@dataclass
class ServedApi:
    process: subprocess.Popen[bytes]
    url: str
    secret: str
    tenant_id: str
    var_dir: Path
    log: Path
    warm_rss_mib: float | None = None
    """Its resident size after a warm-up request, when the caller measured one."""

    @property
    def pid(self) -> int:
        return self.process.pid

    def peak_rss_mib(self) -> float:
        """VmHWM: the most resident memory the server has had since it started."""
        return _status_kib(self.pid, "VmHWM") / 1024

    def rss_mib(self) -> float:
        return _status_kib(self.pid, "VmRSS") / 1024

    def reset_peak(self) -> None:
        """Start VmHWM again from the present resident size (Linux >= 4.0: clear_refs 5)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def peak_growth_mib(self, request: Callable[[], T], since: float | None = None) -> tuple[T, float]:
        """Run `request`; how far the server's peak resident memory rose above where it stood (or
        above `since`, say its resident size after a warm-up: memory a request before this one
        kept counts then too)."""
        self.reset_peak()
        before = self.peak_rss_mib() if since is None else since
        response = request()
        return response, self.peak_rss_mib() - before

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server so far (all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}

    def post(
        self, path: str, data: dict[str, str], files: Sequence[Any], timeout: float = 300
    ) -> httpx.Response:
        return httpx.post(self.url + path, headers=self.auth(), data=data, files=list(files), timeout=timeout)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.auth(), timeout=60)

    def ready_subject(self) -> str:
        """A subject as the worker leaves it after training (ready, with an adapter), written to the
        server's database directly: previews need one, and no worker runs here."""
        from sqlalchemy.orm import Session

        from core.db import engine_for
        from core.ids import new_id
        from core.tables import Subject

        engine = engine_for(f"sqlite:///{self.var_dir / 'roomfit.db'}")
        subject_id = new_id("sub")
        try:
            with Session(engine) as session:
                session.add(
                    Subject(
                        id=subject_id,
                        tenant_id=self.tenant_id,
                        name="sofa",
                        status="ready",
                        progress=1.0,
                        adapter_version=1,
                        adapter_key=f"tenants/{self.tenant_id}/subjects/{subject_id}/adapter/1.safetensors",
                        adapter_bytes=1234,
                        adapter_sha256="0" * 64,
                        adapter_rank=4,
                        adapter_base_model="tiny",
                    )
                )
                session.commit()
        finally:
            engine.dispose()
        return subject_id

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def served_env(var_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of the server and its command line: embedded mode under `var_dir`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMFIT_")}
    env.update(
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        ROOMFIT_VAR_DIR=str(var_dir),
        ROOMFIT_RATE_LIMIT="100000/minute",
        ROOMFIT_LOG_LEVEL="WARNING",
        **{f"ROOMFIT_{k.upper()}": v for k, v in settings.items()},
    )
    return env


@contextmanager
def served_api(folder: Path, **settings: str) -> Iterator[ServedApi]:
    """Migrate, make a tenant and a secret key, start `roomfit serve`; stop it afterwards.

    `settings` become `ROOMFIT_<NAME>` variables (for instance `api_memory_budget_bytes="0"`)."""
    var_dir = folder / "var"
    var_dir.mkdir(parents=True, exist_ok=True)
    env = served_env(var_dir, **settings)
    _cli(env, "migrate")
    tenant_id = _cli(env, "tenants", "create", "shop")["id"]
    secret = _cli(env, "keys", "create", "--tenant", "shop", "--kind", "secret")["key"]
    port = _free_port()
    log = folder / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api = ServedApi(process, f"http://127.0.0.1:{port}", secret, tenant_id, var_dir, log)
    try:
        _wait_ready(api)
        yield api
    finally:
        _stop(process)


def _wait_ready(api: ServedApi) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if api.process.poll() is not None:
            raise RuntimeError(f"roomfit serve exited:\n{api.tail()}")
        try:
            if httpx.get(api.url + "/healthz", timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"roomfit serve did not answer within {START_TIMEOUT} s:\n{api.tail()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


# --- images -------------------------------------------------------------------------------------


def encoded(image: Image.Image, fmt: str, **save: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def zero_png(width: int, height: int) -> bytes:
    """An all-black RGB PNG: kilobytes on the wire, width x height x 3 bytes once decoded."""
    return encoded(Image.new("RGB", (width, height)), "PNG", compress_level=9)


def photo_files(images: Sequence[bytes], field: str = "photos") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (f"p{i}", data, "application/octet-stream")) for i, data in enumerate(images)]
