"""The test-service harness itself: servers start, restart on their port, and always stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest
import redis

from tests.services import (
    MAX_VOLUMES,
    RedisServer,
    SeaweedServer,
    ServiceError,
    _Server,
    free_port,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parents[1]


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def test_redis_restart_keeps_the_port_and_wipes_the_data(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    client.set("job", "1")
    port, pid = redis_server.port, redis_server.pid

    redis_server.restart(wipe=True)

    assert (redis_server.port, redis_server.url.endswith(f":{port}/0")) == (port, True)
    assert redis_server.pid != pid
    assert client.get("job") is None  # the client reconnects to the new, empty server
    client.close()


def test_fresh_databases_are_empty_and_separate(postgres_url: str, fresh_postgres_url: str) -> None:
    assert fresh_postgres_url != postgres_url
    with psycopg.connect(_libpq(fresh_postgres_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE only_here (id int)")
    with psycopg.connect(_libpq(postgres_url)) as conn:
        found = conn.execute("SELECT to_regclass('only_here')").fetchone()
    assert found == (None,)


class _Stubborn(_Server):
    """A server that ignores SIGTERM, to prove stop() falls back to SIGKILL."""

    name = "stubborn"

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        script = (
            "import signal, socket, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            f"s = socket.create_server(('127.0.0.1', {self.port}))\n"
            "time.sleep(600)\n"
        )
        return [sys.executable, "-c", script]

    def _wait_ready(self, deadline: float) -> None:
        wait_for_port(self.port, timeout=deadline - time.monotonic())


def test_stop_kills_a_server_that_ignores_sigterm(tmp_path: Path) -> None:
    server = _Stubborn(tmp_path).start()
    pid = server.pid
    assert pid is not None
    started = time.monotonic()
    server.stop(timeout=0.5)
    assert time.monotonic() - started < 5
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _volumes(server: SeaweedServer) -> dict[str, int]:
    url = f"http://127.0.0.1:{server.ports['master.port']}/dir/status"
    with urllib.request.urlopen(url, timeout=10) as response:
        topology = json.load(response)["Topology"]
    return {"max": topology["Max"], "free": topology["Free"]}


def test_seaweedfs_has_room_for_a_whole_runs_buckets_whatever_the_disk(tmp_path: Path) -> None:
    """Each bucket takes a volume of its own; weed's default cap (free disk / 1 GB) ran out mid-run."""
    import boto3

    server = SeaweedServer(tmp_path).start()
    try:
        settings = server.settings
        client = boto3.client(
            "s3",
            endpoint_url=settings.endpoint,
            aws_access_key_id=settings.access_key,
            aws_secret_access_key=settings.secret_key,
            region_name=settings.region,
        )
        before = _volumes(server)
        for name in ("one", "two", "three"):
            client.create_bucket(Bucket=name)
            client.put_object(Bucket=name, Key="k", Body=b"x")
        after = _volumes(server)
    finally:
        server.stop()
    assert before == {"max": MAX_VOLUMES, "free": MAX_VOLUMES}
    assert after == {"max": MAX_VOLUMES, "free": MAX_VOLUMES - 3}


class _BrokenRedis(RedisServer):
    def _command(self) -> list[str]:
        return [*super()._command(), "--no-such-directive", "yes"]


def test_a_failed_start_reports_the_log_tail(tmp_path: Path) -> None:
    server = _BrokenRedis(tmp_path)
    with pytest.raises(ServiceError, match="no-such-directive"):
        server.start(timeout=10)
    assert not server.running


def test_run_command_exports_the_services_and_returns_the_exit_code() -> None:
    check = (
        "import os, sys\n"
        "names = ['DATABASE_URL', 'REDIS_URL', 'S3_ENDPOINT', 'S3_ACCESS_KEY', 'S3_SECRET_KEY',\n"
        "         'SERVICES_DIR']\n"
        "missing = [n for n in names if not os.environ.get('ROOMFIT_TEST_' + n)]\n"
        "print('missing', missing)\n"
        "sys.exit(7 if not missing else 1)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "tests.services", "run", "--", sys.executable, "-c", check],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 7, result.stdout + result.stderr
    assert "missing []" in result.stdout
    pids = [int(line.rsplit("pid", 1)[1]) for line in result.stdout.splitlines() if " pid " in line]
    assert len(pids) == 3, result.stdout
    for pid in pids:  # every server is gone once the command has returned
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
