"""A put and a delete_prefix of the same folder at once, in the local store: each ends as on S3.

On S3 a delete_prefix deletes what it listed and a put lands whole, whichever comes first. Tenant
deletion relies on that (core.tenant_deletion: a worker may still write a result while the tenant's
prefix goes, hence the second pass). The local store raised instead: rmtree failed with "Directory
not empty" when a put landed in a folder it was removing, and a put whose in-flight temp file the
rmtree took failed with FileNotFoundError.

The race is staged by wrapping os.rmdir / os.replace so the other side runs at the one instant that
matters; the store's own code runs unchanged in between.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.blobstore import LocalBlobStore

FOLDER = "tenants/t1/previews/p1"


def test_delete_prefix_while_a_put_lands_in_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put(f"{FOLDER}/room.png", b"room")
    store.put(f"{FOLDER}/mask.png", b"mask")
    real_rmdir = os.rmdir
    landed = []

    def rmdir_after_a_put(path: str | os.PathLike[str], *args: object, **kwargs: object) -> None:
        if not landed:  # a worker's result arrives after the files went, before the folder does
            landed.append(True)
            store.put(f"{FOLDER}/result.png", b"result")
        real_rmdir(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "rmdir", rmdir_after_a_put)
    assert store.delete_prefix(FOLDER) == 2  # what was there when it began, as S3 counts
    monkeypatch.setattr(os, "rmdir", real_rmdir)

    assert landed
    # what was there is gone; the put that came last stays, as on S3 (a second pass takes it)
    assert store.list(FOLDER) == [f"{FOLDER}/result.png"]
    assert store.delete_prefix(FOLDER) == 1
    assert store.list() == []


def test_put_whose_folder_a_delete_prefix_removes_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put(f"{FOLDER}/room.png", b"room")
    real_replace = os.replace
    deleted = []

    def replace_after_a_delete(src: str, dst: str | os.PathLike[str]) -> None:
        if not deleted:  # the tenant's prefix goes while this result is being written
            deleted.append(store.delete_prefix("tenants/t1"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_after_a_delete)
    store.put(f"{FOLDER}/result.png", b"result")  # no FileNotFoundError
    monkeypatch.setattr(os, "replace", real_replace)

    assert deleted == [1]
    # either order is one S3 allows; here the put counts as done before the delete took the folder
    assert store.list("tenants") == []
    assert not [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]  # no temp file left over


def test_put_recreates_a_folder_removed_before_its_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder goes between the put's mkdir and its temp file: the put makes it again and lands."""
    store = LocalBlobStore(tmp_path / "blobs")
    store.put(f"{FOLDER}/room.png", b"room")
    real_mkdir = Path.mkdir
    removed = []

    def mkdir_then_delete(self: Path, *args: object, **kwargs: object) -> None:
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]
        if not removed and self == tmp_path / "blobs" / FOLDER:
            removed.append(store.delete_prefix(FOLDER))

    monkeypatch.setattr(Path, "mkdir", mkdir_then_delete)
    store.put(f"{FOLDER}/result.png", b"result")
    monkeypatch.setattr(Path, "mkdir", real_mkdir)

    assert removed == [1]
    assert store.get(f"{FOLDER}/result.png") == b"result"
