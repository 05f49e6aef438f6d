"""The rules behind the routes: what creating, deleting, retraining or retrying means, in plain
functions that speak domain, not HTTP.

Routes (`api/routes/`) read the request, pick the caller and build the answer (status, `Location`);
these functions take a repository and the stores and return rows or schemas. Rows are added and
flushed, never committed (`api.transaction` owns the commit); what must wait for the commit comes
back in a `Done` for the route to hand on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Done(Generic[T]):
    """What a service did: the row it created or changed, and the work to run once the request's
    transaction has committed (send a job id to the broker, remove blobs)."""

    row: T
    after_commit: list[Callable[[], None]] = field(default_factory=list)
