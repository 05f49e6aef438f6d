"""The blob store's contract, run against both homes: a local folder and a real S3 (SeaweedFS)."""

from __future__ import annotations

import io
import os
import secrets
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from core import blob_keys
from core.blobstore import (
    BlobNotFound,
    BlobStore,
    BlobStoreUnavailable,
    LocalBlobStore,
    S3BlobStore,
    blob_store_from_settings,
)
from core.settings import Settings
from tests.core.conftest import s3_store
from tests.services import S3Settings, free_port


def _fetch(url: str) -> bytes:
    """GET a presigned URL the way a client would (file:// URLs are read from disk)."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(unquote(parts.path)).read_bytes()
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


class _Pipe(io.RawIOBase):
    """A readable, non-seekable stream (an upload arriving over a socket)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


# --- the contract ----------------------------------------------------------------------------


def test_put_get_round_trip_bytes_and_files(store: BlobStore) -> None:
    store.put("a/bytes.bin", b"\x00\x01hello")
    store.put("a/file.bin", io.BytesIO(b"from a file"), content_type="application/octet-stream")
    store.put("a/pipe.bin", io.BufferedReader(_Pipe(b"x" * 300_000)))
    store.put("a/empty.bin", b"")

    assert store.get("a/bytes.bin") == b"\x00\x01hello"
    assert store.get("a/file.bin") == b"from a file"
    assert store.get("a/pipe.bin") == b"x" * 300_000
    assert store.get("a/empty.bin") == b""


def test_open_streams_chunks(store: BlobStore) -> None:
    data = secrets.token_bytes(2_500_000)
    store.put("a/big.bin", data)
    chunks = list(store.open("a/big.bin", chunk_size=1_000_000))
    assert b"".join(chunks) == data
    assert len(chunks) >= 2


def test_overwrite_replaces(store: BlobStore) -> None:
    store.put("a/k", b"first, longer value")
    store.put("a/k", b"second")
    assert store.get("a/k") == b"second"
    assert store.size("a/k") == 6


def test_exists_and_size(store: BlobStore) -> None:
    assert not store.exists("a/k")
    store.put("a/k", b"12345")
    assert store.exists("a/k")
    assert store.size("a/k") == 5
    assert not store.exists("a")  # a folder is not a blob


def test_delete_and_delete_missing(store: BlobStore) -> None:
    store.put("a/k", b"x")
    store.delete("a/k")
    assert not store.exists("a/k")
    store.delete("a/k")  # again: fine
    store.delete("never/was")


def test_delete_prefix_removes_only_that_folder(store: BlobStore) -> None:
    for key in ("a/b/1", "a/b/2/3", "a/bc/1", "a/b.txt"):
        store.put(key, b"x")
    assert store.delete_prefix("a/b") == 2
    assert store.list("a") == ["a/b.txt", "a/bc/1"]
    assert store.delete_prefix("a/b/") == 0
    assert store.delete_prefix("nothing/here") == 0
    with pytest.raises(ValueError, match="prefix"):
        store.delete_prefix("")


def test_list_is_sorted_and_folder_exact(store: BlobStore) -> None:
    for key in ("a/b/z", "a/b/a", "a/b/m/n", "a/bc/1", "a/b.txt", "b/1"):
        store.put(key, b"x")
    assert store.list("a/b") == ["a/b/a", "a/b/m/n", "a/b/z"]
    assert store.list("a/b/") == ["a/b/a", "a/b/m/n", "a/b/z"]
    assert store.list("a/bc") == ["a/bc/1"]
    assert store.list("a/b/m") == ["a/b/m/n"]
    assert store.list("missing") == []
    assert store.list() == sorted(["a/b/z", "a/b/a", "a/b/m/n", "a/bc/1", "a/b.txt", "b/1"])


def test_presign_url_serves_the_bytes(store: BlobStore) -> None:
    data = secrets.token_bytes(10_000)
    store.put("a/result.png", data, content_type="image/png")
    url = store.presign("a/result.png", 60)
    assert _fetch(url) == data


def test_missing_key_raises_blob_not_found_naming_the_key(store: BlobStore) -> None:
    for call in (store.get, store.open, store.size, lambda key: store.presign(key, 60)):
        with pytest.raises(BlobNotFound, match=r"a/missing\.png") as info:
            call("a/missing.png")
        assert isinstance(info.value, KeyError)
        assert info.value.key == "a/missing.png"


@pytest.mark.parametrize(
    "key",
    ["", "/etc/passwd", "../escape", "a/../../escape", "..", "a\\b", "a\x00b", "a//b", "./a", "a/", "a/."],
)
def test_invalid_keys_are_rejected(store: BlobStore, key: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="blob key"):
        store.put(key, b"x")
    with pytest.raises(ValueError, match="blob key"):
        store.get(key)
    with pytest.raises(ValueError, match="blob key"):
        store.exists(key)
    # nothing was written anywhere near the local store's root
    assert not (tmp_path / "escape").exists()


def test_ping(store: BlobStore) -> None:
    store.ping()


def test_readers_never_see_a_partial_write(store: BlobStore) -> None:
    """A writer overwrites one key with large payloads while readers read it: every read is whole."""
    size = 4 * 1024 * 1024
    versions = 10
    key = "a/adapter.safetensors"
    store.put(key, bytes([0]) * size)

    writing = threading.Event()
    done = threading.Event()
    overlapped = 0
    reads = 0
    bad: list[str] = []
    lock = threading.Lock()

    def writer() -> None:
        try:
            for value in range(1, versions + 1):
                writing.set()
                store.put(key, bytes([value]) * size)  # each payload is one byte value, repeated
                writing.clear()
                time.sleep(0.005)  # let readers also start between writes
        finally:
            done.set()

    def reader(streaming: bool) -> None:
        nonlocal overlapped, reads
        while not done.is_set():
            during_write = writing.is_set()
            data = b"".join(store.open(key)) if streaming else store.get(key)
            during_write = during_write or writing.is_set()
            ok = len(data) == size and data.count(data[:1]) == size
            with lock:
                reads += 1
                overlapped += during_write
                if not ok:
                    bad.append(f"len={len(data)} first={data[:1]!r} last={data[-1:]!r}")

    threads = [threading.Thread(target=writer)]
    threads += [threading.Thread(target=reader, args=(streaming,)) for streaming in (False, True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert not bad, f"{len(bad)} of {reads} reads were partial or mixed: {bad[:3]}"
    assert overlapped >= 3, f"only {overlapped} of {reads} reads overlapped a write; the test proved nothing"
    assert store.get(key) == bytes([versions]) * size


# --- per implementation ----------------------------------------------------------------------


def test_local_store_stays_inside_its_root_and_hides_temp_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("a/b", b"x")
    assert sorted(p.name for p in (tmp_path / "blobs" / "a").iterdir()) == ["b"]  # no temp file left
    (tmp_path / "blobs" / "a" / ".roomfit-tmp-abc123").write_bytes(b"half a write")
    assert store.list() == ["a/b"]
    assert store.delete_prefix("a") == 1
    assert not (tmp_path / "blobs" / "a").exists()
    with pytest.raises(ValueError):
        store.put("a/.roomfit-tmp-x", b"x")


def test_local_presign_is_a_file_url(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("a/b.png", b"png")
    assert store.presign("a/b.png", 60) == (tmp_path / "blobs" / "a" / "b.png").as_uri()


def test_local_ping_fails_when_the_folder_is_gone(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    (tmp_path / "blobs").rmdir()
    with pytest.raises(BlobStoreUnavailable):
        store.ping()


def test_s3_dead_endpoint_is_unavailable_quickly() -> None:
    dead = S3BlobStore(
        "roomfit-nowhere",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        access_key="dummy",
        secret_key="dummy",
        connect_timeout=0.5,
        read_timeout=0.5,
        max_attempts=1,
    )
    started = time.monotonic()
    with pytest.raises(BlobStoreUnavailable, match="unreachable"):
        dead.ping()
    with pytest.raises(BlobStoreUnavailable):
        dead.get("a/b")
    assert time.monotonic() - started < 5


def test_s3_store_creates_its_bucket_and_stores_under_its_prefix(s3_settings: S3Settings) -> None:
    bucket = f"roomfit-new-{secrets.token_hex(4)}"
    first = s3_store(s3_settings, bucket, prefix="one")
    second = s3_store(s3_settings, bucket, prefix="two/")
    first.ping()  # creates the bucket
    second.ping()  # already there: fine
    first.put("a/b", b"1")
    second.put("a/b", b"2")
    assert first.get("a/b") == b"1"
    assert second.list() == ["a/b"]
    whole = s3_store(s3_settings, bucket)
    assert whole.list() == ["one/a/b", "two/a/b"]


def test_s3_presigned_urls_name_the_public_endpoint(s3_settings: S3Settings) -> None:
    """Workers reach S3 at one address, browsers at another: presigned URLs carry the public one,
    signed for it, and fetching them there works."""
    internal = urlsplit(s3_settings.endpoint)
    public = f"http://localhost:{internal.port}"  # another name for the same server
    store = blob_store_from_settings(
        Settings(
            _env_file=None,  # type: ignore[call-arg]
            blob_url=f"s3://roomfit-public-{secrets.token_hex(4)}",
            s3_endpoint_url=s3_settings.endpoint,
            s3_public_endpoint_url=public,
            s3_access_key_id=s3_settings.access_key,
            s3_secret_access_key=s3_settings.secret_key,
        )
    )
    store.put("a/result.png", b"painted")
    url = store.presign("a/result.png", 60)
    assert url.startswith(public + "/") and internal.hostname not in url
    assert _fetch(url) == b"painted"


# --- from settings, and the key layout -------------------------------------------------------


def test_blob_store_from_settings(tmp_path: Path) -> None:
    local = blob_store_from_settings(Settings(var_dir=tmp_path / "var", blob_url=""))
    assert isinstance(local, LocalBlobStore)
    assert local.root == (tmp_path / "var" / "blobs").resolve()

    other = blob_store_from_settings(Settings(blob_url=(tmp_path / "my blobs").as_uri()))
    assert isinstance(other, LocalBlobStore)
    assert other.root == tmp_path / "my blobs"

    s3 = blob_store_from_settings(
        Settings(blob_url="s3://shop-bucket/roomfit/prod", s3_endpoint_url="http://127.0.0.1:1")
    )
    assert isinstance(s3, S3BlobStore)
    assert (s3.bucket, s3.prefix) == ("shop-bucket", "roomfit/prod/")

    for url in ("gs://bucket", "file://relative/path", "s3://"):
        with pytest.raises(ValueError, match="ROOMFIT_BLOB_URL"):
            blob_store_from_settings(Settings(blob_url=url))


def test_blob_keys_layout() -> None:
    assert blob_keys.photo_key("acc_1", "sub_2", 0, ".JPG") == "tenants/acc_1/subjects/sub_2/photos/0.jpg"
    assert blob_keys.adapter_key("acc_1", "sub_2", 3) == "tenants/acc_1/subjects/sub_2/adapter/3.safetensors"
    assert blob_keys.preview_room_key("acc_1", "prv_3") == "tenants/acc_1/previews/prv_3/room.png"
    assert blob_keys.preview_mask_key("acc_1", "prv_3") == "tenants/acc_1/previews/prv_3/mask.png"
    assert blob_keys.preview_result_key("acc_1", "prv_3") == "tenants/acc_1/previews/prv_3/result.png"
    assert blob_keys.adapter_key("acc_1", "sub_2", 1).startswith(blob_keys.subject_prefix("acc_1", "sub_2"))
    assert blob_keys.preview_prefix("acc_1", "prv_3") == "tenants/acc_1/previews/prv_3/"
    for bad in ("", "..", "a/b", "../x", ".hidden", "a\\b"):
        with pytest.raises(ValueError):
            blob_keys.subject_prefix("acc_1", bad)
        with pytest.raises(ValueError):
            blob_keys.preview_prefix(bad, "prv_3")


def test_blob_keys_are_valid_store_keys(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    store.put(blob_keys.photo_key("acc_1", "sub_2", 1, "png"), b"p")
    store.put(blob_keys.adapter_key("acc_1", "sub_2", "v1"), b"w")
    store.put(blob_keys.preview_result_key("acc_1", "prv_3"), b"r")
    assert store.delete_prefix(blob_keys.subject_prefix("acc_1", "sub_2")) == 2
    assert store.list(blob_keys.tenant_prefix("acc_1")) == ["tenants/acc_1/previews/prv_3/result.png"]


def test_a_local_prefix_that_cannot_be_deleted_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk refuses to remove one file (a read-only mount, a failing disk: the outside world, so
    os.unlink stands in for it). delete_prefix raises instead of reporting success, so the retention
    sweep keeps the preview's row for its next pass rather than losing the way to the photo left."""
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("t/previews/p/room.png", b"room")
    store.put("t/previews/p/mask.png", b"mask")
    real_unlink = os.unlink

    def refusing_unlink(path: str | os.PathLike[str], *args: object, **kwargs: object) -> None:
        if str(path).endswith("room.png") or str(getattr(path, "name", "")) == "room.png":
            raise PermissionError(13, "Permission denied", str(path))
        real_unlink(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "unlink", refusing_unlink)
    with pytest.raises(PermissionError):
        store.delete_prefix("t/previews/p")
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert store.list("t/previews/p") == ["t/previews/p/room.png"]
    assert store.delete_prefix("t/previews/p") == 1  # deleted twice over: nothing left, no error
    assert store.delete_prefix("t/previews/p") == 0
