"""The cloud SDKs' own upload helpers, as one process per run (so its CPU and RSS count).

Called by benchmarks/run.py: `python benchmarks/peers.py TOOL SOURCE BUCKET KEY`; the
endpoint and credentials come from the environment the harness sets. SOURCE is a file
(uploaded to KEY) or a directory (each file uploaded under the prefix KEY).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MIB = 1024 * 1024
#: What the brief asks of each SDK helper: 8 MiB parts or chunks, 8 threads.
PART_SIZE_BYTES = 8 * MIB
CONCURRENCY = 8


def files_under(source: Path, prefix: str) -> list[tuple[Path, str]]:
    """(file, key) pairs: the file itself, or every file of a directory."""
    if source.is_file():
        return [(source, prefix)]
    return [
        (path, prefix + path.relative_to(source).as_posix())
        for path in sorted(source.rglob("*"))
        if path.is_file()
    ]


def in_threads(
    pairs: list[tuple[Path, str]], send: Callable[[Path, str], None]
) -> None:
    """Upload several files with CONCURRENCY threads; one file is sent inline."""
    if len(pairs) == 1:
        send(*pairs[0])
        return
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        for future in [pool.submit(send, path, key) for path, key in pairs]:
            future.result()


def boto3_upload(pairs: list[tuple[Path, str]], bucket: str) -> None:
    """boto3's managed transfer (s3transfer) with 8 MiB parts and 8 threads."""
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        config=Config(max_pool_connections=CONCURRENCY),
    )
    config = TransferConfig(
        multipart_threshold=PART_SIZE_BYTES,
        multipart_chunksize=PART_SIZE_BYTES,
        max_concurrency=CONCURRENCY,
    )
    if len(pairs) == 1:
        client.upload_file(str(pairs[0][0]), bucket, pairs[0][1], Config=config)
        return
    from boto3.s3.transfer import create_transfer_manager

    with create_transfer_manager(client, config) as manager:
        futures = [manager.upload(str(path), bucket, key) for path, key in pairs]
        for future in futures:
            future.result()


def azure_upload(pairs: list[tuple[Path, str]], container: str) -> None:
    """upload_blob with max_concurrency=8 (threads across files for a directory)."""
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(
        os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    )

    def send(path: Path, key: str) -> None:
        blob = service.get_blob_client(container, key)
        with path.open("rb") as stream:
            blob.upload_blob(stream, overwrite=True, max_concurrency=CONCURRENCY)

    in_threads(pairs, send)


def gcs_upload(pairs: list[tuple[Path, str]], bucket_name: str) -> None:
    """upload_from_filename with an 8 MiB chunk size (threads across files)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project=os.environ.get("GOOGLE_CLOUD_PROJECT", "bench"),
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": os.environ["STORAGE_EMULATOR_HOST"]},
    )
    bucket = client.bucket(bucket_name)

    def send(path: Path, key: str) -> None:
        blob = bucket.blob(key, chunk_size=PART_SIZE_BYTES)
        blob.upload_from_filename(str(path))

    in_threads(pairs, send)


TOOLS = {"boto3": boto3_upload, "azure-sdk": azure_upload, "gcs-sdk": gcs_upload}


def main(argv: list[str]) -> int:
    tool, source, bucket, key = argv
    TOOLS[tool](files_under(Path(source), key), bucket)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
