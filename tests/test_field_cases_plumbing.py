"""Field case BC-26 of ../shared/cases/FIELD_CASES.md: presigned part URLs that expire
in the middle of a plumbing upload (`init`, `part-url` per part, PUTs by a client that
holds no credentials, `complete`), and a 403 that is not an expiry.

moto does not check presigned expiry, so on S3 a FaultProxy answers S3's expired-URL
403 to every URL signed before the client stalled; Azurite does check SAS expiry, so on
Azure a URL made with `--ttl 1s` really expires. The client side is urllib, as in
tests/test_plumbing.py. GCS is not here: its part URL is the session's, `--ttl` does
not apply (tests/test_plumbing.py::test_gcs_part_url_expires_with_the_session_not_the_ttl).

What `cloudput upload` does on its own with an expired signature is tested in
tests/test_faults.py: test_s3_expired_signature_once_is_signed_again_and_sent (signed
afresh and sent once more, exit 0) and
test_s3_expired_signature_twice_exits_5_and_keeps_the_upload.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloudput.journal import UploadRecord
from tests.backends import Backend
from tests.faultproxy import FaultProxy, Match, RequestHead
from tests.helpers import (
    MIB,
    CliResult,
    only_record,
    parts_of,
    proxy_in_front,
    run_cli,
    sha256_of,
    wait_until,
    write_random,
)
from tests.s3_wire import UPLOAD_PART, numbers_sent, part_match
from tests.test_contract import PART_REQUESTS, part_number
from tests.test_faults import S3_EXPIRED_BODY, XML
from tests.test_plumbing import EXPIRY_WAIT_S, ok, put

#: BC-26's scenario: a 30 MiB file in 5 MiB parts, URLs signed for 60 s.
FILE_BYTES = 30 * MIB
PART_BYTES = 5 * MIB
PARTS = 6
TTL = "60s"
#: S3's answer to a request refused for want of permission (not an expiry).
S3_DENIED_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)
#: The upload's part that the faults hit: parts 1-2 were acknowledged before them.
FAULTED_PART = 3


@pytest.fixture
def proxy(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A FaultProxy before the emulator; cloudput (and so every URL it signs) uses it."""
    with proxy_in_front(backend, monkeypatch) as running:
        yield running


@pytest.fixture
def s3_proxy(s3: Backend, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A FaultProxy before moto, for the S3-only tests."""
    with proxy_in_front(s3, monkeypatch) as running:
        yield running


def part_url(upload_id: str, number: int, ttl: str = TTL) -> dict[str, Any]:
    return ok(run_cli(["part-url", upload_id, str(number), "--ttl", ttl]))


def send(upload_id: str, number: int, data: bytes) -> dict[str, Any]:
    """part-url then PUT part `number`; returns its --parts entry."""
    status, headers = put(part_url(upload_id, number), data)
    assert status in (200, 201), f"part {number}: HTTP {status}"
    return {"number": number, "etag": headers.get("ETag", "")}


def utc_stamp() -> str:
    """Now in SigV4's X-Amz-Date form (whole seconds, sorts as text)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def signed_before(stamp: str) -> Match:
    """S3 requests whose presigned X-Amz-Date is at or before `stamp`."""

    def old(head: RequestHead) -> bool:
        signed_at = head.query.get("X-Amz-Date")
        return signed_at is not None and signed_at <= stamp

    return Match(method="PUT", where=old)


def stale_url_after_a_stall(
    backend: Backend, proxy: FaultProxy, upload_id: str
) -> dict[str, Any]:
    """Part 3's URL, signed before a stall that outlives it (BC-26 FAULT A).

    S3: the proxy answers S3's expired-URL 403 to every URL signed up to the stall
    (moto would accept them), and the stall lasts until the clock's second changed.
    Azure: a 1-second SAS, and a stall past its expiry (Azurite refuses it itself).
    """
    if backend.name == "s3":
        stale = part_url(upload_id, FAULTED_PART)
        stall_began = utc_stamp()
        proxy.respond(signed_before(stall_began), 403, S3_EXPIRED_BODY, XML, times=None)
        wait_until(lambda: utc_stamp() > stall_began, timeout_s=5)
        return stale
    stale = part_url(upload_id, FAULTED_PART, "1s")
    time.sleep(EXPIRY_WAIT_S)
    return stale


def sent_part_numbers(proxy: FaultProxy) -> list[tuple[int | None, int | None]]:
    """(part number, HTTP status) of every part PUT the provider got, in order."""
    return [(part_number(r), r.status) for r in proxy.matching(PART_REQUESTS)]


def init_clip(backend: Backend, tmp_path: Path) -> tuple[str, bytes, dict[str, Any]]:
    """A FILE_BYTES file and `init` of its upload in PART_BYTES parts: (sha256, bytes,
    init's JSON)."""
    source = tmp_path / "clip.bin"
    digest = write_random(source, FILE_BYTES)
    upload = ok(
        run_cli(["init", backend.uri("clip.bin"), "--size", str(FILE_BYTES),
                 "--part-size", str(PART_BYTES)])
    )  # fmt: skip
    return digest, source.read_bytes(), upload


@pytest.mark.parametrize("backend", ["s3", "azure"], indirect=True)
def test_bc26_a_expired_part_url_is_asked_again_and_sent_parts_are_kept(
    backend: Backend, proxy: FaultProxy, tmp_path: Path
) -> None:
    """BC-26 A: after part 2 is acknowledged the client stalls past part 3's URL; the
    PUT is refused 403; `part-url 3` again signs a fresh URL (another signature, a later
    expiry) that works, parts 4-6 follow, and `complete` (asking the provider for the
    parts) makes the file's object: parts 1-2 sent once, exit 0, [OBJ]. URLs are signed
    per part when asked, never up front: `init` hands out none."""
    digest, data, upload = init_clip(backend, tmp_path)
    assert upload["strategy"] == "multipart" and len(upload["parts"]) == PARTS
    assert set(upload) == {"id", "strategy", "part_size", "parts", "expires_at"}
    assert all(set(part) == {"number", "offset", "size"} for part in upload["parts"])
    uid = upload["id"]

    for number in (1, 2):
        send(uid, number, data)
    stale = stale_url_after_a_stall(backend, proxy, uid)
    refused, _ = put(stale, data)
    fresh = part_url(uid, FAULTED_PART)
    status, _ = put(fresh, data)
    for number in range(FAULTED_PART + 1, PARTS + 1):
        send(uid, number, data)
    done = run_cli(["complete", uid])

    assert refused == 403
    assert status in (200, 201)
    assert fresh["url"] != stale["url"]
    assert fresh["expires_at"] > stale["expires_at"]
    assert (fresh["offset"], fresh["size"]) == (stale["offset"], stale["size"])
    assert done.code == 0, done.stderr
    assert ok(done)["status"] == "completed"
    assert sha256_of(backend.read("clip.bin")) == digest
    assert backend.incomplete("clip.bin") == 0
    assert sent_part_numbers(proxy) == [
        (1, status), (2, status), (3, 403), (3, status), (4, status), (5, status),
        (6, status),
    ]  # fmt: skip


def test_bc26_b_plumbing_part_denied_keeps_the_upload_resumable(
    s3: Backend, s3_proxy: FaultProxy, tmp_path: Path
) -> None:
    """BC-26 B (plumbing): part 3's PUT is answered 403 AccessDenied "Access Denied",
    not an expiry; the client re-signs once (`part-url` again), is denied again and
    gives up. cloudput never sees that 403; what it must do is keep the upload
    resumable: `complete` says which parts are missing (exit 7, as
    tests/test_plumbing.py::test_complete_before_every_part_is_sent_is_exit_7_then_works
    checks without a fault) without failing or aborting the record, the provider keeps
    the upload, and once the permission is fixed `part-url` for parts 3-6 and
    `complete` finish it without re-sending parts 1-2 ([OBJ])."""
    digest, data, upload = init_clip(s3, tmp_path)
    uid = upload["id"]
    denied = s3_proxy.respond(
        part_match(FAULTED_PART), 403, S3_DENIED_BODY, XML, times=None
    )
    for number in (1, 2):
        send(uid, number, data)
    answers = [put(part_url(uid, FAULTED_PART), data)[0] for _ in range(2)]
    early = run_cli(["complete", uid])
    record_meanwhile = only_record()
    held_meanwhile = s3.incomplete("clip.bin")

    s3_proxy.clear_rules()  # the permission is fixed
    for number in range(FAULTED_PART, PARTS + 1):
        send(uid, number, data)
    done = run_cli(["complete", uid])

    assert answers == [403, 403] and denied.hits == 2
    assert early.code == 7, early.stderr
    assert "part(s) 3-6" in early.stderr
    assert "Traceback" not in early.stderr
    assert record_meanwhile.status == "initiated"
    assert held_meanwhile == 1
    assert done.code == 0, done.stderr
    assert ok(done)["status"] == "completed"
    assert numbers_sent(s3_proxy) == [1, 2, 3, 3, 3, 4, 5, 6]
    assert sha256_of(s3.read("clip.bin")) == digest
    assert s3.incomplete("clip.bin") == 0


@dataclass(frozen=True)
class DeniedRun:
    """What a `cloudput upload` whose part 3 is always denied left behind."""

    result: CliResult
    sent: list[int]  # part numbers of every UploadPart, in the order sent
    record: UploadRecord
    kept: list[int]  # part rows journaled
    held: int  # multipart uploads the provider still lists for the key


def upload_with_part_3_denied(
    s3: Backend, proxy: FaultProxy, source: Path
) -> DeniedRun:
    """`cloudput upload --concurrency 1` of `source` (5 MiB parts) while every try of
    part 3 is answered 403 AccessDenied "Access Denied"."""
    rule = proxy.respond(part_match(FAULTED_PART), 403, S3_DENIED_BODY, XML, times=None)
    result = run_cli(["upload", str(source), s3.uri("clip.bin"), "--part-size", "5MiB",
                      "--concurrency", "1"])  # fmt: skip
    proxy.clear_rules()
    assert rule.hits >= 1, result.stdout + result.stderr
    record = only_record()
    return DeniedRun(
        result,
        [part_number(r) or 0 for r in proxy.matching(UPLOAD_PART)],
        record,
        [row.number for row in parts_of(record.id)],
        s3.incomplete("clip.bin"),
    )


def test_bc26_b_upload_part_denied_exits_5_in_one_line_and_resume_finishes(
    s3: Backend, s3_proxy: FaultProxy, tmp_path: Path
) -> None:
    """BC-26 B (`cloudput upload`, which signs its own requests): a 403 AccessDenied
    that is not an expiry on every try of part 3. At most one re-sign (part 3 sent at
    most twice), then exit 5 (CONTRACT.md: credentials refused; resume helps after
    fixing them) with one line naming AccessDenied and no traceback; the record is
    `interrupted` with parts 1-2 journaled and the upload still at the provider;
    `cloudput resume` then sends exactly the parts not journaled, part 3 among them,
    and completes ([OBJ])."""
    source = tmp_path / "clip.bin"
    digest = write_random(source, FILE_BYTES)
    run = upload_with_part_3_denied(s3, s3_proxy, source)
    s3_proxy.clear_requests()
    resumed = run_cli(["resume", run.record.id])
    resent = numbers_sent(s3_proxy)

    out = run.result.stdout
    failure = [line for line in out.splitlines() if "AccessDenied" in line]
    assert run.result.code == 5, out + run.result.stderr
    assert len(failure) == 1 and failure[0].startswith("failed ")
    assert "Access Denied" in failure[0]
    assert "Traceback" not in run.result.stderr
    assert "X-Amz-Signature" not in out + run.result.stderr
    assert 1 <= run.sent.count(FAULTED_PART) <= 2
    assert run.record.status == "interrupted"
    assert run.kept[:2] == [1, 2] and FAULTED_PART not in run.kept
    assert run.held == 1
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    assert resent == [n for n in range(1, PARTS + 1) if n not in run.kept]
    assert sha256_of(s3.read("clip.bin")) == digest
    assert s3.incomplete("clip.bin") == 0


def test_bc26_b_no_part_is_sent_after_a_part_was_denied(
    s3: Backend, s3_proxy: FaultProxy, tmp_path: Path
) -> None:
    """BC-26 B, CONTRACT.md "Exit codes": exit 5 stops the run as soon as it is known.
    With `--concurrency 1` nothing is in flight when part 3 is refused, so no later
    part may be sent: the parts sent are 1, 2 and 3 (3 at most twice), the journal
    holds parts 1-2 only."""
    write_random(tmp_path / "clip.bin", FILE_BYTES)
    run = upload_with_part_3_denied(s3, s3_proxy, tmp_path / "clip.bin")

    assert run.result.code == 5, run.result.stdout + run.result.stderr
    assert max(run.sent) == FAULTED_PART, run.sent
    assert run.kept == [1, 2]
