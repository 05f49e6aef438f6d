"""Every error the inpainting engine raises on purpose, each with a stable `code`.

The service maps `code` to its HTTP/job error codes, so these strings are a contract: never rename.
"""

from __future__ import annotations


class RoomfitModelError(Exception):
    """Base of the engine's deliberate errors."""

    code = "model_error"


# alike: one small class per code (they repeat in shape by design): callers catch them one by one.
class ModelNotFoundError(RoomfitModelError):
    """The base model named by `ROOMFIT_BASE_MODEL` is neither a folder, nor `tiny`, nor in the HF cache."""

    code = "model_not_found"


class InvalidImageError(RoomfitModelError):
    """A room, mask or reference that cannot be used (unreadable, wrong size, empty mask)."""

    code = "invalid_image"


class AdapterError(RoomfitModelError):
    """Base of the errors raised while reading or activating an adapter."""

    code = "adapter_error"


class AdapterNotFound(AdapterError):
    """The adapter loader has no adapter of that id."""

    code = "adapter_not_found"


class AdapterCorrupt(AdapterError):
    """The file is not a readable roomfit adapter, or its tensors do not match their recorded sha256."""

    code = "adapter_corrupt"


class AdapterFormatUnsupported(AdapterError):
    """The file was written by a roomfit adapter format this code does not read."""

    code = "adapter_format_unsupported"


class AdapterBaseMismatch(AdapterError):
    """The adapter was trained on another base model (different id or weights hash)."""

    code = "adapter_base_mismatch"


class AdapterRankMismatch(AdapterError):
    """The adapter's LoRA rank differs from the rank injected into the loaded base model."""

    code = "adapter_rank_mismatch"


class AdapterTargetsMismatch(AdapterError):
    """The adapter targets other modules than those injected into the loaded base model."""

    code = "adapter_targets_mismatch"


class TrainingOutOfMemory(RoomfitModelError):
    """Training ran out of accelerator memory at its batch size and again at half of it (or at 1)."""

    code = "out_of_memory"


class TrainingDiverged(RoomfitModelError):
    """Training's loss stopped being a number for many steps running, or its weights did: what it
    would write paints noise, so nothing is written (a lower learning rate is the usual cure)."""

    code = "training_diverged"
