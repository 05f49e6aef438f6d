from enum import StrEnum


class CreatePreviewBodyMode(StrEnum):
    ADAPTER = "adapter"
    AUTO = "auto"
    ZERO_SHOT = "zero_shot"

    def __str__(self) -> str:
        return str(self.value)
