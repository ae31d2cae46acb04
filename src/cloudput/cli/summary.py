"""The end-of-run summary on stderr: files, bytes, time, rate, failures by reason.

Counts outcomes handed to it; never talks to the journal or a provider.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import TextIO

from cloudput.engine.runner import Outcome
from cloudput.units import format_size


class RunSummary:
    """Tallies outcomes as they arrive; holds counters only, whatever the file count."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._started = clock()
        self.statuses: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.bytes_uploaded = 0
        self.bytes_skipped = 0

    def add(self, outcome: Outcome) -> None:
        self.statuses[outcome.status] += 1
        size_bytes = outcome.record.size_bytes if outcome.record is not None else 0
        if outcome.status == "completed" and outcome.message == "already completed":
            self.statuses["completed"] -= 1
            self.statuses["already completed"] += 1
        elif outcome.status == "completed":
            self.bytes_uploaded += outcome.sent_bytes
        elif outcome.status == "skipped":
            self.bytes_skipped += size_bytes
        elif outcome.status != "held":
            reason = outcome.error.code if outcome.error is not None else outcome.status
            self.failures[reason] += 1

    def add_not_started(self, count: int, reason: str) -> None:
        """Files the run stopped before it took them (never an outcome): still files
        of this run, and not done."""
        self.statuses["not started"] += count
        self.failures[reason] += count

    def line(self) -> str:
        """``N files: A uploaded (B, T, R/s), S skipped, F failed (reason: n, ...)``."""
        elapsed_s = max(self._clock() - self._started, 1e-6)
        files = sum(self.statuses.values())
        rate = self.bytes_uploaded / elapsed_s
        parts = [
            f"{self.statuses['completed']} uploaded "
            f"({format_size(self.bytes_uploaded)} in {elapsed_s:.1f}s, "
            f"{format_size(rate)}/s)",
            f"{self.statuses['skipped']} skipped",
        ]
        if self.statuses["already completed"]:
            parts.append(f"{self.statuses['already completed']} already completed")
        if self.statuses["held"]:
            parts.append(f"{self.statuses['held']} held by another process")
        failed = sum(self.failures.values())
        reasons = ", ".join(f"{code}: {n}" for code, n in sorted(self.failures.items()))
        parts.append(f"{failed} not done" + (f" ({reasons})" if reasons else ""))
        noun = "file" if files == 1 else "files"
        return f"cloudput: {files} {noun}: " + ", ".join(parts)

    def write(self, stream: TextIO) -> None:
        stream.write(self.line() + "\n")
        stream.flush()
