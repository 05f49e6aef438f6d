"""Delete the training checkpoints on this machine that no job will resume.

A training writes its checkpoints under `var/checkpoints/{subject}-v{version}` (worker.train_job).
The job removes them when it succeeds or is cancelled, and keeps them when it is handed back (its
worker is stopping) or will be retried, so that this machine can resume it. Every other end left
them for ever: a training that failed for good or ran past its deadline, or one whose worker was
killed while another machine finished it; a full fine-tune's checkpoint (its weights and two
optimizer moments) is about 10 GB. So every reconciler pass (worker.reconciler) looks in that folder
and deletes each checkpoint whose subject has no training queued or running. The database says so
for every process and machine alike; a subject trained again later starts from step 0, as it would
anyway with a new adapter version.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from sqlalchemy.orm import Session

from core.repository import OpsRepository

log = logging.getLogger("roomfit.worker")

CHECKPOINTS = "checkpoints"
# checkpoint_folder's names, read back; anything else in the folder is not the sweep's
_NAME = re.compile(r"(?P<subject>sub_[0-9A-Za-z]+)-v(?P<version>\d+)")


def checkpoint_folder(var_dir: Path, subject_id: str, version: int) -> Path:
    """Where a training of `subject_id`'s adapter `version` keeps its checkpoints on this machine."""
    return var_dir.resolve() / CHECKPOINTS / f"{subject_id}-v{version}"


def forget_stale_checkpoints(session: Session, var_dir: Path) -> list[str]:
    """Delete the checkpoint folders of subjects with no training queued or running; their names."""
    try:
        entries = sorted((var_dir.resolve() / CHECKPOINTS).iterdir())
    except FileNotFoundError:  # no training ever ran on this machine
        return []
    held: dict[str, list[Path]] = {}
    for path in entries:
        found = _NAME.fullmatch(path.name)
        if found and path.is_dir():
            held.setdefault(found["subject"], []).append(path)
    if not held:
        return []
    training = OpsRepository(session).subjects_in_training(list(held))
    removed = [path for subject, paths in held.items() if subject not in training for path in paths]
    names = [path.name for path in removed]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    if names:
        log.info("deleted %d training checkpoints no job will resume: %s", len(names), names)
    return names
