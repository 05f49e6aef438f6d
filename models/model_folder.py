"""Building a model folder once, atomically: for the `tiny` presets that are made in code.

Several processes (the train and preview workers of `roomfit up`) may ask for the same folder at
the same moment: each builds into a staging folder beside it and renames it into place, so a reader
only ever sees a complete folder (its marker file is written last).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def build_folder_once(folder: Path, marker: str, meta: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """`folder` if its `marker` exists; else `build(staging)`, write the marker, rename into place."""
    if (folder / marker).exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-build-", dir=folder.parent))
    try:
        build(staging)
        (staging / marker).write_text(json.dumps(meta))
        try:
            staging.rename(folder)
        except OSError:
            # Another process finished first (or an old incomplete folder is there): keep a complete one.
            if not (folder / marker).exists():
                shutil.rmtree(folder, ignore_errors=True)
                staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
