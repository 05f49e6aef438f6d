"""How long a shopper's room photo is kept: finished previews are deleted after
`ROOMFIT_PREVIEW_RETENTION_DAYS` (0: kept until deleted through the API or with their subject).

A preview holds a photo of someone's home, its mask and the painted result (and any display
renditions of it), all under the preview's own blob prefix (core.blob_keys). Every worker's
reconciler pass (worker.reconciler) deletes a batch of the oldest expired ones: the blobs first,
then the row, so a pass that dies half-way leaves a row the next pass finds again, never a photo
that no row leads to. Several passes at once are safe: deleting a prefix or a row twice is a no-op.
A preview whose blobs cannot be deleted now (the store is down) keeps its row and is tried again;
the next pass goes on past the batch that kept it, to the newest expired preview and then from the
oldest again, so previews that never can be deleted do not hold up the newer ones.
A client reads the moment in the preview's `expires_at` (core.previews.expires_at: the same rule).

The history goes after the same time (`forget_old_history`): the job rows of previews and subjects
that are gone (their ids, parameters, timings and errors), and webhook deliveries that were
delivered or given up (their payload is the preview's or subject's body). Nothing else leads to
them, and without this both tables grow by a row or two for every preview ever painted.
"""

from __future__ import annotations

import logging
from dataclasses import astuple, dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from core.blob_keys import preview_prefix
from core.blobstore import BlobStore
from core.retention_repository import RetentionRepository

log = logging.getLogger("roomfit.retention")
BATCH = 200  # previews per pass: a pass stays short however many expire at once
HISTORY_BATCH = 1000  # rows of each history table per pass: no blobs to delete, so more


class _Resume:
    """Where this process's next pass starts: after the last preview of a page that kept some."""

    after: tuple[datetime, str] | None = None


_resume = _Resume()


@dataclass(frozen=True)
class Swept:
    """One pass: previews deleted, and expired ones kept because their blobs could not be deleted."""

    deleted: int = 0
    kept: int = 0


def forget_old_previews(
    session: Session, blobs: BlobStore, now: datetime, retention_days: float, batch: int = BATCH
) -> Swept:
    """Delete up to `batch` previews that finished more than `retention_days` ago, their blobs
    first; commits."""
    if retention_days <= 0:
        return Swept()
    cutoff = now - timedelta(days=retention_days)
    rows = RetentionRepository(session)
    gone, kept = [], 0
    page = rows.previews_finished_before(cutoff, batch, _resume.after)
    for tenant, preview_id, _finished in page:
        try:
            blobs.delete_prefix(preview_prefix(tenant, preview_id))
        except Exception:  # the store is down or refuses: keep the row, so a later pass tries again
            log.exception("preview %s: could not delete its blobs; kept for a later pass", preview_id)
            kept += 1
            continue
        gone.append(preview_id)
    # The next pass goes on past this page when some of it was kept: previews whose blobs never can
    # be deleted (a key under object lock, a folder the disk refuses) must not hold up every newer one
    # for ever. Once the sweep reaches the newest expired preview it starts again from the oldest.
    _resume.after = (page[-1][2], page[-1][1]) if kept and len(page) == batch else None
    removed = rows.delete_finished_previews(gone, cutoff) if gone else 0
    session.commit()
    if removed:
        log.info("deleted %d previews finished before %s (kept %g days)", removed, cutoff, retention_days)
    return Swept(removed, kept)


@dataclass(frozen=True)
class HistorySwept:
    """One pass: job rows and webhook deliveries deleted."""

    jobs: int = 0
    deliveries: int = 0


def forget_old_history(
    session: Session, now: datetime, retention_days: float, batch: int = HISTORY_BATCH
) -> HistorySwept:
    """Delete up to `batch` job rows whose preview or subject is gone and up to `batch` settled
    webhook deliveries, each ended more than `retention_days` ago; commits."""
    if retention_days <= 0:
        return HistorySwept()
    cutoff = now - timedelta(days=retention_days)
    rows = RetentionRepository(session)
    swept = HistorySwept(
        jobs=rows.delete_orphaned_jobs(cutoff, batch),
        deliveries=rows.delete_settled_deliveries(cutoff, batch),
    )
    session.commit()
    if swept != HistorySwept():
        log.info("deleted %d job rows and %d webhook deliveries ended before %s", *astuple(swept), cutoff)
    return swept
