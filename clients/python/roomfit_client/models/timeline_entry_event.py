from enum import StrEnum


class TimelineEntryEvent(StrEnum):
    CLAIMED = "claimed"
    FINISHED = "finished"
    QUEUED = "queued"
    STAGE = "stage"

    def __str__(self) -> str:
        return str(self.value)
