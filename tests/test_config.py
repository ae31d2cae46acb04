"""The config file, CLOUDPUT_* variables and flags: precedence, tenants, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudput.config import load_settings
from cloudput.errors import ConfigError, UsageError
from tests.helpers import run_cli


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_flag_beats_environment_beats_tenant_beats_file(tmp_path, monkeypatch):
    config = write(
        tmp_path / "c.toml", "concurrency = 3\n[tenant.a]\nconcurrency = 4\n"
    )
    settings = load_settings(str(config), "a")
    assert settings.get("concurrency") == 4
    monkeypatch.setenv("CLOUDPUT_CONCURRENCY", "5")
    assert settings.get("concurrency") == 5
    assert settings.get("concurrency", 6) == 6
    assert load_settings(str(config), None).get("concurrency", None) == 5


def test_file_value_applies_without_tenant(tmp_path):
    config = write(tmp_path / "c.toml", 'part_size = "16MiB"\n')
    assert load_settings(str(config), None).get("part_size") == 16 * 1024 * 1024


def test_builtin_defaults_when_nothing_is_set(tmp_path):
    settings = load_settings(None, None)
    assert settings.get("concurrency") == 8
    assert settings.get("multipart_threshold") == 8 * 1024 * 1024


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("concurrency = 0\n", "concurrency"),
        ('part_size = "lots"\n', "part_size"),
        ('checksum = "sha1"\n', "checksum"),
        ("colour = 1\n", "unknown key 'colour'"),
        ("concurrency = [\n", "not valid TOML"),
    ],
)
def test_bad_file_value_is_a_config_error_naming_file_and_key(tmp_path, text, fragment):
    config = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_settings(str(config), None)
    assert fragment in str(caught.value)
    assert "bad.toml" in str(caught.value)


def test_bad_environment_value_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOUDPUT_RETRIES", "many")
    with pytest.raises(ConfigError, match="CLOUDPUT_RETRIES"):
        load_settings(None, None).get("retries")


def test_bad_flag_value_is_a_usage_error():
    with pytest.raises(UsageError, match="--concurrency"):
        load_settings(None, None).get("concurrency", 0)


def test_unknown_tenant_is_a_config_error(tmp_path):
    config = write(tmp_path / "c.toml", "[tenant.a]\nretries = 1\n")
    with pytest.raises(ConfigError, match="tenant 'b'"):
        load_settings(str(config), "b")


def test_missing_explicit_config_file_is_exit_3(tmp_path):
    result = run_cli(["list", "--config", str(tmp_path / "nope.toml")])
    assert result.code == 3
    assert "nope.toml" in result.stderr


def test_tenants_have_separate_journals(tmp_path, monkeypatch):
    monkeypatch.delenv("CLOUDPUT_JOURNAL", raising=False)
    config = write(
        tmp_path / "c.toml",
        f'[tenant.a]\njournal = "{tmp_path / "a.db"}"\n[tenant.b]\njournal = "{tmp_path / "b.db"}"\n',
    )
    a = run_cli(["list", "--config", str(config), "--tenant", "a"])
    b = run_cli(["list", "--config", str(config), "--tenant", "b"])

    # Neither journal exists yet: list names the one it looked for (and makes none).
    assert (a.code, b.code) == (0, 0)
    assert f"no journal at {tmp_path / 'a.db'}" in a.stderr
    assert f"no journal at {tmp_path / 'b.db'}" in b.stderr


def test_tenant_environment_is_applied(tmp_path, monkeypatch):
    config = write(
        tmp_path / "c.toml", '[tenant.a.env]\nCLOUDPUT_TEST_MARKER = "tenant-a"\n'
    )
    monkeypatch.delenv("CLOUDPUT_TEST_MARKER", raising=False)
    assert run_cli(["list", "--config", str(config), "--tenant", "a"]).code == 0
    import os

    assert os.environ.get("CLOUDPUT_TEST_MARKER") == "tenant-a"
    monkeypatch.delenv("CLOUDPUT_TEST_MARKER")


def test_part_size_from_file_against_provider_rules_is_exit_3(
    s3, tmp_path, monkeypatch
):
    s3.apply_env(monkeypatch)
    source = tmp_path / "f.bin"
    source.write_bytes(b"x" * 100)
    config = write(tmp_path / "c.toml", 'part_size = "5MB"\n')
    result = run_cli(["upload", str(source), s3.uri("k"), "--config", str(config)])
    assert result.code == 3
    assert "5,242,880" in result.stderr
    assert s3.read("k") is None


def test_a_variable_that_is_not_a_number_is_exit_3_saying_what_to_use(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("CLOUDPUT_CONCURRENCY", "abc")
    (tmp_path / "f").write_bytes(b"x")

    result = run_cli(["upload", tmp_path / "f", "s3://bucket/k", "--dry-run"])

    assert result.code == 3
    assert result.stderr == (
        "cloudput: error: CLOUDPUT_CONCURRENCY 'abc': use a whole number from 1 to 256\n"
    )


@pytest.mark.parametrize(
    "command", [["upload", "SOURCE", "s3://b/k"], ["doctor", "s3"]]
)
def test_an_aws_profile_that_does_not_exist_is_exit_3_naming_it(
    tmp_path, monkeypatch, command
):
    """A typo in AWS_PROFILE was an internal error (botocore's ProfileNotFound)."""
    source = tmp_path / "f.txt"
    source.write_text("x")
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    args = [str(source) if arg == "SOURCE" else arg for arg in command]

    result = run_cli(args)

    assert result.code == 3, result.stderr
    assert "AWS profile 'no-such-profile' not found" in result.stderr
    assert "internal" not in result.stderr
