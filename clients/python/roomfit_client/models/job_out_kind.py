from enum import StrEnum


class JobOutKind(StrEnum):
    PREVIEW = "preview"
    TRAIN = "train"

    def __str__(self) -> str:
        return str(self.value)
