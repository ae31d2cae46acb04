"""GcsProvider against the real GCS emulator: sessions, resume, single uploads, errors.

Requests are observed with a response hook on the provider's own HTTP session; nothing
is mocked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from cloudput.checksums import digest_of
from cloudput.errors import (
    CloudputError,
    CredentialsError,
    IntegrityError,
    NotSupportedError,
    TransientError,
    UploadGoneError,
)
from cloudput.keys import Target
from cloudput.providers.base import (
    MIB,
    Expected,
    ObjectSpec,
    PartSpec,
    ProviderSettings,
)
from cloudput.providers.gcs import (
    CHUNK_QUANTUM_BYTES,
    GcsProvider,
    SessionHandle,
    persisted_offset,
)
from tests.backends import Backend
from tests.providers.recording import LARGEST_STREAM_READ_BYTES, RecordingBody

CHUNK_BYTES = 1 * MIB
EMPTY_MD5 = "1B2M2Y8AsgTpgAmY7PhCfg=="  # base64 of d41d8cd98f00b204e9800998ecf8427e


class BytesBody:
    """A re-readable in-memory Body."""

    def __init__(self, data: bytes):
        self.data = data
        self.size_bytes = len(data)

    def open(self):  # type: ignore[no-untyped-def]
        import io

        return io.BytesIO(self.data)


@pytest.fixture
def provider(gcs: Backend, monkeypatch: pytest.MonkeyPatch) -> Iterator[GcsProvider]:
    gcs.apply_env(monkeypatch)
    made = GcsProvider(ProviderSettings(concurrency=2, timeout_s=30))
    yield made
    made.close()


def new_provider() -> GcsProvider:
    """A second instance: what a new process would build (no memory of sessions)."""
    return GcsProvider(ProviderSettings(concurrency=2, timeout_s=30))


def spec_for(gcs: Backend, key: str, size_bytes: int, **extra: object) -> ObjectSpec:
    target = Target("gcs", gcs.bucket, key)
    extra.setdefault("checksum_algorithm", "crc32c")
    return ObjectSpec(target, size_bytes, "application/octet-stream", **extra)  # type: ignore[arg-type]


def plan(size_bytes: int, chunk_bytes: int = CHUNK_BYTES) -> list[PartSpec]:
    offsets = range(0, size_bytes, chunk_bytes)
    return [
        PartSpec(n, offset, min(chunk_bytes, size_bytes - offset))
        for n, offset in enumerate(offsets, start=1)
    ]


def expected_for(data: bytes) -> Expected:
    whole = tuple(d for d in (digest_of(data, "crc32c"), digest_of(data, "md5")) if d)
    return Expected(len(data), whole=whole)


def send(
    provider: GcsProvider, spec: ObjectSpec, session: str, data: bytes, part: PartSpec
):  # type: ignore[no-untyped-def]
    body = data[part.offset : part.end]
    return provider.send_part(
        spec, session, part, BytesBody(body), digest_of(body, "crc32c")
    )


def record_requests(provider: GcsProvider) -> list[requests.PreparedRequest]:
    seen: list[requests.PreparedRequest] = []

    def hook(response: requests.Response, *args: object, **kwargs: object) -> None:
        seen.append(response.request)

    provider._http().hooks["response"].append(hook)
    return seen


def sent_bytes(request: requests.PreparedRequest) -> int:
    """The body length a request declared (a part is streamed, not held)."""
    return int(request.headers.get("Content-Length", "0"))


def test_round_trip_in_chunks_with_a_short_last_chunk(
    provider: GcsProvider, gcs: Backend
) -> None:
    data = os.urandom(3 * CHUNK_BYTES + 12_345)
    spec = spec_for(
        gcs, "dir/a b+c.bin", len(data), metadata={"k": "v"}, cache_control="no-cache"
    )
    session = provider.start(spec, CHUNK_BYTES)
    seen = record_requests(provider)

    receipts = [send(provider, spec, session, data, part) for part in plan(len(data))]
    verified = provider.complete(spec, session, receipts, expected_for(data))

    assert gcs.read("dir/a b+c.bin") == data
    assert verified.verified == "crc32c+md5"
    assert verified.value == digest_of(data, "crc32c").value_b64  # type: ignore[union-attr]
    assert verified.remote.metadata == {"k": "v"}
    lengths = [sent_bytes(r) for r in seen if r.method == "PUT"]
    assert lengths == [CHUNK_BYTES] * 3 + [12_345]
    assert all(n % CHUNK_QUANTUM_BYTES == 0 for n in lengths[:-1])
    assert [r.headers["Content-Range"] for r in seen][-1] == (
        f"bytes {3 * CHUNK_BYTES}-{len(data) - 1}/{len(data)}"
    )


def test_held_parts_of_a_fresh_session_is_empty(
    provider: GcsProvider, gcs: Backend
) -> None:
    spec = spec_for(gcs, "fresh.bin", 2 * CHUNK_BYTES)
    session = provider.start(spec, CHUNK_BYTES)

    # The emulator answers `bytes=0-0` here: that is no bytes, not one.
    assert new_provider().held_parts(spec, session, plan(spec.size_bytes)) == {}


def test_resume_in_a_new_provider_continues_from_the_persisted_offset(
    provider: GcsProvider, gcs: Backend
) -> None:
    data = os.urandom(4 * CHUNK_BYTES + 100)
    spec = spec_for(gcs, "resume.bin", len(data))
    parts = plan(len(data))
    session = provider.start(spec, CHUNK_BYTES)
    for part in parts[:2]:
        send(provider, spec, session, data, part)
    provider.close()

    later = new_provider()
    held = later.held_parts(spec, session, parts)
    seen = record_requests(later)
    receipts = [
        send(later, spec, session, data, part)
        for part in parts
        if part.number not in held
    ]
    verified = later.complete(
        spec, session, list(held.values()) + receipts, expected_for(data)
    )

    assert sorted(held) == [1, 2]
    assert (
        seen[0].headers["Content-Range"]
        == f"bytes {2 * CHUNK_BYTES}-{3 * CHUNK_BYTES - 1}/{len(data)}"
    )
    assert verified.remote.size_bytes == len(data)
    assert gcs.read("resume.bin") == data


def test_send_part_continues_from_an_offset_inside_the_part(
    provider: GcsProvider, gcs: Backend
) -> None:
    """GCS may persist fewer bytes than sent (BC-14 B): go on from exactly there."""
    data = os.urandom(2 * CHUNK_BYTES)
    spec = spec_for(gcs, "short.bin", len(data))
    session = provider.start(spec, CHUNK_BYTES)
    url = SessionHandle.decode(session).url
    first = data[:CHUNK_QUANTUM_BYTES]
    answer = requests.put(
        url,
        data=first,
        headers={"Content-Range": f"bytes 0-{len(first) - 1}/{len(data)}"},
    )
    assert answer.status_code == 308

    later = new_provider()
    seen = record_requests(later)
    receipts = [send(later, spec, session, data, part) for part in plan(len(data))]
    later.complete(spec, session, receipts, expected_for(data))

    chunk_ranges = [r.headers["Content-Range"] for r in seen if sent_bytes(r)]
    assert (
        chunk_ranges[0] == f"bytes {CHUNK_QUANTUM_BYTES}-{CHUNK_BYTES - 1}/{len(data)}"
    )
    assert gcs.read("short.bin") == data


def test_complete_in_a_new_process_finds_the_finished_object(
    provider: GcsProvider, gcs: Backend
) -> None:
    """After the final chunk the emulator answers 404 to a status query."""
    data = os.urandom(CHUNK_BYTES + 1)
    spec = spec_for(gcs, "lost-answer.bin", len(data))
    session = provider.start(spec, CHUNK_BYTES)
    for part in plan(len(data)):
        send(provider, spec, session, data, part)

    verified = new_provider().complete(spec, session, [], expected_for(data))

    assert verified.verified == "crc32c+md5"


def test_held_parts_raises_upload_gone_for_a_dead_session(
    provider: GcsProvider, gcs: Backend
) -> None:
    spec = spec_for(gcs, "dead.bin", 2 * CHUNK_BYTES)
    session = provider.start(spec, CHUNK_BYTES)
    url = SessionHandle.decode(session).url
    dead = SessionHandle(url + "x", 0.0, "0").encode()

    with pytest.raises(UploadGoneError):
        provider.held_parts(spec, dead, plan(spec.size_bytes))


def test_put_single_of_zero_bytes(provider: GcsProvider, gcs: Backend) -> None:
    spec = spec_for(gcs, "e.bin", 0, checksum_algorithm="md5")

    verified = provider.put_single(spec, BytesBody(b""), digest_of(b"", "md5"))

    assert gcs.read("e.bin") == b""
    assert verified.remote.size_bytes == 0
    assert verified.remote.checksums["md5"] == EMPTY_MD5
    assert verified.algorithm == "md5"
    assert verified.verified == "crc32c+md5"


def test_put_single_sends_a_generation_precondition(
    provider: GcsProvider, gcs: Backend
) -> None:
    gcs.put("pre.bin", b"old")
    old = provider.head(Target("gcs", gcs.bucket, "pre.bin"))
    seen = record_requests(provider)
    spec = spec_for(gcs, "pre.bin", 5)

    provider.put_single(spec, BytesBody(b"hello"), digest_of(b"hello", "crc32c"))

    query = parse_qs(urlsplit(seen[-1].url or "").query)
    assert old is not None and query["ifGenerationMatch"] == [old.generation]
    assert gcs.read("pre.bin") == b"hello"


def test_a_first_single_upload_with_a_digest_is_one_request(
    provider: GcsProvider, gcs: Backend
) -> None:
    gcs.put("one.bin", b"old")
    seen = record_requests(provider)

    provider.put_single(
        spec_for(gcs, "one.bin", 5), BytesBody(b"hello"), digest_of(b"hello", "crc32c")
    )

    assert [request.method for request in seen] == ["POST"]
    assert "ifGenerationMatch" not in parse_qs(urlsplit(seen[0].url or "").query)
    assert gcs.read("one.bin") == b"hello"


def lose_first_answer(provider: GcsProvider, method: str) -> list[str]:
    """The first ``method`` request reaches the server, then its answer is lost."""
    calls: list[str] = []

    def hook(response: requests.Response, *args: object, **kwargs: object) -> None:
        calls.append(str(response.request.method))
        if response.request.method == method and calls.count(method) == 1:
            raise requests.ConnectionError("connection reset before the answer")

    provider._http().hooks["response"].append(hook)
    return calls


def test_a_retried_single_upload_whose_answer_was_lost_is_confirmed_not_resent(
    provider: GcsProvider, gcs: Backend
) -> None:
    spec = spec_for(gcs, "lost.bin", 5)
    digest = digest_of(b"hello", "crc32c")
    calls = lose_first_answer(provider, "POST")
    with pytest.raises(TransientError):
        provider.put_single(spec, BytesBody(b"hello"), digest)

    verified = provider.put_single(spec, BytesBody(b"hello"), digest)

    assert calls == ["POST", "GET"]
    assert verified.verified == "crc32c"
    assert gcs.read("lost.bin") == b"hello"


def test_a_retried_single_upload_that_did_not_land_is_sent_with_a_precondition(
    provider: GcsProvider, gcs: Backend
) -> None:
    gcs.put("again.bin", b"old")
    spec = spec_for(gcs, "again.bin", 5)
    # An earlier attempt of this upload was sent and its answer lost; it did not land.
    provider._single_attempts.add((gcs.bucket, "again.bin", spec.upload_id))
    answers: list[requests.Response] = []
    provider._http().hooks["response"].append(lambda r, *a, **k: answers.append(r))

    provider.put_single(spec, BytesBody(b"hello"), digest_of(b"hello", "crc32c"))

    assert [answer.request.method for answer in answers] == ["GET", "POST"]
    generation = answers[0].json()["generation"]
    query = parse_qs(urlsplit(answers[1].request.url or "").query)
    assert query["ifGenerationMatch"] == [str(generation)]
    assert gcs.read("again.bin") == b"hello"


def test_put_single_right_after_head_does_not_look_the_key_up_again(
    provider: GcsProvider, gcs: Backend
) -> None:
    gcs.put("seen.bin", b"old")
    old = provider.head(Target("gcs", gcs.bucket, "seen.bin"))
    seen = record_requests(provider)

    provider.put_single(
        spec_for(gcs, "seen.bin", 5), BytesBody(b"hello"), digest_of(b"hello", "crc32c")
    )

    assert [request.method for request in seen] == ["POST"]
    query = parse_qs(urlsplit(seen[0].url or "").query)
    assert old is not None and query["ifGenerationMatch"] == [old.generation]


def test_a_generation_seen_by_head_serves_one_upload_only(
    provider: GcsProvider, gcs: Backend
) -> None:
    target = Target("gcs", gcs.bucket, "once.bin")
    assert provider.head(target) is None
    provider.put_single(spec_for(gcs, "once.bin", 5), BytesBody(b"hello"), None)
    seen = record_requests(provider)

    provider.put_single(spec_for(gcs, "once.bin", 5), BytesBody(b"again"), None)

    assert [request.method for request in seen] == ["GET", "POST"]
    assert gcs.read("once.bin") == b"again"


def test_put_single_of_a_new_key_requires_generation_zero(
    provider: GcsProvider, gcs: Backend
) -> None:
    seen = record_requests(provider)
    spec = spec_for(gcs, "new.bin", 5)

    provider.put_single(spec, BytesBody(b"hello"), None)

    assert parse_qs(urlsplit(seen[-1].url or "").query)["ifGenerationMatch"] == ["0"]


def test_complete_raises_integrity_error_when_the_whole_digest_differs(
    provider: GcsProvider, gcs: Backend
) -> None:
    data = os.urandom(CHUNK_BYTES + 10)
    spec = spec_for(gcs, "bad.bin", len(data))
    session = provider.start(spec, CHUNK_BYTES)
    receipts = [send(provider, spec, session, data, part) for part in plan(len(data))]
    wrong = digest_of(b"not the source", "crc32c")
    assert wrong is not None

    with pytest.raises(IntegrityError) as caught:
        provider.complete(spec, session, receipts, Expected(len(data), whole=(wrong,)))

    assert wrong.value_b64 in str(caught.value)
    assert digest_of(data, "crc32c").value_b64 in str(caught.value)  # type: ignore[union-attr]


def test_a_non_multiple_chunk_is_refused_before_sending(
    provider: GcsProvider, gcs: Backend
) -> None:
    data = os.urandom(3 * 1_000_000)
    spec = spec_for(gcs, "odd.bin", len(data))
    session = provider.start(spec, CHUNK_BYTES)
    seen = record_requests(provider)
    part = PartSpec(1, 0, 1_000_000)

    with pytest.raises(CloudputError, match="262,144"):
        provider.send_part(spec, session, part, BytesBody(data[:1_000_000]), None)

    assert seen == []


def test_abort_on_the_emulator_does_not_raise(
    provider: GcsProvider, gcs: Backend
) -> None:
    """The emulator answers 501 to the cancel DELETE; GCS itself answers 499."""
    spec = spec_for(gcs, "abort.bin", 2 * CHUNK_BYTES)
    session = provider.start(spec, CHUNK_BYTES)

    provider.abort(spec, session)
    provider.abort(spec, session)


def test_session_url_never_appears_in_error_messages(
    provider: GcsProvider, gcs: Backend
) -> None:
    spec = spec_for(gcs, "secret.bin", 2 * CHUNK_BYTES)
    secret = "upload_id=SENTINEL-SECRET-123"
    gone = SessionHandle(
        f"{gcs.endpoint}/upload/storage/v1/b/{gcs.bucket}/o?{secret}", 0, "0"
    )
    unreachable = SessionHandle(f"http://127.0.0.1:9/upload?{secret}", 0, "0")
    part = PartSpec(1, 0, CHUNK_BYTES)
    errors: list[BaseException] = []

    for handle in (gone, unreachable):
        with pytest.raises(CloudputError) as caught:
            provider.send_part(
                spec, handle.encode(), part, BytesBody(bytes(CHUNK_BYTES)), None
            )
        errors.append(caught.value)

    assert isinstance(errors[0], UploadGoneError)
    assert isinstance(errors[1], TransientError)
    for error in errors:
        assert "SENTINEL" not in str(error) and error.__cause__ is None


def test_presign_part_gives_the_session_url_and_content_range(
    provider: GcsProvider, gcs: Backend
) -> None:
    spec = spec_for(gcs, "plumbing.bin", CHUNK_BYTES + 5)
    session = provider.start(spec, CHUNK_BYTES)
    handle = SessionHandle.decode(session)

    presigned = provider.presign_part(spec, session, PartSpec(2, CHUNK_BYTES, 5), 60)

    assert presigned.url == handle.url and "#" not in presigned.url
    assert presigned.headers == {
        "Content-Range": f"bytes {CHUNK_BYTES}-{CHUNK_BYTES + 4}/{CHUNK_BYTES + 5}"
    }
    assert presigned.expires_at == pytest.approx(handle.started_at + 7 * 24 * 3600)


def test_head_and_storage_url(provider: GcsProvider, gcs: Backend) -> None:
    gcs.put("a b/c+d%é.txt", b"xyz")
    target = Target("gcs", gcs.bucket, "a b/c+d%é.txt")

    remote = provider.head(target)

    assert remote is not None and remote.size_bytes == 3
    assert provider.head(Target("gcs", gcs.bucket, "missing")) is None
    assert provider.storage_url(target) == (
        f"https://storage.googleapis.com/{gcs.bucket}/a%20b/c%2Bd%25%C3%A9.txt"
    )


def test_check_bucket_reports_a_missing_bucket(
    provider: GcsProvider, gcs: Backend
) -> None:
    from cloudput.errors import BucketNotFoundError

    provider.check_bucket(Target("gcs", gcs.bucket, ""))
    with pytest.raises(BucketNotFoundError):
        provider.check_bucket(Target("gcs", gcs.bucket + "-missing", ""))


@pytest.mark.parametrize(
    ("header", "known", "offset"),
    [
        (None, None, 0),  # BC-14: 308 without Range means nothing persisted
        ("bytes=0-0", None, 0),  # the emulator's fresh session
        ("bytes=0-0", 262_144, 1),  # after bytes were confirmed, it means one byte
        ("bytes=0-262143", None, 262_144),
    ],
)
def test_persisted_offset_reads_the_range_header(
    header: str | None, known: int | None, offset: int
) -> None:
    assert persisted_offset(header, known) == offset


def fake_service_account_json() -> str:
    """A syntactically valid key that no server knows: enough to sign locally."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "cloudput-test",
            "private_key_id": "k1",
            "private_key": pem,
            "client_email": "uploader@cloudput-test.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


def test_missing_credentials_raise_credentials_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    provider = GcsProvider(ProviderSettings())

    with pytest.raises(CredentialsError, match="no Google credentials"):
        provider.check_bucket(Target("gcs", "bucket", ""))


def test_unreadable_service_account_json_is_not_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GCP_SERVICE_ACCOUNT_JSON", '{"private_key": "SENTINEL-KEY"')
    provider = GcsProvider(ProviderSettings())

    with pytest.raises(CredentialsError) as caught:
        provider.check_bucket(Target("gcs", "bucket", ""))

    assert "SENTINEL" not in str(caught.value)


def test_presign_single_signs_a_v4_put_with_a_service_account_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GCP_SERVICE_ACCOUNT_JSON", fake_service_account_json())
    provider = GcsProvider(ProviderSettings())
    spec = ObjectSpec(Target("gcs", "bucket", "a b.txt"), 3, "text/plain")

    presigned = provider.presign_single(spec, 600)

    assert presigned.url.startswith("https://storage.googleapis.com/bucket/a%20b.txt?")
    assert "X-Goog-Signature=" in presigned.url
    assert presigned.method == "PUT"
    assert presigned.headers == {"Content-Type": "text/plain"}


def test_presign_single_is_not_supported_on_the_emulator(
    provider: GcsProvider, gcs: Backend
) -> None:
    with pytest.raises(NotSupportedError):
        provider.presign_single(spec_for(gcs, "x.bin", 3), 600)


def test_a_part_is_streamed_not_read_whole(provider: GcsProvider, gcs: Backend) -> None:
    data = os.urandom(4 * CHUNK_BYTES)
    spec = spec_for(gcs, "streamed.bin", len(data))
    session = provider.start(spec, len(data))
    body = RecordingBody(data)

    receipt = provider.send_part(spec, session, PartSpec(1, 0, len(data)), body, None)
    provider.complete(spec, session, [receipt], expected_for(data))

    assert gcs.read("streamed.bin") == data
    assert 0 < body.largest_read <= LARGEST_STREAM_READ_BYTES


def test_an_unmapped_refusal_names_gcs_and_its_status() -> None:
    """A 400 GCS gives for a request the emulator would accept (a bad KMS key name,
    an invalid object name) is reported with its own code, not as 'internal'."""
    from cloudput.keys import parse_target
    from cloudput.providers.gcs import translate_error

    response = requests.Response()
    response.status_code = 400
    response._content = b'{"error": {"message": "Invalid kmsKeyName"}}'
    error = translate_error("init", parse_target("gs://b/k"), response)
    assert error.code == "gcs_400"
    assert "HTTP 400 Invalid kmsKeyName" in error.message
