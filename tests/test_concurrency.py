"""Two cloudput processes on one journal: two `upload` runs of the same files started at
once, and `resume --all` from cron while an upload runs (issue 4, "Journal").

Neither ever sends a part twice (counted at the proxy), each skips what the other
holds, and the exit codes tell the truth: the run that did the work exits 0, a run that
found everything held by a live process exits 7 for `upload` (CONTRACT.md: held
uploads are not done by it) and 0 for `resume --all` (nothing is left undone).
"""

from __future__ import annotations

import collections
import itertools
import signal
from pathlib import Path

import pytest

from cloudput.journal import Journal, UploadRecord
from tests.backends import Backend
from tests.faultproxy import FaultProxy, Match, RecordedRequest
from tests.helpers import (
    FAST_RETRY_ENV,
    CliResult,
    finish,
    journal_path,
    journaled_part_count,
    only_record,
    records,
    run_cli,
    sha256_of,
    start_cloudput,
    wait_until,
    write_random,
)
from tests.test_contract import (
    PART_REQUESTS,
    PROFILES,
    interrupt_upload,
    part_identity,
    upload_args,
    use_env,
)

#: How long the proxy holds each part's answer, so the runs overlap: an upload of
#: three files takes several seconds, longer than a process takes to start.
PART_DELAY_S = 0.5
#: Query names that tell one provider session from another at the same path.
_SESSION_NAMES = ("uploadId", "upload_id")
#: Requests that open an S3 multipart upload, a GCS session (Azure has no such call).
OPENS = Match(
    where=lambda head: (
        head.method == "POST"
        and ("uploads" in head.query or head.query.get("uploadType") == "resumable")
    )
)


def part_key(request: RecordedRequest) -> tuple[str, str, str | None]:
    """Which part of which upload a request carries, across uploads and providers."""
    session = next(
        (request.query[name] for name in _SESSION_NAMES if name in request.query), ""
    )
    return request.path, session, part_identity(request)


def twice_sent(requests: list[RecordedRequest]) -> list[tuple[str, str, str | None]]:
    counts = collections.Counter(part_key(r) for r in requests)
    return [key for key, count in counts.items() if count > 1]


def make_tree(root: Path, files: int, part_bytes: int) -> dict[str, str]:
    """`files` files of two and a half parts each; name -> SHA-256."""
    size_bytes = 2 * part_bytes + part_bytes // 2
    return {
        f"f{index}.bin": write_random(root / f"f{index}.bin", size_bytes)
        for index in range(files)
    }


@pytest.mark.crash
def test_two_uploads_of_the_same_files_at_once_never_send_a_part_twice(
    backend: Backend, tmp_path: Path
) -> None:
    part_bytes = PROFILES[backend.name].crash_part_bytes
    tree = tmp_path / "tree"
    digests = make_tree(tree, 3, part_bytes)
    args = [
        *upload_args(tree, backend.uri("p/"), part_bytes),
        "--concurrency", "2", "--json", "--quiet",
    ]  # fmt: skip
    with FaultProxy(backend.endpoint) as proxy:
        proxy.delay(PART_REQUESTS, PART_DELAY_S, times=None)
        env = {**backend.routed_through(proxy.url), **FAST_RETRY_ENV}

        first = start_cloudput(args, env)
        second = start_cloudput(args, env)
        results = [finish(first, 120), finish(second, 120)]
        parts = proxy.matching(PART_REQUESTS)
        opened = proxy.count(OPENS)

    assert twice_sent(parts) == []
    for name, digest in digests.items():
        assert sha256_of(backend.read(f"p/{name}")) == digest, name
    assert all(record.status == "completed" for record in records())
    assert_one_upload_at_a_time(records())
    assert opened == len(records()) or backend.name == "azure"
    assert_truthful(results, len(digests))


def assert_one_upload_at_a_time(found: list[UploadRecord]) -> None:
    """Never two uploads of one file at once. A run that reached a file only after the
    other had finished it uploads it again (CONTRACT.md: `upload` of a finished upload
    re-uploads it), so a second record must start after the first completed."""
    by_key: dict[str, list[UploadRecord]] = collections.defaultdict(list)
    for record in found:
        by_key[record.key].append(record)
    for key, uploads in by_key.items():
        uploads.sort(key=lambda record: record.initiated_at)
        for earlier, later in itertools.pairwise(uploads):
            assert earlier.completed_at is not None, key
            assert earlier.completed_at <= later.initiated_at, (key, earlier, later)


def assert_truthful(results: list[CliResult], files: int) -> None:
    """Every file is reported by both runs: done by one, skipped as held by the other;
    a run exits 0 only if it skipped nothing, and 7 if it skipped a held upload."""
    done: set[str] = set()
    for result in results:
        lines = result.json_lines()
        assert len(lines) == files, result.stdout + result.stderr
        held = [line for line in lines if line["status"] != "completed"]
        done |= {str(line["source"]) for line in lines if line["status"] == "completed"}
        assert result.code == (7 if held else 0), result.stderr
        assert "Traceback" not in result.stderr
    assert len(done) == files


@pytest.mark.crash
def test_resume_all_from_cron_during_an_upload_skips_it_and_exits_0(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    part_bytes = PROFILES[backend.name].crash_part_bytes
    source = tmp_path / "big.bin"
    digest = write_random(source, 6 * part_bytes)
    args = [
        *upload_args(source, backend.uri("big.bin"), part_bytes),
        "--concurrency", "1", "--json", "--quiet",
    ]  # fmt: skip
    with FaultProxy(backend.endpoint) as proxy, FaultProxy(backend.endpoint) as cron:
        proxy.delay(PART_REQUESTS, PART_DELAY_S, times=None)
        upload = start_cloudput(args, {**backend.routed_through(proxy.url)})
        wait_until(lambda: journaled_part_count() >= 2, 60)
        use_env(monkeypatch, backend.routed_through(cron.url))

        from_cron = run_cli(["resume", "--all", "--json"])
        uploaded = finish(upload, 120)
        cron_parts = cron.matching(PART_REQUESTS)

    assert from_cron.code == 0, from_cron.stderr
    assert from_cron.json_lines() == []
    assert "held" in from_cron.stderr or "holds it" in from_cron.stderr
    assert cron_parts == []
    assert uploaded.code == 0, uploaded.stderr
    assert only_record().status == "completed"
    assert sha256_of(backend.read("big.bin")) == digest


@pytest.mark.crash
def test_resume_all_skips_an_interrupted_upload_another_process_holds(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The hold, not the status, decides: an `interrupted` record that a live process
    has just taken (its status not yet in_progress) is not resumed twice."""
    source = tmp_path / "f.bin"
    digest = write_random(source, 6 * PROFILES[backend.name].crash_part_bytes)
    with FaultProxy(backend.endpoint) as proxy:
        upload_id = interrupt_upload(backend, proxy, source, "f.bin", after_parts=2)
        proxy.clear_requests()
        use_env(monkeypatch, backend.routed_through(proxy.url))
        other = Journal.open(journal_path())
        assert other.hold(upload_id)
        try:
            skipped = run_cli(["resume", "--all", "--json"])
            by_id = run_cli(["resume", upload_id, "--json"])
            sent_while_held = proxy.count(PART_REQUESTS)
        finally:
            other.release(upload_id)
            other.close()

        resumed = run_cli(["resume", "--all", "--json"])

    assert skipped.code == 0, skipped.stderr
    assert skipped.json_lines() == []
    assert by_id.code == 7, by_id.stderr
    assert sent_while_held == 0
    assert resumed.code == 0, resumed.stderr
    assert sha256_of(backend.read("f.bin")) == digest


def test_sigkill_of_the_holder_frees_the_upload_at_once(
    s3: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The hold dies with its process: resume right after a SIGKILL takes it."""
    source = tmp_path / "f.bin"
    digest = write_random(source, 6 * PROFILES["s3"].crash_part_bytes)
    args = [
        *upload_args(source, s3.uri("f.bin"), PROFILES["s3"].crash_part_bytes),
        "--concurrency", "1", "--quiet",
    ]  # fmt: skip
    with FaultProxy(s3.endpoint) as proxy:
        proxy.delay(PART_REQUESTS, PART_DELAY_S, times=None)
        process = start_cloudput(args, s3.routed_through(proxy.url))
        wait_until(lambda: journaled_part_count() >= 2, 60)
        process.send_signal(signal.SIGKILL)
        finish(process)
        proxy.clear_rules()
        use_env(monkeypatch, s3.routed_through(proxy.url))

        resumed = run_cli(["resume", "--all", "--json"])

    assert resumed.code == 0, resumed.stderr
    assert [line["status"] for line in resumed.json_lines()] == ["completed"]
    assert sha256_of(s3.read("f.bin")) == digest
