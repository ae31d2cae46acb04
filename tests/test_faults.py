"""Faults on the wire, on every provider they apply to (issue 4): a commit whose answer
is lost, an expired signature, throttling bursts and storms, credentials that expire
in the middle of an upload (BC-28).

Each drives the real CLI through a FaultProxy and checks the object with the
provider's own SDK, plus the requests cloudput sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.backends import Backend
from tests.faultproxy import FaultProxy, Match, RecordedRequest, RequestHead
from tests.helpers import (
    MIB,
    CliResult,
    only_record,
    parts_of,
    run_cli,
    sha256_of,
    write_random,
)
from tests.test_contract import (
    PART_REQUESTS,
    PROFILES,
    part_identity,
    part_number,
    the_record,
    upload_args,
    use_env,
)

#: Parts in the fault tests' files (one part size of the provider's crash profile).
PARTS = 4
XML = {"Content-Type": "application/xml"}
S3_EXPIRED_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Request has expired</Message></Error>"
)
AZURE_BUSY_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code>'
    b"<Message>The server is busy.</Message></Error>"
)
GCS_RATE_BODY = (
    b'{"error": {"code": 429, "message": "The rate of change requests to the object '
    b'is too high.", "errors": [{"reason": "rateLimitExceeded"}]}}'
)
_CHUNK_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


def is_commit(head: RequestHead | RecordedRequest) -> bool:
    """S3 CompleteMultipartUpload, Azure Put Block List, or a final GCS chunk."""
    method = head.method.upper()
    if method == "POST" and "uploadId" in head.query:
        return True
    if method == "PUT" and head.query.get("comp") == "blocklist":
        return True
    found = _CHUNK_RANGE.fullmatch(head.headers.get("content-range", ""))
    return (
        method == "PUT"
        and found is not None
        and int(found.group(2)) + 1 == int(found.group(3))
    )


COMMIT = Match(where=is_commit)


def part_index(head: RequestHead | RecordedRequest, part_bytes: int) -> int | None:
    """1-based part number of an S3 part, an Azure block or a GCS chunk."""
    identity = part_identity(head)
    if identity is None:
        return None
    number = identity.rsplit(" ", 1)[1]
    if identity.startswith("bytes from"):
        return int(number) // part_bytes + 1
    if identity.startswith("part"):
        return int(number)
    return part_number(head)


def parts_from(part_bytes: int, first: int) -> Match:
    """Part requests for part `first` and every later one."""

    def later(head: RequestHead) -> bool:
        index = part_index(head, part_bytes)
        return index is not None and index >= first

    return Match(where=later)


def upload_through(
    backend: Backend,
    proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
    source: Path,
    *extra: str,
) -> CliResult:
    """`cloudput upload --json` of `source` to key f.bin in parts, through `proxy`."""
    part_bytes = PROFILES[backend.name].crash_part_bytes
    use_env(monkeypatch, backend.routed_through(proxy.url))
    return run_cli(
        [*upload_args(source, backend.uri("f.bin"), part_bytes), "--json", *extra]
    )


def random_source(
    backend: Backend, tmp_path: Path, parts: int = PARTS
) -> tuple[Path, str]:
    path = tmp_path / "f.bin"
    digest = write_random(path, parts * PROFILES[backend.name].crash_part_bytes)
    return path, digest


# -- a lost answer to the commit ---------------------------------------------------


def test_lost_answer_to_the_commit_is_resolved_by_asking_the_provider(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The server completes the object and the client never hears it: cloudput asks
    (HeadObject, the block list, the session) and reports success; no part is sent
    again and no checksum mismatch is claimed."""
    source, digest = random_source(backend, tmp_path)
    with FaultProxy(backend.endpoint) as proxy:
        proxy.drop_response(COMMIT)

        result = upload_through(backend, proxy, monkeypatch, source)
        parts = proxy.matching(PART_REQUESTS)
        dropped = [r for r in proxy.requests if r.action == "drop"]

    assert result.code == 0, result.stderr
    assert len(dropped) == 1 and is_commit(dropped[0])
    assert sha256_of(backend.read("f.bin")) == digest
    record = the_record(result)
    assert record["status"] == "completed"
    assert record["error"] is None
    assert record["checksum"]["verified"] not in (None, "", "size")  # type: ignore[index]
    assert len({part_identity(r) for r in parts}) == len(parts) == PARTS
    assert "mismatch" not in result.stderr.lower()
    assert backend.incomplete("f.bin") == 0


def test_lost_answer_to_a_single_request_upload_is_resolved_too(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A one-request upload whose answer is lost: the retry (or a look) ends with the
    object verified and exactly one object at the key."""
    source = tmp_path / "small.bin"
    digest = write_random(source, 300_000)
    with FaultProxy(backend.endpoint) as proxy:
        use_env(monkeypatch, backend.routed_through(proxy.url))
        proxy.drop_response(Match(where=lambda h: h.method in ("PUT", "POST")))

        result = run_cli(["upload", source, backend.uri("small.bin"), "--json"])

    assert result.code == 0, result.stderr
    assert sha256_of(backend.read("small.bin")) == digest
    assert backend.keys() == ["small.bin"]


# -- S3: an expired signature ------------------------------------------------------


def expired_part(number: int) -> Match:
    return Match(method="PUT", query={"partNumber": str(number), "uploadId": None})


def test_s3_expired_signature_once_is_signed_again_and_sent(
    s3: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A 403 "Request has expired" on part 2: signed afresh (a later X-Amz-Date) and
    sent once more; exit 0."""
    source, digest = random_source(s3, tmp_path)
    with FaultProxy(s3.endpoint) as proxy:
        proxy.respond(expired_part(2), 403, S3_EXPIRED_BODY, XML, times=1)

        use_env(monkeypatch, s3.routed_through(proxy.url))
        monkeypatch.setenv("CLOUDPUT_RETRY_BASE_DELAY", "1.1")  # a later X-Amz-Date
        result = run_cli([*upload_args(source, s3.uri("f.bin"), 5 * MIB), "--json"])
        second = proxy.matching(expired_part(2))

    assert result.code == 0, result.stderr
    assert sha256_of(s3.read("f.bin")) == digest
    assert [r.status for r in second] == [403, 200]
    first_date, retry_date = (r.headers["x-amz-date"] for r in second)
    assert retry_date > first_date
    assert second[0].headers["authorization"] != second[1].headers["authorization"]


def test_s3_expired_signature_twice_exits_5_and_keeps_the_upload(
    s3: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A signature refused as expired after a fresh one too: the clock or the path is
    wrong, retrying more will not help: exit 5, one line, upload resumable."""
    source, digest = random_source(s3, tmp_path)
    with FaultProxy(s3.endpoint) as proxy:
        proxy.respond(expired_part(2), 403, S3_EXPIRED_BODY, XML, times=None)

        result = upload_through(s3, proxy, monkeypatch, source, "--concurrency", "1")
        sent = proxy.count(expired_part(2))
        proxy.clear_rules()
        proxy.clear_requests()
        resumed = run_cli(["resume", "--all", "--json"])
        numbers = sorted(
            int(r.query["partNumber"]) for r in proxy.matching(PART_REQUESTS)
        )

    assert result.code == 5, result.stderr
    assert "Request has expired" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert sent == 2
    assert the_record(result)["status"] == "interrupted"
    assert resumed.code == 0, resumed.stderr
    assert 1 not in numbers and 2 in numbers
    assert sha256_of(s3.read("f.bin")) == digest


# -- throttling on GCS and Azure ---------------------------------------------------

THROTTLES: dict[str, tuple[int, bytes, dict[str, str]]] = {
    "gcs": (429, GCS_RATE_BODY, {"Content-Type": "application/json"}),
    "azure": (503, AZURE_BUSY_BODY, {**XML, "x-ms-error-code": "ServerBusy"}),
}


@pytest.mark.parametrize("backend", ["gcs", "azure"], indirect=True)
def test_throttling_burst_is_retried_with_backoff_and_succeeds(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Four 429 (GCS) / 503 ServerBusy (Azure) answers in a row, then success."""
    status, body, headers = THROTTLES[backend.name]
    source, digest = random_source(backend, tmp_path)
    with FaultProxy(backend.endpoint) as proxy:
        proxy.respond(PART_REQUESTS, status, body, headers, times=4)

        result = upload_through(backend, proxy, monkeypatch, source)
        answered = [r.status for r in proxy.matching(PART_REQUESTS)]

    assert result.code == 0, result.stderr
    assert answered.count(status) == 4
    assert sha256_of(backend.read("f.bin")) == digest


@pytest.mark.parametrize("backend", ["gcs", "azure"], indirect=True)
def test_throttling_forever_exits_7_and_resume_sends_only_missing_parts(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Parts 3 and later are throttled forever: exit 7 naming it, the upload
    resumable; `resume` later sends parts 3 and 4 only."""
    status, body, headers = THROTTLES[backend.name]
    part_bytes = PROFILES[backend.name].crash_part_bytes
    source, digest = random_source(backend, tmp_path)
    with FaultProxy(backend.endpoint) as proxy:
        proxy.respond(parts_from(part_bytes, 3), status, body, headers, times=None)

        result = upload_through(
            backend, proxy, monkeypatch, source, "--retries", "2", "--concurrency", "1"
        )
        object_meanwhile = backend.read("f.bin")
        proxy.clear_rules()
        proxy.clear_requests()
        resumed = run_cli(["resume", "--all", "--json"])
        resent = sorted(
            part_index(r, part_bytes) for r in proxy.matching(PART_REQUESTS)
        )

    assert result.code == 7, result.stderr
    assert str(status) in result.stdout or "ServerBusy" in result.stdout
    assert "after 3 attempts" in result.stdout
    record = the_record(result)
    assert record["status"] == "interrupted"
    assert record["error"]["code"] == "throttled"  # type: ignore[index]
    assert object_meanwhile is None
    assert resumed.code == 0, resumed.stderr
    assert resent == [3, 4]
    assert sha256_of(backend.read("f.bin")) == digest


# -- BC-28: temporary credentials expire during the upload -------------------------

OLD_TOKEN = "token-before-expiry"
NEW_TOKEN = "token-after-refresh"
EXPIRED_TOKEN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ExpiredToken</Code>'
    b"<Message>The provided token has expired.</Message></Error>"
)


def write_profile(path: Path, token: str) -> None:
    path.write_text(
        "[default]\n"
        "aws_access_key_id = ASIATESTTEMPORARY\n"
        "aws_secret_access_key = temporary-secret\n"
        f"aws_session_token = {token}\n",
        encoding="utf-8",
    )


def old_token_after_part_2(on_first: Callable[[], None]) -> Match:
    """Requests signed with the old token once part 3 was asked for; `on_first` runs
    when the first of them arrives (the refresher writing the file)."""
    state = {"armed": False}

    def expired(head: RequestHead) -> bool:
        if head.headers.get("x-amz-security-token") != OLD_TOKEN:
            return False
        if not state["armed"] and int(head.query.get("partNumber") or 0) >= 3:
            state["armed"] = True
            on_first()
        return state["armed"]

    return Match(where=expired)


def profile_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Credentials only from a shared credentials file (no key variables)."""
    profile = tmp_path / "credentials"
    write_profile(profile, OLD_TOKEN)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(profile))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    return profile


def s3_env_without_keys(s3: Backend, proxy: FaultProxy) -> dict[str, str]:
    env = s3.routed_through(proxy.url)
    return {k: v for k, v in env.items() if not k.startswith("AWS_SECRET")
            and k != "AWS_ACCESS_KEY_ID"}  # fmt: skip


def test_bc28_expired_token_is_reloaded_from_the_profile_and_the_upload_goes_on(
    s3: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = tmp_path / "f.bin"
    digest = write_random(source, 30 * MIB)
    profile = profile_env(monkeypatch, tmp_path)
    with FaultProxy(s3.endpoint) as proxy:
        rule = old_token_after_part_2(lambda: write_profile(profile, NEW_TOKEN))
        proxy.respond(rule, 400, EXPIRED_TOKEN_BODY, XML, times=None)
        use_env(monkeypatch, s3_env_without_keys(s3, proxy))

        result = run_cli(
            [*upload_args(source, s3.uri("f.bin"), 5 * MIB), "--json",
             "--concurrency", "1"]
        )  # fmt: skip
        parts = proxy.matching(PART_REQUESTS)

    assert result.code == 0, result.stderr
    assert sha256_of(s3.read("f.bin")) == digest
    numbers = [int(r.query["partNumber"]) for r in parts]
    assert numbers == [1, 2, 3, 3, 4, 5, 6]
    assert [r.status for r in parts].count(400) == 1
    tokens = [r.headers.get("x-amz-security-token") for r in parts]
    assert tokens[:3] == [OLD_TOKEN] * 3 and set(tokens[3:]) == {NEW_TOKEN}


def test_bc28_expired_token_without_a_new_one_exits_5_and_resume_sends_the_rest(
    s3: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = tmp_path / "f.bin"
    digest = write_random(source, 30 * MIB)
    profile = profile_env(monkeypatch, tmp_path)
    with FaultProxy(s3.endpoint) as proxy:
        proxy.respond(
            old_token_after_part_2(lambda: None), 400, EXPIRED_TOKEN_BODY, XML,
            times=None,
        )  # fmt: skip
        use_env(monkeypatch, s3_env_without_keys(s3, proxy))

        result = run_cli(
            [*upload_args(source, s3.uri("f.bin"), 5 * MIB), "--json",
             "--concurrency", "1"]
        )  # fmt: skip
        record = only_record()
        kept = [row.number for row in parts_of(record.id)]
        write_profile(profile, NEW_TOKEN)
        proxy.clear_requests()
        resumed = run_cli(["resume", "--all", "--json"])
        resent = sorted(
            int(r.query["partNumber"]) for r in proxy.matching(PART_REQUESTS)
        )

    assert result.code == 5, result.stderr
    assert "ExpiredToken" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert record.status == "interrupted" and record.session
    assert kept == [1, 2]
    assert resumed.code == 0, resumed.stderr
    assert resent == [3, 4, 5, 6]
    assert sha256_of(s3.read("f.bin")) == digest
