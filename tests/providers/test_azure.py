"""The Azure provider against a real Azurite: block ids, staging, commit, abort, errors.

Only one fault is injected with a wrapper (a commit whose answer was lost, which
Azurite cannot produce); everything else is what Azurite answers.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobClient, BlobServiceClient

from cloudput.engine.plan import make_plan
from cloudput.errors import (
    BadDigestError,
    BucketNotFoundError,
    CredentialsError,
    NotSupportedError,
)
from cloudput.keys import Target
from cloudput.providers.azure import (
    AZURE_LIMITS,
    MAX_BLOCK_ID_BYTES,
    AzureProvider,
    block_id,
    block_prefix,
)
from cloudput.providers.base import (
    MIB,
    Digest,
    Expected,
    ObjectSpec,
    PartSpec,
    ProviderSettings,
    Receipt,
)
from tests.backends import Backend
from tests.faultproxy import FaultProxy
from tests.providers.recording import LARGEST_STREAM_READ_BYTES, RecordingBody

UPLOAD_ID = "0123456789ab"


class BytesBody:
    """A re-readable in-memory Body (put_single and send_part)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size_bytes = len(data)

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)


def md5(data: bytes) -> Digest:
    return Digest("md5", base64.b64encode(hashlib.md5(data).digest()).decode())


def plan(size_bytes: int, part_size_bytes: int) -> list[PartSpec]:
    count = max(1, -(-size_bytes // part_size_bytes))
    return [
        PartSpec(
            n,
            (n - 1) * part_size_bytes,
            min(part_size_bytes, size_bytes - (n - 1) * part_size_bytes),
        )
        for n in range(1, count + 1)
    ]


@pytest.fixture
def provider(
    azure: Backend, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AzureProvider]:
    azure.apply_env(monkeypatch)
    made = AzureProvider(ProviderSettings(concurrency=4, timeout_s=30))
    yield made
    made.close()


def spec_for(
    azure: Backend, key: str, size_bytes: int, upload_id: str = UPLOAD_ID
) -> ObjectSpec:
    return ObjectSpec(
        target=Target("azure", azure.bucket, key),
        size_bytes=size_bytes,
        content_type="application/octet-stream",
        metadata={"origin": "test"},
        upload_id=upload_id,
    )


def raw_blob(azure: Backend, key: str) -> BlobClient:
    service = BlobServiceClient.from_connection_string(
        azure.env["AZURE_STORAGE_CONNECTION_STRING"]
    )
    return service.get_blob_client(azure.bucket, key)


def send_all(
    provider: AzureProvider,
    spec: ObjectSpec,
    session: str,
    data: bytes,
    parts: list[PartSpec],
):
    return [
        provider.send_part(
            spec,
            session,
            p,
            BytesBody(data[p.offset : p.end]),
            md5(data[p.offset : p.end]),
        )
        for p in parts
    ]


def test_block_ids_have_one_width_and_fit_64_bytes() -> None:
    prefix = block_prefix(UPLOAD_ID)
    ids = [
        block_id(prefix, n) for n in (1, 9, 10, 11, 101, 1001, AZURE_LIMITS.max_parts)
    ]

    assert len({len(i) for i in ids}) == 1
    assert len(ids[0].encode()) <= MAX_BLOCK_ID_BYTES
    assert len(set(ids)) == len(ids)


def test_thirteen_blocks_commit_in_order_and_leave_none_uncommitted(
    azure: Backend, provider: AzureProvider
) -> None:
    data = os.urandom(12 * MIB) + b"!"
    parts = plan(len(data), MIB)
    spec = spec_for(azure, "bc19/thirteen.bin", len(data))
    session = provider.start(spec, MIB)

    receipts = send_all(provider, spec, session, data, parts)
    verified = provider.complete(
        spec, session, list(reversed(receipts)), Expected(len(data), whole=(md5(data),))
    )

    committed, uncommitted = raw_blob(azure, spec.target.key).get_block_list("all")
    assert len(parts) == 13
    assert [b.id for b in committed] == [block_id(session, n) for n in range(1, 14)]
    assert uncommitted == []
    assert azure.read(spec.target.key) == data
    assert verified.value == md5(data).value_b64
    assert verified.verified == "block-md5"
    assert verified.remote.metadata == {"origin": "test"}


def test_held_parts_in_a_new_provider_finds_staged_blocks(
    azure: Backend, provider: AzureProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"x" * (5 * MIB // 2)
    parts = plan(len(data), MIB)
    spec = spec_for(azure, "resume/held.bin", len(data))
    session = provider.start(spec, MIB)
    send_all(provider, spec, session, data, parts[:2])

    fresh = AzureProvider(ProviderSettings())
    held = fresh.held_parts(spec, session, parts)
    fresh.close()

    assert sorted(held) == [1, 2]
    assert held[2].etag == block_id(session, 2)
    assert held[2].size_bytes == MIB


def test_held_parts_of_a_blob_that_does_not_exist_is_empty(
    azure: Backend, provider: AzureProvider
) -> None:
    spec = spec_for(azure, "nothing/here.bin", 3 * MIB)

    assert provider.held_parts(spec, block_prefix(UPLOAD_ID), plan(3 * MIB, MIB)) == {}


def test_block_with_a_wrong_md5_is_bad_digest(
    azure: Backend, provider: AzureProvider
) -> None:
    spec = spec_for(azure, "bc23/corrupt.bin", 2 * MIB)
    session = provider.start(spec, MIB)
    body = b"a" * MIB

    with pytest.raises(BadDigestError):
        provider.send_part(
            spec, session, PartSpec(1, 0, MIB), BytesBody(body), md5(b"b" * MIB)
        )

    assert azure.incomplete(spec.target.key) == 0


def test_foreign_block_ids_of_another_length_are_refused_at_start(
    azure: Backend, provider: AzureProvider
) -> None:
    spec = spec_for(azure, "foreign/blocks.bin", 2 * MIB)
    raw_blob(azure, spec.target.key).stage_block("other-tool-1", b"abc")

    with pytest.raises(NotSupportedError, match="another length"):
        provider.start(spec, MIB)


def test_foreign_blocks_staged_mid_upload_make_send_part_say_what_to_do(
    azure: Backend, provider: AzureProvider
) -> None:
    spec = spec_for(azure, "foreign/late.bin", 2 * MIB)
    session = provider.start(spec, MIB)
    raw_blob(azure, spec.target.key).stage_block("x1", b"abc")

    with pytest.raises(NotSupportedError, match="uncommitted blocks"):
        provider.send_part(
            spec, session, PartSpec(1, 0, MIB), BytesBody(b"a" * MIB), md5(b"a" * MIB)
        )


def test_zero_byte_put_single(azure: Backend, provider: AzureProvider) -> None:
    spec = spec_for(azure, "bc12/e.bin", 0)

    verified = provider.put_single(spec, BytesBody(b""), md5(b""))

    assert azure.read("bc12/e.bin") == b""
    assert verified.remote.size_bytes == 0
    assert (
        base64.b64decode(verified.value or "").hex()
        == "d41d8cd98f00b204e9800998ecf8427e"
    )
    assert verified.verified == "md5"


def test_put_single_is_proven_by_the_md5_in_its_answer_without_a_read(
    azure: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = spec_for(azure, "single/one.bin", 5)
    with FaultProxy(azure.endpoint) as proxy:
        for name, value in azure.routed_through(proxy.url).items():
            monkeypatch.setenv(name, value)
        made = AzureProvider(ProviderSettings(concurrency=4, timeout_s=30))
        try:
            verified = made.put_single(spec, BytesBody(b"hello"), md5(b"hello"))
        finally:
            made.close()
        methods = [r.method for r in proxy.requests]

    assert (verified.verified, verified.value) == ("md5", md5(b"hello").value_b64)
    assert verified.remote.size_bytes == 5
    assert methods == ["PUT"]
    assert azure.read("single/one.bin") == b"hello"


def test_put_single_with_a_wrong_md5_is_bad_digest(
    azure: Backend, provider: AzureProvider
) -> None:
    spec = spec_for(azure, "single/corrupt.bin", 5)

    with pytest.raises(BadDigestError):
        provider.put_single(spec, BytesBody(b"hello"), md5(b"jello"))

    assert azure.read("single/corrupt.bin") is None


def test_abort_deletes_a_blob_that_was_never_committed(
    azure: Backend, provider: AzureProvider
) -> None:
    spec = spec_for(azure, "abort/new.bin", 2 * MIB)
    session = provider.start(spec, MIB)
    send_all(provider, spec, session, b"z" * (2 * MIB), plan(2 * MIB, MIB))

    provider.abort(spec, session)
    provider.abort(spec, session)

    assert azure.incomplete(spec.target.key) == 0
    assert azure.read(spec.target.key) is None
    assert azure.keys() == []


def test_abort_keeps_the_content_of_a_blob_that_existed(
    azure: Backend, provider: AzureProvider
) -> None:
    azure.put("abort/old.bin", b"previous content")
    spec = spec_for(azure, "abort/old.bin", 2 * MIB)
    session = provider.start(spec, MIB)
    send_all(provider, spec, session, b"z" * (2 * MIB), plan(2 * MIB, MIB))

    provider.abort(spec, session)

    assert azure.read("abort/old.bin") == b"previous content"


def test_commit_called_again_returns_the_object(
    azure: Backend, provider: AzureProvider
) -> None:
    data = b"q" * (3 * MIB)
    spec = spec_for(azure, "lost/twice.bin", len(data))
    session = provider.start(spec, MIB)
    receipts = send_all(provider, spec, session, data, plan(len(data), MIB))
    expected = Expected(len(data))

    first = provider.complete(spec, session, receipts, expected)
    second = provider.complete(spec, session, receipts, expected)

    assert first.remote.size_bytes == second.remote.size_bytes == len(data)
    assert azure.read(spec.target.key) == data


def test_commit_refused_after_a_lost_answer_returns_the_object(
    azure: Backend, provider: AzureProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Azure answers InvalidBlockList when the blocks were already committed; Azurite
    # accepts the second commit, so the service's answer is injected here.
    data = b"r" * (2 * MIB)
    spec = spec_for(azure, "lost/refused.bin", len(data))
    session = provider.start(spec, MIB)
    receipts = send_all(provider, spec, session, data, plan(len(data), MIB))
    provider.complete(spec, session, receipts, Expected(len(data)))
    refusal = HttpResponseError(message="InvalidBlockList")
    refusal.error_code = "InvalidBlockList"

    def refuse(self: BlobClient, *args: object, **kwargs: object) -> None:
        raise refusal

    monkeypatch.setattr(BlobClient, "commit_block_list", refuse)
    verified = provider.complete(spec, session, receipts, Expected(len(data)))

    assert verified.remote.size_bytes == len(data)


def test_missing_container_is_bucket_not_found(
    azure: Backend, provider: AzureProvider
) -> None:
    with pytest.raises(BucketNotFoundError):
        provider.check_bucket(Target("azure", "no-such-container", ""))


def test_head_of_a_missing_container_is_bucket_not_found(
    azure: Backend, provider: AzureProvider
) -> None:
    with pytest.raises(BucketNotFoundError):
        provider.head(Target("azure", "no-such-container", "k.bin"))


def test_missing_container_on_send_is_bucket_not_found(
    azure: Backend, provider: AzureProvider
) -> None:
    spec = ObjectSpec(
        Target("azure", "no-such-container", "k.bin"), MIB, "application/octet-stream"
    )

    with pytest.raises(BucketNotFoundError):
        provider.send_part(
            spec,
            block_prefix(UPLOAD_ID),
            PartSpec(1, 0, 3),
            BytesBody(b"abc"),
            md5(b"abc"),
        )


def test_wrong_key_is_a_credentials_error(
    azure: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad_key = base64.b64encode(b"not the key" * 4).decode()
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={bad_key};"
        f"BlobEndpoint={azure.endpoint}/devstoreaccount1;",
    )
    provider = AzureProvider(ProviderSettings())

    with pytest.raises(CredentialsError) as caught:
        provider.check_bucket(Target("azure", azure.bucket, ""))

    assert bad_key not in str(caught.value)


def test_no_credentials_names_the_variables() -> None:
    provider = AzureProvider(ProviderSettings(), env={})

    with pytest.raises(CredentialsError, match="AZURE_STORAGE_CONNECTION_STRING"):
        provider.check_bucket(Target("azure", "c", ""))


def test_storage_url_is_the_blob_url(azure: Backend, provider: AzureProvider) -> None:
    url = provider.storage_url(Target("azure", azure.bucket, "dir/a b+c%.txt"))

    assert (
        url == f"{azure.endpoint}/devstoreaccount1/{azure.bucket}/dir/a%20b%2Bc%25.txt"
    )


def test_head_reports_size_md5_and_type(
    azure: Backend, provider: AzureProvider
) -> None:
    spec = spec_for(azure, "head/h.txt", 5)
    provider.put_single(spec, BytesBody(b"hello"), md5(b"hello"))

    remote = provider.head(spec.target)

    assert remote is not None
    assert remote.size_bytes == 5
    assert remote.checksums == {"md5": md5(b"hello").value_b64}
    assert remote.content_type == "application/octet-stream"
    assert provider.head(Target("azure", azure.bucket, "head/absent")) is None


def test_presigned_blocks_and_commit_make_the_blob(
    azure: Backend, provider: AzureProvider
) -> None:
    data = b"p" * (2 * MIB + 7)
    parts = plan(len(data), MIB)
    spec = spec_for(azure, "presign/blocks.bin", len(data))
    session = provider.start(spec, MIB)

    for part in parts:
        body = data[part.offset : part.end]
        request = provider.presign_part(spec, session, part, 300, md5(body).value_b64)
        answer = requests.put(
            request.url, data=body, headers=dict(request.headers), timeout=30
        )
        assert answer.status_code == 201, answer.text
    held = provider.held_parts(spec, session, parts)
    provider.complete(spec, session, list(held.values()), Expected(len(data)))

    assert azure.read(spec.target.key) == data


def test_presigned_single_put_makes_the_blob(
    azure: Backend, provider: AzureProvider
) -> None:
    spec = spec_for(azure, "presign/single.txt", 5)

    request = provider.presign_single(spec, 300, md5(b"hello").value_b64)
    answer = requests.put(
        request.url, data=b"hello", headers=dict(request.headers), timeout=30
    )

    assert answer.status_code == 201, answer.text
    assert azure.read(spec.target.key) == b"hello"


def test_expired_presigned_block_url_is_refused(
    azure: Backend, provider: AzureProvider
) -> None:
    spec = spec_for(azure, "presign/expired.bin", 3)
    request = provider.presign_part(
        spec, block_prefix(UPLOAD_ID), PartSpec(1, 0, 3), -60
    )

    answer = requests.put(
        request.url, data=b"abc", headers=dict(request.headers), timeout=30
    )

    assert answer.status_code == 403


def test_list_incomplete_finds_never_committed_blobs(
    azure: Backend, provider: AzureProvider
) -> None:
    azure.put("cleanup/done.bin", b"done")
    spec = spec_for(azure, "cleanup/staged.bin", 2 * MIB)
    session = provider.start(spec, MIB)
    send_all(provider, spec, session, b"s" * MIB, plan(MIB, MIB))

    found = provider.list_incomplete(Target("azure", azure.bucket, "cleanup/"), 0)
    recent = provider.list_incomplete(Target("azure", azure.bucket, "cleanup/"), 3600)

    assert [(i.target.key, i.session) for i in found] == [
        ("cleanup/staged.bin", session)
    ]
    assert recent == []


@pytest.mark.parametrize("count", [101, pytest.param(1001, marks=pytest.mark.slow)])
def test_many_small_blocks_commit_with_equal_length_ids(
    azure: Backend, provider: AzureProvider, count: int
) -> None:
    data = os.urandom(1024 * (count - 1) + 1)
    parts = plan(len(data), 1024)
    spec = spec_for(azure, f"bc19/{count}.bin", len(data))
    session = provider.start(spec, 1024)

    receipts = send_all(provider, spec, session, data, parts)
    provider.complete(spec, session, receipts, Expected(len(data)))

    committed, uncommitted = raw_blob(azure, spec.target.key).get_block_list("all")
    assert len(committed) == count
    assert uncommitted == []
    assert azure.read(spec.target.key) == data


def test_blocks_sent_from_several_threads_commit_in_file_order(
    azure: Backend, provider: AzureProvider
) -> None:
    data = os.urandom(8 * MIB + 3)
    parts = plan(len(data), MIB)
    spec = spec_for(azure, "threads/eight.bin", len(data))
    session = provider.start(spec, MIB)

    def send(part: PartSpec) -> Receipt:
        body = data[part.offset : part.end]
        return provider.send_part(spec, session, part, BytesBody(body), md5(body))

    with ThreadPoolExecutor(max_workers=4) as pool:
        receipts = list(pool.map(send, reversed(parts)))
    provider.complete(spec, session, receipts, Expected(len(data)))

    assert azure.read(spec.target.key) == data


def test_limits_plan_a_200_gb_file_within_50000_blocks() -> None:
    size_bytes = 50_000 * 4 * MIB + 1  # BC-21

    planned = make_plan(size_bytes, AZURE_LIMITS, part_size_bytes=4 * MIB)

    assert planned.part_count <= AZURE_LIMITS.max_parts
    assert planned.part_size_bytes <= AZURE_LIMITS.max_part_size_bytes


def test_a_block_is_streamed_not_read_whole(
    provider: AzureProvider, azure: Backend
) -> None:
    data = os.urandom(4 * MIB)
    spec = spec_for(azure, "streamed.bin", len(data))
    session = provider.start(spec, len(data))
    body = RecordingBody(data)

    receipt = provider.send_part(
        spec, session, PartSpec(1, 0, len(data)), body, md5(data)
    )
    provider.complete(spec, session, [receipt], Expected(len(data)))

    assert raw_blob(azure, "streamed.bin").download_blob().readall() == data
    assert 0 < body.largest_read <= LARGEST_STREAM_READ_BYTES
