"""--audit-log lines per lifecycle step, --manifest attachments, and the client-side
limits (--bwlimit, --max-requests-per-second) as token buckets."""

from __future__ import annotations

import json

import pytest

from cloudput.engine.throttle import TokenBucket
from tests.helpers import MIB, run_cli, write_random

AUDIT_FIELDS = {
    "request_id",
    "step",
    "started_at",
    "finished_at",
    "upload_id",
    "provider",
    "bucket",
    "key",
    "part",
    "bytes",
    "outcome",
    "error",
}


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_audit_log_has_a_line_per_step_and_no_secret(backend, tmp_path, monkeypatch):
    backend.apply_env(monkeypatch)
    source = tmp_path / "f.bin"
    write_random(source, 11 * MIB)
    audit = tmp_path / "audit.jsonl"
    result = run_cli(
        [
            "upload",
            str(source),
            backend.uri("k"),
            "--part-size",
            "5MiB",
            "--audit-log",
            str(audit),
        ]
    )
    assert result.code == 0, result.stderr
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {line["step"] for line in lines} == {"init", "part", "complete"}
    assert all(set(line) == AUDIT_FIELDS for line in lines)
    parts = [line for line in lines if line["step"] == "part"]
    assert sum(line["bytes"] for line in parts) == 11 * MIB
    assert all(line["outcome"] == "ok" and line["key"] == "k" for line in lines)
    assert len({line["request_id"] for line in lines}) == len(lines)
    text = audit.read_text()
    for secret in ("AccountKey", "Signature", "upload_id=", "testing"):
        assert secret not in text


def test_audit_log_records_abort(s3, tmp_path, monkeypatch):
    s3.apply_env(monkeypatch)
    audit = tmp_path / "audit.jsonl"
    init = run_cli(["init", s3.uri("k"), "--size", str(12 * MIB)])
    upload_id = json.loads(init.stdout)["id"]
    assert run_cli(["abort", upload_id, "--audit-log", str(audit)]).code == 0
    steps = [json.loads(line)["step"] for line in audit.read_text().splitlines()]
    assert steps == ["abort"]


def test_manifest_gets_one_attachment_line_per_completed_upload(
    s3, tmp_path, monkeypatch
):
    s3.apply_env(monkeypatch)
    for name in ("a.txt", "b.png"):
        (tmp_path / "d").mkdir(exist_ok=True)
        (tmp_path / "d" / name).write_bytes(b"x" * 10)
    manifest = tmp_path / "m.jsonl"
    assert (
        run_cli(
            ["upload", str(tmp_path / "d"), s3.uri("p/"), "--manifest", str(manifest)]
        ).code
        == 0
    )
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert sorted(line["name"] for line in lines) == ["a.txt", "b.png"]
    assert all(set(line) == {"id", "name", "mimeType", "size", "url"} for line in lines)
    listed = run_cli(["list", "--attachments", "--json"]).json_lines()
    assert sorted(line["id"] for line in listed) == sorted(line["id"] for line in lines)


def test_token_bucket_holds_the_long_run_rate():
    fake = FakeTime()
    bucket = TokenBucket(1000, clock=fake.clock, sleep=fake.sleep)
    for _ in range(10):
        bucket.take(500)
    # 5,000 tokens at 1,000/s with a 1,000 burst: about 4 s of waiting in all.
    assert sum(fake.slept) == pytest.approx(4.0)


def test_token_bucket_does_not_wait_within_the_burst():
    fake = FakeTime()
    bucket = TokenBucket(10, clock=fake.clock, sleep=fake.sleep)
    assert bucket.take(10) == 0.0
    assert fake.slept == []


def test_bad_bwlimit_is_exit_2(tmp_path):
    assert run_cli(["list", "--bwlimit", "fast"]).code == 2
    assert run_cli(["list", "--max-requests-per-second", "0"]).code == 2
