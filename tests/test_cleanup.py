"""``cloudput cleanup``: unfinished uploads under a prefix are listed (--dry-run) or
aborted; completed objects and uploads held by a live process are never touched."""

from __future__ import annotations

import signal
import time
from datetime import datetime, timezone

from tests.faultproxy import FaultProxy, Match
from tests.helpers import (
    FAST_RETRY_ENV,
    MIB,
    finish,
    journaled_part_count,
    kill_after_parts,
    only_record,
    records,
    run_cloudput,
    start_cloudput,
    wait_until,
    write_random,
)

# GCS needs the session's own host to cancel it; the proxy stays up while cleanup runs.
PART = "1MiB"


def interrupted_upload(backend, tmp_path, proxy, key: str = "p/big.bin") -> dict:
    source = tmp_path / "big.bin"
    write_random(source, 8 * MIB)
    proxy.delay(Match(method="PUT"), 0.2, times=None)
    env = {**backend.routed_through(proxy.url), **FAST_RETRY_ENV}
    part_size = "5MiB" if backend.name == "s3" else PART
    process = start_cloudput(
        [
            "upload",
            str(source),
            backend.uri(key),
            "--part-size",
            part_size,
            "--concurrency",
            "1",
        ],
        env,
    )
    kill_after_parts(process, 1)
    # `--older-than 1s` below: let the upload be older than that, however fast it began.
    started = datetime.fromisoformat(only_record().initiated_at)
    time.sleep(max(0.0, 1.5 - (datetime.now(timezone.utc) - started).total_seconds()))
    return env


def test_dry_run_lists_and_aborts_nothing_then_cleanup_aborts(backend, tmp_path):
    with FaultProxy(backend.endpoint) as proxy:
        env = interrupted_upload(backend, tmp_path, proxy)
        record = only_record()
        dry = run_cloudput(
            ["cleanup", backend.uri("p/"), "--older-than", "1s", "--dry-run"], env
        )
        assert dry.code == 0, dry.stderr
        assert (
            f"would abort {backend.uri('p/big.bin')} (upload {record.id})" in dry.stdout
        )
        assert only_record().status == record.status
        done = run_cloudput(["cleanup", backend.uri("p/"), "--older-than", "1s"], env)
    assert done.code == 0, done.stderr
    assert f"aborted {backend.uri('p/big.bin')} (upload {record.id})" in done.stdout
    assert only_record().status == "aborted"
    assert backend.incomplete("p/big.bin") == 0
    assert backend.read("p/big.bin") is None


def test_cleanup_never_touches_a_completed_object(backend, tmp_path):
    backend.put("p/done.txt", b"finished")
    with FaultProxy(backend.endpoint) as proxy:
        env = interrupted_upload(backend, tmp_path, proxy)
        done = run_cloudput(["cleanup", backend.uri("p/"), "--older-than", "1s"], env)
    assert done.code == 0
    assert "done.txt" not in done.stdout
    assert backend.read("p/done.txt") == b"finished"


def test_recent_uploads_are_left_alone(backend, tmp_path):
    with FaultProxy(backend.endpoint) as proxy:
        env = interrupted_upload(backend, tmp_path, proxy)
        done = run_cloudput(["cleanup", backend.uri("p/"), "--older-than", "1d"], env)
    assert done.code == 0
    if backend.name != "s3":  # moto reports every upload as started in 2010
        assert done.stdout.strip() == ""
        assert only_record().status != "aborted"
        assert "no unfinished upload to clean up in " in done.stderr


def test_foreign_s3_multipart_upload_is_aborted(s3, tmp_path):
    s3.client.create_multipart_upload(Bucket=s3.bucket, Key="p/other-tool.bin")
    done = run_cloudput(["cleanup", s3.uri("p/"), "--older-than", "1s"], s3.env)
    assert done.code == 0
    assert "aborted s3://" in done.stdout and "(not in this journal)" in done.stdout
    assert s3.incomplete("p/other-tool.bin") == 0


def test_upload_held_by_a_live_process_is_not_touched(s3, tmp_path):
    source = tmp_path / "big.bin"
    write_random(source, 30 * MIB)
    with FaultProxy(s3.endpoint) as proxy:
        proxy.delay(Match(method="PUT", query={"partNumber": None}), 1.0, times=None)
        env = {**s3.routed_through(proxy.url), **FAST_RETRY_ENV}
        process = start_cloudput(
            [
                "upload",
                str(source),
                s3.uri("p/big.bin"),
                "--part-size",
                "5MiB",
                "--concurrency",
                "1",
            ],
            env,
        )
        wait_until(lambda: journaled_part_count() >= 1, 60)
        done = run_cloudput(["cleanup", s3.uri("p/"), "--older-than", "1s"], env)
        assert done.code == 0
        assert "big.bin" not in done.stdout
        process.send_signal(signal.SIGINT)
        finish(process)
    assert [r.status for r in records()] == ["interrupted"]


def test_azure_upload_initiated_by_init_with_nothing_staged_is_cleaned_up(
    azure, monkeypatch
):
    import json
    import time

    from tests.helpers import run_cli

    azure.apply_env(monkeypatch)
    init = run_cli(
        [
            "init",
            azure.uri("orph/o.bin"),
            "--size",
            str(12 * MIB),
            "--part-size",
            "8MiB",
        ]
    )
    assert init.code == 0, init.stderr
    upload_id = json.loads(init.stdout)["id"]
    time.sleep(1.2)
    done = run_cli(["cleanup", azure.uri("orph/"), "--older-than", "1s"])
    assert done.code == 0, done.stderr
    assert f"(upload {upload_id})" in done.stdout
    assert only_record().status == "aborted"
