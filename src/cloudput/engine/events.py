"""Progress events the engine emits; the CLI's renderer subscribes to them.

No drawing here: a subscriber decides what a person or a CI log sees.
"""

from __future__ import annotations

from typing import Protocol


class Subscriber(Protocol):
    """Receives progress; called from worker threads, so it must be thread-safe."""

    def upload_started(
        self, upload_id: str, label: str, total_bytes: int, done_bytes: int
    ) -> None:
        """An upload began (or resumed with ``done_bytes`` already held)."""
        ...

    def bytes_done(self, upload_id: str, count: int) -> None:
        """``count`` more bytes of the upload were acknowledged by the provider."""
        ...

    def upload_finished(self, upload_id: str, status: str) -> None:
        """The upload left the engine with ``status``."""
        ...

    def notice(self, message: str) -> None:
        """A message for the person watching (resumed, started over, held elsewhere)."""
        ...


class NullSubscriber:
    """A subscriber that ignores everything (``--quiet``, tests)."""

    def upload_started(
        self, upload_id: str, label: str, total_bytes: int, done_bytes: int
    ) -> None:
        pass

    def bytes_done(self, upload_id: str, count: int) -> None:
        pass

    def upload_finished(self, upload_id: str, status: str) -> None:
        pass

    def notice(self, message: str) -> None:
        pass
