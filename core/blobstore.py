"""The blob store: photos, masks, adapters and results, by key. One interface, two homes.

`LocalBlobStore` (here) keeps blobs as files under a folder (embedded mode); `S3BlobStore`
(`core/s3_blobstore.py`) keeps them in an S3 bucket (AWS, MinIO, SeaweedFS). Both promise the same
things, checked by one contract suite (`tests/core/test_blobstore.py`):

- a reader sees either the old or the new bytes of a key, never a partial write;
- a missing key raises `BlobNotFound` (a `KeyError` naming the key), from `get`, `open`, `size`
  and `presign`; `delete` of a missing key is not an error;
- an unreachable store raises `BlobStoreUnavailable`, which is transient: workers retry on it;
- keys are `/`-separated relative paths; anything that could escape the local root (absolute
  paths, `..`, backslashes, NUL) or that S3 could not delete in bulk (control characters) is
  refused with `ValueError`;
- a prefix names a folder: `list("a/b")` is `list("a/b/")`, and never includes `a/bc`;
- `download` says how a client gets a blob: `Stream` (the bytes, for the API to send) from the local
  store, `Presigned` (a short-lived URL to redirect to) from S3.

Where keys come from is `core/blob_keys.py`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from core.s3_blobstore import S3BlobStore
    from core.settings import Settings

CHUNK_SIZE = 1024 * 1024
# In-flight writes of the local store are files named like this beside their target; no key may
# use the name, so `list` can tell them apart from blobs.
_TEMP_PREFIX = ".roomfit-tmp-"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# How often a put makes its folder again when a concurrent delete_prefix removes it meanwhile.
_FOLDER_ATTEMPTS = 5


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
    if _CONTROL.search(key):
        # S3 stores such a key but cannot name it in DeleteObjects (XML 1.0 has no \x01, and a parser
        # reads \r as \n): its folder could never be deleted again.
        raise ValueError(f"blob key must not contain control characters: {key!r}")
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


def folder_prefix(prefix: str) -> str:
    """A listing prefix as a folder: '' (everything) or a valid key plus '/'."""
    if prefix == "":
        return ""
    return validate_key(prefix.rstrip("/")) + "/"


@dataclass(frozen=True)
class Stream:
    """A blob to send as it is read: iterate `chunks` to the end (or close it)."""

    chunks: Iterator[bytes]


@dataclass(frozen=True)
class Presigned:
    """A blob a client fetches itself, from `url`, for a short while."""

    url: str


Download = Stream | Presigned


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
    def download(self, key: str, seconds: int) -> Download:
        """How a client gets `key`: streamed by us, or from a URL valid for `seconds`.

        Raises `BlobNotFound` now, before anything is sent, so an HTTP handler can still answer 404.
        """

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
    it; so `download` streams local blobs (`open`) rather than pointing at them.
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
        tmp = self._temp_file_beside(path)
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
            try:
                os.replace(tmp.name, path)
            except FileNotFoundError:
                if os.path.lexists(tmp.name):
                    raise
                # A delete_prefix took the temp file with its folder while we wrote it: the put
                # counts as done just before that delete, an order S3 allows as well (a put it
                # lists, then deletes). Raising instead would fail a worker's job for a blob that
                # is meant to go (core.tenant_deletion).
                return
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp.name)
            raise
        self._fsync_dir(path.parent)

    @staticmethod
    def _temp_file_beside(path: Path) -> IO[bytes]:
        """A new temp file in `path`'s folder, made first if need be."""
        for attempt in range(_FOLDER_ATTEMPTS):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                return tempfile.NamedTemporaryFile(dir=path.parent, prefix=_TEMP_PREFIX, delete=False)
            except FileNotFoundError:
                # a concurrent delete_prefix removed the folder (or one above) after mkdir made it;
                # nothing is written yet, so make it again
                if attempt == _FOLDER_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

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
        folder_key = folder_prefix(prefix)
        if not folder_key:
            raise ValueError("delete_prefix needs a prefix; refusing to delete the whole store")
        folder = self._path(folder_key.rstrip("/"))
        if not folder.is_dir():
            return 0
        count = len(self._walk(folder))
        shutil.rmtree(folder, onerror=_gone_already_or_raise)
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
        folder_key = folder_prefix(prefix)
        folder = self._path(folder_key.rstrip("/")) if folder_key else self.root
        if not folder.is_dir():
            return []
        return sorted(self._walk(folder))

    def presign(self, key: str, seconds: int) -> str:
        path = self._path(key)
        if not path.is_file():
            raise BlobNotFound(key)
        return path.as_uri()

    def download(self, key: str, seconds: int) -> Download:
        return Stream(self.open(key))

    def ping(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise BlobStoreUnavailable(f"blob folder {self.root} is missing or not writable")


# --- from settings ---------------------------------------------------------------------------


def blob_store_from_settings(settings: Settings) -> BlobStore:
    """The store `ROOMFIT_BLOB_URL` names: `file:///abs/folder` or `s3://bucket[/prefix]`."""
    # InvalidSetting (a ValueError): the CLI answers `invalid_settings` naming the variable, no traceback
    from core.settings import InvalidSetting

    url = settings.resolved_blob_url
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidSetting(f"ROOMFIT_BLOB_URL: a file URL names no host (file:///abs/path): {url!r}")
        path = Path(unquote(parts.path))
        if not path.is_absolute():
            raise InvalidSetting(f"ROOMFIT_BLOB_URL: the folder must be absolute (file:///abs/path): {url!r}")
        return LocalBlobStore(path)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise InvalidSetting(f"ROOMFIT_BLOB_URL: s3:// URL without a bucket: {url!r}")
        from core.s3_blobstore import S3BlobStore, S3ConfigError

        try:
            return S3BlobStore(
                parts.netloc,
                endpoint_url=settings.s3_endpoint_url,
                region=settings.s3_region,
                access_key=settings.s3_access_key_id,
                secret_key=settings.s3_secret_access_key,
                prefix=unquote(parts.path).strip("/"),
                public_endpoint_url=settings.s3_public_endpoint_url,
            )
        except S3ConfigError as exc:
            raise InvalidSetting(f"{_S3_SETTING_NAMES[exc.argument]}: {exc.reason}") from None
    raise InvalidSetting(
        f"ROOMFIT_BLOB_URL: unsupported scheme {parts.scheme!r} in {url!r}; use file:/// or s3://"
    )


# S3BlobStore's arguments as the settings that give them
_S3_SETTING_NAMES = {
    "endpoint_url": "ROOMFIT_S3_ENDPOINT_URL",
    "public_endpoint_url": "ROOMFIT_S3_PUBLIC_ENDPOINT_URL",
    "region": "ROOMFIT_S3_REGION",
    "prefix": "ROOMFIT_BLOB_URL",
}


def __getattr__(name: str) -> type[S3BlobStore]:
    # `from core.blobstore import S3BlobStore` keeps working, without importing the S3 module (and
    # botocore's exceptions) for the embedded mode, and without a cycle: s3_blobstore imports this.
    if name == "S3BlobStore":
        from core.s3_blobstore import S3BlobStore

        return S3BlobStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _gone_already_or_raise(
    _function: object, _path: str, exc_info: tuple[type, BaseException, object]
) -> None:
    """rmtree's error handler: a file or folder another delete removed first is fine (deleting twice
    is a no-op); so is a folder a concurrent put wrote a new blob into after rmtree emptied it (that
    blob stays, as it would on S3, whose delete_prefix deletes what it listed); anything else
    raises, so that a caller such as the retention sweep keeps the row that leads to what is left,
    instead of reporting a room photo deleted that is still there."""
    error = exc_info[1]
    if isinstance(error, FileNotFoundError):
        return
    if isinstance(error, OSError) and error.errno == errno.ENOTEMPTY:
        return  # only rmdir says this, and only of an entry that came after rmtree listed the folder
    raise error
