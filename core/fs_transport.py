"""Embedded mode's broker: kombu's `filesystem://` transport, with each message written whole.

kombu writes a message file in place (create, then write), and a worker polling the folder moves
every `*.<queue>.msg` file it lists away before reading it. A worker that listed the folder between
the two steps read an empty message; its JSON failed to parse, Celery called that unrecoverable and
the worker process exited (seen once in a test run, a preview's message lost with it until the
reconciler sent it again). Here the message is written under a name the reader skips and renamed
into place: a rename within one folder is atomic, so a worker sees it whole or not at all.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

TRANSPORT = "core.fs_transport:Transport"  # for Celery's `broker_transport`


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        """Put `payload` onto `queue`: kombu's name (time-ordered), written whole."""
        filename = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, filename)
        partial = os.path.join(self.data_folder_out, f".{filename}.part")  # no reader takes this name
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):  # type: ignore[misc]
    Channel = Channel
