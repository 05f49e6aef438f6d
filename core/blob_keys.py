"""Where each blob lives in the blob store: the key layout, in one place.

    tenants/{tenant}/subjects/{subject}/photos/{index}.{ext}
    tenants/{tenant}/subjects/{subject}/adapter/{version}.safetensors
    tenants/{tenant}/subjects/{subject}/checkpoint/{version}.pt
    tenants/{tenant}/previews/{preview}/room.{png|jpg|webp}
    tenants/{tenant}/previews/{preview}/mask.png
    tenants/{tenant}/previews/{preview}/result.png

Everything of a tenant is under its own prefix, so deleting a subject, a preview or a whole
account is one `delete_prefix`, and a key built for one tenant can never name another's blob.
Ids are checked here (one safe path segment each), so a hostile id cannot reach a sibling folder.
"""

from __future__ import annotations

import re

# Ids are roomfit's own (`sub_01JD...`) but may come from callers (tenant slugs); one segment,
# no dots at the start, nothing that means something to a path.
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_EXTENSION = re.compile(r"[a-z0-9]{1,8}")


def _segment(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value) or ".." in value:
        raise ValueError(f"{kind} is not a safe blob key segment: {value!r}")
    return value


def _extension(ext: str) -> str:
    ext = ext.lower().lstrip(".")
    if not _EXTENSION.fullmatch(ext):
        raise ValueError(f"file extension must be short letters/digits: {ext!r}")
    return ext


def tenant_prefix(tenant: str) -> str:
    """Everything one tenant (account) owns."""
    return f"tenants/{_segment('tenant id', tenant)}/"


def subject_prefix(tenant: str, subject: str) -> str:
    """A subject's photos and all its adapter versions."""
    return f"{tenant_prefix(tenant)}subjects/{_segment('subject id', subject)}/"


def photo_key(tenant: str, subject: str, index: int, ext: str) -> str:
    """The `index`-th product photo of a subject (0-based), with its file extension (`jpg`, `png`)."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"photo index must be a non-negative integer: {index!r}")
    return f"{subject_prefix(tenant, subject)}photos/{index}.{_extension(ext)}"


def photos_prefix(tenant: str, subject: str) -> str:
    return f"{subject_prefix(tenant, subject)}photos/"


def adapter_key(tenant: str, subject: str, version: str | int) -> str:
    """One trained adapter (LoRA weights, safetensors) of a subject. The current version and the one
    it replaced are kept side by side (worker.train_job.forget_superseded_adapters)."""
    return f"{subject_prefix(tenant, subject)}adapter/{_segment('adapter version', str(version))}.safetensors"


# adapter_key's layout read back: whose adapter a key is (worker.adapter_sweep), and its version
ADAPTER_KEY = re.compile(r"tenants/(?P<tenant>[^/]+)/subjects/(?P<subject>[^/]+)/adapter/(?P<file>[^/]+)")


def adapter_version_of(key: str) -> int | None:
    """The version an adapter key names, or None for a key of another shape."""
    found = ADAPTER_KEY.fullmatch(key)
    version = found["file"].removesuffix(".safetensors") if found else ""
    return int(version) if version.isdigit() else None


def checkpoint_key(tenant: str, subject: str, version: str | int) -> str:
    """The training checkpoint a stopping worker leaves for the next one (deleted once trained)."""
    return f"{subject_prefix(tenant, subject)}checkpoint/{_segment('adapter version', str(version))}.pt"


def preview_prefix(tenant: str, preview: str) -> str:
    """A preview's room, mask and result."""
    return f"{tenant_prefix(tenant)}previews/{_segment('preview id', preview)}/"


def preview_room_key(tenant: str, preview: str, ext: str = "png") -> str:
    """The room as uploaded (`jpg`, `webp`) when it was already upright RGB, else a normalised PNG."""
    return f"{preview_prefix(tenant, preview)}room.{_extension(ext)}"


def preview_mask_key(tenant: str, preview: str) -> str:
    return f"{preview_prefix(tenant, preview)}mask.png"


def preview_result_key(tenant: str, preview: str) -> str:
    return f"{preview_prefix(tenant, preview)}result.png"
