"""Drawing results (stdout) and progress (stderr): lines, JSON records, rich bars.

Reads records handed to it; never talks to the journal or a provider.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from cloudput.engine.runner import NOT_STARTED, Outcome
from cloudput.errors import UsageError
from cloudput.journal import Attachment, PartRow, UploadRecord
from cloudput.keys import Target, parse_target
from cloudput.units import format_size

PLAIN_INTERVAL_S = 5.0


def record_json(
    record: UploadRecord, error: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The upload record as CONTRACT.md's JSON object."""
    if error is None and record.error_code:
        error = {"code": record.error_code, "message": record.error_message or ""}
    return {
        "id": record.id,
        "name": record.name,
        "source": record.source_path,
        "mimeType": record.mime,
        "size": record.size_bytes,
        "url": record.storage_url,
        "storage_url": record.storage_url,
        "uri": record.uri,
        "provider": record.provider,
        "bucket": record.bucket,
        "key": record.key,
        "checksum": {
            "algorithm": record.checksum_algorithm,
            "value": record.checksum_value,
            "verified": record.checksum_verified,
        },
        "parts": record.part_count,
        "status": record.status,
        "initiated_at": record.initiated_at,
        "completed_at": record.completed_at,
        "expires_at": record.expires_at,
        "error": dict(error) if error else None,
    }


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    error = None
    if outcome.error is not None:
        error = {"code": outcome.error.code, "message": _reason(outcome)}
    if outcome.record is not None:
        data = record_json(outcome.record, error)
        if outcome.status in ("held",):
            data["status"] = outcome.record.status
        return data
    target = _target_of(outcome.uri)
    return {
        "id": None,
        "name": outcome.source_path.rsplit("/", 1)[-1],
        "source": source_of(outcome),
        "mimeType": None,
        "size": None,
        "url": None,
        "storage_url": None,
        "uri": outcome.uri,
        "provider": target.provider if target else None,
        "bucket": target.bucket if target else None,
        "key": target.key if target else None,
        "checksum": {"algorithm": None, "value": None, "verified": None},
        "parts": 0,
        "status": outcome.status,
        "initiated_at": None,
        "completed_at": None,
        "expires_at": None,
        "error": error,
    }


def is_not_started(outcome: Outcome) -> bool:
    """A file the run stopped before journaling it: only the same command sends it
    (``resume`` knows journaled uploads only)."""
    return outcome.record is None and outcome.message == NOT_STARTED


def _reason(outcome: Outcome) -> str:
    if is_not_started(outcome) and outcome.error is not None:
        return (
            f"not started: {outcome.error.message} (run the same command to continue)"
        )
    if outcome.error is not None:
        return str(outcome.error)
    return outcome.message or outcome.status


def _target_of(uri: str) -> Target | None:
    """The target an outcome names (an upload refused before it was journaled still
    names its provider, bucket and key); None when there is none to read."""
    try:
        return parse_target(uri) if uri else None
    except UsageError:
        return None


def source_of(outcome: Outcome) -> str:
    """The source as the journal and ``list`` name it (absolute), whatever line the
    outcome is: a file skipped or refused is not named as typed while an uploaded
    one is named in full."""
    if outcome.record is not None and outcome.record.source_path:
        return outcome.record.source_path
    return os.path.abspath(outcome.source_path) if outcome.source_path else ""


def outcome_line(outcome: Outcome) -> str:
    """One line per upload: ``uploaded SOURCE -> URI``, ``skipped ...``, ``failed ...``."""
    arrow = f"{source_of(outcome)} -> {outcome.uri}"
    if outcome.status == "completed":
        if outcome.message:
            return f"completed {arrow} ({outcome.message})"
        return f"uploaded {arrow}"
    if outcome.status == "skipped":
        return f"skipped {arrow}" + (f" ({outcome.message})" if outcome.message else "")
    if outcome.status == "held":
        return f"skipped {arrow}: {outcome.message}"
    reason = _reason(outcome)
    suffix = f" [upload {outcome.record.id}]" if outcome.record else ""
    return f"failed {arrow}: {reason}{suffix}"


def emit(data: Any, out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    stream.write(json.dumps(data, ensure_ascii=False) + "\n")
    stream.flush()


def attachment_json(attachment: Attachment) -> dict[str, Any]:
    return {
        "id": attachment.id,
        "name": attachment.name,
        "mimeType": attachment.mime_type,
        "size": attachment.size,
        "url": attachment.url,
    }


def part_json(row: PartRow) -> dict[str, Any]:
    return {
        "number": row.number,
        "offset": row.offset,
        "size": row.size_bytes,
        "etag": row.etag,
        "checksum": row.checksum,
        "completed_at": row.completed_at,
    }


class PlainProgress:
    """A line every few seconds on stderr, for CI logs; never above 100%.

    Holds state for the uploads in flight only: a finished one is folded into two
    counters, so a million-file run does not grow it (CONTRACT.md, memory bound).
    """

    def __init__(
        self, stream: TextIO, interval_s: float = PLAIN_INTERVAL_S, clock: Any = None
    ):
        self._stream = stream
        self._interval_s = interval_s
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._totals: dict[str, int] = {}  # uploads in flight only
        self._done: dict[str, int] = {}
        self._finished_total = 0
        self._finished_done = 0
        self._uploads = 0
        self._started = self._clock()
        self._last = self._started

    def upload_started(
        self, upload_id: str, label: str, total_bytes: int, done_bytes: int
    ) -> None:
        with self._lock:
            if upload_id not in self._totals:
                self._uploads += 1
            self._totals[upload_id] = total_bytes
            self._done[upload_id] = min(done_bytes, total_bytes)

    def bytes_done(self, upload_id: str, count: int) -> None:
        with self._lock:
            total = self._totals.get(upload_id)
            if total is None:
                return  # not started here, or finished already
            self._done[upload_id] = min(total, self._done.get(upload_id, 0) + count)
            now = self._clock()
            if now - self._last >= self._interval_s:
                self._last = now
                self._write_line(now)

    def _write_line(self, now: float) -> None:
        total = self._finished_total + sum(self._totals.values())
        done = self._finished_done + sum(self._done.values())
        percent = 100.0 if total == 0 else min(100.0, 100.0 * done / total)
        rate = done / max(now - self._started, 1e-6)
        self._stream.write(
            f"cloudput: progress {format_size(done)} / {format_size(total)} ({percent:.0f}%), "
            f"{format_size(rate)}/s, {self._uploads} uploads\n"
        )
        self._stream.flush()

    def upload_finished(self, upload_id: str, status: str) -> None:
        with self._lock:
            total = self._totals.pop(upload_id, None)
            done = self._done.pop(upload_id, 0)
            if total is None:
                return
            self._finished_total += total
            self._finished_done += total if status == "completed" else done

    def notice(self, message: str) -> None:
        self._stream.write(f"cloudput: {message}\n")
        self._stream.flush()

    def close(self) -> None:
        pass


class BinaryRateColumn(ProgressColumn):
    """The transfer rate in the binary units the sizes and the summary use (MiB/s)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("?", style="progress.data.speed")
        return Text(f"{format_size(int(speed))}/s", style="progress.data.speed")


class RichProgress:
    """A bar per active upload and one overall, on a terminal."""

    def __init__(self, console: Console):
        self._progress = Progress(
            TextColumn("{task.description}", justify="left", markup=False),
            BarColumn(),
            DownloadColumn(binary_units=True),
            BinaryRateColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            # Result lines are stdout's: drawn above the bars only when stdout is the
            # same terminal, else `upload ... > results.txt` would get none of them.
            redirect_stdout=_is_terminal(sys.stdout),
        )
        self._lock = threading.Lock()
        # upload id -> (its bar, its total); rich's task list is indexed by position,
        # not by TaskID, once a bar is removed, so totals are kept here.
        self._tasks: dict[str, tuple[TaskID, int]] = {}
        self._overall_total = 0
        self._overall = self._progress.add_task("total", total=0)
        self._progress.start()

    def upload_started(
        self, upload_id: str, label: str, total_bytes: int, done_bytes: int
    ) -> None:
        with self._lock:
            name = label if len(label) <= 40 else "…" + label[-39:]
            total = max(total_bytes, 1)
            task = self._progress.add_task(
                name, total=total, completed=min(done_bytes, total_bytes)
            )
            self._tasks[upload_id] = (task, total)
            self._overall_total += total_bytes
            self._progress.update(
                self._overall,
                total=self._overall_total,
                advance=min(done_bytes, total_bytes),
            )

    def bytes_done(self, upload_id: str, count: int) -> None:
        with self._lock:
            entry = self._tasks.get(upload_id)
            if entry is None:
                return
            self._progress.advance(entry[0], count)
            self._progress.advance(self._overall, count)

    def upload_finished(self, upload_id: str, status: str) -> None:
        with self._lock:
            entry = self._tasks.pop(upload_id, None)
            if entry is not None:
                task, total = entry
                if status == "completed":
                    self._progress.update(task, completed=total)
                self._progress.remove_task(task)

    def notice(self, message: str) -> None:
        self._progress.console.print(
            f"cloudput: {message}", markup=False, highlight=False
        )

    def close(self) -> None:
        self._progress.stop()


class QuietProgress:
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

    def close(self) -> None:
        pass


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def make_progress(quiet: bool) -> PlainProgress | RichProgress | QuietProgress:
    """Rich bars on a terminal, plain lines otherwise, nothing with ``--quiet``."""
    if quiet:
        return QuietProgress()
    console = Console(stderr=True)
    if console.is_terminal:
        return RichProgress(console)
    return PlainProgress(sys.stderr)
