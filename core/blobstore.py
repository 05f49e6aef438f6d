"""The blob store: photos, masks, adapters and results, by key. One interface, two homes.

`LocalBlobStore` keeps blobs as files under a folder (embedded mode); `S3BlobStore` keeps them in
an S3 bucket (AWS, MinIO, SeaweedFS). Both promise the same things, checked by one contract suite
(`tests/core/test_blobstore.py`):

- a reader sees either the old or the new bytes of a key, never a partial write;
- a missing key raises `BlobNotFound` (a `KeyError` naming the key), from `get`, `open`, `size`
  and `presign`; `delete` of a missing key is not an error;
- an unreachable store raises `BlobStoreUnavailable`, which is transient: workers retry on it;
- keys are `/`-separated relative paths; anything that could escape the local root (absolute
  paths, `..`, backslashes, NUL) is refused with `ValueError`;
- a prefix names a folder: `list("a/b")` is `list("a/b/")`, and never includes `a/bc`.

Where keys come from is `core/blob_keys.py`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from core.settings import Settings

CHUNK_SIZE = 1024 * 1024
# In-flight writes of the local store are files named like this beside their target; no key may
# use the name, so `list` can tell them apart from blobs.
_TEMP_PREFIX = ".roomfit-tmp-"


class BlobNotFound(KeyError):
    """No blob under this key."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        # KeyError's own str() is just repr(key); say what is missing.
        return f"blob not found: {self.key!r}"


class BlobStoreError(Exception):
    """The blob store refused or failed an operation (not a missing key)."""


class BlobStoreUnavailable(BlobStoreError):
    """The blob store cannot be reached right now; retrying later may succeed."""


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative key, else raise ValueError saying why."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"blob key must be a non-empty string, got {key!r}")
    if "\x00" in key:
        raise ValueError(f"blob key must not contain NUL: {key!r}")
    if "\\" in key:
        raise ValueError(f"blob key must use '/' separators, not backslashes: {key!r}")
    if key.startswith("/"):
        raise ValueError(f"blob key must be relative, not absolute: {key!r}")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"blob key must not contain empty, '.' or '..' segments: {key!r}")
        if segment.startswith(_TEMP_PREFIX):
            raise ValueError(f"blob key segments must not start with {_TEMP_PREFIX!r}: {key!r}")
    return key


def _folder_prefix(prefix: str) -> str:
    """A listing prefix as a folder: '' (everything) or a valid key plus '/'."""
    if prefix == "":
        return ""
    return validate_key(prefix.rstrip("/")) + "/"


class BlobStore(ABC):
    """Bytes by key. Implementations are safe to share between threads."""

    @abstractmethod
    def put(self, key: str, data: bytes | BinaryIO, content_type: str | None = None) -> None:
        """Store `data` under `key`, replacing what was there, atomically."""

    def get(self, key: str) -> bytes:
        """All the bytes of `key`."""
        return b"".join(self.open(key))

    @abstractmethod
    def open(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The bytes of `key` as chunks, for streaming a response.

        Raises `BlobNotFound` here, before the first chunk, so an HTTP handler can still answer
        404. Iterate it to the end (or close it) to release the file or connection.
        """

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int:
        """Length of `key` in bytes."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; a missing key is fine (deletes are retried by idempotent tasks)."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Remove every blob under the folder `prefix`; return how many there were."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys under the folder `prefix` ('' for all)."""

    @abstractmethod
    def presign(self, key: str, seconds: int) -> str:
        """A URL from which a client can GET `key` for the next `seconds`."""

    @abstractmethod
    def ping(self) -> None:
        """Return if the store is usable, else raise `BlobStoreUnavailable` (for /readyz)."""


# --- local folder ----------------------------------------------------------------------------


class LocalBlobStore(BlobStore):
    """Blobs as files under `root`; key `a/b.png` is the file `root/a/b.png`.

    Writes go to a temporary file in the target's folder, are flushed to disk, then renamed over
    the target: a rename within one file system is atomic, so a concurrent reader opens either the
    old file or the new one, whole.

    `presign` returns a `file://` URL: it proves the blob exists but a remote client cannot use
    it; the API streams local blobs itself (`open`) rather than redirecting to them.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*validate_key(key).split("/"))
        # validate_key already rules out escapes; this keeps it true if validation ever loosens
        if os.path.commonpath([self.root, path]) != str(self.root):
            raise ValueError(f"blob key escapes the store's root: {key!r}")
        return path

    def put(self, key: str, data: bytes | BinaryIO, content_type: str | None = None) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.NamedTemporaryFile(dir=path.parent, prefix=_TEMP_PREFIX, delete=False)  # noqa: SIM115
        try:
            with tmp:
                if isinstance(data, bytes | bytearray | memoryview):
                    tmp.write(data)
                else:
                    shutil.copyfileobj(data, tmp, CHUNK_SIZE)
                tmp.flush()
                os.fsync(tmp.fileno())
                # NamedTemporaryFile makes 0600 files; blobs are ordinary data files
                os.fchmod(tmp.fileno(), 0o644)
            os.replace(tmp.name, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp.name)
            raise
        self._fsync_dir(path.parent)

    @staticmethod
    def _fsync_dir(folder: Path) -> None:
        # Make the rename itself durable, so a crash cannot bring back the old blob.
        with contextlib.suppress(OSError):
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def open(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        path = self._path(key)
        try:
            # the open file keeps the bytes it found even if a writer replaces the path meanwhile
            file = path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(key) from None
        return self._chunks(file, chunk_size)

    @staticmethod
    def _chunks(file: BinaryIO, chunk_size: int) -> Iterator[bytes]:
        with file:
            while chunk := file.read(chunk_size):
                yield chunk

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise BlobNotFound(key)
        return path.stat().st_size

    def delete(self, key: str) -> None:
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            if not path.is_dir():
                path.unlink()

    def delete_prefix(self, prefix: str) -> int:
        folder_key = _folder_prefix(prefix)
        if not folder_key:
            raise ValueError("delete_prefix needs a prefix; refusing to delete the whole store")
        folder = self._path(folder_key.rstrip("/"))
        if not folder.is_dir():
            return 0
        count = len(self._walk(folder))
        shutil.rmtree(folder, ignore_errors=True)
        return count

    def _walk(self, folder: Path) -> list[str]:
        keys = []
        for dirpath, _dirnames, filenames in os.walk(folder):
            for name in filenames:
                if name.startswith(_TEMP_PREFIX):
                    continue  # a write in flight, not a blob
                keys.append(Path(dirpath, name).relative_to(self.root).as_posix())
        return keys

    def list(self, prefix: str = "") -> list[str]:
        folder_key = _folder_prefix(prefix)
        folder = self._path(folder_key.rstrip("/")) if folder_key else self.root
        if not folder.is_dir():
            return []
        return sorted(self._walk(folder))

    def presign(self, key: str, seconds: int) -> str:
        path = self._path(key)
        if not path.is_file():
            raise BlobNotFound(key)
        return path.as_uri()

    def ping(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise BlobStoreUnavailable(f"blob folder {self.root} is missing or not writable")


# --- S3 --------------------------------------------------------------------------------------

# Error codes S3 (and SeaweedFS, MinIO) use for "no such object"; HEAD answers carry only the status.
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404", "NoSuchBucket"})
# Answers that mean "busy or broken right now", worth a retry (5xx statuses are too).
_TRANSIENT_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"})


class S3BlobStore(BlobStore):
    """Blobs as objects of one S3 bucket, optionally under a key prefix.

    A PUT replaces an object atomically by S3's own semantics. The bucket is created on first use
    if missing. Timeouts are short and retries few, so a dead endpoint turns into
    `BlobStoreUnavailable` within seconds instead of hanging a request or a worker.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        prefix: str = "",
        public_endpoint_url: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
    ) -> None:
        import boto3  # only S3 deployments pay for importing boto3
        from botocore.config import Config

        if not bucket:
            raise ValueError("S3 bucket name is empty")
        self.bucket = bucket
        self.prefix = _folder_prefix(prefix)
        self.region = region

        def client(endpoint: str | None) -> Any:
            return boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint,
                region_name=region,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                config=Config(
                    connect_timeout=connect_timeout,
                    read_timeout=read_timeout,
                    retries={"max_attempts": max_attempts, "mode": "standard"},
                    # presigned URLs too: AWS regions opened since 2014 accept nothing older
                    signature_version="s3v4",
                    # custom endpoints (MinIO, SeaweedFS) rarely have wildcard DNS for bucket hosts
                    s3={"addressing_style": "path" if endpoint else "auto"},
                ),
            )

        self._client: Any = client(endpoint_url)
        # Browsers fetch presigned URLs from outside: behind compose or Kubernetes the endpoint the
        # workers use (http://minio:9000) is not one a shopper can reach. The host is part of what
        # SigV4 signs, so those URLs are signed by a client that names the public endpoint.
        self._presigner: Any = client(public_endpoint_url) if public_endpoint_url else self._client
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3BlobStore({self.bucket!r}, prefix={self.prefix!r})"

    # errors and bucket

    @contextlib.contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        """Translate botocore's exceptions into the store's own."""
        from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if key is not None and (code in _NOT_FOUND_CODES or status == 404):
                raise BlobNotFound(key) from None
            message = f"S3 bucket {self.bucket!r}: {code} {error.get('Message', '')}"
            if status >= 500 or code in _TRANSIENT_CODES:
                raise BlobStoreUnavailable(message) from exc
            raise BlobStoreError(message) from exc
        except (BotoConnectionError, HTTPClientError) as exc:
            raise BlobStoreUnavailable(f"S3 at {self._client.meta.endpoint_url} unreachable: {exc}") from exc
        except BotoCoreError as exc:
            raise BlobStoreError(f"S3 bucket {self.bucket!r}: {exc}") from exc

    def _ensure_bucket(self, force: bool = False) -> None:
        """Create the bucket if it does not exist; checked once per store (always when `force`)."""
        if self._bucket_ready and not force:
            return
        from botocore.exceptions import ClientError

        with self._bucket_lock, self._errors():
            if self._bucket_ready and not force:
                return
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status == 404:
                    self._create_bucket()
                elif status != 403:
                    raise
                # 403: least-privilege credentials (object rights, no s3:ListBucket) cannot look
                # at the bucket itself; assume it is there, and let the object calls say otherwise.
            self._bucket_ready = True

    def _create_bucket(self) -> None:
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":  # AWS rejects an explicit us-east-1 constraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self._client.create_bucket(**kwargs)
        except ClientError as exc:
            # another process won the race to create it: just as good
            if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou",):
                raise

    def _object(self, key: str) -> str:
        return self.prefix + validate_key(key)

    # the interface

    def put(self, key: str, data: bytes | BinaryIO, content_type: str | None = None) -> None:
        name = self._object(key)
        self._ensure_bucket()
        body: Any = data
        if not isinstance(data, bytes | bytearray | memoryview) and not (
            hasattr(data, "seekable") and data.seekable()
        ):
            # botocore rewinds the body to retry and to checksum it; a pipe cannot be rewound
            body = data.read()
        extra = {"ContentType": content_type} if content_type else {}
        with self._errors():
            self._client.put_object(Bucket=self.bucket, Key=name, Body=body, **extra)

    def open(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        name = self._object(key)
        self._ensure_bucket()
        with self._errors(key):
            body = self._client.get_object(Bucket=self.bucket, Key=name)["Body"]
        return self._chunks(body, chunk_size)

    def _chunks(self, body: Any, chunk_size: int) -> Iterator[bytes]:
        try:
            with self._errors():
                yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def get(self, key: str) -> bytes:
        name = self._object(key)
        self._ensure_bucket()
        with self._errors(key):
            body = self._client.get_object(Bucket=self.bucket, Key=name)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

    def _head(self, key: str) -> dict[str, Any]:
        name = self._object(key)
        self._ensure_bucket()
        with self._errors(key):
            return dict(self._client.head_object(Bucket=self.bucket, Key=name))

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except BlobNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def delete(self, key: str) -> None:
        name = self._object(key)
        self._ensure_bucket()
        with self._errors():
            self._client.delete_object(Bucket=self.bucket, Key=name)  # S3: deleting nothing is fine

    def _list_objects(self, folder: str) -> list[str]:
        self._ensure_bucket()
        names: list[str] = []
        with self._errors():
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + folder
            )
            for page in pages:
                names.extend(item["Key"] for item in page.get("Contents", []))
        return names

    def list(self, prefix: str = "") -> list[str]:
        names = self._list_objects(_folder_prefix(prefix))
        return sorted(name[len(self.prefix) :] for name in names)

    def delete_prefix(self, prefix: str) -> int:
        folder = _folder_prefix(prefix)
        if not folder:
            raise ValueError("delete_prefix needs a prefix; refusing to delete the whole store")
        names = self._list_objects(folder)
        for start in range(0, len(names), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": name} for name in names[start : start + 1000]]
            with self._errors():
                answer = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise BlobStoreError(f"S3 could not delete {first.get('Key')!r}: {first.get('Code')}")
        return len(names)

    def presign(self, key: str, seconds: int) -> str:
        # S3 would sign a URL for a missing object too, and the client would get a 404 later;
        # checking first lets the API answer 404 itself.
        self._head(key)
        with self._errors(key):
            return str(
                self._presigner.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.bucket, "Key": self._object(key)},
                    ExpiresIn=int(seconds),
                )
            )

    def ping(self) -> None:
        # Always a request (HEAD bucket): readiness must notice an S3 that went away since.
        self._ensure_bucket(force=True)


# --- from settings ---------------------------------------------------------------------------


def blob_store_from_settings(settings: Settings) -> BlobStore:
    """The store `ROOMFIT_BLOB_URL` names: `file:///abs/folder` or `s3://bucket[/prefix]`."""
    url = settings.resolved_blob_url
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"ROOMFIT_BLOB_URL: a file URL names no host (file:///abs/path), got {url!r}")
        path = Path(unquote(parts.path))
        if not path.is_absolute():
            raise ValueError(f"ROOMFIT_BLOB_URL: the folder must be absolute (file:///abs/path), got {url!r}")
        return LocalBlobStore(path)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"ROOMFIT_BLOB_URL: s3:// URL without a bucket: {url!r}")
        return S3BlobStore(
            parts.netloc,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key=settings.s3_access_key_id,
            secret_key=settings.s3_secret_access_key,
            prefix=unquote(parts.path).strip("/"),
            public_endpoint_url=settings.s3_public_endpoint_url,
        )
    raise ValueError(
        f"ROOMFIT_BLOB_URL: unsupported scheme {parts.scheme!r} in {url!r}; use file:/// or s3://"
    )
