"""Pure unit tests: sizes and durations, targets and key rules, part plans, checksums,
and the journal file. No emulator, no network.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
import stat
from dataclasses import replace
from pathlib import Path

import google_crc32c
import pytest

from cloudput.checksums import RunningDigest, b64, digest_of, hex_to_b64, multipart_etag
from cloudput.engine.plan import Plan, check_part_size, make_plan
from cloudput.errors import JournalError, UsageError
from cloudput.journal import (
    SCHEMA_VERSION,
    Attachment,
    Journal,
    PartRow,
    UploadRecord,
    new_upload_id,
    utc_now,
)
from cloudput.keys import MAX_KEY_BYTES, check_key, key_from_relative_path, parse_target
from cloudput.providers.s3 import S3_LIMITS
from cloudput.units import format_duration, format_size, parse_duration, parse_size
from tests.helpers import run_cli

MIB = 1024 * 1024
GIB = 1024 * MIB

# -- units --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size_bytes"),
    [
        ("8388608", 8 * MIB),
        ("8MiB", 8 * MIB),
        ("8mib", 8 * MIB),
        ("512KiB", 512 * 1024),
        ("1GiB", GIB),
        ("8MB", 8_000_000),
        ("5MB", 5_000_000),
        ("1GB", 1_000_000_000),
        ("1.5MiB", 3 * MIB // 2),
        (" 0 ", 0),
    ],
)
def test_parse_size_reads_binary_and_decimal_units(text: str, size_bytes: int) -> None:
    assert parse_size(text) == size_bytes


@pytest.mark.parametrize("text", ["", "MiB", "8 XB", "-1", "1.3B", "eight"])
def test_parse_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("1d", 86400), ("2", 2)],
)
def test_parse_duration_reads_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0s", "1w", "", "soon"])
def test_parse_duration_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_size_uses_binary_units() -> None:
    assert format_size(0) == "0 B"
    assert format_size(8 * MIB) == "8.0 MiB"
    assert format_size(1536) == "1.5 KiB"


# -- targets and keys ---------------------------------------------------------------


def test_parse_target_splits_bucket_and_key() -> None:
    target = parse_target("s3://bucket/dir/k e+y%#?")

    assert (target.provider, target.bucket, target.key) == (
        "s3",
        "bucket",
        "dir/k e+y%#?",
    )
    assert target.uri == "s3://bucket/dir/k e+y%#?"
    assert not target.is_prefix


@pytest.mark.parametrize("text", ["s3://bucket", "s3://bucket/", "s3://bucket/pre/"])
def test_parse_target_bucket_or_trailing_slash_is_a_prefix(text: str) -> None:
    assert parse_target(text).is_prefix


def test_parse_target_other_schemes() -> None:
    assert parse_target("gs://b/k").provider == "gcs"
    assert parse_target("az://c/b").provider == "azure"
    https = parse_target("https://acct.blob.core.windows.net/c/dir/b")
    assert (https.provider, https.account, https.bucket, https.key) == (
        "azure", "acct", "c", "dir/b",
    )  # fmt: skip


def test_parse_target_keeps_unicode_as_nfc() -> None:
    decomposed = "s3://b/cafe\u0301"

    assert parse_target(decomposed).key == "caf\u00e9"


@pytest.mark.parametrize(
    "text", ["http://b/k", "s3:/b/k", "b/k", "s3://", "s3:///k", "ftp://b/k"]
)
def test_parse_target_malformed_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_target(text)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    "key",
    ["", "/lead", "a//b", ".", "..", "a/./b", "a/../b", "./c", "a\x00b", "a\x7fb",
     "x" * (MAX_KEY_BYTES + 1), "\u00e9" * 513],
)  # fmt: skip
def test_check_key_refuses_unsafe_keys(key: str) -> None:
    with pytest.raises(UsageError):
        check_key(key)


@pytest.mark.parametrize(
    "key",
    ["a", "a/b/c", "dir/", "x" * MAX_KEY_BYTES, "sp ace+%#?", "..a", "a.", "\u00e9"],
)
def test_check_key_accepts_safe_keys(key: str) -> None:
    check_key(key)


def test_key_from_relative_path_uses_slashes_and_refuses_escape() -> None:
    assert key_from_relative_path(os.path.join("x", "y", "z")) == "x/y/z"
    assert key_from_relative_path(os.path.join(".", "x")) == "x"
    with pytest.raises(UsageError):
        key_from_relative_path(os.path.join("..", "x"))


# -- part plans ---------------------------------------------------------------------


@pytest.mark.parametrize("part_size", [5_000_000, 5 * MIB - 1, 0, 5 * GIB + 1])
def test_check_part_size_refuses_against_s3_rules(part_size: int) -> None:
    with pytest.raises(UsageError) as caught:
        check_part_size(part_size, S3_LIMITS)
    assert "5,242,880" in str(caught.value) or "5,368,709,120" in str(caught.value)


@pytest.mark.parametrize("part_size", [5 * MIB, 8 * MIB, 5 * GIB])
def test_check_part_size_accepts_s3_bounds(part_size: int) -> None:
    check_part_size(part_size, S3_LIMITS)


def test_plan_below_threshold_and_empty_are_single() -> None:
    assert make_plan(0, S3_LIMITS).strategy == "single"
    assert make_plan(0, S3_LIMITS).parts()[0].size_bytes == 0
    assert make_plan(8 * MIB - 1, S3_LIMITS).strategy == "single"
    assert make_plan(8 * MIB, S3_LIMITS).strategy == "multipart"
    assert make_plan(100 * MIB, S3_LIMITS, no_multipart=True).strategy == "single"


def test_plan_12_000_000_bytes_at_5mib_is_three_parts() -> None:
    plan = make_plan(12_000_000, S3_LIMITS, part_size_bytes=5 * MIB)

    assert [part.size_bytes for part in plan.parts()] == [
        5_242_880,
        5_242_880,
        1_514_240,
    ]
    assert [part.offset for part in plan.parts()] == [0, 5_242_880, 10_485_760]


@pytest.mark.parametrize(
    "size_bytes", [8 * MIB, 8 * MIB + 1, 100 * MIB, 12_800 * 8 * MIB, 100 * GIB]
)
def test_plan_parts_cover_the_file_without_gaps_or_empty_parts(size_bytes: int) -> None:
    plan = make_plan(size_bytes, S3_LIMITS)

    assert plan.part_count <= S3_LIMITS.max_parts
    parts = [plan.part(1), plan.part(plan.part_count)]
    assert parts[0].offset == 0
    assert parts[-1].offset + parts[-1].size_bytes == size_bytes
    assert 0 < parts[-1].size_bytes <= plan.part_size_bytes
    assert plan.part_size_bytes >= S3_LIMITS.min_part_size_bytes


def test_plan_grows_the_part_size_to_stay_within_10000_parts() -> None:
    plan = make_plan(10_000 * 5 * MIB + 1, S3_LIMITS, part_size_bytes=5 * MIB)

    # Raised to the next whole MiB, not to 5 MiB + 1 byte.
    assert plan.part_size_bytes == 6 * MIB
    assert plan.part_count == 8_334
    assert plan.raised_from_bytes == 5 * MIB


def test_plan_of_exact_multiple_is_not_raised() -> None:
    plan = make_plan(10_000 * 5 * MIB, S3_LIMITS, part_size_bytes=5 * MIB)

    assert plan.part_count == 10_000 and plan.raised_from_bytes is None


def test_plan_beyond_s3_maximum_is_refused() -> None:
    with pytest.raises(UsageError):
        make_plan(10_000 * 5 * GIB + 1, S3_LIMITS)
    with pytest.raises(UsageError):
        make_plan(5 * GIB + 1, S3_LIMITS, no_multipart=True)


def test_plan_part_count_of_single_is_one() -> None:
    assert Plan("single", 0, 1).part_count == 1


# -- checksums ----------------------------------------------------------------------


def test_md5_digest_is_base64_of_the_raw_md5() -> None:
    digest = digest_of(b"hello", "md5")

    assert digest is not None and digest.algorithm == "md5"
    assert digest.value_b64 == base64.b64encode(hashlib.md5(b"hello").digest()).decode()
    assert digest_of(b"", "md5").value_b64 == hex_to_b64(  # type: ignore[union-attr]
        "d41d8cd98f00b204e9800998ecf8427e"
    )


def test_crc32c_digest_matches_google_crc32c() -> None:
    digest = digest_of(b"hello", "crc32c")

    assert digest is not None
    assert digest.value_b64 == b64(google_crc32c.Checksum(b"hello").digest())


def test_running_digest_equals_one_shot() -> None:
    running = RunningDigest("crc32c")
    for piece in (b"he", memoryview(b"ll"), b"o"):
        running.update(piece)

    assert running.digest() == digest_of(b"hello", "crc32c")


def test_digest_none_and_unknown() -> None:
    assert digest_of(b"x", "none") is None
    with pytest.raises(ValueError):
        RunningDigest("sha1")


def test_multipart_etag_is_md5_of_part_md5s_with_count() -> None:
    parts = [b"a" * 10, b"b" * 3]
    digests = [digest_of(part, "md5") for part in parts]
    joined = b"".join(hashlib.md5(part).digest() for part in parts)

    etag = multipart_etag(d for d in digests if d is not None)

    assert etag == f"{hashlib.md5(joined).hexdigest()}-2"


# -- the journal --------------------------------------------------------------------


def _record(upload_id: str = "0123456789ab", **changes: object) -> UploadRecord:
    record = UploadRecord(
        id=upload_id, provider="s3", bucket="b", key="k", uri="s3://b/k",
        storage_url="http://x/b/k", name="f", size_bytes=12, mime="text/plain",
        strategy="multipart", part_size_bytes=5, part_count=3, status="initiated",
        initiated_at=utc_now(), source_path="/tmp/f", source_size_bytes=12,
        source_mtime_ns=1, source_inode=2, metadata={"a": "b"},
    )  # fmt: skip
    return replace(record, **changes)  # type: ignore[arg-type]


def test_journal_file_is_created_0600(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j" / "journal.db")
    journal.close()

    mode = stat.S_IMODE(os.stat(tmp_path / "j" / "journal.db").st_mode)
    assert mode == 0o600


def test_journal_round_trips_records_and_parts(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.db")
    record = _record()
    journal.add(record)
    journal.record_part(record.id, PartRow(record.id, 2, 5, 5, '"e2"', "c2", utc_now()))
    journal.record_part(record.id, PartRow(record.id, 1, 0, 5, "e1", None, utc_now()))
    journal.update(record.id, status="interrupted", session="upload-xyz")

    got = journal.get(record.id)
    parts = journal.parts(record.id)
    journal.close()

    assert got.status == "interrupted" and got.session == "upload-xyz"
    assert got.metadata == {"a": "b"}
    assert [(p.number, p.etag) for p in parts] == [(1, "e1"), (2, '"e2"')]


def test_journal_forget_parts_drops_those_named_or_all(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.db")
    journal.add(_record())
    for number in (1, 2, 3, 4):
        journal.record_part(
            "0123456789ab", PartRow("0123456789ab", number, 0, 5, "e", None, "")
        )

    journal.forget_parts("0123456789ab", {1, 3})
    left = [p.number for p in journal.parts("0123456789ab")]
    journal.forget_parts("0123456789ab")

    assert left == [2, 4]
    assert journal.parts("0123456789ab") == []
    journal.close()


def test_journal_find_and_find_unfinished(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.db")
    journal.add(_record("aaaaaaaaaaaa", status="completed"))
    journal.add(_record("bbbbbbbbbbbb", status="interrupted"))

    assert [r.id for r in journal.find("interrupted")] == ["bbbbbbbbbbbb"]
    assert [r.id for r in journal.find()] == ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]
    unfinished = journal.find_unfinished("/tmp/f", "s3://b/k", None)
    assert [r.id for r in unfinished] == ["bbbbbbbbbbbb"]
    journal.close()


def test_journal_mark_completed_writes_the_attachment(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.db")
    journal.add(_record())
    attachment = Attachment("0123456789ab", "0123456789ab", "f", "text/plain", 12, "u")

    journal.mark_completed("0123456789ab", attachment, completed_at=utc_now())

    assert journal.get("0123456789ab").status == "completed"
    assert journal.attachments() == [attachment]
    journal.close()


def test_journal_unknown_id_is_a_usage_error(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "journal.db")

    with pytest.raises(UsageError):
        journal.get("nope")
    journal.close()


def test_journal_hold_is_exclusive_and_released(tmp_path: Path) -> None:
    first = Journal.open(tmp_path / "journal.db")
    second = Journal.open(tmp_path / "journal.db")

    assert first.hold("0123456789ab")
    assert not second.hold("0123456789ab")
    assert second.is_held_elsewhere("0123456789ab")
    first.release("0123456789ab")
    assert second.hold("0123456789ab")
    first.close()
    second.close()


def test_journal_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    Journal.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'",
            (str(SCHEMA_VERSION + 1),),
        )
    conn.close()

    with pytest.raises(JournalError) as caught:
        Journal.open(path)
    assert caught.value.exit_code == 9


def test_journal_corrupt_file_is_a_journal_error(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    path.write_bytes(b"this is not sqlite" * 100)

    with pytest.raises(JournalError):
        Journal.open(path)


def test_utc_now_and_ids_have_fixed_shapes() -> None:
    assert utc_now().endswith("Z") and "T" in utc_now()
    ids = {new_upload_id() for _ in range(100)}
    assert len(ids) == 100 and {len(i) for i in ids} == {12}


def test_list_and_show_mark_in_progress_of_a_gone_process_interrupted(
    tmp_path: Path,
) -> None:
    """CONTRACT: in_progress means a live process is sending it. A record left
    in_progress by a killed process reads as interrupted (in the journal too); one a
    live process holds stays in_progress."""
    path = tmp_path / "journal.db"
    journal = Journal.open(path)
    journal.add(_record("aaaaaaaaaaaa", status="in_progress"))
    journal.add(_record("bbbbbbbbbbbb", status="in_progress"))
    assert journal.hold("aaaaaaaaaaaa")  # a live sender of the first one
    try:
        listed = run_cli(["list", "--json", "--journal", str(path)])
        assert listed.code == 0, listed.stderr
        status = {row["id"]: row["status"] for row in listed.json_lines()}
        assert status == {"aaaaaaaaaaaa": "in_progress", "bbbbbbbbbbbb": "interrupted"}
        gone = run_cli(["list", "--status", "interrupted", "--journal", str(path)])
        assert "bbbbbbbbbbbb" in gone.stdout and "aaaaaaaaaaaa" not in gone.stdout
        assert journal.get("bbbbbbbbbbbb").error_code == "process_gone"
    finally:
        journal.release("aaaaaaaaaaaa")
    shown = run_cli(["show", "aaaaaaaaaaaa", "--json", "--journal", str(path)])
    assert shown.code == 0, shown.stderr
    assert shown.json_lines()[0]["status"] == "interrupted"
    journal.close()


def test_an_over_long_key_is_named_in_its_error() -> None:
    key = "start-" + "x" * 1100 + "-end.txt"
    with pytest.raises(UsageError) as error:
        check_key(key)
    assert "start-" in error.value.message and "-end.txt" in error.value.message
    assert "1114 bytes is over 1024" in error.value.message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(30 * 86400, "30d"), (5400, "1.5h"), (90, "1.5m"), (59, "59s"), (0.5, "0.5s")],
)
def test_format_duration_reads_as_parse_duration_writes(seconds: float, text: str):
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_a_ttl_beyond_seven_days_is_shown_as_typed() -> None:
    from cloudput.engine.plumbing import check_ttl

    with pytest.raises(UsageError, match=r"^--ttl 30d is not within 1s\.\.7d"):
        check_ttl(30 * 86400)
