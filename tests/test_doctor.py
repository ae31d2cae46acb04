"""``cloudput doctor``: checks per provider, JSON, and the exit code of the worst check."""

from __future__ import annotations

import time

from cloudput.engine.doctor import check_endpoint
from tests.helpers import run_cli


def checks_of(result) -> dict[str, dict]:
    return {line["check"]: line for line in result.json_lines()}


def test_doctor_passes_for_a_reachable_provider_and_bucket(backend, monkeypatch):
    backend.apply_env(monkeypatch)
    result = run_cli(["doctor", backend.name, "--bucket", backend.bucket, "--json"])
    assert result.code == 0, result.stdout + result.stderr
    checks = checks_of(result)
    for name in ("endpoint", "clock", "credentials", "bucket"):
        assert checks[name]["status"] == "ok", checks[name]
    assert any(name.startswith("sdk ") for name in checks)


def test_doctor_missing_bucket_is_exit_6(backend, monkeypatch):
    backend.apply_env(monkeypatch)
    result = run_cli(
        ["doctor", backend.name, "--bucket", "no-such-bucket-x1", "--json"]
    )
    assert result.code == 6
    assert checks_of(result)["bucket"]["status"] == "fail"


def test_doctor_refused_credentials_is_exit_5(moto_auth_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_auth_server.endpoint)
    result = run_cli(["doctor", "s3", "--json"])
    assert result.code == 5
    assert checks_of(result)["credentials"]["status"] == "fail"


def test_doctor_unreachable_endpoint_is_reported(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    result = run_cli(["doctor", "s3", "--json"])
    assert result.code != 0
    assert checks_of(result)["endpoint"]["status"] == "fail"


def test_doctor_with_no_provider_configured_is_exit_3(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    result = run_cli(["doctor", "--json"])
    statuses = {line["provider"]: line["status"] for line in result.json_lines()}
    assert statuses == {"s3": "skip", "gcs": "skip", "azure": "skip"}
    assert result.code == 3  # nothing was checked: configuration incomplete
    assert "no provider is configured" in result.stderr


def test_clock_skew_beyond_five_minutes_fails(moto_server):
    checks = check_endpoint(
        "s3", moto_server.endpoint, clock=lambda: time.time() + 3600
    )
    clock = next(check for check in checks if check.name == "clock")
    assert clock.status == "fail" and clock.exit_code == 3


def test_unknown_provider_is_exit_2():
    assert run_cli(["doctor", "dropbox"]).code == 2
