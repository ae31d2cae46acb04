"""Checks of the shared fixtures themselves: environment hygiene and each Backend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backends import Backend
from tests.emulators import Emulator, MotoServer, http_status


def test_clean_env_hides_real_settings_and_sets_dummies(clean_env: Path) -> None:
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
    assert os.environ["CLOUDPUT_JOURNAL"] == str(clean_env)
    assert "STORAGE_EMULATOR_HOST" not in os.environ
    assert not any(name.startswith("AZURE_") for name in os.environ)
    assert Path(os.environ["HOME"]).is_dir()
    assert os.environ["XDG_DATA_HOME"].startswith(os.environ["HOME"])


def test_backend_put_read_keys(backend: Backend) -> None:
    backend.put("dir/a b+c.txt", b"hello")

    assert backend.read("dir/a b+c.txt") == b"hello"
    assert backend.read("missing") is None
    assert backend.keys() == ["dir/a b+c.txt"]
    assert backend.uri("k") == f"{backend.scheme}://{backend.bucket}/k"


def test_backend_env_reaches_the_emulator_from_a_subprocess(backend: Backend) -> None:
    """A child process given only .env (plus PATH) can list the test's bucket."""
    backend.put("seen.txt", b"x")
    script = {
        "s3": "import boto3; c = boto3.client('s3');"
        "print([o['Key'] for o in c.list_objects_v2(Bucket=B)['Contents']])",
        "gcs": "from google.cloud import storage;"
        "from google.auth.credentials import AnonymousCredentials as A;"
        "c = storage.Client(credentials=A());"
        "print([b.name for b in c.list_blobs(B)])",
        "azure": "import os; from azure.storage.blob import BlobServiceClient as S;"
        "c = S.from_connection_string(os.environ['AZURE_STORAGE_CONNECTION_STRING']);"
        "print([b.name for b in c.get_container_client(B).list_blobs()])",
    }[backend.name]
    env = {**backend.env, "PATH": os.environ["PATH"], "HOME": os.environ["HOME"]}

    result = subprocess.run(
        [sys.executable, "-c", f"B = {backend.bucket!r}; {script}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "seen.txt" in result.stdout


def test_s3_incomplete_counts_open_multipart_uploads(s3: Backend) -> None:
    client = s3.client  # type: ignore[attr-defined]
    client.create_multipart_upload(Bucket=s3.bucket, Key="big")

    assert s3.incomplete("big") == 1
    assert s3.incomplete("big2") == 0


def test_azure_incomplete_counts_uncommitted_blocks(azure: Backend) -> None:
    blob = azure.client.get_blob_client(azure.bucket, "blocks")  # type: ignore[attr-defined]
    assert azure.incomplete("blocks") == 0

    blob.stage_block("YmxvY2stMDAx", b"abc")
    blob.stage_block("YmxvY2stMDAy", b"def")

    assert azure.incomplete("blocks") == 2


def test_gcs_incomplete_is_always_zero(gcs: Backend) -> None:
    assert gcs.incomplete("anything") == 0


def test_routed_through_replaces_the_endpoint(backend: Backend) -> None:
    routed = backend.routed_through("http://127.0.0.1:9")

    assert "127.0.0.1:9" in " ".join(routed.values())
    assert backend.endpoint not in " ".join(routed.values())


def test_moto_auth_server_refuses_dummy_credentials(moto_auth_server: Emulator) -> None:
    import boto3
    from botocore.exceptions import ClientError

    client = boto3.client("s3", endpoint_url=moto_auth_server.endpoint)

    with pytest.raises(ClientError) as caught:
        client.list_buckets()
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_emulator_restart_keeps_serving() -> None:
    with MotoServer() as server:
        server.restart()

        assert http_status(server.port or 0, "GET", "/moto-api/") == 200
    assert not server.is_running
