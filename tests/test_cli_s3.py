"""The S3 lifecycle through the CLI, end to end against moto's server (issue 2).

Round trips, target rules, JSON output, list/show, kill and resume, signals, abort,
changed sources, part-size rules, exit codes and retries. Faults come from a FaultProxy
in front of moto; moto does not check Content-MD5 or part order, so the requests
cloudput sends are asserted as well.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudput.journal import Journal
from cloudput.units import format_size
from tests.backends import DUMMY_AWS_ENV, Backend
from tests.faultproxy import FaultProxy
from tests.helpers import (
    FAST_RETRY_ENV,
    MIB,
    cloudput_command,
    journal_path,
    kill_after_parts,
    only_record,
    parts_of,
    process_env,
    proxy_in_front,
    run_cli,
    run_cloudput,
    sha256_file,
    sha256_of,
    start_cloudput,
    wait_until,
    write_random,
)
from tests.s3_wire import (
    COMPLETE,
    PUT_OBJECT,
    UPLOAD_PART,
    numbers_sent,
    part_match,
    part_number,
)

PART = 5 * MIB
#: How long the proxy holds each UploadPart answer where a kill must land mid-upload.
PART_DELAY_S = 0.3


CONTRACT_FIELDS = {
    "id", "name", "source", "mimeType", "size", "url", "storage_url", "uri",
    "provider", "bucket", "key", "checksum", "parts", "status", "initiated_at",
    "completed_at", "expires_at", "error",
}  # fmt: skip


@pytest.fixture
def direct(s3: Backend, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """In-process cloudput pointed straight at moto."""
    s3.apply_env(monkeypatch)
    for name, value in FAST_RETRY_ENV.items():
        monkeypatch.setenv(name, value)
    return s3


@pytest.fixture
def proxy(s3: Backend, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A FaultProxy before moto; in-process cloudput (and .env for processes) use it."""
    with proxy_in_front(s3, monkeypatch) as running:
        yield running


def make_interrupted(path: Path, proxy: FaultProxy, s3: Backend, key: str) -> str:
    """A 12 MiB upload left `interrupted` (part 2 refused); returns its id."""
    write_random(path, 12 * MIB)
    proxy.respond(part_match(2), 500, times=None)
    result = run_cli(
        ["upload", path, s3.uri(key), "--part-size", "5MiB", "--retries", "0"]
    )
    assert result.code == 7, result.stderr
    proxy.clear_rules()
    record = only_record()
    assert record.status == "interrupted"
    return record.id


# -- round trips --------------------------------------------------------------------


@pytest.mark.parametrize(
    "size_bytes",
    [0, 1, 5 * MIB - 1, 8 * MIB, 8 * MIB + 1, 100 * MIB],
    ids=["0B", "1B", "5MiB-1", "8MiB", "8MiB+1", "100MiB"],
)
def test_round_trip_object_has_the_files_sha256(
    direct: Backend, tmp_path: Path, size_bytes: int
) -> None:
    source = tmp_path / "f.bin"
    digest = write_random(source, size_bytes)

    result = run_cli(["upload", source, direct.uri("obj/f.bin")])

    assert result.code == 0, result.stderr
    assert f"uploaded {source} -> {direct.uri('obj/f.bin')}" in result.stdout
    assert sha256_of(direct.read("obj/f.bin")) == digest
    record = only_record()
    assert record.status == "completed"
    assert record.strategy == ("multipart" if size_bytes >= 8 * MIB else "single")
    assert direct.incomplete("obj/f.bin") == 0


def test_directory_contents_go_under_the_prefix(
    direct: Backend, tmp_path: Path
) -> None:
    tree = tmp_path / "d"
    digests = {
        "a.txt": write_random(tree / "a.txt", 10),
        "sub/b.bin": write_random(tree / "sub" / "b.bin", 1000),
        "sub/deeper/c": write_random(tree / "sub" / "deeper" / "c", 9 * MIB),
    }

    result = run_cli(["upload", tree, direct.uri("p")])

    assert result.code == 0, result.stderr
    assert direct.keys() == sorted(f"p/{name}" for name in digests)
    for name, digest in digests.items():
        assert sha256_of(direct.read(f"p/{name}")) == digest


def test_directory_to_a_prefix_with_slash_gives_the_same_keys(
    direct: Backend, tmp_path: Path
) -> None:
    write_random(tmp_path / "d" / "x" / "y", 5)

    result = run_cli(["upload", tmp_path / "d", direct.uri("p/")])

    assert result.code == 0, result.stderr
    assert direct.keys() == ["p/x/y"]


def test_one_file_to_a_key_uses_exactly_that_key(
    direct: Backend, tmp_path: Path
) -> None:
    digest = write_random(tmp_path / "name.bin", 100)

    assert run_cli(["upload", tmp_path / "name.bin", direct.uri("a/b c+d")]).code == 0

    assert direct.keys() == ["a/b c+d"]
    assert sha256_of(direct.read("a/b c+d")) == digest


@pytest.mark.parametrize("prefix", ["pre/", ""], ids=["prefix", "bucket"])
def test_one_file_to_a_prefix_adds_the_file_name(
    direct: Backend, tmp_path: Path, prefix: str
) -> None:
    write_random(tmp_path / "name.bin", 100)

    assert run_cli(["upload", tmp_path / "name.bin", direct.uri(prefix)]).code == 0

    assert direct.keys() == [f"{prefix}name.bin"]


def test_two_sources_mapping_to_one_key_exit_2_before_any_request(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    write_random(tmp_path / "one" / "x", 10)
    write_random(tmp_path / "two" / "x", 10)

    result = run_cli(["upload", tmp_path / "one", tmp_path / "two", s3.uri("p/")])

    assert result.code == 2
    assert "both map to" in result.stderr
    assert proxy.count() == 0


# -- output, list, show, storage_url -----------------------------------------------


def test_json_output_has_every_contract_field(direct: Backend, tmp_path: Path) -> None:
    source = tmp_path / "f.txt"
    write_random(source, 9 * MIB)

    result = run_cli(["upload", source, direct.uri("k.txt"), "--json", "--quiet"])

    assert result.code == 0, result.stderr
    (data,) = result.json_lines()
    assert set(data) == CONTRACT_FIELDS
    assert set(data["checksum"]) == {"algorithm", "value", "verified"}
    assert data["checksum"]["value"] and data["checksum"]["verified"]
    assert data["name"] == "f.txt" and data["source"] == str(source)
    assert data["mimeType"] == "text/plain"
    assert data["size"] == 9 * MIB and data["parts"] == 2
    assert data["uri"] == direct.uri("k.txt") and data["key"] == "k.txt"
    assert data["provider"] == "s3" and data["bucket"] == direct.bucket
    assert data["url"] == data["storage_url"]
    assert data["status"] == "completed" and data["error"] is None
    assert data["initiated_at"].endswith("Z") and data["completed_at"].endswith("Z")
    assert data["expires_at"] is None


def test_list_and_list_status_show_the_journal(direct: Backend, tmp_path: Path) -> None:
    write_random(tmp_path / "a", 10)
    assert run_cli(["upload", tmp_path / "a", direct.uri("a")]).code == 0
    upload_id = only_record().id

    listed = run_cli(["list"])
    as_json = run_cli(["list", "--json"])
    completed = run_cli(["list", "--status", "completed", "--json"])
    interrupted = run_cli(["list", "--status", "interrupted"])
    bad = run_cli(["list", "--status", "nonsense"])

    assert (
        listed.code == 0 and upload_id in listed.stdout and "completed" in listed.stdout
    )
    assert [row["id"] for row in as_json.json_lines()] == [upload_id]
    assert set(as_json.json_lines()[0]) == CONTRACT_FIELDS
    assert [row["id"] for row in completed.json_lines()] == [upload_id]
    assert interrupted.code == 0 and interrupted.stdout == ""
    assert bad.code == 2


def test_show_and_show_json_give_the_record_and_its_parts(
    direct: Backend, tmp_path: Path
) -> None:
    write_random(tmp_path / "a", 12 * MIB)
    assert (
        run_cli(["upload", tmp_path / "a", direct.uri("a"), "--part-size", "5MiB"]).code
        == 0
    )
    upload_id = only_record().id

    shown = run_cli(["show", upload_id])
    data = run_cli(["show", upload_id, "--json"]).json_lines()[0]

    assert shown.code == 0 and upload_id in shown.stdout and "3 of 3" in shown.stdout
    assert CONTRACT_FIELDS <= set(data)
    assert data["part_size"] == PART
    assert [part["number"] for part in data["parts_done"]] == [1, 2, 3]
    assert [part["size"] for part in data["parts_done"]] == [PART, PART, 2 * MIB]
    assert run_cli(["show", "nosuchid"]).code == 2


def test_storage_url_is_path_style_on_a_custom_endpoint(
    direct: Backend, tmp_path: Path
) -> None:
    write_random(tmp_path / "a", 10)

    result = run_cli(["upload", tmp_path / "a", direct.uri("dir/a b#c.txt"), "--json"])

    url = result.json_lines()[0]["storage_url"]
    assert url == f"{direct.endpoint}/{direct.bucket}/dir/a%20b%23c.txt"


def test_storage_url_uses_aws_public_domain_when_set(
    direct: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_PUBLIC_DOMAIN", "https://cdn.example.com")
    write_random(tmp_path / "a", 10)

    result = run_cli(["upload", tmp_path / "a", direct.uri("dir/a b.txt"), "--json"])

    data = result.json_lines()[0]
    assert data["storage_url"] == "https://cdn.example.com/dir/a%20b.txt"
    assert data["url"] == data["storage_url"]


# -- kill, signals, resume ----------------------------------------------------------


def test_sigkill_then_resume_resends_at_most_concurrency_parts(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    digest = write_random(source, 16 * PART + 123)
    proxy.delay(UPLOAD_PART, 0.3, times=None)
    env = s3.routed_through(proxy.url)
    args = [
        "upload",
        source,
        s3.uri("big"),
        "--part-size",
        "5MiB",
        "--concurrency",
        "2",
    ]

    killed = kill_after_parts(start_cloudput(args, env), 5)
    assert killed.code == -signal.SIGKILL
    proxy.clear_rules()
    time.sleep(PART_DELAY_S + 0.3)  # parts in flight at the kill get recorded
    first = set(numbers_sent(proxy))
    assert len(first) < 17
    proxy.clear_requests()

    resumed = run_cloudput(["resume", only_record().id, "--concurrency", "2"], env)

    assert resumed.code == 0, resumed.stderr
    second = numbers_sent(proxy)
    assert len(first & set(second)) <= 2
    assert first | set(second) == set(range(1, 18))
    assert sha256_of(s3.read("big")) == digest
    # The summary counts what the resume sent, not the whole file.
    sent = sum(PART if number < 17 else 123 for number in set(second))
    assert f"1 uploaded ({format_size(sent)} in " in resumed.stderr
    assert s3.incomplete("big") == 0


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["INT", "TERM"]
)
def test_signal_interrupts_with_resume_command_then_resume_finishes(
    proxy: FaultProxy, s3: Backend, tmp_path: Path, sig: int, code: int
) -> None:
    source = tmp_path / "f.bin"
    digest = write_random(source, 8 * PART)
    proxy.delay(UPLOAD_PART, 0.3, times=None)
    env = s3.routed_through(proxy.url)
    args = ["upload", source, s3.uri("f"), "--part-size", "5MiB", "--concurrency", "2"]

    stopped = kill_after_parts(start_cloudput(args, env), 2, sig)

    record = only_record()
    assert stopped.code == code, stopped.stderr
    assert record.status == "interrupted"
    assert f"cloudput resume {record.id}" in stopped.stderr
    assert "uploaded" not in stopped.stdout
    proxy.clear_rules()
    assert run_cloudput(["resume", "--all"], env).code == 0
    assert sha256_of(s3.read("f")) == digest
    assert only_record().status == "completed"


def test_a_second_sigint_quits_at_once_with_the_resume_command(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    """The first SIGINT lets parts in flight finish; a second quits without waiting
    for them, says how to continue, and resume then finishes the upload."""
    source = tmp_path / "f.bin"
    digest = write_random(source, 8 * PART)
    proxy.delay(UPLOAD_PART, 8.0, times=None)  # outlasts a loaded machine
    env = s3.routed_through(proxy.url)
    args = ["upload", source, s3.uri("f"), "--part-size", "5MiB", "--concurrency", "2"]
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            cloudput_command(args), env=process_env(env), stderr=stderr, text=True
        )
        wait_until(lambda: len(proxy.matching(UPLOAD_PART)) >= 1, 60.0)

        process.send_signal(signal.SIGINT)
        wait_until(lambda: "signal again to quit" in stderr_path.read_text(), 30.0)
        # No part may be in flight at the first signal (all answered, none started):
        # the run may then be over before the second one, which must not matter.
        ended_first = process.poll() is not None
        if not ended_first:
            process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)

    text = stderr_path.read_text()
    lines = text.splitlines()
    assert code == 130, lines
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, lines
    if not ended_first:
        assert lines[-1].endswith("sent again by: cloudput resume --all"), lines
    proxy.clear_rules()
    assert run_cloudput(["resume", "--all"], env).code == 0
    assert sha256_of(s3.read("f")) == digest
    assert only_record().status == "completed"


# -- abort --------------------------------------------------------------------------


def test_abort_leaves_no_multipart_upload_and_is_idempotent(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    upload_id = make_interrupted(tmp_path / "f", proxy, s3, "k")
    assert s3.incomplete("k") == 1

    first = run_cli(["abort", upload_id])
    second = run_cli(["abort", upload_id])

    assert first.code == 0, first.stderr
    assert s3.incomplete("k") == 0
    assert second.code == 0, second.stderr
    assert only_record().status == "aborted"
    assert s3.read("k") is None


def test_abort_of_an_upload_gone_at_the_server_exits_0(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    upload_id = make_interrupted(tmp_path / "f", proxy, s3, "k")
    session = only_record().session
    s3.client.abort_multipart_upload(Bucket=s3.bucket, Key="k", UploadId=session)

    result = run_cli(["abort", upload_id])

    assert result.code == 0, result.stderr
    assert only_record().status == "aborted"


# -- changed source -----------------------------------------------------------------


def test_changed_source_is_refused_on_resume_and_upload_starts_fresh(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    source = tmp_path / "f"
    upload_id = make_interrupted(source, proxy, s3, "k")
    with open(source, "ab") as grow:
        grow.write(b"more")

    refused = run_cli(["resume", upload_id])

    record = only_record()
    assert refused.code == 4, refused.stderr
    assert record.status == "failed" and record.error_code == "source_changed"
    assert s3.incomplete("k") == 0
    again = run_cli(["upload", source, s3.uri("k"), "--part-size", "5MiB"])
    assert again.code == 0, again.stderr
    assert sha256_of(s3.read("k")) == sha256_file(source)


# -- part-size rules ----------------------------------------------------------------


# 5MB and 5242879, and the exact 5 MiB cut, are the BC-01 tests in
# tests/test_field_cases_s3.py.
@pytest.mark.parametrize("part_size", ["4MiB", "6GiB", "0"])
def test_part_size_against_s3_rules_is_refused_before_any_request(
    proxy: FaultProxy, s3: Backend, tmp_path: Path, part_size: str
) -> None:
    write_random(tmp_path / "f", 12_000_000)

    result = run_cli(["upload", tmp_path / "f", s3.uri("k"), "--part-size", part_size])

    assert result.code == 2
    assert "5,242,880" in result.stderr or "5,368,709,120" in result.stderr
    assert proxy.count() == 0


def test_every_part_carries_the_content_md5_of_its_own_body(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    data_path = tmp_path / "f"
    write_random(data_path, 12_000_000)
    data = data_path.read_bytes()

    assert run_cli(["upload", data_path, s3.uri("k"), "--part-size", "5MiB"]).code == 0

    for request in proxy.matching(UPLOAD_PART):
        offset = (part_number(request) - 1) * PART
        body = data[offset : offset + request.body_length]
        expected = base64.b64encode(hashlib.md5(body).digest()).decode()
        assert request.headers["content-md5"] == expected


# -- exit codes ---------------------------------------------------------------------


def test_missing_source_exits_4(direct: Backend, tmp_path: Path) -> None:
    result = run_cli(["upload", tmp_path / "nope", direct.uri("k")])

    assert result.code == 4
    assert "not found" in result.stderr or "not found" in result.stdout


def test_missing_source_json_record_names_the_target(
    direct: Backend, tmp_path: Path
) -> None:
    """A file refused before it is journaled still says where it was going."""
    result = run_cli(["upload", tmp_path / "nope", direct.uri("dir/"), "--json"])

    record = json.loads(result.stdout)
    assert result.code == 4
    assert record["status"] == "failed"
    assert record["error"]["code"] == "source"
    assert (record["provider"], record["bucket"], record["key"]) == (
        "s3",
        direct.bucket,
        "dir/nope",
    )


def test_missing_bucket_exits_6(direct: Backend, tmp_path: Path) -> None:
    write_random(tmp_path / "f", 10)

    result = run_cli(["upload", tmp_path / "f", "s3://no-such-bucket-here/k"])

    assert result.code == 6


def test_refused_credentials_exit_5(
    moto_auth_server: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_auth_server.endpoint)  # type: ignore[attr-defined]
    write_random(tmp_path / "f", 10)

    result = run_cli(["upload", tmp_path / "f", "s3://some-bucket/k"])

    assert result.code == 5, result.stderr
    assert DUMMY_AWS_ENV["AWS_SECRET_ACCESS_KEY"] not in result.stderr.replace(
        "testing", ""
    )


@pytest.mark.parametrize("target", ["http://b/k", "s3://", "s3:/b/k", "b/k", "s3:///k"])
def test_malformed_target_exits_2(direct: Backend, tmp_path: Path, target: str) -> None:
    write_random(tmp_path / "f", 10)

    assert run_cli(["upload", tmp_path / "f", target]).code == 2


@pytest.mark.parametrize(
    "key",
    ["/lead", "a/../b", "..", "./c", "a/./b", "a//b", "a\x01b", "a\nb", "k" * 1025],
    ids=["slash", "dotdot-seg", "dotdot", "dot-lead", "dot-seg", "double", "ctrl", "nl",
         "long"],
)  # fmt: skip
def test_unsafe_key_exits_2_before_any_request(
    proxy: FaultProxy, s3: Backend, tmp_path: Path, key: str
) -> None:
    write_random(tmp_path / "f", 10)

    result = run_cli(["upload", tmp_path / "f", f"s3://{s3.bucket}/{key}"])

    assert result.code == 2
    assert "unsafe key" in result.stderr
    assert proxy.count() == 0


def test_resume_of_a_completed_upload_says_so_and_exits_0(
    direct: Backend, tmp_path: Path
) -> None:
    write_random(tmp_path / "f", 10)
    assert run_cli(["upload", tmp_path / "f", direct.uri("k")]).code == 0

    result = run_cli(["resume", only_record().id])

    assert result.code == 0
    assert "already completed" in result.stdout + result.stderr


def test_resume_of_an_aborted_upload_exits_2(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    upload_id = make_interrupted(tmp_path / "f", proxy, s3, "k")
    assert run_cli(["abort", upload_id]).code == 0

    result = run_cli(["resume", upload_id])

    assert result.code == 2
    assert "aborted" in result.stdout + result.stderr


def test_resume_of_an_unknown_upload_id_exits_2(direct: Backend) -> None:
    # A journal that exists (without one, `resume ID` says there is none, as `show`).
    Journal.open(journal_path()).close()
    result = run_cli(["resume", "0123456789ab"])

    assert result.code == 2
    assert "unknown upload id" in result.stderr


def test_fifo_named_as_source_exits_4_without_blocking(
    s3: Backend, tmp_path: Path
) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    result = run_cloudput(["upload", fifo, s3.uri("k")], s3.env, timeout_s=60)

    assert result.code == 4, result.stderr
    assert "special file" in result.stderr + result.stdout
    assert s3.keys() == []


# -- retries ------------------------------------------------------------------------


def test_part_answered_500_twice_then_ok_succeeds(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    digest = write_random(tmp_path / "f", 12 * MIB)
    proxy.respond(part_match(2), 500, times=2)

    result = run_cli(["upload", tmp_path / "f", s3.uri("k"), "--part-size", "5MiB"])

    assert result.code == 0, result.stderr
    assert proxy.count(part_match(2)) == 3
    assert sha256_of(s3.read("k")) == digest


def test_part_failing_every_retry_exits_7_and_resume_sends_only_it(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    digest = write_random(tmp_path / "f", 12 * MIB)
    proxy.respond(part_match(2), 500, times=None)
    args = [
        "upload",
        tmp_path / "f",
        s3.uri("k"),
        "--part-size",
        "5MiB",
        "--retries",
        "2",
    ]

    failed = run_cli(args)

    assert failed.code == 7, failed.stderr
    assert proxy.count(part_match(2)) == 3
    assert proxy.count(COMPLETE) == 0
    assert only_record().status == "interrupted"
    assert s3.read("k") is None
    proxy.clear_rules()
    proxy.clear_requests()
    resumed = run_cli(["resume", only_record().id])
    assert resumed.code == 0, resumed.stderr
    assert numbers_sent(proxy) == [2]
    sent = proxy.requests
    assert [r for r in sent if COMPLETE(r)] == [sent[-2]]  # then HeadObject
    assert sha256_of(s3.read("k")) == digest
    assert [row.number for row in parts_of(only_record().id)] == [1, 2, 3]
    assert only_record().status == "completed"


# -- what stops a run, what a run reports -------------------------------------------

REFUSED_KEY_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidAccessKeyId</Code>'
    b"<Message>The AWS Access Key Id you provided does not exist in our records."
    b"</Message></Error>"
)


def test_credentials_refused_mid_run_stop_it_instead_of_one_refusal_per_file(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    """CONTRACT: 5 stops the run as soon as it is known. The preflight passes (keys
    revoked after it); every PutObject is refused: the run stops, and the files it did
    not take are reported not started, not sent one refused request each."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for number in range(40):
        (tree / f"f{number:02}.txt").write_bytes(os.urandom(100))
    proxy.respond(
        PUT_OBJECT,
        403,
        REFUSED_KEY_BODY,
        {"Content-Type": "application/xml"},
        times=None,
    )

    result = run_cli(
        ["upload", tree, s3.uri("t/"), "--concurrency", "2", "--retries", "0"]
    )

    assert result.code == 5, result.stderr
    assert proxy.count(PUT_OBJECT) <= 8  # those in flight when the first was refused
    assert "not started" in result.stdout
    assert "40 files:" in result.stderr
    assert s3.keys() == []


def test_a_file_written_to_while_its_single_put_is_in_flight_is_not_uploaded(
    proxy: FaultProxy, s3: Backend, tmp_path: Path
) -> None:
    """The object then holds the file as it was read, not as it is: reported as a
    changed source (exit 4, failed), as a multipart upload's change is at Complete."""
    source = tmp_path / "log.txt"
    source.write_bytes(os.urandom(200_000))
    proxy.delay(PUT_OBJECT, 1.5)  # the object is stored; its answer is held

    def append_once_sent() -> None:
        # Stored at the server while the proxy holds its answer.
        wait_until(lambda: s3.keys() == ["log.txt"], 30)
        with open(source, "ab") as out:
            out.write(b"one more line\n")

    writer = threading.Thread(target=append_once_sent)
    writer.start()
    result = run_cli(["upload", source, s3.uri("log.txt"), "--json"])
    writer.join()

    assert result.code == 4, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "failed"
    assert record["error"]["code"] == "source_changed"
    assert only_record().status == "failed"
