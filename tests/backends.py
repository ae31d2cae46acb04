"""Test-side view of one bucket on one emulator: make it, fill it, read it, inspect it.

Used by the `backend`, `s3`, `gcs` and `azure` fixtures. It talks to the emulators with
the providers' own SDKs, never through cloudput, so tests check cloudput's work
independently. Nothing here reaches a real cloud.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import boto3
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from google.api_core.exceptions import NotFound
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs_storage

from tests.emulators import AZURITE_ACCOUNT, Emulator, azurite_connection_string

#: Dummy AWS credentials; moto accepts anything unless auth is on.
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: Project id given to google-cloud-storage so it never looks for a real one.
GCS_TEST_PROJECT = "cloudput-test"


def fresh_bucket_name() -> str:
    """A name valid on all three services: lowercase letters, digits and hyphens."""
    return f"t-{uuid.uuid4().hex[:20]}"


class Backend:
    """One fresh bucket (container) on one emulator, plus what a cloudput process needs.

    Attributes:
        name: "s3", "gcs" or "azure" (the pytest id).
        scheme: the target scheme: "s3", "gs" or "az".
        bucket: the bucket or container made for this test.
        endpoint: the emulator's base URL (the upstream to give a FaultProxy).
        env: environment variables that point a cloudput process at the emulator.
    """

    name: ClassVar[str]
    scheme: ClassVar[str]

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.endpoint = emulator.endpoint
        self.bucket = fresh_bucket_name()
        self.env = self.routed_through(self.endpoint)

    def uri(self, key: str = "") -> str:
        """The target form cloudput takes: s3://bucket/key, gs://..., az://..."""
        return f"{self.scheme}://{self.bucket}/{key}"

    def apply_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Put .env into os.environ for this test (for in-process CLI runs)."""
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)

    def routed_through(self, proxy_url: str) -> dict[str, str]:
        """Like .env, but with the emulator's endpoint replaced by `proxy_url`."""
        raise NotImplementedError

    def create_bucket(self) -> None:
        raise NotImplementedError

    def delete_bucket(self) -> None:
        """Best-effort teardown; the emulator is reset or restarted anyway."""
        raise NotImplementedError

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when no object exists at `key`."""
        raise NotImplementedError

    def put(self, key: str, data: bytes) -> None:
        """Create (or replace) an object directly, as another tool would."""
        raise NotImplementedError

    def keys(self) -> list[str]:
        """Every object key in the bucket, sorted."""
        raise NotImplementedError

    def incomplete(self, key: str) -> int:
        """How many unfinished uploads the provider holds for `key`."""
        raise NotImplementedError


class S3Backend(Backend):
    """A bucket on moto's S3 server."""

    name = "s3"
    scheme = "s3"

    def __init__(self, emulator: Emulator) -> None:
        super().__init__(emulator)
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=DUMMY_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=DUMMY_AWS_ENV["AWS_DEFAULT_REGION"],
            config=BotoConfig(retries={"max_attempts": 1, "mode": "standard"}),
        )

    def routed_through(self, proxy_url: str) -> dict[str, str]:
        return {
            **DUMMY_AWS_ENV,
            "AWS_ENDPOINT_URL": proxy_url,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def create_bucket(self) -> None:
        self.client.create_bucket(Bucket=self.bucket)

    def delete_bucket(self) -> None:
        for upload in self._uploads():
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        for key in self.keys():
            self.client.delete_object(Bucket=self.bucket, Key=key)
        self.client.delete_bucket(Bucket=self.bucket)

    def read(self, key: str) -> bytes | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise
        return bytes(response["Body"].read())

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def keys(self) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        found: list[str] = []
        for page in paginator.paginate(Bucket=self.bucket):
            found.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(found)

    def incomplete(self, key: str) -> int:
        """Multipart uploads for `key` still listed by ListMultipartUploads."""
        return sum(1 for upload in self._uploads(prefix=key) if upload["Key"] == key)

    def _uploads(self, prefix: str = "") -> list[dict[str, Any]]:
        paginator = self.client.get_paginator("list_multipart_uploads")
        uploads: list[dict[str, Any]] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            uploads.extend(page.get("Uploads", []))
        return uploads


class GcsBackend(Backend):
    """A bucket on the GCS emulator, reached without credentials."""

    name = "gcs"
    scheme = "gs"

    def __init__(self, emulator: Emulator) -> None:
        super().__init__(emulator)
        self.client = gcs_storage.Client(
            project=GCS_TEST_PROJECT,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": self.endpoint},
        )

    def routed_through(self, proxy_url: str) -> dict[str, str]:
        return {
            "STORAGE_EMULATOR_HOST": proxy_url,
            "GOOGLE_CLOUD_PROJECT": GCS_TEST_PROJECT,
            # Should anything still ask google-auth, skip the metadata server probe.
            "NO_GCE_CHECK": "True",
        }

    def create_bucket(self) -> None:
        self.client.create_bucket(self.bucket)

    def delete_bucket(self) -> None:
        bucket = self.client.bucket(self.bucket)
        for blob in bucket.list_blobs():
            blob.delete()
        bucket.delete()

    def read(self, key: str) -> bytes | None:
        try:
            return bytes(self.client.bucket(self.bucket).blob(key).download_as_bytes())
        except NotFound:
            return None

    def put(self, key: str, data: bytes) -> None:
        self.client.bucket(self.bucket).blob(key).upload_from_string(data)

    def keys(self) -> list[str]:
        return sorted(blob.name for blob in self.client.list_blobs(self.bucket))

    def incomplete(self, key: str) -> int:
        """Always 0: GCS has no call that lists open resumable sessions.

        A session is only known to whoever holds its URL, and the emulator keeps no
        list either. Tests of GCS abort/cleanup must check the session URL itself (a
        status query) or the requests cloudput sent, through a FaultProxy.
        """
        return 0


class AzureBackend(Backend):
    """A container on Azurite, with the development account."""

    name = "azure"
    scheme = "az"

    def __init__(self, emulator: Emulator) -> None:
        super().__init__(emulator)
        self.connection_string = azurite_connection_string(
            f"{self.endpoint}/{AZURITE_ACCOUNT}"
        )
        self.client = BlobServiceClient.from_connection_string(self.connection_string)

    def routed_through(self, proxy_url: str) -> dict[str, str]:
        blob_endpoint = f"{proxy_url.rstrip('/')}/{AZURITE_ACCOUNT}"
        return {
            "AZURE_STORAGE_CONNECTION_STRING": azurite_connection_string(blob_endpoint)
        }

    def create_bucket(self) -> None:
        self.client.create_container(self.bucket)

    def delete_bucket(self) -> None:
        self.client.delete_container(self.bucket)

    def read(self, key: str) -> bytes | None:
        blob = self.client.get_blob_client(self.bucket, key)
        try:
            return bytes(blob.download_blob().readall())
        except ResourceNotFoundError:
            return None

    def put(self, key: str, data: bytes) -> None:
        self.client.get_blob_client(self.bucket, key).upload_blob(data, overwrite=True)

    def keys(self) -> list[str]:
        container = self.client.get_container_client(self.bucket)
        return sorted(blob.name for blob in container.list_blobs())

    def incomplete(self, key: str) -> int:
        """Staged, never committed blocks on the blob; 0 if there is no such blob."""
        blob = self.client.get_blob_client(self.bucket, key)
        try:
            _committed, uncommitted = blob.get_block_list("uncommitted")
        except ResourceNotFoundError:
            return 0
        return len(uncommitted)


BACKEND_CLASSES: dict[str, type[Backend]] = {
    cls.name: cls for cls in (S3Backend, GcsBackend, AzureBackend)
}
