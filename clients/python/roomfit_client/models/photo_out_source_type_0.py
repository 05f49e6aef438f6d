from enum import StrEnum


class PhotoOutSourceType0(StrEnum):
    DETECTED = "detected"
    GIVEN = "given"

    def __str__(self) -> str:
        return str(self.value)
