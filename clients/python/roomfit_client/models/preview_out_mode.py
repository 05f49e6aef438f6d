from enum import StrEnum


class PreviewOutMode(StrEnum):
    ADAPTER = "adapter"
    ZERO_SHOT = "zero_shot"

    def __str__(self) -> str:
        return str(self.value)
