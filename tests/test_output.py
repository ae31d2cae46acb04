"""Progress and result rendering: never past 100%, no division by zero, JSON fields."""

from __future__ import annotations

import io

from cloudput.cli.render import PlainProgress, outcome_line, record_json
from cloudput.engine.runner import Outcome
from cloudput.errors import RetriesExhaustedError
from cloudput.journal import UploadRecord

CONTRACT_FIELDS = {
    "id",
    "name",
    "source",
    "mimeType",
    "size",
    "url",
    "storage_url",
    "uri",
    "provider",
    "bucket",
    "key",
    "checksum",
    "parts",
    "status",
    "initiated_at",
    "completed_at",
    "expires_at",
    "error",
}


def record(**changes) -> UploadRecord:
    base = UploadRecord(
        id="0123456789ab",
        provider="s3",
        bucket="b",
        key="k",
        uri="s3://b/k",
        storage_url="http://h/b/k",
        name="f",
        size_bytes=10,
        mime="text/plain",
        strategy="multipart",
        part_size_bytes=5,
        part_count=2,
        status="completed",
        initiated_at="2026-01-01T00:00:00.000Z",
        source_path="/tmp/f",
        source_size_bytes=10,
        source_mtime_ns=1,
        source_inode=2,
    )
    return base.with_changes(**changes)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_never_passes_100_percent_after_retries():
    out, clock = io.StringIO(), Clock()
    progress = PlainProgress(out, interval_s=1.0, clock=clock)
    progress.upload_started("u", "s3://b/k", 10, 0)
    for _ in range(5):  # more acknowledgements than bytes, as after re-sent parts
        clock.now += 2
        progress.bytes_done("u", 5)
    assert "(100%)" in out.getvalue()
    assert "(1" + "50%)" not in out.getvalue() and "(200%)" not in out.getvalue()


def test_plain_progress_of_an_empty_file_is_100_percent():
    out, clock = io.StringIO(), Clock()
    progress = PlainProgress(out, interval_s=1.0, clock=clock)
    progress.upload_started("u", "s3://b/e", 0, 0)
    clock.now += 2
    progress.bytes_done("u", 0)
    assert "(100%)" in out.getvalue()


def test_plain_progress_writes_at_most_one_line_per_interval():
    out, clock = io.StringIO(), Clock()
    progress = PlainProgress(out, interval_s=5.0, clock=clock)
    progress.upload_started("u", "s3://b/k", 100, 0)
    for _ in range(10):
        clock.now += 1
        progress.bytes_done("u", 1)
    assert len(out.getvalue().splitlines()) == 2


def test_record_json_has_every_contract_field():
    data = record_json(record())
    assert set(data) == CONTRACT_FIELDS
    assert data["url"] == data["storage_url"]
    assert set(data["checksum"]) == {"algorithm", "value", "verified"}


def test_record_json_error_object_from_the_record():
    data = record_json(
        record(status="failed", error_code="source_changed", error_message="m")
    )
    assert data["error"] == {"code": "source_changed", "message": "m"}


def test_failed_outcome_line_names_the_upload_and_reason():
    error = RetriesExhaustedError("part 3 failed after 4 attempts: 500")
    line = outcome_line(
        Outcome("/tmp/f", "s3://b/k", "interrupted", record(), error, 7)
    )
    assert line.startswith("failed /tmp/f -> s3://b/k: part 3 failed")
    assert "0123456789ab" in line


def test_uploaded_outcome_line():
    assert outcome_line(Outcome("/tmp/f", "s3://b/k", "completed", record())) == (
        "uploaded /tmp/f -> s3://b/k"
    )
