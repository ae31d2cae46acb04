"""Faults a fresh user met: plans of files above a provider's largest single request,
the part-size notice and the 0-byte plan of `init`, and the hints of a run that failed
before anything was journaled (an unreachable endpoint), in `upload` and `doctor`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cloudput.engine.plan import make_plan
from cloudput.errors import UsageError
from cloudput.providers.azure import AZURE_LIMITS
from cloudput.providers.base import ProviderLimits
from cloudput.providers.gcs import GCS_LIMITS
from cloudput.providers.s3 import S3_LIMITS
from tests.helpers import MIB, run_cli

#: Nothing listens here: every connection is refused at once.
DEAD_ENDPOINT = "http://127.0.0.1:9"
GIB = 1024 * MIB
TEN_GIB = 10 * GIB


@pytest.mark.parametrize("limits", [S3_LIMITS, AZURE_LIMITS], ids=["s3", "azure"])
def test_file_above_the_single_limit_goes_in_parts_whatever_the_threshold(
    limits: ProviderLimits,
) -> None:
    size_bytes = limits.max_single_size_bytes + 1
    plan = make_plan(size_bytes, limits, threshold_bytes=TEN_GIB)

    assert plan.strategy == "multipart"
    assert plan.over_single_limit
    assert plan.part_count <= limits.max_parts


@pytest.mark.parametrize("limits", [S3_LIMITS, AZURE_LIMITS], ids=["s3", "azure"])
def test_no_multipart_above_the_single_limit_is_refused_with_its_hint(
    limits: ProviderLimits,
) -> None:
    with pytest.raises(UsageError) as caught:
        make_plan(limits.max_single_size_bytes + 1, limits, no_multipart=True)

    assert caught.value.hint == "drop --no-multipart"


@pytest.mark.parametrize("no_multipart", [False, True])
def test_gcs_object_above_5_tib_is_refused_without_a_wrong_hint(
    no_multipart: bool,
) -> None:
    size_bytes = GCS_LIMITS.max_single_size_bytes + 1
    with pytest.raises(UsageError) as caught:
        make_plan(
            size_bytes, GCS_LIMITS, threshold_bytes=TEN_GIB, no_multipart=no_multipart
        )

    assert "--no-multipart" not in str(caught.value)


def test_gcs_large_file_below_the_threshold_is_still_one_request() -> None:
    plan = make_plan(6 * GIB, GCS_LIMITS, threshold_bytes=TEN_GIB)

    assert plan.strategy == "single" and not plan.over_single_limit


def test_dry_run_of_6_gib_sparse_file_above_threshold_plans_parts(
    tmp_path: Path,
) -> None:
    sparse = tmp_path / "sp6g.bin"
    with sparse.open("wb") as handle:
        handle.truncate(6 * GIB)

    result = run_cli(
        ["upload", sparse, "s3://bucket/big/", "--dry-run", "--json"]
        + ["--multipart-threshold", "10GiB"]
    )

    assert result.code == 0, result.stdout + result.stderr
    (planned,) = result.json_lines()
    assert planned["strategy"] == "multipart"
    assert planned["parts"] == 768
    assert "maximum of a single request on s3" in result.stderr
    refused = run_cli(
        ["upload", sparse, "s3://bucket/big/", "--dry-run", "--no-multipart"]
    )
    assert refused.code == 2 and "drop --no-multipart" in refused.stdout


def test_dry_run_of_an_empty_file_plans_a_0_byte_part(tmp_path: Path) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")

    result = run_cli(["upload", empty, "s3://bucket/e/", "--dry-run", "--json"])

    assert result.code == 0, result.stderr
    (planned,) = result.json_lines()
    assert (planned["strategy"], planned["part_size"], planned["parts"]) == (
        "single",
        0,
        1,
    )


def test_init_with_a_raised_part_size_says_so_on_stderr(s3, monkeypatch) -> None:
    s3.apply_env(monkeypatch)

    result = run_cli(
        ["init", s3.uri("huge.bin"), "--size", "100GiB", "--part-size", "5MiB"]
    )

    assert result.code == 0, result.stderr
    printed = json.loads(result.stdout)  # stdout stays one JSON document
    assert printed["part_size"] == 11 * MIB
    assert "part size raised from 5,242,880 to 11,534,336 bytes" in result.stderr


def test_init_of_0_bytes_plans_one_empty_part(s3, monkeypatch) -> None:
    s3.apply_env(monkeypatch)

    result = run_cli(["init", s3.uri("empty.bin"), "--size", "0"])

    assert result.code == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["strategy"] == "single"
    assert printed["part_size"] == 0
    assert printed["parts"] == [{"number": 1, "offset": 0, "size": 0}]
    assert result.stderr == ""


def test_unreachable_endpoint_before_the_journal_hints_the_same_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", DEAD_ENDPOINT)
    source = tmp_path / "f"
    source.write_bytes(b"hi\n")

    result = run_cli(["upload", source, "s3://bucket/k"])

    assert result.code == 7, result.stderr
    assert "resume" not in result.stderr
    assert "run the same command again" in result.stderr
    assert not os.path.exists(clean_env)  # indeed nothing was journaled


def test_doctor_does_not_blame_credentials_when_the_endpoint_is_down() -> None:
    result = run_cli(
        ["doctor", "s3", "--bucket", "b", "--endpoint-url", DEAD_ENDPOINT, "--json"]
    )

    checks = {line["check"]: line for line in result.json_lines()}
    assert result.code == 7
    assert checks["endpoint"]["status"] == "fail"
    assert checks["credentials"]["status"] == "skip"
    assert checks["bucket"]["status"] == "skip"
