"""The AdapterCache's disk tier: adapter files in one folder of a machine, bounded in bytes, least
recently used first, shared safely by every worker process there.

Layout: one `<sha256(id)[:32]>.safetensors` per adapter (ids are blob keys with slashes), an
`index.json` naming each file's id (so a subject's adapters can be found by their id's prefix) and,
under its `#sha256` key, the sha256 of each file's bytes, and `.lock`, the `fcntl` lock every change
is made under. A read returns a file's bytes only when they hash to what was recorded when it was
written: the adapter file's own `roomfit.tensors_sha256` leaves its header out, so a damaged header
(another alpha, weights hash, rank) would otherwise be painted with, or refused on every use.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: one process per folder is then the caller's business
    fcntl = None  # type: ignore[assignment]

DEFAULT_DISK_BYTES = 2 * 1024 * 1024 * 1024  # as ROOMFIT_ADAPTER_DISK_BYTES


class AdapterDiskTier:
    """Adapter files in one folder, bounded in bytes, shared by every process that opens the folder.

    A change (write, remove) lists the folder afresh under the lock, removes leftovers (a `.part` a
    dead writer left, a file the index does not name), then evicts least recently used files (oldest
    mtime first; a read or a use stamps the mtime) until the new file fits, writes the index, then
    the file (temp + `os.replace`). So the adapter files never exceed `max_bytes`, not even while one
    is being written (the index, a few KB, aside), and a file larger than the bound is not kept.
    Reads take no lock: a file may vanish between a listing and its reading, which reads as a miss,
    as does a file whose bytes do not hash to the sha256 the index recorded when it was written.
    """

    SUFFIX = ".safetensors"
    INDEX = "index.json"
    LOCK = ".lock"
    DIGESTS = "#sha256"  # in index.json: file name -> sha256 of its bytes; no file is named so
    PART = ".part"  # temp files; only the lock holder writes one, so any other found is a leftover

    def __init__(self, folder: Path | str, max_bytes: int | None = DEFAULT_DISK_BYTES) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes

    def path(self, adapter_id: str) -> Path:
        return self.folder / (hashlib.sha256(adapter_id.encode()).hexdigest()[:32] + self.SUFFIX)

    def read(self, adapter_id: str) -> bytes | None:
        """The adapter's bytes (and its mtime stamped: used now), or None when it is not here or
        not as written (damaged, or left without a digest by an older roomfit): then the caller's
        write of the loader's copy replaces it."""
        path = self.path(adapter_id)
        index, digests = self._read_index()
        if index.get(path.name) != adapter_id or path.name not in digests:
            return None
        try:
            data = path.read_bytes()
        except OSError:  # gone (evicted by another process), or unreadable (EIO): a miss either way
            return None
        if hashlib.sha256(data).hexdigest() != digests[path.name]:
            return None  # not stamped: unused, it goes first should the loader fail too
        _stamp(path)
        return data

    def touch(self, adapter_id: str) -> None:
        """The adapter was used (from a process's memory): it is the most recently used here too."""
        _stamp(self.path(adapter_id))

    def write(self, adapter_id: str, data: bytes) -> int:
        """Keep `data` as the adapter's file, evicting least recently used files for room; the
        number evicted. Not kept (but the bound still enforced) when larger than the bound."""
        with self._locked():
            index, digests, files = self._scan()
            before = (dict(index), dict(digests))
            name = self.path(adapter_id).name
            if files.pop(name, None) is not None:  # replaced: its old bytes go first
                _unlink(self.folder / name)
            fits = self.max_bytes is None or len(data) <= self.max_bytes
            evicted = self._evict_for(index, files, len(data) if fits else 0)
            if fits:
                index[name] = adapter_id  # named before the file exists: the index covers every file
                digests[name] = hashlib.sha256(data).hexdigest()
            self._save_index(index, digests, before)
            if fits:
                fd, tmp = tempfile.mkstemp(dir=self.folder, prefix="adapter-", suffix=self.PART)
                try:
                    with os.fdopen(fd, "wb") as handle:
                        handle.write(data)
                    os.replace(tmp, self.folder / name)
                except BaseException:  # a full disk, say: no part of the file stays
                    _unlink(Path(tmp))
                    raise
                _stamp(self.folder / name)
            return evicted

    def remove(self, adapter_ids: Iterable[str]) -> list[str]:
        """Remove these adapters' files (and enforce the bound, should it have been lowered); the
        ids whose file was here."""
        with self._locked():
            index, digests, files = self._scan()
            before = (dict(index), dict(digests))
            removed = []
            for adapter_id in dict.fromkeys(adapter_ids):
                name = self.path(adapter_id).name
                if files.pop(name, None) is not None:
                    _unlink(self.folder / name)
                    removed.append(adapter_id)
                index.pop(name, None)
            self._evict_for(index, files, 0)
            self._save_index(index, digests, before)
            return removed

    def ids(self) -> list[str]:
        """The ids of the adapters in the folder now (no lock: the index is replaced whole)."""
        try:
            present = set(os.listdir(self.folder))
        except FileNotFoundError:
            return []
        return [adapter_id for name, adapter_id in self._read_index()[0].items() if name in present]

    def used(self) -> int:
        """Bytes of the adapter files in the folder now."""
        return sum(size for size, _ in self._files().values())

    # --- inside ------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        # Each call opens its own descriptor, so threads of one process exclude each other too.
        with open(self.folder / self.LOCK, "ab") as handle:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    def _files(self) -> dict[str, tuple[int, int]]:
        """Adapter file name -> (size, mtime in ns), skipping any that vanish while listed."""
        files: dict[str, tuple[int, int]] = {}
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return files
        for entry in entries:
            if entry.name.endswith(self.SUFFIX):
                with suppress(FileNotFoundError):
                    stat = entry.stat()
                    files[entry.name] = (stat.st_size, stat.st_mtime_ns)
        return files

    def _scan(self) -> tuple[dict[str, str], dict[str, str], dict[str, tuple[int, int]]]:
        """Under the lock: the index and digests (only files present) and the files, leftovers
        removed."""
        for leftover in self.folder.glob("*" + self.PART):
            _unlink(leftover)
        index, digests = self._read_index()
        files = self._files()
        for name in [n for n in files if n not in index]:  # no id known (an older roomfit's file)
            _unlink(self.folder / name)
            del files[name]
        return {n: i for n, i in index.items() if n in files}, digests, files

    def _evict_for(self, index: dict[str, str], files: dict[str, tuple[int, int]], room: int) -> int:
        if self.max_bytes is None:
            return 0
        total = sum(size for size, _ in files.values())
        evicted = 0
        for name in sorted(files, key=lambda n: (files[n][1], n)):  # least recently used first
            if total + room <= self.max_bytes:
                break
            _unlink(self.folder / name)
            total -= files.pop(name)[0]
            index.pop(name, None)
            evicted += 1
        return evicted

    def _read_index(self) -> tuple[dict[str, str], dict[str, str]]:
        """(file name -> id, file name -> sha256 of its bytes), as the last change left them."""
        try:
            raw = json.loads((self.folder / self.INDEX).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}, {}  # none yet, or unreadable: its files are then leftovers, removed by the next change
        if not isinstance(raw, dict):
            return {}, {}
        digests = raw.pop(self.DIGESTS, None)
        index = {name: i for name, i in raw.items() if isinstance(i, str)}
        if not isinstance(digests, dict):
            return index, {}  # an older roomfit's index: its files read as misses, then rewritten
        return index, {name: d for name, d in digests.items() if name in index and isinstance(d, str)}

    def _save_index(
        self, index: dict[str, str], digests: dict[str, str], before: tuple[dict[str, str], dict[str, str]]
    ) -> None:
        digests = {name: digest for name, digest in digests.items() if name in index}
        if (index, digests) == before and (self.folder / self.INDEX).exists():
            return
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix="index-", suffix=self.PART)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({**index, self.DIGESTS: digests}, handle, separators=(",", ":"), sort_keys=True)
            os.replace(tmp, self.folder / self.INDEX)
        except BaseException:  # a full disk: the old index stands, no temp file stays
            _unlink(Path(tmp))
            raise


def _stamp(path: Path) -> None:
    """mtime = now, in ns (the kernel's own stamp is only as fine as its clock tick)."""
    now = time.time_ns()
    with suppress(OSError):  # gone, or not ours to stamp (EPERM): only the LRU order is at stake
        os.utime(path, ns=(now, now))


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)
