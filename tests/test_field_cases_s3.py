"""Field cases of ../shared/cases/FIELD_CASES.md that apply to S3, against moto.

Each test is named after its case. moto does not check Content-MD5, part order or the
5 MiB minimum, so the requests cloudput sends are asserted through a FaultProxy too.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import signal
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backends import Backend
from tests.faultproxy import FaultProxy, Match, RequestHead
from tests.helpers import (
    MIB,
    kill_after_parts,
    only_record,
    parts_of,
    proxy_in_front,
    run_cli,
    run_cloudput,
    sha256_of,
    start_cloudput,
    wait_until,
    write_random,
)
from tests.s3_wire import (
    COMPLETE,
    CREATE,
    LIST_PARTS,
    PUT_OBJECT,
    UPLOAD_PART,
    numbers_sent,
    part_match,
)

PART = 5 * MIB
MAX_PARTS = 10_000
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"


INTERNAL_ERROR_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)
SLOW_DOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
XML = {"Content-Type": "application/xml"}


@pytest.fixture
def proxy(s3: Backend, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A FaultProxy before moto; in-process cloudput (and .env for processes) use it."""
    with proxy_in_front(s3, monkeypatch) as running:
        yield running


def keep_bodies(proxy: FaultProxy, match: Match) -> list[bytes]:
    """Keep the request bodies of matching requests (the proxy records only digests).

    Swaps the running server's handler class for a subclass; requests already being
    handled are unaffected.
    """
    kept: list[bytes] = []
    server: Any = proxy._server
    base = server.RequestHandlerClass

    class Keeping(base):  # type: ignore[misc, valid-type]
        def _record(
            self, head: RequestHead, body: bytes, status: int | None, action: str | None
        ) -> None:
            if match(head):
                kept.append(body)
            super()._record(head, body, status, action)

    server.RequestHandlerClass = Keeping
    return kept


def completed_parts(body: bytes) -> list[tuple[int, str]]:
    """(PartNumber, ETag) pairs of a CompleteMultipartUpload body, in body order."""
    root = ET.fromstring(body)
    pairs = []
    for part in root.iter():
        if part.tag.endswith("Part") and not part.tag.endswith("MultipartUpload"):
            fields = {child.tag.rsplit("}", 1)[-1]: child.text or "" for child in part}
            pairs.append((int(fields["PartNumber"]), fields["ETag"]))
    return pairs


def md5_hex(path: Path, offset: int, size_bytes: int) -> str:
    with open(path, "rb") as source:
        source.seek(offset)
        return hashlib.md5(source.read(size_bytes)).hexdigest()


def listed_parts(s3: Backend, key: str, session: str) -> list[int]:
    listing = s3.client.list_parts(Bucket=s3.bucket, Key=key, UploadId=session)
    return [part["PartNumber"] for part in listing.get("Parts", [])]


# -- BC-01 --------------------------------------------------------------------------


@pytest.mark.parametrize("part_size", ["5MB", "5242879"])
def test_bc01_part_size_under_5mib_refused_before_any_request(
    proxy: FaultProxy, s3: Backend, tmp_path: Path, part_size: str
) -> None:
    write_random(tmp_path / "f", 12_000_000)

    result = run_cli(["upload", tmp_path / "f", s3.uri("k"), "--part-size", part_size])

    assert result.code == 2
    assert "5,242,880" in result.stderr and "minimum" in result.stderr
    assert proxy.count() == 0


def test_bc01_part_size_5mib_gives_three_exact_parts(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    digest = write_random(tmp_path / "f", 12_000_000)

    result = run_cli(["upload", tmp_path / "f", s3.uri("k"), "--part-size", "5MiB"])

    assert result.code == 0, result.stderr
    sent = sorted(
        (int(r.query["partNumber"]), int(r.headers["content-length"]))
        for r in proxy.matching(UPLOAD_PART)
    )
    assert sent == [(1, 5_242_880), (2, 5_242_880), (3, 1_514_240)]
    assert sha256_of(s3.read("k")) == digest
    assert s3.incomplete("k") == 0


# -- BC-02 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size_bytes", "extra"),
    [(100 * 1024**3, []), (MAX_PARTS * PART + 1, ["--part-size", "5MiB"])],
    ids=["a-100GiB-default", "b-10000x5MiB+1"],
)
def test_bc02_huge_sparse_file_plans_at_most_10000_parts(
    proxy: FaultProxy, s3: Backend, tmp_path: Path, size_bytes: int, extra: list[str]
) -> None:
    source = tmp_path / "sparse.bin"
    source.touch()
    os.truncate(source, size_bytes)
    proxy.delay(UPLOAD_PART, 2.0, times=None)
    env = s3.routed_through(proxy.url)
    args = ["upload", source, s3.uri("huge"), "--concurrency", "2", *extra]

    # The kill must come within seconds: reading the whole file first would not.
    killed = kill_after_parts(start_cloudput(args, env), 2, timeout_s=30)

    shown = run_cli(["show", only_record().id, "--json"]).json_lines()[0]
    assert killed.code == -signal.SIGKILL
    assert "raised" in killed.stderr
    assert shown["parts"] <= MAX_PARTS
    assert shown["part_size"] >= -(-size_bytes // MAX_PARTS)
    assert shown["parts"] * shown["part_size"] >= size_bytes
    assert proxy.count(CREATE) == 1
    assert max(numbers_sent(proxy)) <= MAX_PARTS
    assert proxy.count(COMPLETE) == 0
    proxy.clear_rules()
    assert run_cli(["abort", shown["id"]]).code == 0


# -- BC-04 --------------------------------------------------------------------------


def test_bc04_complete_200_with_error_body_once_is_retried(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    digest = write_random(tmp_path / "f", 12 * MIB)
    proxy.respond(COMPLETE, 200, INTERNAL_ERROR_BODY, XML, times=1)

    result = run_cli(["upload", tmp_path / "f", s3.uri("k"), "--part-size", "5MiB"])

    assert result.code == 0, result.stderr
    assert proxy.count(COMPLETE) == 2
    assert sha256_of(s3.read("k")) == digest
    assert s3.incomplete("k") == 0


def test_bc04_complete_200_with_error_body_always_exits_7_resumable(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    write_random(tmp_path / "f", 12 * MIB)
    proxy.respond(COMPLETE, 200, INTERNAL_ERROR_BODY, XML, times=None)
    args = [
        "upload",
        tmp_path / "f",
        s3.uri("k"),
        "--part-size",
        "5MiB",
        "--retries",
        "2",
    ]

    result = run_cli(args)

    record = only_record()
    assert result.code == 7
    assert "InternalError" in result.stderr + result.stdout
    assert "uploaded" not in result.stdout
    assert record.status == "interrupted"
    assert s3.read("k") is None
    assert record.session is not None
    assert listed_parts(s3, "k", record.session) == [1, 2, 3]


# -- BC-05 --------------------------------------------------------------------------


@pytest.mark.parametrize("quoted", [True, False], ids=["quoted", "unquoted"])
def test_bc05_etags_round_trip_through_the_journal_as_returned(
    proxy: FaultProxy, s3: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    quoted: bool,
) -> None:  # fmt: skip
    source = tmp_path / "f"
    digest = write_random(source, 12 * MIB)

    def as_returned(md5: str) -> str:
        return f'"{md5}"' if quoted else md5

    def add_etag_rule() -> None:
        if not quoted:
            proxy.rewrite_header(
                UPLOAD_PART, "ETag", lambda v: v.strip('"'), times=None
            )

    # Part 3 never gets through in the first run, so the resume sends it itself.
    proxy.reset_after(part_match(3), 1024, times=None)
    add_etag_rule()
    env = {**s3.routed_through(proxy.url), "CLOUDPUT_RETRY_BASE_DELAY": "1"}
    args = ["upload", source, s3.uri("k"), "--part-size", "5MiB", "--concurrency", "1"]
    killed = kill_after_parts(start_cloudput(args, env), 2)
    assert killed.code == -signal.SIGKILL

    upload_id = only_record().id
    for row in parts_of(upload_id):
        assert row.etag == as_returned(md5_hex(source, row.offset, row.size_bytes))
    proxy.clear_rules()
    add_etag_rule()
    bodies = keep_bodies(proxy, COMPLETE)
    resumed = run_cloudput(["resume", upload_id], env)

    assert resumed.code == 0, resumed.stderr
    assert numbers_sent(proxy).count(3) >= 1
    (body,) = bodies
    sent = completed_parts(body)
    assert [number for number, _ in sent] == [1, 2, 3]
    journaled = {row.number: row.etag for row in parts_of(upload_id)}
    for number, etag in sent:
        md5 = md5_hex(
            source, (number - 1) * PART, min(PART, 12 * MIB - (number - 1) * PART)
        )
        assert etag in (md5, f'"{md5}"')
        assert etag == journaled[number]
    assert sent[2][1] == as_returned(sent[2][1].strip('"'))
    assert sha256_of(s3.read("k")) == digest
    assert s3.incomplete("k") == 0


# -- BC-07 --------------------------------------------------------------------------


def test_bc07_failed_part_is_never_left_out_and_resume_sends_only_it(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    digest = write_random(tmp_path / "f", 20 * MIB)
    proxy.respond(part_match(3), 500, times=None)
    args = [
        "upload",
        tmp_path / "f",
        s3.uri("k"),
        "--part-size",
        "5MiB",
        "--retries",
        "3",
    ]

    failed = run_cli(args)

    record = only_record()
    assert failed.code == 7
    assert "part 3" in failed.stderr + failed.stdout
    assert proxy.count(COMPLETE) == 0
    assert proxy.count(part_match(3)) == 4
    assert s3.read("k") is None
    assert record.status == "interrupted"
    assert {row.number: bool(row.etag) for row in parts_of(record.id)} == {
        1: True, 2: True, 4: True,
    }  # fmt: skip
    proxy.clear_rules()
    proxy.clear_requests()
    bodies = keep_bodies(proxy, COMPLETE)
    resumed = run_cli(["resume", record.id])
    assert resumed.code == 0, resumed.stderr
    assert numbers_sent(proxy) == [3]
    assert [number for number, _ in completed_parts(bodies[0])] == [1, 2, 3, 4]
    assert sha256_of(s3.read("k")) == digest
    assert s3.incomplete("k") == 0


# -- BC-08 --------------------------------------------------------------------------


def test_bc08_resume_sends_the_last_part_never_a_partial_put(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    source = tmp_path / "f"
    digest = write_random(source, 23 * MIB)
    proxy.reset_after(part_match(5), MIB, times=None)
    env = {**s3.routed_through(proxy.url), "CLOUDPUT_RETRY_BASE_DELAY": "1"}
    args = ["upload", source, s3.uri("k"), "--part-size", "5MiB", "--concurrency", "5"]
    process = start_cloudput(args, env)
    wait_until(lambda: proxy.count(part_match(5)) >= 1, 30)

    killed = kill_after_parts(process, 4)

    assert killed.code == -signal.SIGKILL
    assert sorted(row.number for row in parts_of(only_record().id)) == [1, 2, 3, 4]
    proxy.clear_rules()
    proxy.clear_requests()
    bodies = keep_bodies(proxy, COMPLETE)
    resumed = run_cloudput(["resume", only_record().id], env)
    assert resumed.code == 0, resumed.stderr
    assert numbers_sent(proxy) == [5]
    assert [number for number, _ in completed_parts(bodies[0])] == [1, 2, 3, 4, 5]
    assert proxy.count(PUT_OBJECT) == 0
    head = s3.client.head_object(Bucket=s3.bucket, Key="k")
    assert head["ContentLength"] == 24_117_248
    assert sha256_of(s3.read("k")) == digest
    assert s3.incomplete("k") == 0


# -- BC-10 --------------------------------------------------------------------------


def _kill_after_six_of_ten(proxy: FaultProxy, s3: Backend, source: Path) -> str:
    proxy.delay(UPLOAD_PART, 0.3, times=None)
    args = ["upload", source, s3.uri("k"), "--part-size", "5MiB", "--concurrency", "1"]
    killed = kill_after_parts(start_cloudput(args, s3.routed_through(proxy.url)), 6)
    assert killed.code == -signal.SIGKILL
    proxy.clear_rules()
    proxy.clear_requests()
    return only_record().id


def test_bc10_resume_sends_only_the_missing_parts(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    source = tmp_path / "f"
    digest = write_random(source, 50 * MIB)
    upload_id = _kill_after_six_of_ten(proxy, s3, source)

    resumed = run_cloudput(["resume", upload_id], s3.routed_through(proxy.url))

    assert resumed.code == 0, resumed.stderr
    assert set(numbers_sent(proxy)) <= {7, 8, 9, 10}
    assert proxy.body_bytes(UPLOAD_PART) <= 25 * MIB
    assert proxy.count(LIST_PARTS) >= 1
    assert sha256_of(s3.read("k")) == digest
    assert s3.incomplete("k") == 0


def test_bc10_resume_never_takes_part_size(s3: Backend) -> None:
    result = run_cli(["resume", "0123456789ab", "--part-size", "8MiB"])

    assert result.code == 2
    assert "--part-size" in result.stderr


def test_bc10_upload_again_with_another_part_size_keeps_the_journaled_plan(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    source = tmp_path / "f"
    digest = write_random(source, 50 * MIB)
    upload_id = _kill_after_six_of_ten(proxy, s3, source)

    again = run_cli(["upload", source, s3.uri("k"), "--part-size", "8MiB"])

    assert again.code == 0, again.stderr
    assert "keeps its journaled part size" in again.stderr
    assert only_record().id == upload_id
    sizes = {int(r.headers["content-length"]) for r in proxy.matching(UPLOAD_PART)}
    assert sizes <= {PART}
    assert set(numbers_sent(proxy)) <= {7, 8, 9, 10}
    assert sha256_of(s3.read("k")) == digest


# -- BC-12 --------------------------------------------------------------------------


@pytest.mark.parametrize("in_directory", [False, True], ids=["alone", "in-directory"])
def test_bc12_zero_byte_file_is_one_request(
    proxy: FaultProxy, s3: Backend, tmp_path: Path, in_directory: bool
) -> None:
    tree = tmp_path / "d"
    tree.mkdir()
    (tree / "e.bin").touch()
    source, target, key = (
        (tree, s3.uri("p/"), "p/e.bin")
        if in_directory
        else (tree / "e.bin", s3.uri("e"), "e")
    )

    result = run_cli(["upload", source, target])

    assert result.code == 0, result.stderr
    assert proxy.count(CREATE) == 0 and proxy.count(UPLOAD_PART) == 0
    assert proxy.count(PUT_OBJECT) == 1
    head = s3.client.head_object(Bucket=s3.bucket, Key=key)
    assert head["ContentLength"] == 0
    assert head["ETag"].strip('"') == EMPTY_MD5
    assert only_record().status == "completed"
    assert s3.incomplete(key) == 0


# -- BC-25 --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["/lead.txt", "dir//file.txt", "a/../b.txt", "./c.txt"])
def test_bc25_unsafe_keys_refused_before_any_request(
    proxy: FaultProxy, s3: Backend, tmp_path: Path, key: str
) -> None:
    write_random(tmp_path / "f", 10)

    result = run_cli(["upload", tmp_path / "f", f"s3://{s3.bucket}/{key}"])

    assert result.code == 2
    assert "unsafe key" in result.stderr
    assert "uploaded" not in result.stdout
    assert proxy.count() == 0
    assert s3.keys() == []


def test_bc25_tree_given_as_dotdot_maps_to_keys_without_dotdot(
    proxy: FaultProxy, s3: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_random(tmp_path / "data" / "x" / "y.txt", 10)
    write_random(tmp_path / "data" / "z.txt", 10)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")

    result = run_cli(["upload", "../data/", s3.uri("pfx/")])

    assert result.code == 0, result.stderr
    assert s3.keys() == ["pfx/x/y.txt", "pfx/z.txt"]


# -- BC-29 --------------------------------------------------------------------------


def test_bc29a_slowdown_on_half_the_parts_backs_off_and_succeeds(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    digest = write_random(tmp_path / "f", 60 * MIB)
    turn = itertools.count()
    every_other = Match(
        method="PUT",
        query={"partNumber": None, "uploadId": None},
        where=lambda head: next(turn) % 2 == 0,
    )
    proxy.respond(every_other, 503, SLOW_DOWN_BODY, XML, times=8)
    args = ["upload", tmp_path / "f", s3.uri("k"), "--part-size", "5MiB",
            "--concurrency", "8", "--retries", "10"]  # fmt: skip

    result = run_cli(args)

    assert result.code == 0, result.stderr
    assert sum(1 for r in proxy.matching(UPLOAD_PART) if r.status == 503) == 8
    assert sha256_of(s3.read("k")) == digest


def test_bc29a_backoff_gaps_grow(
    proxy: FaultProxy, s3: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDPUT_RETRY_BASE_DELAY", "0.2")
    write_random(tmp_path / "f", 12 * MIB)
    proxy.respond(part_match(2), 503, SLOW_DOWN_BODY, XML, times=3)

    result = run_cli(["upload", tmp_path / "f", s3.uri("k"), "--part-size", "5MiB"])

    assert result.code == 0, result.stderr
    times = [r.at_s for r in proxy.matching(part_match(2))]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(gaps) == 3
    assert gaps[0] < gaps[1] < gaps[2]


def test_bc29b_slowdown_forever_exits_7_naming_it(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    write_random(tmp_path / "f", 12 * MIB)
    proxy.respond(UPLOAD_PART, 503, SLOW_DOWN_BODY, XML, times=None)
    args = [
        "upload",
        tmp_path / "f",
        s3.uri("k"),
        "--part-size",
        "5MiB",
        "--retries",
        "2",
    ]

    result = run_cli(args)

    assert result.code == 7
    assert "SlowDown" in result.stdout + result.stderr
    assert only_record().status == "interrupted"
    assert s3.read("k") is None


def test_bc29c_slowdown_once_on_complete_is_retried(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    digest = write_random(tmp_path / "f", 12 * MIB)
    proxy.respond(COMPLETE, 503, SLOW_DOWN_BODY, XML, times=1)

    result = run_cli(["upload", tmp_path / "f", s3.uri("k"), "--part-size", "5MiB"])

    assert result.code == 0, result.stderr
    assert proxy.count(COMPLETE) == 2
    assert sha256_of(s3.read("k")) == digest


# -- BC-30 --------------------------------------------------------------------------


def _start_slow_upload(proxy: FaultProxy, s3: Backend, source: Path) -> Any:
    write_random(source, 50 * MIB)
    proxy.delay(UPLOAD_PART, 0.3, times=None)
    args = ["upload", source, s3.uri("k"), "--part-size", "5MiB", "--concurrency", "2"]
    return start_cloudput(args, s3.routed_through(proxy.url))


def test_bc30_1_abort_after_sigkill_leaves_no_orphan(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    killed = kill_after_parts(_start_slow_upload(proxy, s3, tmp_path / "f"), 3)
    assert killed.code == -signal.SIGKILL
    proxy.clear_rules()

    result = run_cli(["abort", only_record().id])

    assert result.code == 0, result.stderr
    assert proxy.count(Match(method="DELETE", query={"uploadId": None})) >= 1
    wait_until(lambda: s3.incomplete("k") == 0, 10)
    assert only_record().status == "aborted"
    assert s3.read("k") is None


def test_bc30_2_sigint_leaves_it_interrupted_with_the_resume_id(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    stopped = kill_after_parts(
        _start_slow_upload(proxy, s3, tmp_path / "f"), 2, signal.SIGINT
    )

    record = only_record()
    assert stopped.code == 130
    assert record.status == "interrupted"
    assert f"cloudput resume {record.id}" in stopped.stderr
    assert "uploaded" not in stopped.stdout
    assert s3.incomplete("k") == 1


def test_bc30_3_abort_when_the_upload_id_is_gone_is_idempotent(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    killed = kill_after_parts(_start_slow_upload(proxy, s3, tmp_path / "f"), 2)
    assert killed.code == -signal.SIGKILL
    proxy.clear_rules()
    record = only_record()
    s3.client.abort_multipart_upload(Bucket=s3.bucket, Key="k", UploadId=record.session)

    first = run_cli(["abort", record.id])
    second = run_cli(["abort", record.id])

    assert first.code == 0, first.stderr
    assert second.code == 0, second.stderr
    assert only_record().status == "aborted"
