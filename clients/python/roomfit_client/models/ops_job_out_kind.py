from enum import StrEnum


class OpsJobOutKind(StrEnum):
    PREVIEW = "preview"
    TRAIN = "train"

    def __str__(self) -> str:
        return str(self.value)
