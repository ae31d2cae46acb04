"""A test Body that notes how it is read, to show a part is streamed, not held."""

from __future__ import annotations

import io
from typing import Any, BinaryIO

#: The most a provider may read from a part at once (botocore hashes in 1 MiB reads).
LARGEST_STREAM_READ_BYTES = 1024 * 1024


class RecordingBody:
    """A Body whose readers note the largest single read (a whole-part read shows)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size_bytes = len(data)
        self.largest_read = 0

    def open(self) -> BinaryIO:
        body = self

        class Reader(io.BytesIO):
            def read(self, size: int | None = -1) -> bytes:
                chunk = super().read(size)
                body.largest_read = max(body.largest_read, len(chunk))
                return chunk

            def readinto(self, buffer: Any) -> int:
                count = super().readinto(buffer)
                body.largest_read = max(body.largest_read, count)
                return count

        return Reader(self.data)
