"""What the commands check of their arguments before any work, and how they write an output file.

Shared by `roomfit paint`, `train`, `adapters` and `doctor`: a command that loads a model or trains
for minutes must refuse an argument it cannot use first, not after; and a file it writes is whole
or not there (an interrupted or failed write leaves neither half a file nor a temporary one).
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import typer

from cli.errors import fail, one_line


def finite(value: float | None) -> float | None:
    """A typer callback: refuse NaN and infinity. typer's `min`/`max` let NaN through (every
    comparison with it is false), and the engine would then quietly do something else."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def check_out_file(out: Path, param_hint: str = "--out") -> None:
    """Refuse an output path that cannot become a file: a folder, or a path under a file."""
    if out.is_dir():
        raise typer.BadParameter(f"{out} is a folder: name the file to write", param_hint=param_hint)
    above = next((p for p in out.absolute().parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise typer.BadParameter(f"{above} is a file, not a folder", param_hint=param_hint)


def write_whole(out: Path, write: Callable[[Path], None] | bytes) -> None:
    """Write `out` through a temporary file beside it, renamed over `out` once complete: a full
    disk or a kill leaves the previous `out` (or none), never half a file. `write` is the bytes, or
    a function writing the file it is given (whose name does not end as `out`'s: give a format).
    A failure to write is one line, exit 2."""
    # Made by open(), not tempfile.mkstemp: the file keeps the umask's mode (mkstemp's is 0600).
    temporary = out.with_name(f".{out.name}.{secrets.token_hex(4)}.part")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(write, bytes):
            with temporary.open("xb") as file:
                file.write(write)
        else:
            write(temporary)
        os.replace(temporary, out)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if not isinstance(exc, OSError):
            raise
        fail("cannot_write", one_line(f"cannot write {out}: {exc.strerror or exc}"))
