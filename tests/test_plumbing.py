"""Plumbing end to end: `init`, `part-url`, plain HTTP PUTs by a client that holds no
credentials, `complete`, `abort`, on every provider's emulator (CONTRACT.md, "Plumbing").

The client side is urllib (and curl once): it sends exactly the method, headers and byte
range `part-url` printed, and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cloudput.providers import open_provider
from cloudput.providers.base import ProviderLimits, ProviderSettings
from tests.backends import Backend
from tests.helpers import MIB, CliResult, journal_path, only_record, run_cli

#: Seconds to wait past a 1-second --ttl so that the URL has surely expired.
EXPIRY_WAIT_S = 2.5
#: The multipart threshold in these tests: below every multipart test object's size.
MULTIPART_THRESHOLD_BYTES = 2 * MIB


def limits_of(backend: Backend) -> ProviderLimits:
    provider = open_provider(
        {"s3": "s3", "gs": "gcs", "az": "azure"}[backend.scheme], ProviderSettings()
    )
    try:
        return provider.limits
    finally:
        provider.close()


def multipart_size(limits: ProviderLimits) -> tuple[int, int]:
    """(part size, object size): three parts, the last one short. GCS's emulator wants
    chunks of 1 MiB or more (its appending is quadratic)."""
    part_size = max(limits.min_part_size_bytes, MIB)
    return part_size, 2 * part_size + 12_345


def ok(result: CliResult) -> dict[str, Any]:
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def init(backend: Backend, key: str, size: int, *extra: str) -> dict[str, Any]:
    return ok(run_cli(["init", backend.uri(key), "--size", str(size), *extra]))


def put(request: dict[str, Any], data: bytes) -> tuple[int, dict[str, str]]:
    """Send one part as a client without credentials: the given method, headers and
    bytes offset..offset+size-1, nothing else. Returns (status, response headers)."""
    body = data[request["offset"] : request["offset"] + request["size"]]
    sent = urllib.request.Request(
        request["url"], data=body, method=request["method"], headers=request["headers"]
    )
    try:
        with urllib.request.urlopen(sent, timeout=60) as answer:
            return answer.status, dict(answer.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def put_with_curl(request: dict[str, Any], data: bytes, tmp_path: Path) -> int:
    part = tmp_path / f"part-{request['offset']}.bin"
    part.write_bytes(data[request["offset"] : request["offset"] + request["size"]])
    args = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X"]
    args += [request["method"], "--upload-file", str(part)]
    for name, value in request["headers"].items():
        args += ["-H", f"{name}: {value}"]
    done = subprocess.run(
        [*args, request["url"]], capture_output=True, text=True, timeout=60, check=True
    )
    return int(done.stdout)


def send_all(
    upload: dict[str, Any], data: bytes, first: int = 1
) -> list[dict[str, Any]]:
    """part-url and PUT each part from `first` on, in order; returns the --parts
    list (each PUT's ETag, "" where it returns none)."""
    reported = []
    for part in upload["parts"][first - 1 :]:
        request = ok(run_cli(["part-url", upload["id"], str(part["number"])]))
        status, headers = put(request, data)
        assert status in (200, 201, 308), f"part {part['number']}: HTTP {status}"
        reported.append({"number": part["number"], "etag": headers.get("ETag", "")})
    return reported


@pytest.fixture
def env(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Backend:
    backend.apply_env(monkeypatch)
    # Objects of 2 MiB and more go in parts, so that every provider's test object does.
    monkeypatch.setenv("CLOUDPUT_MULTIPART_THRESHOLD", str(MULTIPART_THRESHOLD_BYTES))
    return backend


def test_init_part_url_put_complete_round_trip(env, tmp_path):
    limits = limits_of(env)
    part_size, size = multipart_size(limits)
    data = os.urandom(size)
    upload = init(env, "dir/obj.bin", size, "--part-size", str(part_size))
    assert upload["strategy"] == limits.strategy
    assert upload["part_size"] == part_size
    assert [p["size"] for p in upload["parts"]] == [part_size, part_size, 12_345]
    assert [p["offset"] for p in upload["parts"]] == [0, part_size, 2 * part_size]
    first = 1
    if shutil.which("curl"):
        request = ok(run_cli(["part-url", upload["id"], "1"]))
        assert put_with_curl(request, data, tmp_path) in (200, 201, 308)
        first = 2
    send_all(upload, data, first)
    done = ok(run_cli(["complete", upload["id"]]))
    assert done["status"] == "completed"
    assert done["size"] == size
    assert done["source"] == ""
    assert env.read("dir/obj.bin") == data


def test_complete_takes_the_parts_from_a_file(env, tmp_path):
    part_size, size = multipart_size(limits_of(env))
    data = os.urandom(size)
    upload = init(env, "k", size, "--part-size", str(part_size))
    reported = send_all(upload, data)
    parts_file = tmp_path / "parts.json"
    parts_file.write_text(json.dumps(reported))
    done = ok(run_cli(["complete", upload["id"], "--parts", str(parts_file)]))
    assert done["status"] == "completed"
    assert env.read("k") == data
    attachments = run_cli(["list", "--attachments", "--json"]).json_lines()
    assert [a["id"] for a in attachments] == [upload["id"]]


def test_complete_reads_the_parts_from_stdin(env, monkeypatch):
    part_size, size = multipart_size(limits_of(env))
    data = os.urandom(size)
    upload = init(env, "k", size, "--part-size", str(part_size))
    reported = send_all(upload, data)
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(reported)))
    done = ok(run_cli(["complete", upload["id"], "--parts", "-"]))
    assert done["status"] == "completed"
    assert env.read("k") == data


@pytest.mark.parametrize("size", [0, 1000], ids=["empty", "small"])
def test_single_strategy_sends_one_put(env, size):
    data = os.urandom(size)
    upload = init(env, "one.txt", size)
    assert upload["strategy"] == "single"
    assert upload["parts"] == [{"number": 1, "offset": 0, "size": size}]
    reported = send_all(upload, data)
    done = ok(run_cli(["complete", upload["id"]]))
    assert done["status"] == "completed"
    assert done["mimeType"] == "text/plain"
    assert env.read("one.txt") == data
    assert len(reported) == 1


def test_no_multipart_makes_a_large_object_single(env):
    part_size, size = multipart_size(limits_of(env))
    upload = init(env, "k", size, "--no-multipart")
    assert upload["strategy"] == "single"
    assert len(upload["parts"]) == 1


def test_complete_before_every_part_is_sent_is_exit_7_then_works(env):
    part_size, size = multipart_size(limits_of(env))
    data = os.urandom(size)
    upload = init(env, "k", size, "--part-size", str(part_size))
    first = ok(run_cli(["part-url", upload["id"], "1"]))
    assert put(first, data)[0] in (200, 201, 308)
    early = run_cli(["complete", upload["id"]])
    assert early.code == 7, early.stderr
    assert "part(s) 2-3" in early.stderr
    for number in (2, 3):
        request = ok(run_cli(["part-url", upload["id"], str(number)]))
        assert put(request, data)[0] in (200, 201, 308)
    assert ok(run_cli(["complete", upload["id"]]))["status"] == "completed"
    assert env.read("k") == data


def test_abort_of_a_plumbing_upload(env):
    part_size, size = multipart_size(limits_of(env))
    data = os.urandom(size)
    upload = init(env, "k", size, "--part-size", str(part_size))
    first = ok(run_cli(["part-url", upload["id"], "1"]))
    assert put(first, data)[0] in (200, 201, 308)
    aborted = run_cli(["abort", upload["id"], "--json"])
    assert aborted.code == 0, aborted.stderr
    assert json.loads(aborted.stdout)["status"] == "aborted"
    assert env.incomplete("k") == 0
    assert env.read("k") is None
    again = run_cli(["part-url", upload["id"], "2"])
    assert again.code == 2 and "aborted" in again.stderr


def test_resume_refuses_a_plumbing_upload(env):
    upload = init(env, "k", 10)
    refused = run_cli(["resume", upload["id"]])
    assert refused.code == 2
    assert "cloudput init" in refused.stderr or "cloudput init" in refused.stdout
    everything = run_cli(["resume", "--all"])
    assert everything.code == 0, everything.stderr
    assert only_record().status == "initiated"


def test_bad_input_is_exit_2_before_any_request(env):
    upload = init(env, "k", 10)
    cases = [
        ["part-url", "000000000000", "1"],
        ["part-url", upload["id"], "0"],
        ["part-url", upload["id"], "2"],
        ["part-url", upload["id"], "1", "--ttl", "8d"],
        ["part-url", upload["id"], "1", "--ttl", "soon"],
        ["part-url", upload["id"], "1", "--content-md5", "not-an-md5"],
        ["complete", "000000000000"],
        ["init", env.uri("prefix/"), "--size", "10"],
        ["init", env.uri("k2"), "--size", "ten"],
    ]
    for args in cases:
        result = run_cli(args)
        assert result.code == 2, (args, result.stderr)


def test_complete_refuses_a_part_list_that_misses_a_part(env, tmp_path):
    part_size, size = multipart_size(limits_of(env))
    upload = init(env, "k", size, "--part-size", str(part_size))
    parts_file = tmp_path / "parts.json"
    parts_file.write_text(json.dumps([{"number": 1, "etag": "x"}]))
    result = run_cli(["complete", upload["id"], "--parts", str(parts_file)])
    assert result.code == 2, result.stderr


def test_record_expires_at_follows_the_urls_issued(env):
    upload = init(env, "k", 10)
    request = ok(run_cli(["part-url", upload["id"], "1", "--ttl", "2h"]))
    assert request["expires_at"] is not None
    shown = ok(run_cli(["show", upload["id"], "--json"]))
    assert shown["expires_at"] == max(request["expires_at"], upload["expires_at"] or "")


def test_s3_part_size_below_the_minimum_is_exit_2(s3, monkeypatch):
    s3.apply_env(monkeypatch)
    result = run_cli(["init", s3.uri("k"), "--size", "20MiB", "--part-size", "1MiB"])
    assert result.code == 2, result.stderr
    assert s3.incomplete("k") == 0


def test_s3_content_md5_is_signed_into_the_part_url(s3, monkeypatch):
    s3.apply_env(monkeypatch)
    part_size, size = multipart_size(limits_of(s3))
    data = os.urandom(size)
    upload = init(s3, "k", size, "--part-size", str(part_size))
    for part in upload["parts"]:
        chunk = data[part["offset"] : part["offset"] + part["size"]]
        md5 = base64.b64encode(hashlib.md5(chunk).digest()).decode()
        request = ok(
            run_cli(
                ["part-url", upload["id"], str(part["number"]), "--content-md5", md5]
            )
        )
        assert request["headers"]["Content-MD5"] == md5
        assert "content-md5" in request["url"].lower()  # among X-Amz-SignedHeaders
        assert put(request, data)[0] == 200
    assert ok(run_cli(["complete", upload["id"]]))["status"] == "completed"
    assert s3.read("k") == data


def test_gcs_part_url_expires_with_the_session_not_the_ttl(gcs, monkeypatch):
    gcs.apply_env(monkeypatch)
    upload = init(gcs, "k", 10)
    short = ok(run_cli(["part-url", upload["id"], "1", "--ttl", "1s"]))
    assert short["expires_at"] == upload["expires_at"]
    assert "Content-Range" in short["headers"]


def test_azure_expired_sas_is_refused_and_a_fresh_part_url_works(azure, monkeypatch):
    azure.apply_env(monkeypatch)
    data = os.urandom(3000)
    upload = init(azure, "k", len(data))
    assert upload["strategy"] == "single"  # below the multipart threshold
    stale = ok(run_cli(["part-url", upload["id"], "1", "--ttl", "1s"]))
    time.sleep(EXPIRY_WAIT_S)
    assert put(stale, data)[0] == 403
    fresh = ok(run_cli(["part-url", upload["id"], "1"]))
    assert put(fresh, data)[0] == 201
    assert ok(run_cli(["complete", upload["id"]]))["status"] == "completed"
    assert azure.read("k") == data


def test_azure_expired_block_sas_is_refused(azure, monkeypatch):
    azure.apply_env(monkeypatch)
    data = os.urandom(3000)
    monkeypatch.setenv("CLOUDPUT_MULTIPART_THRESHOLD", "1")
    upload = init(azure, "k2", len(data), "--part-size", "1000")
    assert upload["strategy"] == "multipart"
    stale = ok(run_cli(["part-url", upload["id"], "2", "--ttl", "1s"]))
    time.sleep(EXPIRY_WAIT_S)
    assert put(stale, data)[0] == 403
    send_all(upload, data)
    assert ok(run_cli(["complete", upload["id"]]))["status"] == "completed"
    assert azure.read("k2") == data


def test_signed_urls_appear_only_on_the_stdout_of_part_url(env, tmp_path):
    """Signatures (S3 X-Amz-Signature, Azure sig=) and GCS session ids are printed by
    part-url and nowhere else: not in logs, errors, list/show, nor (except the GCS
    session URL, which complete and abort need) the journal."""
    part_size, size = multipart_size(limits_of(env))
    data = os.urandom(size)
    log = tmp_path / "debug.log"
    verbose = ["-vv", "--log-file", str(log)]
    upload = init(env, "k", size, "--part-size", str(part_size), *verbose)
    requests = [
        ok(run_cli(["part-url", upload["id"], str(part["number"]), *verbose]))
        for part in upload["parts"]
    ]
    for request in requests:
        assert put(request, data)[0] in (200, 201, 308)
    completed = run_cli(["complete", upload["id"], *verbose])
    refused = run_cli(["part-url", upload["id"], "1", *verbose])
    shown = run_cli(["show", upload["id"], "--json"])
    listed = run_cli(["list", "--json"])
    outside = "\n".join(
        [completed.stdout, completed.stderr, refused.stderr, shown.stdout]
        + [listed.stdout, log.read_text()]
    )
    journal = journal_path().read_bytes().decode("latin-1")
    secrets = [secret_of(request["url"]) for request in requests]
    assert all(secrets)
    for secret in secrets:
        assert secret not in outside
        if upload["strategy"] != "resumable":  # a GCS session URL must be journaled
            assert secret not in journal


def secret_of(url: str) -> str:
    """The part of a request URL that grants access: a signature or a session id."""
    query = url.partition("?")[2]
    for field in query.split("&"):
        name, _, value = field.partition("=")
        if name in ("X-Amz-Signature", "sig", "upload_id") and value:
            return value
    return ""
