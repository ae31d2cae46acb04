"""Google Cloud Storage: resumable sessions as plain PUTs, single uploads, lookups.

Owns every request cloudput sends to GCS and the translation of its failures. It never
retries (the engine does) and never puts a session URL into a message or a log line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, BinaryIO
from urllib.parse import quote

import google.auth
import google.auth.exceptions
import requests
from google.auth.credentials import Credentials
from google.auth.transport.requests import AuthorizedSession
from google.oauth2 import service_account
from requests.adapters import HTTPAdapter

from cloudput.checksums import RunningDigest
from cloudput.errors import (
    BadDigestError,
    BucketNotFoundError,
    CloudputError,
    CredentialsError,
    IntegrityError,
    NotSupportedError,
    SourceChangedError,
    ThrottledError,
    TransientError,
    UploadGoneError,
)
from cloudput.keys import Target
from cloudput.providers.base import (
    KIB,
    MIB,
    Body,
    Digest,
    Expected,
    Incomplete,
    ObjectSpec,
    PartSpec,
    PresignedRequest,
    ProviderLimits,
    ProviderSettings,
    Receipt,
    RemoteObject,
    Verified,
)

logger = logging.getLogger(__name__)

RESUMABLE_DOC = "https://cloud.google.com/storage/docs/performing-resumable-uploads"
LIMITS_DOC = "https://cloud.google.com/storage/quotas"

# Every chunk but the last is a multiple of 256 KiB (RESUMABLE_DOC, "Upload in chunks").
CHUNK_QUANTUM_BYTES = 256 * KIB
# cloudput's default chunk: each chunk is one request answered 308, so a larger one
# means fewer round trips (google-cloud-storage's own default is 100 MiB); 32 MiB
# stays within the engine's buffered-part size, and a chunk cut short is resumed
# from the offset the session reports, not from its start.
DEFAULT_CHUNK_BYTES = 32 * MIB
# Largest object, hence largest single request or chunk: 5 TiB (LIMITS_DOC, "Objects").
MAX_OBJECT_BYTES = 5 * 1024 * 1024 * MIB
# GCS counts no parts: a session takes any number of chunks up to MAX_OBJECT_BYTES.
MAX_CHUNKS = 10**9
# A session URI expires one week after it was created (RESUMABLE_DOC, "Session URIs").
SESSION_LIFETIME_S = 7 * 24 * 3600
# V4 signed URLs are valid for at most 7 days (docs: "Signed URLs", "Expiration").
MAX_SIGNED_URL_TTL_S = 7 * 24 * 3600
# Rounds of "the service persisted fewer bytes than sent" that send_part follows before
# it gives the engine a TransientError; each round must make progress.
MAX_SHORT_PERSIST_ROUNDS = 8
#: Keys whose generation head() remembers for the next single upload, and how long.
SEEN_GENERATIONS_KEPT = 4096
SEEN_GENERATION_TTL_S = 300.0

GCS_ENDPOINT = "https://storage.googleapis.com"
STORAGE_SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
CREDENTIALS_HINT = (
    "set GOOGLE_APPLICATION_CREDENTIALS or GCP_SERVICE_ACCOUNT_JSON (key JSON text "
    "or a path), or run `gcloud auth application-default login`"
)

GCS_LIMITS = ProviderLimits(
    name="gcs",
    strategy="resumable",
    is_sequential=True,
    min_part_size_bytes=CHUNK_QUANTUM_BYTES,
    max_part_size_bytes=MAX_OBJECT_BYTES,
    max_parts=MAX_CHUNKS,
    part_size_multiple_bytes=CHUNK_QUANTUM_BYTES,
    default_part_size_bytes=DEFAULT_CHUNK_BYTES,
    max_single_size_bytes=MAX_OBJECT_BYTES,
    default_checksum="crc32c",
    checksums=("crc32c", "md5"),
    rule_source=RESUMABLE_DOC,
    unsupported={
        "tags": "GCS objects have no tags: use --metadata KEY=VALUE instead",
        "acl": "grant access with the bucket's IAM policy (uniform bucket-level "
        "access) instead of --acl",
        "encryption": "GCS encrypts every object; for your own key use --kms-key "
        "NAME (Cloud KMS)",
    },
    encryptions=("kms",),
)

_HANDLE_MARK = "#cloudput;"
_RANGE_RE = re.compile(r"bytes=0-(\d+)")
_URL_RE = re.compile(r"(https?://|url: )\S+")
_DIGEST_FIELDS = {"md5": "md5Hash", "crc32c": "crc32c"}


@dataclass(frozen=True)
class SessionHandle:
    """What the opaque session string carries: the session URL (a bearer secret), when
    it was created and the object's generation before it ("0": no object)."""

    url: str
    started_at: float
    prior_generation: str | None

    def encode(self) -> str:
        gen = self.prior_generation or ""
        return f"{self.url}{_HANDLE_MARK}started={self.started_at:.0f};generation={gen}"

    @classmethod
    def decode(cls, session: str) -> SessionHandle:
        url, mark, tail = session.partition(_HANDLE_MARK)
        if not mark:
            return cls(url, time.time(), None)
        fields = dict(item.split("=", 1) for item in tail.split(";") if "=" in item)
        started = float(fields.get("started") or time.time())
        return cls(url, started, fields.get("generation") or None)


@dataclass
class _SessionState:
    """What this process learnt about one session; touched by one thread at a time
    because a session's parts are sent in order."""

    offset: int | None = None  # bytes the service confirmed it persisted
    is_stale: bool = False  # the last request failed: ask the session before sending
    resource: dict[str, Any] | None = None  # the object, once the session finalized


def translate_error(
    doing: str,
    target: Target,
    response: requests.Response | None = None,
    exc: BaseException | None = None,
) -> CloudputError:
    """Turn a failed GCS request (an HTTP status or a transport exception) into the
    cloudput error the engine acts on. The message never carries a URL."""
    where = f"GCS {doing} for {target.uri}"
    if response is None:
        cause = _redact(f"{type(exc).__name__}: {exc}") if exc else "no response"
        if isinstance(exc, google.auth.exceptions.RefreshError):
            return CredentialsError(
                f"{where}: token refresh refused", hint=CREDENTIALS_HINT
            )
        return TransientError(f"{where} failed: {cause}", hint="retry or resume")
    status = response.status_code
    detail = _redact(_error_message(response))
    text = f"{where} failed: HTTP {status} {detail}".rstrip()
    if status in (429, 503):
        return ThrottledError(text, hint="the service asked to slow down")
    if status >= 500 or status == 408:
        return TransientError(text, hint="retry or resume")
    if status in (401, 403):
        return CredentialsError(text, hint=CREDENTIALS_HINT)
    if status == 404:
        return BucketNotFoundError(
            f"GCS bucket {target.bucket!r} not found ({where})",
            hint="create the bucket or correct the target",
        )
    if status == 400 and "match" in detail.lower() and "calculated" in detail.lower():
        return BadDigestError(
            text, hint="the bytes changed in transit; they are re-sent"
        )
    return CloudputError(text, code=f"gcs_{status}")


def _error_message(response: requests.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.reason or ""


def _redact(text: str) -> str:
    return _URL_RE.sub(lambda m: m.group(1) + "<redacted>", text)


def persisted_offset(range_header: str | None, known_offset: int | None) -> int:
    """Read a 308's ``Range`` header as the count of bytes the session holds.

    No header means nothing is persisted (BC-14). ``bytes=0-0`` is how the emulator
    shows a new session, and on GCS would mean one byte: it is read as 1 only when this
    process already confirmed bytes for the session, else as 0. Re-sending from 0 at
    worst repeats one byte, which GCS ignores for already-persisted offsets.
    """
    if not range_header:
        return 0
    match = _RANGE_RE.fullmatch(range_header.strip())
    if match is None:
        raise TransientError(
            f"GCS answered an unreadable Range header {range_header!r}"
        )
    last = int(match.group(1))
    if last == 0 and not known_offset:
        return 0
    return last + 1


def check_chunk(start: int, end: int, total_bytes: int) -> None:
    """Refuse, before sending, a non-final chunk that GCS would reject (BC-15).

    Non-final chunks end on a 256 KiB boundary; one that starts on a boundary is then a
    multiple of 262,144 bytes long. Only a persisted offset that GCS itself reported
    can start off a boundary, and that is where the next chunk must begin.
    """
    if end > total_bytes or end <= start:
        raise CloudputError(
            f"chunk {start}-{end} lies outside an object of {total_bytes} bytes"
        )
    if end < total_bytes and end % CHUNK_QUANTUM_BYTES:
        raise CloudputError(
            f"refusing a GCS chunk ending at byte {end}: every chunk but the last "
            f"must be a multiple of {CHUNK_QUANTUM_BYTES:,} bytes ({RESUMABLE_DOC})"
        )


class _DigestingReader:
    """A multipart/related request body: preamble, the source's bytes, epilogue.

    It reports its length (so requests sends Content-Length and streams) and digests
    the source bytes as they go out, so the response can be compared with what was sent.
    """

    def __init__(self, head: bytes, source: BinaryIO, size_bytes: int, tail: bytes):
        self._pieces: list[bytes] = [head]
        self._head, self._source, self._tail = head, source, tail
        self._left = size_bytes
        self._length = len(head) + size_bytes + len(tail)
        self.md5 = RunningDigest("md5")
        self.crc32c = RunningDigest("crc32c")
        self._stage = 0

    def __len__(self) -> int:
        return self._length

    def read(self, amount: int = -1) -> bytes:
        if amount is None or amount < 0:
            amount = 1 << 20
        if self._stage == 0:
            self._stage = 1
            return self._head
        if self._stage == 1 and self._left > 0:
            data = self._source.read(min(amount, self._left))
            if not data:
                raise SourceChangedError(
                    "the source got shorter while it was being sent"
                )
            self._left -= len(data)
            self.md5.update(data)
            self.crc32c.update(data)
            return data
        if self._stage == 1:
            self._stage = 2
            return self._tail
        return b""


class GcsProvider:
    """The provider contract for Google Cloud Storage (JSON API, resumable uploads)."""

    limits = GCS_LIMITS

    def __init__(self, settings: ProviderSettings):
        self._settings = settings
        emulator = os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
        base = (settings.endpoint_url or emulator or GCS_ENDPOINT).rstrip("/")
        if "://" not in base:
            base = f"http://{base}"
        self._api = f"{base}/storage/v1"
        self._upload_api = f"{base}/upload/storage/v1"
        self._is_anonymous = bool(emulator) or settings.extra.get("anonymous") == "true"
        self._lock = threading.Lock()
        self._http_session: requests.Session | None = None
        self._credentials: Credentials | None = None
        self._sessions: dict[str, _SessionState] = {}
        self._single_priors: dict[tuple[str, str, str], str] = {}
        # Single uploads sent at least once and not yet confirmed: a retry of one
        # looks at the key before sending again.
        self._single_attempts: set[tuple[str, str, str]] = set()
        # Generations seen by head() ("0": no object), with when, so that a single
        # upload right after a --skip-existing lookup does not look the key up again.
        self._seen: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()

    def endpoint(self) -> str:
        """The base URL requests go to (for ``doctor``)."""
        return self._api.rsplit("/storage/v1", 1)[0]

    # -- plumbing -----------------------------------------------------------------

    def _http(self) -> requests.Session:
        with self._lock:
            if self._http_session is None:
                self._http_session = self._open_http()
            return self._http_session

    def _open_http(self) -> requests.Session:
        session: requests.Session
        if self._is_anonymous:
            session = requests.Session()
        else:
            self._credentials = load_credentials()
            # No refresh-and-resend on 401: a streamed body cannot be sent twice, and
            # google-auth refreshes tokens before they expire anyway.
            session = AuthorizedSession(self._credentials, refresh_status_codes=())
        pool = max(1, self._settings.concurrency)
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=pool, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.verify = self._settings.verify_ssl
        return session

    def _request(
        self, method: str, url: str, doing: str, target: Target, **kwargs: Any
    ) -> requests.Response:
        try:
            return self._http().request(
                method, url, timeout=self._settings.timeout_s, **kwargs
            )
        except (
            requests.RequestException,
            google.auth.exceptions.GoogleAuthError,
        ) as exc:
            # from None: a transport exception's text names the URL, which for a
            # session is a bearer secret.
            raise translate_error(doing, target, exc=exc) from None

    def _object_url(self, target: Target) -> str:
        bucket, key = quote(target.bucket, safe=""), quote(target.key, safe="")
        return f"{self._api}/b/{bucket}/o/{key}"

    def _state(self, url: str) -> _SessionState:
        with self._lock:
            return self._sessions.setdefault(url, _SessionState())

    def _forget(self, url: str) -> None:
        with self._lock:
            self._sessions.pop(url, None)

    # -- objects and buckets ------------------------------------------------------

    def check_bucket(self, target: Target) -> None:
        url = f"{self._api}/b/{quote(target.bucket, safe='')}"
        response = self._request(
            "GET", url, "bucket check", target, params={"fields": "name"}
        )
        if response.status_code != 200:
            raise translate_error("bucket check", target, response)

    def _get_resource(self, target: Target) -> dict[str, Any] | None:
        response = self._request(
            "GET", self._object_url(target), "object lookup", target
        )
        if response.status_code == 404 and _is_object_missing(response):
            return None
        if response.status_code != 200:
            raise translate_error("object lookup", target, response)
        return dict(response.json())

    def head(self, target: Target) -> RemoteObject | None:
        resource = self._get_resource(target)
        generation = "0" if resource is None else str(resource.get("generation", "0"))
        with self._lock:
            self._seen[(target.bucket, target.key)] = (time.monotonic(), generation)
            while len(self._seen) > SEEN_GENERATIONS_KEPT:
                self._seen.popitem(last=False)
        return None if resource is None else remote_object(resource)

    def _recently_seen(self, target: Target) -> str | None:
        """The generation head() saw at this key in the last SEEN_GENERATION_TTL_S."""
        with self._lock:
            seen = self._seen.pop((target.bucket, target.key), None)
        if seen is None or time.monotonic() - seen[0] > SEEN_GENERATION_TTL_S:
            return None
        return seen[1]

    def storage_url(self, target: Target) -> str:
        return f"{GCS_ENDPOINT}/{target.bucket}/{quote(target.key, safe='/~')}"

    # -- resumable sessions -------------------------------------------------------

    def start(self, spec: ObjectSpec, part_size_bytes: int) -> str:
        """Create a resumable session; the returned string holds its URL (a secret).

        No ifGenerationMatch on the session: a session finalizes once, so it cannot
        make two generations, and a precondition would only fail the whole upload at
        its last chunk when someone else wrote the key meanwhile.
        """
        if part_size_bytes % CHUNK_QUANTUM_BYTES and part_size_bytes < spec.size_bytes:
            check_chunk(0, part_size_bytes, spec.size_bytes)
        prior = self._get_resource(spec.target)
        started_at = time.time()
        response = self._request(
            "POST",
            f"{self._upload_api}/b/{quote(spec.target.bucket, safe='')}/o",
            "session start",
            spec.target,
            params={
                "uploadType": "resumable",
                "name": spec.target.key,
                **kms_params(spec),
            },
            headers={
                "X-Upload-Content-Type": spec.content_type,
                "X-Upload-Content-Length": str(spec.size_bytes),
            },
            json=object_resource(spec),
        )
        location = response.headers.get("Location")
        if response.status_code not in (200, 201) or not location:
            raise translate_error("session start", spec.target, response)
        self._state(location).offset = 0
        generation = "0" if prior is None else str(prior.get("generation", "0"))
        logger.debug("GCS session opened for %s", spec.target.uri)
        return SessionHandle(location, started_at, generation).encode()

    def held_parts(
        self, spec: ObjectSpec, session: str, parts: Sequence[PartSpec]
    ) -> dict[int, Receipt]:
        handle = SessionHandle.decode(session)
        state = self._state(handle.url)
        if state.resource is None:
            self._query(spec, handle, state)
        held = spec.size_bytes if state.resource is not None else state.offset or 0
        return {
            part.number: Receipt(part.number, "", part.size_bytes)
            for part in parts
            if part.end <= held
        }

    def _query(
        self, spec: ObjectSpec, handle: SessionHandle, state: _SessionState
    ) -> None:
        """Ask the session what it holds (``Content-Range: bytes */TOTAL``)."""
        response = self._request(
            "PUT",
            handle.url,
            "session status query",
            spec.target,
            data=b"",
            headers={"Content-Range": f"bytes */{spec.size_bytes}"},
        )
        self._absorb(spec, handle, state, response, "session status query")

    def _absorb(
        self,
        spec: ObjectSpec,
        handle: SessionHandle,
        state: _SessionState,
        response: requests.Response,
        doing: str,
    ) -> None:
        """Record what a session's answer says: bytes held, or the finished object."""
        status = response.status_code
        if status == 308:
            state.offset = persisted_offset(response.headers.get("Range"), state.offset)
        elif status in (200, 201):
            state.resource = dict(response.json())
            state.offset = spec.size_bytes
        elif status in (404, 410, 499):
            self._settle_gone(spec, handle, state)
        else:
            raise translate_error(doing, spec.target, response)
        state.is_stale = False

    def _settle_gone(
        self, spec: ObjectSpec, handle: SessionHandle, state: _SessionState
    ) -> None:
        """A session answering 404/410 either finished (the emulator says 404 after the
        final chunk) or died: it finished only if the object now has the expected size
        and a generation other than the one seen before the session started."""
        resource = self._get_resource(spec.target)
        if resource is not None and _is_new_complete(resource, spec, handle):
            state.resource = resource
            state.offset = spec.size_bytes
            return
        raise UploadGoneError(
            f"the GCS upload session for {spec.target.uri} is gone "
            "(expired or cancelled)",
            hint="the upload starts over from its first part",
        )

    def send_part(
        self,
        spec: ObjectSpec,
        session: str,
        part: PartSpec,
        body: Body,
        digest: Digest | None,
    ) -> Receipt:
        """Send one part in order; on return the service holds all of its bytes.

        The part is streamed from ``body``; when the session already holds its start,
        the reader is moved past it and only the rest is sent.
        """
        handle = SessionHandle.decode(session)
        if body.size_bytes != part.size_bytes:
            raise CloudputError(
                f"part {part.number} has {body.size_bytes} bytes, "
                f"planned {part.size_bytes}"
            )
        if part.size_bytes:
            check_chunk(part.offset, part.end, spec.size_bytes)
            self._send_rest(spec, handle, part, body)
        return Receipt(
            part.number, "", part.size_bytes, digest.value_b64 if digest else None
        )

    def _send_rest(
        self, spec: ObjectSpec, handle: SessionHandle, part: PartSpec, body: Body
    ) -> None:
        state = self._state(handle.url)
        if state.resource is None and (state.offset is None or state.is_stale):
            self._query(spec, handle, state)
        for _ in range(MAX_SHORT_PERSIST_ROUNDS):
            offset = state.offset or 0
            if state.resource is not None or offset >= part.end:
                return
            if offset < part.offset:
                raise TransientError(
                    f"the GCS session for {spec.target.uri} holds {offset} bytes, "
                    f"less than part {part.number}'s start at {part.offset}",
                    hint="resume asks the session and re-sends from its offset",
                )
            with body.open() as stream:
                stream.seek(offset - part.offset)
                self._put_chunk(spec, handle, state, offset, stream, part.end - offset)
            if (state.offset or 0) <= offset and state.resource is None:
                break
        if state.resource is None and (state.offset or 0) < part.end:
            raise TransientError(
                f"GCS kept fewer bytes of part {part.number} of {spec.target.uri} "
                "than were sent",
                hint="retry or resume",
            )

    def _put_chunk(
        self,
        spec: ObjectSpec,
        handle: SessionHandle,
        state: _SessionState,
        start: int,
        chunk: BinaryIO,
        size_bytes: int,
    ) -> None:
        """PUT ``size_bytes`` read from ``chunk`` (streamed, never held whole)."""
        end = start + size_bytes
        check_chunk(start, end, spec.size_bytes)
        state.is_stale = True
        logger.debug("GCS chunk %d-%d of %s", start, end - 1, spec.target.uri)
        response = self._request(
            "PUT",
            handle.url,
            "chunk upload",
            spec.target,
            data=chunk,
            headers={
                "Content-Range": f"bytes {start}-{end - 1}/{spec.size_bytes}",
                "Content-Length": str(size_bytes),
            },
        )
        self._absorb(spec, handle, state, response, "chunk upload")

    def complete(
        self,
        spec: ObjectSpec,
        session: str,
        receipts: Sequence[Receipt],
        expected: Expected,
    ) -> Verified:
        """Confirm the object the final chunk created; GCS has no separate commit."""
        handle = SessionHandle.decode(session)
        state = self._state(handle.url)
        if state.resource is None:
            self._query(spec, handle, state)
        if state.resource is None:
            raise TransientError(
                f"the GCS session for {spec.target.uri} holds {state.offset or 0} of "
                f"{spec.size_bytes} bytes",
                hint="resume sends the rest",
            )
        verified = verify_object(spec, remote_object(state.resource), expected)
        self._forget(handle.url)
        return verified

    def abort(self, spec: ObjectSpec, session: str) -> None:
        """Cancel the session (GCS answers 499); a gone session is fine. The emulator
        answers 501 to this DELETE: not supported there, and not an error."""
        handle = SessionHandle.decode(session)
        self._forget(handle.url)
        response = self._request("DELETE", handle.url, "session cancel", spec.target)
        status = response.status_code
        if status == 501:
            logger.debug(
                "the GCS server cannot cancel sessions; %s left to expire",
                spec.target.uri,
            )
        elif status not in (200, 204, 404, 410, 499):
            raise translate_error("session cancel", spec.target, response)

    # -- single requests ----------------------------------------------------------

    def put_single(
        self, spec: ObjectSpec, body: Body, digest: Digest | None
    ) -> Verified:
        """One multipart/related request. The first attempt goes alone; a retry (the
        answer of an earlier attempt may have been lost) first looks at the key: our
        bytes there are the proof, else it sends again with ifGenerationMatch on the
        generation seen, so a retry never makes a second object."""
        memo = (spec.target.bucket, spec.target.key, spec.upload_id)
        prior = self._single_priors.get(memo) or self._recently_seen(spec.target)
        if prior is None and (digest is None or memo in self._single_attempts):
            resource = self._get_resource(spec.target)
            if resource is not None and digest is not None:
                landed = self._landed(spec, resource, digest)
                if landed is not None:
                    self._single_attempts.discard(memo)
                    return landed
            prior = "0" if resource is None else str(resource.get("generation", "0"))
            self._single_priors[memo] = prior
        with self._lock:
            self._single_attempts.add(memo)
        response, sent = self._post_multipart(spec, body, digest, prior)
        if response.status_code == 412:
            return self._settle_precondition(spec, memo, sent)
        if response.status_code not in (200, 201):
            raise translate_error("upload", spec.target, response)
        self._single_priors.pop(memo, None)
        self._single_attempts.discard(memo)
        return _verify_sent(spec, remote_object(dict(response.json())), sent)

    @staticmethod
    def _landed(
        spec: ObjectSpec, resource: Mapping[str, Any], digest: Digest
    ) -> Verified | None:
        """The object at the key when it holds exactly the bytes of this upload."""
        remote = remote_object(dict(resource))
        if remote.size_bytes != spec.size_bytes:
            return None
        if remote.checksums.get(digest.algorithm) != digest.value_b64:
            return None
        logger.info("%s already holds this upload (lost answer)", spec.target.uri)
        return verify_object(spec, remote, Expected(spec.size_bytes, whole=(digest,)))

    def _post_multipart(
        self, spec: ObjectSpec, body: Body, digest: Digest | None, prior: str | None
    ) -> tuple[requests.Response, _DigestingReader]:
        resource = object_resource(spec)
        if digest is not None:
            resource[_DIGEST_FIELDS[digest.algorithm]] = digest.value_b64
        boundary = f"cloudput-{uuid.uuid4().hex}"
        head = (
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
            f"{json.dumps(resource)}\r\n--{boundary}\r\n"
            f"Content-Type: {spec.content_type}\r\n\r\n"
        ).encode()
        with body.open() as source:
            reader = _DigestingReader(
                head, source, body.size_bytes, f"\r\n--{boundary}--\r\n".encode()
            )
            response = self._request(
                "POST",
                f"{self._upload_api}/b/{quote(spec.target.bucket, safe='')}/o",
                "upload",
                spec.target,
                params={
                    "uploadType": "multipart",
                    **({"ifGenerationMatch": prior} if prior is not None else {}),
                    **kms_params(spec),
                },
                headers={"Content-Type": f"multipart/related; boundary={boundary}"},
                data=reader,
            )
        return response, reader

    def _settle_precondition(
        self, spec: ObjectSpec, memo: tuple[str, str, str], sent: _DigestingReader
    ) -> Verified:
        """412: the key changed since the first attempt. If it holds our bytes, an
        earlier attempt succeeded and lost its answer; otherwise another writer won."""
        resource = self._get_resource(spec.target)
        if resource is not None:
            remote = remote_object(resource)
            same = remote.checksums.get("md5") == sent.md5.digest().value_b64
            if same and remote.size_bytes == spec.size_bytes:
                self._single_priors.pop(memo, None)
                return _verify_sent(spec, remote, sent)
        self._single_priors.pop(memo, None)
        raise TransientError(
            f"{spec.target.uri} was written by someone else during the upload",
            hint="a retry uploads it again over the new generation",
        )

    # -- presigning and listing ---------------------------------------------------

    def presign_part(
        self,
        spec: ObjectSpec,
        session: str,
        part: PartSpec,
        ttl_s: float,
        content_md5: str | None = None,
    ) -> PresignedRequest:
        """The session URL itself with the part's Content-Range. ``ttl_s`` and
        ``content_md5`` do not apply: a session lives a week, chunks carry no MD5."""
        handle = SessionHandle.decode(session)
        if spec.size_bytes == 0:
            # An empty object has no byte range: the one empty PUT names only the total.
            content_range = "bytes */0"
        else:
            check_chunk(part.offset, part.end, spec.size_bytes)
            content_range = f"bytes {part.offset}-{part.end - 1}/{spec.size_bytes}"
        return PresignedRequest(
            url=handle.url,
            method="PUT",
            headers={"Content-Range": content_range},
            expires_at=handle.started_at + SESSION_LIFETIME_S,
        )

    def presign_single(
        self, spec: ObjectSpec, ttl_s: float, content_md5: str | None = None
    ) -> PresignedRequest:
        """A V4 signed PUT URL; needs credentials that can sign (a service account)."""
        self._http()
        credentials = self._credentials
        if credentials is None or not hasattr(credentials, "sign_bytes"):
            raise NotSupportedError(
                f"cannot sign a GCS URL for {spec.target.uri} with these credentials",
                hint="use a service-account key (GCP_SERVICE_ACCOUNT_JSON) "
                "or the resumable strategy",
            )
        from google.cloud.storage import Client

        ttl = min(ttl_s, MAX_SIGNED_URL_TTL_S)
        headers = {"Content-Type": spec.content_type}
        if content_md5:
            headers["Content-MD5"] = content_md5
        # The client only carries the credentials here: signing makes no request.
        project = getattr(credentials, "project_id", None) or "cloudput"
        client = Client(project=project, credentials=credentials)
        blob = client.bucket(spec.target.bucket).blob(spec.target.key)
        url = blob.generate_signed_url(
            expiration=timedelta(seconds=ttl),
            api_access_endpoint=GCS_ENDPOINT,
            method="PUT",
            content_type=spec.content_type,
            content_md5=content_md5,
            credentials=credentials,
            version="v4",
        )
        return PresignedRequest(
            url=url, method="PUT", headers=headers, expires_at=time.time() + ttl
        )

    def list_incomplete(self, target: Target, older_than_s: float) -> list[Incomplete]:
        """GCS cannot list resumable sessions: only the journal knows them."""
        return []

    def close(self) -> None:
        with self._lock:
            if self._http_session is not None:
                self._http_session.close()
                self._http_session = None


def load_credentials() -> Credentials:
    """GCP_SERVICE_ACCOUNT_JSON (key text or a path), else application default
    credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud, the metadata server)."""
    raw = os.environ.get("GCP_SERVICE_ACCOUNT_JSON", "").strip()
    if raw:
        return _service_account_credentials(raw)
    key_file = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "").strip()
    try:
        with _quiet_default_chain():
            credentials, _ = google.auth.default(scopes=[STORAGE_SCOPE])
        return credentials
    except google.auth.exceptions.DefaultCredentialsError:
        if key_file:
            # Set but unusable: telling the user to set it would not help. from None:
            # the parser's message may quote the file's content.
            raise CredentialsError(
                f"GOOGLE_APPLICATION_CREDENTIALS is set to {key_file!r}, which is not "
                "a readable credentials file",
                hint="point it at a service-account key or the file `gcloud auth "
                "application-default login` writes, or unset it",
            ) from None
        raise CredentialsError(
            "no Google credentials found", hint=CREDENTIALS_HINT
        ) from None


@contextlib.contextmanager
def _quiet_default_chain() -> Iterator[None]:
    """google-auth logs WARNINGs of its own when the metadata server does not answer
    (not on GCE): the error raised after it says what to do, in one line. Kept when
    the SDKs' own logs are asked for (-vvv)."""
    chain_logger = logging.getLogger("google.auth")
    if chain_logger.isEnabledFor(logging.INFO):
        yield
        return
    previous = chain_logger.level
    chain_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        chain_logger.setLevel(previous)


def _service_account_credentials(raw: str) -> Credentials:
    """The key in GCP_SERVICE_ACCOUNT_JSON (JSON text or a path to it)."""
    try:
        if raw.startswith("{"):
            return service_account.Credentials.from_service_account_info(
                json.loads(raw), scopes=[STORAGE_SCOPE]
            )
        return service_account.Credentials.from_service_account_file(
            raw, scopes=[STORAGE_SCOPE]
        )
    except (ValueError, OSError, KeyError, google.auth.exceptions.GoogleAuthError):
        # from None: the parser's message may quote the key itself.
        raise CredentialsError(
            "GCP_SERVICE_ACCOUNT_JSON is set but is not a readable service-account key",
            hint="give the key's JSON text or the path of its file; "
            "check it has client_email, private_key and token_uri",
        ) from None


def object_resource(spec: ObjectSpec) -> dict[str, Any]:
    """The JSON object resource sent when a session or single upload starts."""
    resource: dict[str, Any] = {
        "name": spec.target.key,
        "contentType": spec.content_type,
    }
    if spec.cache_control:
        resource["cacheControl"] = spec.cache_control
    if spec.metadata:
        resource["metadata"] = dict(spec.metadata)
    if spec.storage_class:
        resource["storageClass"] = spec.storage_class
    if spec.content_encoding:
        resource["contentEncoding"] = spec.content_encoding
    if spec.content_disposition:
        resource["contentDisposition"] = spec.content_disposition
    return resource


def kms_params(spec: ObjectSpec) -> dict[str, str]:
    """The kmsKeyName query parameter of objects.insert (Cloud Storage JSON API,
    "Objects: insert"): the Cloud KMS key that encrypts the object."""
    if spec.encryption == "kms" and spec.encryption_key_id:
        return {"kmsKeyName": spec.encryption_key_id}
    return {}


def remote_object(resource: Mapping[str, Any]) -> RemoteObject:
    checksums = {
        algorithm: str(resource[field])
        for algorithm, field in _DIGEST_FIELDS.items()
        if resource.get(field)
    }
    return RemoteObject(
        size_bytes=int(resource.get("size") or 0),
        etag=resource.get("etag"),
        checksums=checksums,
        metadata=dict(resource.get("metadata") or {}),
        generation=str(resource["generation"]) if resource.get("generation") else None,
        content_type=resource.get("contentType"),
    )


def verify_object(
    spec: ObjectSpec, remote: RemoteObject, expected: Expected
) -> Verified:
    """Compare the object with the size and whole-file digests computed locally."""
    if remote.size_bytes != expected.size_bytes:
        raise IntegrityError(
            f"GCS holds {remote.size_bytes} bytes at {spec.target.uri}, the source has "
            f"{expected.size_bytes}",
            hint="upload it again",
        )
    matched: list[str] = []
    for digest in expected.whole:
        theirs = remote.checksums.get(digest.algorithm)
        if theirs is None:
            continue
        if theirs != digest.value_b64:
            raise IntegrityError(
                f"GCS reports {digest.algorithm} {theirs} for {spec.target.uri}, "
                f"the source has {digest.value_b64}",
                hint="upload it again",
            )
        matched.append(digest.algorithm)
    return _verified(spec, remote, matched)


def _verify_sent(
    spec: ObjectSpec, remote: RemoteObject, sent: _DigestingReader
) -> Verified:
    expected = Expected(
        spec.size_bytes, whole=(sent.crc32c.digest(), sent.md5.digest())
    )
    return verify_object(spec, remote, expected)


def _verified(spec: ObjectSpec, remote: RemoteObject, matched: list[str]) -> Verified:
    algorithm = (
        "md5"
        if spec.checksum_algorithm == "md5" and "md5" in remote.checksums
        else "crc32c"
    )
    confirmed = "+".join(name for name in ("crc32c", "md5") if name in matched)
    return Verified(
        remote=remote,
        algorithm=algorithm,
        value=remote.checksums.get(algorithm),
        verified=confirmed or "size",
    )


def _is_new_complete(
    resource: Mapping[str, Any], spec: ObjectSpec, handle: SessionHandle
) -> bool:
    if int(resource.get("size") or -1) != spec.size_bytes:
        return False
    generation = str(resource.get("generation") or "")
    return handle.prior_generation is None or generation != handle.prior_generation


def _is_object_missing(response: requests.Response) -> bool:
    """Tell "no such object" from "no such bucket" in a 404 on an object URL."""
    return "bucket" not in _error_message(response).lower()
