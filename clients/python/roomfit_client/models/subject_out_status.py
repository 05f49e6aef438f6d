from enum import StrEnum


class SubjectOutStatus(StrEnum):
    ANNOTATING = "annotating"
    CANCELLED = "cancelled"
    FAILED = "failed"
    QUEUED = "queued"
    READY = "ready"
    TRAINING = "training"

    def __str__(self) -> str:
        return str(self.value)
