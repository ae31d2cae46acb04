"""The contract suite: one set of CLI tests, run against s3, gcs and azure alike.

It drives the real CLI (in process, or as a process that is SIGKILLed and resumed) and
checks the objects with the providers' own SDKs. It never branches on the provider's
name: where the providers differ, the difference is data in PROFILES.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudput.engine.existing import WHOLE_MD5_METADATA
from cloudput.journal import Journal
from cloudput.providers.azure import AZURE_LIMITS
from cloudput.providers.gcs import GCS_LIMITS
from cloudput.providers.s3 import S3_LIMITS
from tests.backends import Backend, fresh_bucket_name
from tests.faultproxy import FaultProxy, Match, RecordedRequest, RequestHead, Rule
from tests.helpers import (
    FAST_RETRY_ENV,
    MIB,
    CliResult,
    journal_path,
    only_record,
    run_cli,
    run_cloudput,
    sha256_file,
    sha256_of,
    start_cloudput,
    wait_until,
    write_random,
)

#: cloudput's default multipart threshold and part size (CONTRACT.md, 8 MiB).
DEFAULT_THRESHOLD_BYTES = 8 * MIB
#: A part size every provider accepts: S3's 5 MiB minimum, a multiple of 256 KiB.
SHARED_PART_BYTES = 5 * MIB
#: Parts in flight in the kill-and-resume tests.
CRASH_CONCURRENCY = 2
#: How long the proxy holds each part's answer, so a kill lands mid-upload.
PART_DELAY_S = 0.25
#: Seconds a killed run is given to let the proxy's held answers settle.
SETTLE_S = PART_DELAY_S + 0.3


@dataclass(frozen=True)
class Profile:
    """How a provider differs, as data.

    crash_part_bytes: the part size for kill-and-resume (the smallest the provider
    accepts that keeps its emulator quick). parts_in_flight: how many parts one upload
    has in flight at once (None: --concurrency; 1 for a sequential session).
    keeps_staged_parts_of_existing_object: the provider has no call that drops staged
    parts while a committed object exists at the key (Azure: the service discards them
    at the next commit or after a week), so [ORPHAN] tolerates them then.
    """

    crash_part_bytes: int
    parts_in_flight: int | None
    keeps_staged_parts_of_existing_object: bool


PROFILES = {
    "s3": Profile(5 * MIB, None, False),
    "gcs": Profile(1 * MIB, 1, False),
    "azure": Profile(1 * MIB, None, True),
}

_CHUNK_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
#: Query names and values that mark a multipart upload, session or block list.
_SESSION_QUERY_MARKS = (
    ("uploads", None),
    ("uploadId", None),
    ("partNumber", None),
    ("blockid", None),
    ("comp", "block"),
    ("comp", "blocklist"),
    ("uploadType", "resumable"),
)


# -- reading the proxy's records ---------------------------------------------------


def part_identity(head: RequestHead | RecordedRequest) -> str | None:
    """Which part a request carries: an S3 part number, an Azure block id or a GCS
    chunk's first byte; None for any other request."""
    if head.method.upper() != "PUT":
        return None
    if "partNumber" in head.query:
        return f"part {head.query['partNumber']}"
    if "blockid" in head.query:
        return f"block {head.query['blockid']}"
    match = _CHUNK_RANGE.fullmatch(head.headers.get("content-range", ""))
    return f"bytes from {match.group(1)}" if match else None


def part_number(head: RequestHead | RecordedRequest) -> int | None:
    """The part number an S3 UploadPart or an Azure Put Block carries (block ids end
    with the part number, CONTRACT/issue 3), else None."""
    if "partNumber" in head.query:
        return int(head.query["partNumber"])
    if "blockid" in head.query:
        raw = base64.b64decode(head.query["blockid"]).decode("utf-8")
        digits = re.search(r"(\d+)$", raw)
        return int(digits.group(1)) if digits else None
    return None


def carries_part(head: RequestHead) -> bool:
    return part_identity(head) is not None


PART_REQUESTS = Match(where=carries_part)


def answered_parts(proxy: FaultProxy) -> int:
    """Part requests the server answered with success (2xx, or GCS's 308)."""
    return sum(
        1
        for request in proxy.matching(PART_REQUESTS)
        if request.status is not None
        and (200 <= request.status < 300 or request.status == 308)
    )


def session_requests(requests: Iterable[RecordedRequest]) -> list[RecordedRequest]:
    """Requests that open, feed or commit a multipart upload, session or block list."""
    found = []
    for request in requests:
        for name, value in _SESSION_QUERY_MARKS:
            if name in request.query and value in (None, request.query[name]):
                found.append(request)
                break
        else:
            if part_identity(request) is not None:
                found.append(request)
    return found


def writes(requests: Iterable[RecordedRequest]) -> list[RecordedRequest]:
    return [r for r in requests if r.method.upper() in ("PUT", "POST")]


# -- running cloudput --------------------------------------------------------------


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in {**env, **FAST_RETRY_ENV}.items():
        monkeypatch.setenv(name, value)


def upload_args(source: Path, uri: str, part_bytes: int, *extra: str) -> list[str]:
    """`upload` with a part size and a threshold of one part (multipart from 2 parts)."""
    return [
        "upload",
        str(source),
        uri,
        "--part-size",
        str(part_bytes),
        "--multipart-threshold",
        str(part_bytes),
        *extra,
    ]


def the_record(result: CliResult) -> dict[str, object]:
    lines = result.json_lines()
    assert len(lines) == 1, result.stdout + result.stderr
    return lines[0]


def interrupt_upload(
    backend: Backend,
    proxy: FaultProxy,
    source: Path,
    key: str,
    *,
    after_parts: int,
) -> str:
    """Run `cloudput upload` as a process through `proxy`, SIGKILL it once
    `after_parts` parts were answered, and return the journaled upload id.

    Later commands on that upload must go through the same proxy: a GCS session URL
    names the host the session was created through.
    """
    part_bytes = PROFILES[backend.name].crash_part_bytes
    args = upload_args(
        source, backend.uri(key), part_bytes,
        "--concurrency", str(CRASH_CONCURRENCY), "--quiet",
    )  # fmt: skip
    kill_after_parts(backend, proxy, args, after_parts)
    return only_record().id


def kill_after_parts(
    backend: Backend, proxy: FaultProxy, args: list[str], after_parts: int
) -> None:
    """Run cloudput `args` as a process through `proxy`, each part's answer held
    PART_DELAY_S, and SIGKILL it once `after_parts` parts were answered."""
    rule = proxy.delay(PART_REQUESTS, PART_DELAY_S, times=None)
    env = {**backend.routed_through(proxy.url), **FAST_RETRY_ENV}
    process = start_cloudput(args, env)
    try:
        wait_until(
            lambda: answered_parts(proxy) >= after_parts or process.poll() is not None,
            timeout_s=60.0,
        )
    finally:
        process.send_signal(signal.SIGKILL)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, f"finished before the kill: {stderr}"
    time.sleep(SETTLE_S)  # answers the proxy still held are recorded by now
    rule.times = 0


# -- round trips -------------------------------------------------------------------


@dataclass(frozen=True)
class RoundTrip:
    size_bytes: int
    part_size: str | None  # --part-size, or None for the provider's default
    parts: int | None  # None: as many as the provider's default part size makes

    def expected_parts(self, provider: str) -> int:
        if self.parts is not None:
            return self.parts
        default = DEFAULT_PART_SIZES[provider]
        return max(1, -(-self.size_bytes // default))


DEFAULT_PART_SIZES = {
    "s3": S3_LIMITS.default_part_size_bytes,
    "gcs": GCS_LIMITS.default_part_size_bytes,
    "azure": AZURE_LIMITS.default_part_size_bytes,
}
ROUND_TRIPS = {
    "0B": RoundTrip(0, None, 1),
    "1B": RoundTrip(1, None, 1),
    "under-threshold": RoundTrip(DEFAULT_THRESHOLD_BYTES - 1, None, 1),
    "8MiB": RoundTrip(DEFAULT_THRESHOLD_BYTES, None, 1),
    # Multipart; 2 parts of S3's and Azure's 8 MiB default, 1 chunk of GCS's 32 MiB.
    "8MiB+1": RoundTrip(DEFAULT_THRESHOLD_BYTES + 1, None, None),
    "23MiB-in-5MiB-parts": RoundTrip(23 * MIB, "5MiB", 5),
}


@pytest.mark.parametrize("case", list(ROUND_TRIPS.values()), ids=list(ROUND_TRIPS))
def test_round_trip_reads_back_the_same_bytes_and_a_complete_record(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: RoundTrip
) -> None:
    source = tmp_path / "data.bin"
    digest = write_random(source, case.size_bytes)
    backend.apply_env(monkeypatch)
    extra = ["--part-size", case.part_size] if case.part_size else []

    result = run_cli(["upload", source, backend.uri("rt/data.bin"), "--json", *extra])

    assert result.code == 0, result.stderr
    assert sha256_of(backend.read("rt/data.bin")) == digest
    record = the_record(result)
    assert record["status"] == "completed"
    assert record["size"] == case.size_bytes
    assert record["parts"] == case.expected_parts(backend.name)
    assert record["uri"] == backend.uri("rt/data.bin")
    assert record["key"] == "rt/data.bin"
    assert record["name"] == "data.bin"
    assert record["url"] == record["storage_url"]
    assert str(record["url"]).endswith("/rt/data.bin")
    assert record["checksum"]["verified"]  # type: ignore[index]
    assert record["completed_at"] and str(record["completed_at"]).endswith("Z")
    assert record["error"] is None


def test_directory_upload_puts_every_file_under_the_prefix(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    sizes = {"a.txt": 10, "sub/b.bin": 300_000, "sub/deeper/c.bin": 1, "empty.bin": 0}
    digests = {name: write_random(tree / name, size) for name, size in sizes.items()}
    backend.apply_env(monkeypatch)

    result = run_cli(["upload", tree, backend.uri("pfx/"), "--json", "--quiet"])

    assert result.code == 0, result.stderr
    assert backend.keys() == sorted(f"pfx/{name}" for name in sizes)
    for name, digest in digests.items():
        assert sha256_of(backend.read(f"pfx/{name}")) == digest, name
    assert {line["status"] for line in result.json_lines()} == {"completed"}


# -- kill and resume ---------------------------------------------------------------


@pytest.mark.crash
def test_resume_after_sigkill_resends_at_most_the_parts_in_flight(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    profile = PROFILES[backend.name]
    part_bytes = profile.crash_part_bytes
    size_bytes = 8 * CRASH_CONCURRENCY * part_bytes + 12_345
    source = tmp_path / "big.bin"
    digest = write_random(source, size_bytes)
    in_flight = profile.parts_in_flight or CRASH_CONCURRENCY

    with FaultProxy(backend.endpoint) as proxy:
        upload_id = interrupt_upload(backend, proxy, source, "big.bin", after_parts=4)
        before = proxy.matching(PART_REQUESTS)
        proxy.clear_requests()
        use_env(monkeypatch, backend.routed_through(proxy.url))

        result = run_cli(
            ["resume", "--all", "--json", "--concurrency", str(CRASH_CONCURRENCY)]
        )
        after = proxy.matching(PART_REQUESTS)

    assert result.code == 0, result.stderr
    assert sha256_of(backend.read("big.bin")) == digest
    record = the_record(result)
    assert (record["id"], record["status"]) == (upload_id, "completed")
    assert after, "resume sent nothing: the kill landed after the last part"
    resent = {part_identity(r) for r in before} & {part_identity(r) for r in after}
    assert len(resent) <= in_flight, sorted(resent)  # type: ignore[arg-type]
    sent_bytes = sum(r.body_length for r in before + after)
    assert sent_bytes <= size_bytes + in_flight * part_bytes


@pytest.mark.crash
def test_abort_of_an_interrupted_upload_leaves_nothing_and_is_idempotent(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = tmp_path / "f.bin"
    write_random(source, 6 * PROFILES[backend.name].crash_part_bytes)
    with FaultProxy(backend.endpoint) as proxy:
        upload_id = interrupt_upload(backend, proxy, source, "f.bin", after_parts=2)
        use_env(monkeypatch, backend.routed_through(proxy.url))

        first = run_cli(["abort", upload_id, "--json"])
        again = run_cli(["abort", upload_id, "--json"])

    assert first.code == 0, first.stderr
    assert the_record(first)["status"] == "aborted"
    assert backend.incomplete("f.bin") == 0
    assert backend.read("f.bin") is None
    assert again.code == 0, again.stderr
    assert the_record(again)["status"] == "aborted"


# -- exit codes --------------------------------------------------------------------


def test_exit_code_is_6_when_the_bucket_does_not_exist(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = tmp_path / "f.txt"
    write_random(source, 100)
    backend.apply_env(monkeypatch)
    missing = f"{backend.scheme}://{fresh_bucket_name()}/f.txt"

    result = run_cli(["upload", source, missing])

    assert result.code == 6, result.stderr
    assert "Traceback" not in result.stderr


def test_exit_code_is_4_when_the_source_is_missing(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    backend.apply_env(monkeypatch)

    result = run_cli(["upload", tmp_path / "nope.bin", backend.uri("nope.bin")])

    assert result.code == 4, result.stderr
    assert backend.keys() == []


def _append(path: Path) -> None:
    with open(path, "ab") as out:
        out.write(os.urandom(MIB))


def _rewrite_inside_part_1(path: Path) -> None:
    stat = path.stat()
    with open(path, "r+b") as out:
        out.seek(1000)
        out.write(os.urandom(10))
    later = stat.st_mtime_ns + 2_000_000_000
    os.utime(path, ns=(later, later))


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _delete(path: Path) -> None:
    path.unlink()


def _replace_by_a_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


CHANGES = {
    "grown": _append,
    "rewritten": _rewrite_inside_part_1,
    "shrunk": _truncate,
    "deleted": _delete,
    "now_a_directory": _replace_by_a_directory,
}


@pytest.mark.crash
@pytest.mark.parametrize("change", list(CHANGES.values()), ids=list(CHANGES))
def test_exit_code_is_4_and_nothing_committed_when_the_source_changed_before_resume(
    backend: Backend,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    change: object,
) -> None:
    """BC-11 (a)(b)(c): never spliced; the old upload is cancelled; the object that was
    at the key before is unchanged. A source deleted or replaced by a directory is a
    change too: failed for good, not interrupted (which `resume --all` retried forever,
    exit 4 each time)."""
    profile = PROFILES[backend.name]
    backend.put("k.bin", b"the older object")
    source = tmp_path / "k.bin"
    write_random(source, 6 * profile.crash_part_bytes)
    with FaultProxy(backend.endpoint) as proxy:
        upload_id = interrupt_upload(backend, proxy, source, "k.bin", after_parts=2)
        proxy.clear_requests()
        change(source)  # type: ignore[operator]
        use_env(monkeypatch, backend.routed_through(proxy.url))

        result = run_cli(["resume", "--all", "--json"])
        sent = proxy.requests

    assert result.code == 4, result.stderr
    record = the_record(result)
    assert (record["id"], record["status"]) == (upload_id, "failed")
    assert record["error"]["code"] == "source_changed"  # type: ignore[index]
    assert only_record().error_code == "source_changed"
    assert backend.read("k.bin") == b"the older object"
    assert writes(session_requests(sent)) == []  # no part, no Complete, no block list
    if not profile.keeps_staged_parts_of_existing_object:
        assert backend.incomplete("k.bin") == 0
    # A cron job's next `resume --all` has nothing left: the failed upload is final.
    again = run_cli(["resume", "--all"])
    assert again.code == 0, again.stderr


# -- BC-12: zero bytes -------------------------------------------------------------


@pytest.mark.parametrize(
    "inside_directory", [False, True], ids=["alone", "in-a-directory"]
)
def test_zero_byte_file_goes_up_in_one_request(
    backend: Backend,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    inside_directory: bool,
) -> None:
    source = tmp_path / "d" / "e.bin"
    write_random(source, 0)
    with FaultProxy(backend.endpoint) as proxy:
        use_env(monkeypatch, backend.routed_through(proxy.url))
        started = time.monotonic()

        if inside_directory:
            result = run_cli(["upload", source.parent, backend.uri("z/"), "--json"])
        else:
            result = run_cli(["upload", source, backend.uri("z/e.bin"), "--json"])
        elapsed_s = time.monotonic() - started
        sent = proxy.requests

    assert result.code == 0, result.stderr
    assert elapsed_s < 10
    assert backend.read("z/e.bin") == b""
    assert backend.incomplete("z/e.bin") == 0
    assert session_requests(sent) == []
    assert len(writes(sent)) == 1, [(r.method, r.path, r.query) for r in writes(sent)]
    record = the_record(result)
    assert (record["status"], record["size"], record["parts"]) == ("completed", 0, 1)
    assert only_record().status == "completed"
    assert sha256_file(source) == sha256_of(b"")


def test_a_single_request_upload_is_journaled_and_held_before_its_body_is_sent(
    backend: Backend, tmp_path: Path
) -> None:
    """A small file's record is committed in progress, and held by the sending
    process, before its one request leaves; completed (with the whole file's MD5
    noted for --skip-existing) only after the provider's answer."""
    source = tmp_path / "small.bin"
    write_random(source, 70_000)
    seen: list[tuple[str, list[tuple[str, bool]]]] = []

    def journal_now(head: RequestHead) -> bool:
        if head.method.upper() in ("PUT", "POST"):
            journal = Journal.open(journal_path())
            try:
                state = [
                    (r.status, journal.is_held_elsewhere(r.id)) for r in journal.find()
                ]
            finally:
                journal.close()
            seen.append((head.method, state))
        return False  # only looks: the request is forwarded untouched

    with FaultProxy(backend.endpoint) as proxy:
        proxy.add_rule(Rule(Match(where=journal_now), "look", {}, times=None))
        result = run_cloudput(
            ["upload", source, backend.uri("s/small.bin")],
            backend.routed_through(proxy.url),
        )

    assert result.code == 0, result.stderr
    assert [state for _, state in seen] == [[("in_progress", True)]], seen
    record = only_record()
    assert record.status == "completed"
    whole_md5 = base64.b64encode(hashlib.md5(source.read_bytes()).digest()).decode()
    assert record.metadata.get(WHOLE_MD5_METADATA) == whole_md5


# -- faults on a part, on every provider (BC-18, BC-29) ----------------------------


def _first_part_fault_run(
    backend: Backend,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    add_fault: object,
) -> tuple[CliResult, list[RecordedRequest], str, int]:
    """Upload 4 parts through a proxy with one fault on part requests; return the run,
    the part requests, the file's SHA-256 and its size."""
    part_bytes = PROFILES[backend.name].crash_part_bytes
    size_bytes = 4 * part_bytes
    source = tmp_path / "f.bin"
    digest = write_random(source, size_bytes)
    with FaultProxy(backend.endpoint) as proxy:
        add_fault(proxy)  # type: ignore[operator]
        use_env(monkeypatch, backend.routed_through(proxy.url))

        result = run_cli(
            [*upload_args(source, backend.uri("f.bin"), part_bytes), "--json"]
        )
        parts = proxy.matching(PART_REQUESTS)
    return result, parts, digest, size_bytes


def test_connection_reset_mid_part_is_retried_and_the_object_is_whole(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """BC-18 on every provider: a TCP RST after 300 KiB of a part's body."""
    result, parts, digest, size_bytes = _first_part_fault_run(
        backend,
        monkeypatch,
        tmp_path,
        lambda proxy: proxy.reset_after(PART_REQUESTS, 300 * 1024),
    )

    assert result.code == 0, result.stderr
    assert sha256_of(backend.read("f.bin")) == digest
    assert [r.action for r in parts].count("reset") == 1
    part_bytes = PROFILES[backend.name].crash_part_bytes
    assert sum(r.body_length for r in parts) <= size_bytes + part_bytes


def test_throttled_part_is_retried_and_the_object_is_whole(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """BC-29 A on every provider: two 503 answers to part requests, then success."""
    result, parts, digest, _ = _first_part_fault_run(
        backend,
        monkeypatch,
        tmp_path,
        lambda proxy: proxy.respond(PART_REQUESTS, 503, times=2),
    )

    assert result.code == 0, result.stderr
    assert sha256_of(backend.read("f.bin")) == digest
    assert [r.status for r in parts].count(503) == 2


# -- keys and directories (BC-25, BC-34) -------------------------------------------


@pytest.mark.parametrize("key", ["/lead.txt", "a/../b.txt", "./c.txt", "d/./e.txt"])
def test_exit_code_is_2_for_an_unsafe_key_before_any_request(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, key: str
) -> None:
    source = tmp_path / "f.txt"
    write_random(source, 10)
    with FaultProxy(backend.endpoint) as proxy:
        use_env(monkeypatch, backend.routed_through(proxy.url))

        result = run_cli(
            ["upload", source, f"{backend.scheme}://{backend.bucket}/{key}"]
        )
        sent = proxy.requests

    assert result.code == 2, result.stderr
    assert sent == []
    assert backend.keys() == []


def test_empty_directories_are_skipped_and_files_uploaded(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """BC-34: the same on every provider: no markers for a/empty/ or b/c/."""
    tree = tmp_path / "tree"
    (tree / "a" / "empty").mkdir(parents=True)
    (tree / "b" / "c").mkdir(parents=True)
    digest = write_random(tree / "d" / "f.txt", 20)
    backend.apply_env(monkeypatch)

    result = run_cli(["upload", tree, backend.uri("p/"), "--quiet"])

    assert result.code == 0, result.stderr
    assert backend.keys() == ["p/d/f.txt"]
    assert sha256_of(backend.read("p/d/f.txt")) == digest
