"""Field cases (../shared/cases/FIELD_CASES.md) that are specific to GCS or Azure, and
BC-23 on the providers that check a digest per part.

Each drives the real CLI through a FaultProxy and asserts on the requests cloudput sent
as well as on the final object, because the emulators are more lenient than the
services (the GCS emulator ignores chunk multiples and hashes; moto skips
Content-MD5, so cloudput compares each S3 part ETag with the MD5 it sent).
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from tests.backends import Backend
from tests.faultproxy import FaultProxy, Match, RecordedRequest, RequestHead
from tests.helpers import (
    KIB,
    MIB,
    only_record,
    run_cli,
    sha256_of,
    write_random,
)
from tests.test_contract import (
    CRASH_CONCURRENCY,
    PART_REQUESTS,
    interrupt_upload,
    kill_after_parts,
    part_number,
    the_record,
    use_env,
)

#: Every GCS chunk but the last is a multiple of this (GCS resumable-upload docs).
GCS_CHUNK_QUANTUM_BYTES = 256 * KIB
#: Azure Put Block: a block id is at most 64 bytes before base64 encoding.
AZURE_MAX_BLOCK_ID_BYTES = 64
#: Azure Put Block List: at most 50,000 committed blocks per blob.
AZURE_MAX_BLOCKS = 50_000
#: Azure Put Block (service version 2019-12-12+): at most 4000 MiB per block.
AZURE_MAX_BLOCK_BYTES = 4000 * MIB

_CHUNK_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


# -- GCS requests ------------------------------------------------------------------


def chunk_range(head: RequestHead | RecordedRequest) -> tuple[int, int] | None:
    """(first, last) byte of a GCS chunk PUT, or None for any other request."""
    match = _CHUNK_RANGE.fullmatch(head.headers.get("content-range", ""))
    if head.method.upper() != "PUT" or match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def chunk_from(offset: int) -> Match:
    """The chunk PUT whose first byte is `offset`."""

    def starts_there(head: RequestHead) -> bool:
        found = chunk_range(head)
        return found is not None and found[0] == offset

    return Match(method="PUT", where=starts_there)


def is_status_query(head: RequestHead | RecordedRequest) -> bool:
    return (
        head.method.upper() == "PUT"
        and re.fullmatch(r"bytes \*/\d+", head.headers.get("content-range", ""))
        is not None
    )


STATUS_QUERY = Match(method="PUT", where=is_status_query)


def chunks(requests: list[RecordedRequest]) -> list[RecordedRequest]:
    return [request for request in requests if chunk_range(request) is not None]


def gcs_args(source: Path, uri: str, chunk_bytes: int) -> list[str]:
    return [
        "upload", str(source), uri, "--json",
        "--part-size", str(chunk_bytes), "--multipart-threshold", str(chunk_bytes),
    ]  # fmt: skip


def assert_chunk_multiples(sent: list[RecordedRequest], size_bytes: int) -> None:
    """Every forwarded non-final chunk is a multiple of 256 KiB long (BC-15)."""
    for request in chunks(sent):
        first, last = chunk_range(request)  # type: ignore[misc]
        if request.action != "reset" and last + 1 < size_bytes:
            assert request.body_length % GCS_CHUNK_QUANTUM_BYTES == 0, request


# -- BC-14 ---------------------------------------------------------------------------


def test_gcs_308_without_range_after_a_dropped_chunk_restarts_at_offset_0(
    gcs: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """BC-14 A: the connection drops during chunk 1 and the status query answers 308
    with no Range header: cloudput restarts at byte 0 in the same session."""
    size_bytes, chunk_bytes = MIB, GCS_CHUNK_QUANTUM_BYTES
    source = tmp_path / "f.bin"
    digest = write_random(source, size_bytes)
    with FaultProxy(gcs.endpoint) as proxy:
        proxy.reset_after(chunk_from(0), 100 * KIB)
        proxy.rewrite_header(STATUS_QUERY, "Range", lambda value: None)
        use_env(monkeypatch, gcs.routed_through(proxy.url))

        result = run_cli(gcs_args(source, gcs.uri("f.bin"), chunk_bytes))
        sent = proxy.requests

    assert result.code == 0, result.stderr
    assert sha256_of(gcs.read("f.bin")) == digest
    queried = [i for i, r in enumerate(sent) if is_status_query(r)]
    assert queried and sent[queried[0]].action == "rewrite"
    assert sent[queried[0]].status == 308
    next_chunk = chunks(sent[queried[0] :])[0]
    assert chunk_range(next_chunk) == (0, chunk_bytes - 1)
    assert sum(r.body_length for r in chunks(sent)) <= size_bytes + chunk_bytes
    assert len({r.headers.get("content-range") for r in chunks(sent)}) == 4
    assert_chunk_multiples(sent, size_bytes)


def test_gcs_chunk_persisted_short_is_continued_from_the_persisted_offset(
    gcs: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """BC-14 B: after chunk 2 is sent, the session says it holds bytes 0-262143 only:
    the next PUT starts at 262144."""
    size_bytes, chunk_bytes = MIB, GCS_CHUNK_QUANTUM_BYTES
    source = tmp_path / "f.bin"
    digest = write_random(source, size_bytes)
    with FaultProxy(gcs.endpoint) as proxy:
        proxy.respond(
            chunk_from(chunk_bytes),
            308,
            headers={"Range": f"bytes=0-{chunk_bytes - 1}"},
        )
        use_env(monkeypatch, gcs.routed_through(proxy.url))

        result = run_cli(gcs_args(source, gcs.uri("f.bin"), chunk_bytes))
        sent = chunks(proxy.requests)

    assert result.code == 0, result.stderr
    assert sha256_of(gcs.read("f.bin")) == digest
    second = [r for r in sent if chunk_range(r) == (chunk_bytes, 2 * chunk_bytes - 1)]
    assert [r.action for r in second] == ["respond", None]
    assert sum(r.body_length for r in sent) <= size_bytes + chunk_bytes


# -- BC-18 ---------------------------------------------------------------------------


def test_gcs_connection_reset_mid_chunk_continues_from_the_persisted_offset(
    gcs: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """BC-18: a TCP RST after 300 KiB of chunk 2's body; cloudput asks the session and
    goes on from byte 1 MiB; one finalized object."""
    size_bytes, chunk_bytes = 4 * MIB, MIB
    source = tmp_path / "f.bin"
    digest = write_random(source, size_bytes)
    with FaultProxy(gcs.endpoint) as proxy:
        proxy.reset_after(chunk_from(chunk_bytes), 300 * KIB)
        use_env(monkeypatch, gcs.routed_through(proxy.url))

        result = run_cli(gcs_args(source, gcs.uri("f.bin"), chunk_bytes))
        sent = proxy.requests

    assert result.code == 0, result.stderr
    assert sha256_of(gcs.read("f.bin")) == digest
    reset = next(i for i, r in enumerate(sent) if r.action == "reset")
    after = sent[reset + 1 :]
    assert is_status_query(after[0]), after[0]
    assert chunk_range(chunks(after)[0]) == (chunk_bytes, 2 * chunk_bytes - 1)
    assert sum(r.body_length for r in chunks(sent)) <= size_bytes + chunk_bytes
    finalized = [r for r in chunks(sent) if r.status in (200, 201)]
    assert len(finalized) == 1
    assert_chunk_multiples(sent, size_bytes)
    assert the_record(result)["status"] == "completed"


# -- BC-15 ---------------------------------------------------------------------------


@pytest.mark.parametrize("part_size", ["1000000", "100KiB"])
def test_gcs_part_size_off_256_kib_is_refused_before_a_session(
    gcs: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, part_size: str
) -> None:
    source = tmp_path / "f.bin"
    write_random(source, 3 * MIB)
    with FaultProxy(gcs.endpoint) as proxy:
        use_env(monkeypatch, gcs.routed_through(proxy.url))

        result = run_cli(["upload", source, gcs.uri("f.bin"), "--part-size", part_size])
        sessions = proxy.matching(Match(query={"uploadType": "resumable"}))

    assert result.code == 2, result.stderr
    assert "262,144" in result.stderr or "256 KiB" in result.stderr, result.stderr
    assert sessions == []
    assert gcs.read("f.bin") is None


# -- GCS: a chunk corrupted in transit ---------------------------------------------


def test_gcs_chunk_corrupted_in_transit_fails_the_finalized_object_with_exit_8(
    gcs: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """BC-23 on GCS: chunks carry no digest, so the whole-file crc32c the service
    reports at finalize is compared with the local one: integrity error, no success."""
    size_bytes, chunk_bytes = 3 * MIB, MIB
    source = tmp_path / "f.bin"
    write_random(source, size_bytes)
    with FaultProxy(gcs.endpoint) as proxy:
        proxy.corrupt(chunk_from(chunk_bytes), offset=12_345)
        use_env(monkeypatch, gcs.routed_through(proxy.url))

        result = run_cli(gcs_args(source, gcs.uri("f.bin"), chunk_bytes))

    assert result.code == 8, result.stderr
    record = the_record(result)
    assert record["status"] == "failed"
    assert only_record().status == "failed"


# -- BC-11 on GCS: the session is cancelled ----------------------------------------


@pytest.mark.crash
def test_gcs_session_is_cancelled_when_the_source_changed(
    gcs: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = tmp_path / "f.bin"
    write_random(source, 6 * MIB)
    with FaultProxy(gcs.endpoint) as proxy:
        interrupt_upload(gcs, proxy, source, "f.bin", after_parts=2)
        session_path = proxy.matching(PART_REQUESTS)[0].path
        proxy.clear_requests()
        with open(source, "ab") as out:
            out.write(b"more")
        use_env(monkeypatch, gcs.routed_through(proxy.url))

        result = run_cli(["resume", "--all"])
        cancels = proxy.matching(Match(method="DELETE", path=re.escape(session_path)))

    assert result.code == 4, result.stderr
    assert len(cancels) == 1
    assert gcs.read("f.bin") is None


def is_put_block_list(request: RecordedRequest) -> bool:
    """Put Block List (the commit); Get Block List is a GET with the same query."""
    return request.method == "PUT" and request.query.get("comp") == "blocklist"


# -- BC-19 ---------------------------------------------------------------------------

BLOCK_CASES = {
    "13-blocks": (12 * MIB + 1, MIB, 13),
    "101-blocks": (100 * 16 * KIB + 1, 16 * KIB, 101),
}


@pytest.mark.parametrize("case", list(BLOCK_CASES.values()), ids=list(BLOCK_CASES))
def test_azure_block_ids_have_one_length_and_commit_in_file_order(
    azure: Backend,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    case: tuple[int, int, int],
) -> None:
    size_bytes, block_bytes, block_count = case
    source = tmp_path / "f.bin"
    digest = write_random(source, size_bytes)
    with FaultProxy(azure.endpoint) as proxy:
        use_env(monkeypatch, azure.routed_through(proxy.url))

        result = run_cli(
            ["upload", source, azure.uri("f.bin"), "--concurrency", "8", "--json",
             "--part-size", str(block_bytes), "--multipart-threshold", str(block_bytes)]
        )  # fmt: skip
        sent = proxy.requests

    assert result.code == 0, result.stderr
    assert sha256_of(azure.read("f.bin")) == digest
    puts = [r for r in sent if r.query.get("comp") == "block"]
    ids = [r.query["blockid"] for r in puts]
    assert len(ids) == block_count == len(set(ids))
    assert len({len(i) for i in ids}) == 1
    assert all(len(base64.b64decode(i)) <= AZURE_MAX_BLOCK_ID_BYTES for i in ids)
    commits = [i for i, r in enumerate(sent) if is_put_block_list(r)]
    assert len(commits) == 1
    assert commits[0] > max(i for i, r in enumerate(sent) if r in puts)
    blob = azure.client.get_blob_client(azure.bucket, "f.bin")  # type: ignore[attr-defined]
    committed, uncommitted = blob.get_block_list("all")
    assert len(committed) == block_count and uncommitted == []
    numbers = [part_number(head_with_block_id(b.id)) for b in committed]
    assert numbers == list(range(1, block_count + 1))
    assert [b.size for b in committed] == [block_bytes] * (block_count - 1) + [1]


def head_with_block_id(block_id: str) -> RequestHead:
    """A request head carrying `block_id` (as the SDK decodes it), for part_number."""
    encoded = base64.b64encode(block_id.encode("utf-8")).decode("ascii")
    return RequestHead("PUT", "/", {"blockid": encoded}, {})


# -- BC-21 ---------------------------------------------------------------------------

#: 50,000 blocks of 4 MiB and one byte (FIELD_CASES.md, BC-21).
HUGE_SPARSE_BYTES = 209_715_200_001


@pytest.mark.crash
@pytest.mark.parametrize("part_size", [None, "4MiB"], ids=["default", "4MiB"])
def test_azure_plan_for_a_200_gb_file_stays_within_50000_blocks(
    azure: Backend,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    part_size: str | None,
) -> None:
    """BC-21: planned before any Put Block; checked on a SIGKILLed run (2 blocks sent),
    never reading the whole sparse file."""
    source = tmp_path / "huge.bin"
    with open(source, "wb") as out:
        out.truncate(HUGE_SPARSE_BYTES)
    args = ["upload", str(source), azure.uri("huge.bin"), "--quiet",
            "--concurrency", str(CRASH_CONCURRENCY)]  # fmt: skip
    if part_size:
        args += ["--part-size", part_size]
    with FaultProxy(azure.endpoint) as proxy:
        kill_after_parts(azure, proxy, args, after_parts=2)
        sent = proxy.requests
        use_env(monkeypatch, azure.routed_through(proxy.url))

        shown = run_cli(["show", only_record().id, "--json"])
        aborted = run_cli(["abort", only_record().id])

    assert shown.code == 0, shown.stderr
    plan = shown.json_lines()[0]
    assert plan["parts"] <= AZURE_MAX_BLOCKS
    assert plan["part_size"] <= AZURE_MAX_BLOCK_BYTES
    assert plan["part_size"] * plan["parts"] >= HUGE_SPARSE_BYTES
    assert plan["part_size"] * (plan["parts"] - 1) < HUGE_SPARSE_BYTES
    if part_size:
        assert plan["part_size"] >= 4 * MIB
    assert [r for r in sent if is_put_block_list(r)] == []
    assert max(part_number(r) or 0 for r in sent) <= AZURE_MAX_BLOCKS
    assert aborted.code == 0, aborted.stderr


# -- BC-23 ---------------------------------------------------------------------------


def _is_part_2(head: RequestHead) -> bool:
    return part_number(head) == 2


@pytest.mark.parametrize("backend", ["s3", "azure"], indirect=True)
def test_part_corrupted_in_transit_is_rejected_and_only_it_is_resent(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    size_bytes, part_bytes = 23 * MIB, 5 * MIB
    source = tmp_path / "f.bin"
    digest = write_random(source, size_bytes)
    data = source.read_bytes()
    with FaultProxy(backend.endpoint) as proxy:
        proxy.corrupt(Match(method="PUT", where=_is_part_2), offset=4321)
        use_env(monkeypatch, backend.routed_through(proxy.url))

        result = run_cli(
            ["upload", source, backend.uri("f.bin"), "--checksum", "md5", "--json",
             "--part-size", "5MiB"]
        )  # fmt: skip
        parts = proxy.matching(PART_REQUESTS)

    for request in parts:
        number = part_number(request)
        assert number is not None
        own = data[(number - 1) * part_bytes : number * part_bytes]
        md5 = base64.b64encode(hashlib.md5(own).digest()).decode("ascii")
        assert request.headers.get("content-md5") == md5, number
    assert result.code == 0, result.stderr
    numbers = sorted(part_number(r) for r in parts)
    assert numbers == [1, 2, 2, 3, 4, 5]
    assert sha256_of(backend.read("f.bin")) == digest
