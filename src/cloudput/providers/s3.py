"""Amazon S3 and S3-compatible servers behind the provider contract, through botocore.

Owns every S3 request and the translation of S3 failures into cloudput errors. It never
retries on its own (the engine does) and never puts credentials or signed URLs in a
message.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import botocore.session
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    SSLError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from botocore.utils import parse_timestamp as botocore_parse_timestamp

from cloudput import checksums
from cloudput.errors import (
    BadDigestError,
    BucketNotFoundError,
    CloudputError,
    ConfigError,
    CredentialsError,
    IntegrityError,
    NotSupportedError,
    PresignExpiredError,
    ThrottledError,
    TransientError,
    UploadGoneError,
    UsageError,
)
from cloudput.keys import Target
from cloudput.providers.base import (
    GIB,
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

# Amazon S3 User Guide, "Amazon S3 multipart upload limits".
S3_LIMITS_SOURCE = "Amazon S3 User Guide, 'Amazon S3 multipart upload limits'"
S3_MIN_PART_SIZE_BYTES = 5 * MIB  # every part but the last
S3_MAX_PART_SIZE_BYTES = 5 * GIB
S3_MAX_PARTS = 10_000
S3_MAX_SINGLE_SIZE_BYTES = 5 * GIB  # largest PutObject
S3_DEFAULT_PART_SIZE_BYTES = 8 * MIB  # cloudput's default, same as the AWS CLI's
# ListParts and ListMultipartUploads return at most 1,000 entries a page (S3 API
# Reference, "ListParts", MaxParts).
S3_LIST_PAGE_MAX = 1000
# A SigV4 presigned URL is valid for at most 7 days (Amazon S3 User Guide, "Sharing
# objects with presigned URLs").
S3_MAX_PRESIGN_TTL_S = 7 * 24 * 3600
S3_DEFAULT_REGION = "us-east-1"
PART_CONTENT_TYPE = "application/octet-stream"
# Connections beyond `concurrency`, for HeadObject/ListParts made beside part uploads.
EXTRA_POOL_CONNECTIONS = 4

S3_LIMITS = ProviderLimits(
    name="s3",
    strategy="multipart",
    is_sequential=False,
    min_part_size_bytes=S3_MIN_PART_SIZE_BYTES,
    max_part_size_bytes=S3_MAX_PART_SIZE_BYTES,
    max_parts=S3_MAX_PARTS,
    part_size_multiple_bytes=1,
    default_part_size_bytes=S3_DEFAULT_PART_SIZE_BYTES,
    max_single_size_bytes=S3_MAX_SINGLE_SIZE_BYTES,
    default_checksum="md5",
    checksums=("md5", "crc32c"),
    rule_source=S3_LIMITS_SOURCE,
    unsupported={
        "encryption": "S3 takes --sse AES256|aws:kms, --sse-kms-key-id or "
        "--sse-c-key-file",
    },
    encryptions=("AES256", "aws:kms", "aws:kms:dsse", "sse-c"),
)
#: The algorithm S3 takes for customer-provided keys (x-amz-server-side-encryption-
#: customer-algorithm; Amazon S3 User Guide, "SSE-C").
SSE_C_ALGORITHM = "AES256"

_SDK_ERRORS = (ClientError, BotoCoreError)
_AUTH_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidToken",
        "TokenRefreshRequired",
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "RequestTimeTooSkewed",
    }
)
_EXPIRED_CODES = frozenset(
    {"ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired"}
)
_THROTTLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
    }
)
_DIGEST_CODES = frozenset({"BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch"})
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "OperationAborted",
        "InvalidPart",
    }
)
_REGION_CODES = frozenset({"PermanentRedirect", "301", "AuthorizationHeaderMalformed"})
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_KMS_ENCRYPTION = ("aws:kms", "aws:kms:dsse")
# Encryptions whose ETags are not the MD5 of the bytes (S3 API Reference, "ETag").
_NON_MD5_ETAG_ENCRYPTION = (*_KMS_ENCRYPTION, "sse-c")
_MD5_HEX = re.compile(r"^[0-9a-f]{32}$")
_QUERY = re.compile(r"\?[^\s\"']*")
_MESSAGE_MAX_CHARS = 300


def translate_error(exc: Exception, doing: str) -> CloudputError:
    """Turn a botocore failure into the cloudput error the engine acts on.

    ``doing`` names the request and target ("UploadPart 3 of s3://b/k"); the message
    adds the S3 error code and message, never credentials or a query string.
    """
    if isinstance(exc, ClientError):
        code, status, text = _error_fields(exc)
        return error_for_code(code, status, text, doing)
    if isinstance(
        exc, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)
    ):
        return CredentialsError(
            f"{doing} failed: no usable AWS credentials ({type(exc).__name__})",
            hint="set AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        )
    detail = _QUERY.sub("?…", str(exc))[:_MESSAGE_MAX_CHARS]
    if isinstance(exc, SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return ConfigError(
            f"{doing} failed: the server's TLS certificate was refused: {detail}",
            hint="check --endpoint-url or point AWS_CA_BUNDLE at the right CA bundle",
        )
    if isinstance(exc, (HTTPClientError, BotoConnectionError, IncompleteReadError)):
        return TransientError(
            f"{doing} failed: {type(exc).__name__}: {detail}",
            hint="check --endpoint-url / AWS_ENDPOINT_URL and the network, then "
            "`cloudput resume --all`",
        )
    return CloudputError(
        f"{doing} failed: {type(exc).__name__}: {detail}", code="s3_error"
    )


def error_for_code(code: str, status: int, text: str, doing: str) -> CloudputError:
    """Map an S3 error code and HTTP status to a cloudput error."""
    message = f"{doing} failed: {code}" + (f": {text}" if text and text != code else "")
    if code == "AccessDenied" and "request has expired" in text.lower():
        return PresignExpiredError(message, hint="ask for a new presigned URL")
    if code in _THROTTLE_CODES or status in (429, 503):
        return ThrottledError(message)
    if code in _DIGEST_CODES:
        return BadDigestError(message, hint="the part is sent again")
    if code == "NoSuchUpload":
        return UploadGoneError(message)
    if code == "NoSuchBucket":
        return BucketNotFoundError(message, hint="create the bucket or check its name")
    if code in _REGION_CODES:
        return ConfigError(message, hint="set --region to the bucket's region")
    if code in _AUTH_CODES or status in (401, 403):
        return CredentialsError(message, hint=_credentials_hint(code))
    if code in _TRANSIENT_CODES or status >= 500:
        return TransientError(message)
    return CloudputError(message, code="s3_error")


def _credentials_hint(code: str) -> str:
    if code in _EXPIRED_CODES:
        return "refresh the session token (aws sso login, or new keys in the profile)"
    if code == "RequestTimeTooSkewed":
        return "this machine's clock is off; sync it"
    if code == "AccessDenied":
        return "the credentials lack permission for this request on this bucket"
    return "check AWS_PROFILE / AWS_ACCESS_KEY_ID and the secret key"


def _error_fields(exc: ClientError) -> tuple[str, int, str]:
    error = exc.response.get("Error", {})
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    code = str(error.get("Code") or status)
    text = _QUERY.sub("?…", str(error.get("Message") or ""))[:_MESSAGE_MAX_CHARS]
    return code, status, text


def _error_code(exc: BaseException) -> str | None:
    return _error_fields(exc)[0] if isinstance(exc, ClientError) else None


class S3Provider:
    """S3 through one thread-safe botocore client per instance (docs/providers/s3.md)."""

    limits = S3_LIMITS

    def __init__(
        self, settings: ProviderSettings, *, list_page_size: int = S3_LIST_PAGE_MAX
    ):
        """Build the client; no request is made until the first call.

        Args:
            settings: endpoint, region, pool size, timeouts, public domain.
            list_page_size: entries per ListParts page (tests make it small).
        """
        self.settings = settings
        self._page_size = max(1, min(list_page_size, S3_LIST_PAGE_MAX))
        self._lock = threading.Lock()
        self._retired: list[BaseClient] = []
        self._expired_once: set[str] = set()  # requests refused once as expired
        self._bucket_regions: dict[str, str] = {}
        self.endpoint_url = _configured_endpoint(settings)
        session = _new_session()
        self.region = (
            settings.region
            or os.environ.get("AWS_REGION")
            or session.get_config_variable("region")
            or S3_DEFAULT_REGION
        )
        self._client = self._build_client(session)
        if self.endpoint_url is None and not _is_aws_host(
            self._client.meta.endpoint_url
        ):
            # An endpoint from the profile's config file: address it path-style too.
            self.endpoint_url = self._client.meta.endpoint_url
            self._client.close()
            self._client = self._build_client(session)
        if _is_aws_host(self._client.meta.endpoint_url):
            # AWS checks a CRC32C against the bytes it receives, and it costs a
            # twentieth of an MD5; servers that do not check one (moto, some
            # S3-compatible ones) keep MD5, whose ETag proves what they stored.
            self.limits = replace(S3_LIMITS, default_checksum="crc32c")
        self._credentials_seen = _frozen_credentials(session)

    # -- the client ----------------------------------------------------------------

    def _build_client(self, session: botocore.session.Session) -> BaseClient:
        style = self.settings.addressing_style
        if style is None and self.endpoint_url:
            style = "path"  # S3-compatible servers rarely resolve bucket subdomains
        # No SHA-256 of every body for SigV4 (botocore signs the payload on plain
        # http otherwise): each part and object carries Content-MD5 or a CRC32C that
        # the server checks, and the signature still covers those headers.
        s3_options: dict[str, Any] = {"payload_signing_enabled": False}
        if style:
            s3_options["addressing_style"] = style
        config = Config(
            region_name=self.region,
            signature_version="s3v4",
            retries={"total_max_attempts": 1, "mode": "standard"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=self.settings.concurrency + EXTRA_POOL_CONNECTIONS,
            connect_timeout=self.settings.timeout_s,
            read_timeout=self.settings.timeout_s,
            s3=s3_options,
        )
        # None, not True, lets botocore honour AWS_CA_BUNDLE and the profile's
        # ca_bundle; the proxy variables (HTTPS_PROXY, NO_PROXY) are botocore's too.
        verify = None if self.settings.verify_ssl is True else self.settings.verify_ssl
        return session.create_client(
            "s3", endpoint_url=self.endpoint_url, verify=verify, config=config
        )

    def reload_credentials(self, failed_client: BaseClient | None = None) -> bool:
        """Read the credential chain again and swap in a new client if it changed.

        Returns True when a client with other credentials is now in use (or another
        thread already swapped it since ``failed_client`` was taken).
        """
        with self._lock:
            if failed_client is not None and failed_client is not self._client:
                return True
            session = _new_session()
            fresh = _frozen_credentials(session)
            if fresh is None or fresh == self._credentials_seen:
                return False
            self._retired.append(self._client)
            self._client = self._build_client(session)
            self._credentials_seen = fresh
        logger.info("AWS credentials changed; S3 client rebuilt with the new ones")
        return True

    def _call(self, operation: str, doing: str, /, **params: Any) -> dict[str, Any]:
        client = self._client
        try:
            result: dict[str, Any] = getattr(client, operation)(**params)
        except _SDK_ERRORS as exc:
            raise self._failure(exc, doing, client) from exc
        with self._lock:
            self._expired_once.discard(doing)
        return result

    def _failure(self, exc: Exception, doing: str, client: BaseClient) -> CloudputError:
        """Translate ``exc``; an expired token is transient once new keys are found."""
        error = translate_error(exc, doing)
        code = _error_code(exc)
        if code in _EXPIRED_CODES and self.reload_credentials(client):
            return TransientError(
                f"{doing} failed: {code}; new credentials were found and will be used",
                hint="the request is sent again",
            )
        if isinstance(error, PresignExpiredError):
            return self._expired_signature(doing, error)
        return error

    def _expired_signature(self, doing: str, error: CloudputError) -> CloudputError:
        """A 403 "Request has expired" on a request botocore signed just now.

        The signature's date was too old when it arrived (a stalled connection or a
        wrong clock). It is signed afresh and sent once more; a second expiry of the
        same request is a credentials error, exit 5 (docs/reliability.md).
        """
        with self._lock:
            again = doing in self._expired_once
            self._expired_once.add(doing)
        if again:
            return CredentialsError(
                f"{error.message} (twice, with a fresh signature)",
                hint="check this machine's clock (the signature's date is refused)",
            )
        return TransientError(
            f"{error.message}; signing it again", hint="the request is sent again"
        )

    def close(self) -> None:
        """Close the client and any replaced by a credentials reload."""
        with self._lock:
            for client in [*self._retired, self._client]:
                client.close()
            self._retired.clear()

    def endpoint(self) -> str:
        """The base URL requests go to (for ``doctor``)."""
        return str(self._client.meta.endpoint_url)

    # -- bucket and object ---------------------------------------------------------

    def check_bucket(self, target: Target) -> None:
        """HeadBucket; a plain 403 (no ListBucket permission) is let through."""
        client = self._client
        doing = f"HeadBucket of {target.bucket!r}"
        try:
            response = client.head_bucket(Bucket=target.bucket)
        except ClientError as exc:
            code, status, _ = _error_fields(exc)
            if status == 404 or code in ("NoSuchBucket", "404"):
                raise BucketNotFoundError(
                    f"bucket {target.bucket!r} does not exist at {self._where()}",
                    hint="create it, or check its name, --region and --endpoint-url",
                ) from exc
            if code == "403":
                self._explain_forbidden(target)
                return
            raise self._failure(exc, doing, client) from exc
        except BotoCoreError as exc:
            raise self._failure(exc, doing, client) from exc
        region = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        if region.get("x-amz-bucket-region"):
            self._bucket_regions[target.bucket] = region["x-amz-bucket-region"]

    def _explain_forbidden(self, target: Target) -> None:
        """A HEAD 403 has no error code: a request with a body tells the reason."""
        client = self._client
        try:
            client.list_objects_v2(Bucket=target.bucket, MaxKeys=0)
        except ClientError as exc:
            if _error_code(exc) == "AccessDenied":
                logger.debug("no ListBucket permission on %s; going on", target.bucket)
                return
            raise self._failure(
                exc, f"ListObjectsV2 of {target.bucket!r}", client
            ) from exc
        except BotoCoreError as exc:
            raise self._failure(
                exc, f"ListObjectsV2 of {target.bucket!r}", client
            ) from exc

    def _where(self) -> str:
        return self.endpoint_url or f"AWS region {self.region}"

    def head(self, target: Target) -> RemoteObject | None:
        """HeadObject (with stored checksums); None when nothing is at the key.

        With an SSE-C key in the settings it is sent along (S3 refuses to describe
        an SSE-C object without its key)."""
        key_params = _customer_key_params(self.settings.customer_key)
        response = self._head_raw(target, key_params)
        return None if response is None else _remote_object(response)

    def _head_raw(
        self, target: Target, key_params: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        client = self._client
        try:
            response: dict[str, Any] = client.head_object(
                Bucket=target.bucket,
                Key=target.key,
                ChecksumMode="ENABLED",
                **(key_params or {}),
            )
        except ClientError as exc:
            if _error_code(exc) in _MISSING_CODES:
                return None
            raise self._failure(exc, f"HeadObject of {target.uri}", client) from exc
        except BotoCoreError as exc:
            raise self._failure(exc, f"HeadObject of {target.uri}", client) from exc
        return response

    def storage_url(self, target: Target) -> str:
        """Path style on a custom endpoint, virtual-hosted on AWS, or public domain."""
        key = quote(target.key, safe="/~")
        domain = self.settings.public_domain
        if domain:
            base = domain if "://" in domain else f"https://{domain}"
            return f"{base.rstrip('/')}/{key}"
        if self.endpoint_url and self.settings.addressing_style == "virtual":
            parts = urlsplit(self.endpoint_url)
            return f"{parts.scheme}://{target.bucket}.{parts.netloc}/{key}"
        if self.endpoint_url:
            return f"{self.endpoint_url.rstrip('/')}/{target.bucket}/{key}"
        region = self._bucket_regions.get(target.bucket, self.region)
        if "." in target.bucket:
            # A dotted bucket name breaks the *.s3 TLS certificate: use path style.
            return f"https://s3.{region}.amazonaws.com/{target.bucket}/{key}"
        return f"https://{target.bucket}.s3.{region}.amazonaws.com/{key}"

    # -- multipart lifecycle -------------------------------------------------------

    def start(self, spec: ObjectSpec, part_size_bytes: int) -> str:
        """CreateMultipartUpload; returns the UploadId (the part size is not sent)."""
        params = self._object_params(spec)
        if spec.checksum_algorithm == "crc32c":
            params["ChecksumAlgorithm"] = "CRC32C"
        response = self._call(
            "create_multipart_upload",
            f"CreateMultipartUpload of {spec.target.uri}",
            **params,
        )
        return str(response["UploadId"])

    def send_part(
        self,
        spec: ObjectSpec,
        session: str,
        part: PartSpec,
        body: Body,
        digest: Digest | None,
    ) -> Receipt:
        """UploadPart with its Content-MD5 or CRC32C; the ETag is kept verbatim.

        The body is streamed from a fresh reader (botocore rewinds it to sign and
        reads it in small blocks), so no copy of the part is held.
        """
        stream = body.open()
        params: dict[str, Any] = {
            "Bucket": spec.target.bucket,
            "Key": spec.target.key,
            "UploadId": session,
            "PartNumber": part.number,
            "Body": stream,
            "ContentLength": body.size_bytes,
        }
        params.update(_digest_params(digest))
        params.update(self._customer_key_for(spec))
        doing = f"UploadPart {part.number} of {spec.target.uri}"
        with stream:
            response = self._call("upload_part", doing, **params)
        self._check_part_etag(str(response["ETag"]), digest, doing, spec)
        return Receipt(
            number=part.number,
            etag=str(response["ETag"]),
            size_bytes=body.size_bytes,
            checksum=digest.value_b64 if digest else None,
        )

    def _check_part_etag(
        self, etag: str, digest: Digest | None, doing: str, spec: ObjectSpec
    ) -> None:
        """A plain-MD5 part ETag must be the MD5 that was sent (BadDigest otherwise).

        S3 checks Content-MD5 itself; servers that do not (moto, some S3-compatible
        ones) store a body corrupted in transit, and its ETag is the MD5 of what they
        stored. SSE-KMS and SSE-C part ETags are not MD5s and are not compared.
        """
        if digest is None or digest.algorithm != "md5":
            return
        if spec.encryption in _NON_MD5_ETAG_ENCRYPTION:
            return
        shown = etag.strip('"')
        sent = base64.b64decode(digest.value_b64).hex()
        if _MD5_HEX.match(shown) and shown != sent:
            raise BadDigestError(
                f"{doing}: the server stored a body with MD5 {shown}, the part sent "
                f"has MD5 {sent} (corrupted in transit)",
                hint="the part is sent again",
            )

    def held_parts(
        self, spec: ObjectSpec, session: str, parts: Sequence[PartSpec]
    ) -> dict[int, Receipt]:
        """ListParts, every page; a part whose size is off the plan is left out."""
        self._customer_key_for(spec)  # resume without the SSE-C key stops here
        planned = {part.number: part for part in parts}
        held: dict[int, Receipt] = {}
        for listed in self._list_parts(spec, session):
            part = planned.get(int(listed["PartNumber"]))
            if part is None or int(listed["Size"]) != part.size_bytes:
                continue
            held[part.number] = _receipt_from_listing(listed, part)
        return held

    def _list_parts(self, spec: ObjectSpec, session: str) -> list[dict[str, Any]]:
        doing = f"ListParts of {spec.target.uri}"
        listed: list[dict[str, Any]] = []
        marker = 0
        while True:
            page = self._call(
                "list_parts",
                doing,
                Bucket=spec.target.bucket,
                Key=spec.target.key,
                UploadId=session,
                MaxParts=self._page_size,
                PartNumberMarker=marker,
            )
            listed.extend(page.get("Parts", []))
            if not page.get("IsTruncated"):
                return listed
            next_marker = int(page.get("NextPartNumberMarker") or 0)
            if next_marker <= marker:
                raise TransientError(
                    f"{doing}: the server's page marker did not advance"
                )
            marker = next_marker

    def complete(
        self,
        spec: ObjectSpec,
        session: str,
        receipts: Sequence[Receipt],
        expected: Expected,
    ) -> Verified:
        """CompleteMultipartUpload, then HeadObject to confirm size and checksum.

        A lost first response shows up as NoSuchUpload (AWS) or a 5xx (moto) on the
        second call: then the object at the key is accepted only if it is provably
        the one made of these parts (multipart ETag or composite CRC32C).
        """
        ordered = _ordered_receipts(receipts, spec.target)
        client = self._client
        try:
            client.complete_multipart_upload(
                Bucket=spec.target.bucket,
                Key=spec.target.key,
                UploadId=session,
                MultipartUpload={"Parts": _complete_parts(ordered, spec)},
                **self._customer_key_for(spec),
            )
        except _SDK_ERRORS as exc:
            error = self._failure(
                exc, f"CompleteMultipartUpload of {spec.target.uri}", client
            )
            if not isinstance(error, (UploadGoneError, TransientError)):
                raise error from exc
            return self._recover_completed(spec, session, ordered, expected, error, exc)
        return self._confirm(spec, ordered, expected)

    def _recover_completed(
        self,
        spec: ObjectSpec,
        session: str,
        ordered: Sequence[Receipt],
        expected: Expected,
        error: CloudputError,
        cause: Exception,
    ) -> Verified:
        response = self._head_raw(spec.target, self._customer_key_for(spec))
        if response is not None:
            verified, problem = _judge_multipart(spec, ordered, expected, response)
            if problem is None and verified.verified != "size":
                logger.info("%s was already completed (lost response)", spec.target.uri)
                if not isinstance(error, UploadGoneError):
                    self._abort_quietly(spec, session)
                return verified
        raise error from cause

    def _confirm(
        self, spec: ObjectSpec, ordered: Sequence[Receipt], expected: Expected
    ) -> Verified:
        response = self._head_raw(spec.target, self._customer_key_for(spec))
        if response is None:
            raise IntegrityError(
                f"{spec.target.uri}: CompleteMultipartUpload succeeded but HeadObject "
                "finds no object",
                hint="run cloudput verify, then upload again",
            )
        verified, problem = _judge_multipart(spec, ordered, expected, response)
        if problem is not None:
            raise IntegrityError(
                f"{spec.target.uri}: {problem}", hint="upload the file again"
            )
        return verified

    def abort(self, spec: ObjectSpec, session: str) -> None:
        """AbortMultipartUpload; an upload S3 no longer knows counts as aborted."""
        try:
            self._call(
                "abort_multipart_upload",
                f"AbortMultipartUpload of {spec.target.uri}",
                Bucket=spec.target.bucket,
                Key=spec.target.key,
                UploadId=session,
            )
        except UploadGoneError:
            logger.debug("%s: upload already gone at S3", spec.target.uri)

    def _abort_quietly(self, spec: ObjectSpec, session: str) -> None:
        try:
            self.abort(spec, session)
        except CloudputError as exc:
            logger.warning(
                "%s: could not abort the leftover upload: %s", spec.target.uri, exc
            )

    # -- single request ------------------------------------------------------------

    def put_single(
        self, spec: ObjectSpec, body: Body, digest: Digest | None
    ) -> Verified:
        """PutObject streamed from ``body``, confirmed by its own answer when that
        proves the bytes (an MD5-based ETag equal to the body's MD5, or the CRC32C
        sent echoed back), else by a HeadObject."""
        params = self._object_params(spec)
        params.update(_digest_params(digest))
        reader = body.open()
        try:
            answer = self._call(
                "put_object",
                f"PutObject of {spec.target.uri}",
                Body=reader,
                ContentLength=body.size_bytes,
                **params,
            )
        finally:
            reader.close()
        proven = _proven_by_put_answer(body.size_bytes, digest, answer)
        if proven is not None:
            return proven
        response = self._head_raw(spec.target, self._customer_key_for(spec))
        if response is None:
            raise IntegrityError(
                f"{spec.target.uri}: PutObject succeeded but HeadObject finds nothing"
            )
        verified, problem = _judge_single(body.size_bytes, digest, response)
        if problem is not None:
            raise IntegrityError(
                f"{spec.target.uri}: {problem}", hint="upload the file again"
            )
        return verified

    def _object_params(self, spec: ObjectSpec) -> dict[str, Any]:
        params: dict[str, Any] = {
            "Bucket": spec.target.bucket,
            "Key": spec.target.key,
            "ContentType": spec.content_type,
        }
        if spec.cache_control:
            params["CacheControl"] = spec.cache_control
        if spec.metadata:
            params["Metadata"] = dict(spec.metadata)
        if spec.storage_class:
            params["StorageClass"] = spec.storage_class
        if spec.content_encoding:
            params["ContentEncoding"] = spec.content_encoding
        if spec.content_disposition:
            params["ContentDisposition"] = spec.content_disposition
        if spec.acl:
            params["ACL"] = spec.acl
        if spec.tags:
            params["Tagging"] = urlencode(dict(spec.tags), quote_via=quote)
        params.update(_encryption_params(spec))
        params.update(self._customer_key_for(spec))
        return params

    def _customer_key_for(self, spec: ObjectSpec) -> dict[str, Any]:
        """The SSE-C parameters for an SSE-C upload: the key given for this run,
        which must be the one the upload started with (its MD5 is journaled)."""
        if spec.encryption != "sse-c":
            return {}
        key = self.settings.customer_key
        if key is None:
            raise UsageError(
                f"upload {spec.upload_id} of {spec.target.uri} is encrypted with a "
                "customer-provided key (SSE-C), and no key was given",
                hint="pass --sse-c-key-file with the key the upload started with",
            )
        if checksums.b64(hashlib.md5(key).digest()) != spec.encryption_key_id:
            raise UsageError(
                f"upload {spec.upload_id} of {spec.target.uri} was started with "
                "another SSE-C key than the one given",
                hint="pass --sse-c-key-file with the key the upload started with",
            )
        return _customer_key_params(key)

    # -- presigned requests --------------------------------------------------------

    def presign_part(
        self,
        spec: ObjectSpec,
        session: str,
        part: PartSpec,
        ttl_s: float,
        content_md5: str | None = None,
    ) -> PresignedRequest:
        """A presigned UploadPart; a given Content-MD5 is signed and must be sent."""
        _refuse_presigned_customer_key(spec)
        if spec.checksum_algorithm == "crc32c":
            raise NotSupportedError(
                "presigned S3 parts carry a signed Content-MD5, not a CRC32C checksum",
                hint="use --checksum md5 for uploads sent through presigned URLs",
            )
        params: dict[str, Any] = {
            "Bucket": spec.target.bucket,
            "Key": spec.target.key,
            "UploadId": session,
            "PartNumber": part.number,
        }
        # Not signed, but a sender that adds none may default to a form type (curl
        # --data-binary, urllib), which moto then tries to parse as a form.
        headers = {"Content-Type": PART_CONTENT_TYPE}
        if content_md5:
            params["ContentMD5"] = content_md5
            headers["Content-MD5"] = content_md5
        return self._presign("upload_part", params, headers, ttl_s, spec.target)

    def presign_single(
        self, spec: ObjectSpec, ttl_s: float, content_md5: str | None = None
    ) -> PresignedRequest:
        """A presigned PutObject carrying the object's content type and metadata."""
        _refuse_presigned_customer_key(spec)
        params = self._object_params(spec)
        headers = _signed_object_headers(params)
        if content_md5:
            params["ContentMD5"] = content_md5
            headers["Content-MD5"] = content_md5
        return self._presign("put_object", params, headers, ttl_s, spec.target)

    def _presign(
        self,
        operation: str,
        params: dict[str, Any],
        headers: dict[str, str],
        ttl_s: float,
        target: Target,
    ) -> PresignedRequest:
        if not 0 < ttl_s <= S3_MAX_PRESIGN_TTL_S:
            raise UsageError(
                f"presigned URL lifetime {ttl_s:g}s is not within "
                f"1..{S3_MAX_PRESIGN_TTL_S} seconds",
                hint="S3 signs URLs for at most 7 days",
            )
        client = self._client
        try:
            url = client.generate_presigned_url(
                operation, Params=params, ExpiresIn=int(ttl_s), HttpMethod="PUT"
            )
        except _SDK_ERRORS as exc:
            raise self._failure(
                exc, f"presigning {operation} for {target.uri}", client
            ) from exc
        return PresignedRequest(url, "PUT", headers, time.time() + int(ttl_s))

    # -- housekeeping --------------------------------------------------------------

    def list_incomplete(self, target: Target, older_than_s: float) -> list[Incomplete]:
        """ListMultipartUploads under the target's key prefix, older than the cutoff."""
        cutoff = time.time() - older_than_s
        client = self._client
        found: list[Incomplete] = []
        try:
            pages = client.get_paginator("list_multipart_uploads").paginate(
                Bucket=target.bucket, Prefix=target.key
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    initiated = upload.get("Initiated")
                    initiated_at = (
                        initiated.timestamp() if initiated is not None else None
                    )
                    if initiated_at is not None and initiated_at > cutoff:
                        continue
                    found.append(
                        Incomplete(
                            Target("s3", target.bucket, upload["Key"]),
                            upload["UploadId"],
                            initiated_at,
                        )
                    )
        except _SDK_ERRORS as exc:
            raise self._failure(
                exc, f"ListMultipartUploads of {target.uri}", client
            ) from exc
        return found


# -- helpers: pure functions over S3 responses --------------------------------------


def _configured_endpoint(settings: ProviderSettings) -> str | None:
    """The endpoint from settings, else from the variables botocore itself honours."""
    if settings.endpoint_url:
        return settings.endpoint_url
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    return (
        os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or None
    )


def _new_session() -> botocore.session.Session:
    """A botocore session whose responses parse timestamps with ``fromisoformat``.

    botocore, not boto3: boto3 adds nothing cloudput uses (resources, the transfer
    manager) and importing it costs about a tenth of a second at every start.

    botocore's default parser goes through dateutil (about 70 us a date): ListParts of
    a 10,000-part upload spent most of its client time there. ISO 8601 dates (XML
    bodies) take the fast path; anything else (HTTP dates in headers) botocore's own.
    """
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=_parse_timestamp
    )
    try:
        core.get_scoped_config()  # a profile that does not exist fails here, once
    except ProfileNotFound as exc:
        raise ConfigError(
            f"AWS profile {exc.kwargs.get('profile')!r} not found",
            hint="check AWS_PROFILE; profiles are read from ~/.aws/config and "
            "~/.aws/credentials, or AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE",
        ) from exc
    return core


def _parse_timestamp(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed
    return botocore_parse_timestamp(value)


def _is_aws_host(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn", ".api.aws"))


def _frozen_credentials(
    session: botocore.session.Session,
) -> tuple[str, str, str | None] | None:
    """The current key, secret and token, kept only to notice that they changed."""
    credentials = session.get_credentials()
    if credentials is None:
        return None
    frozen = credentials.get_frozen_credentials()
    return (frozen.access_key, frozen.secret_key, frozen.token)


def _digest_params(digest: Digest | None) -> dict[str, str]:
    if digest is None:
        return {}
    if digest.algorithm == "md5":
        return {"ContentMD5": digest.value_b64}
    if digest.algorithm == "crc32c":
        # The algorithm too: moto (and some S3-compatible servers) store the value
        # only when it is named; botocore sends the given value, no trailer.
        return {"ChecksumAlgorithm": "CRC32C", "ChecksumCRC32C": digest.value_b64}
    raise ValueError(f"S3 does not take a {digest.algorithm!r} digest")


def _encryption_params(spec: ObjectSpec) -> dict[str, str]:
    """Server-side encryption with S3-managed or KMS keys (SSE-C is apart)."""
    if spec.encryption not in ("AES256", *_KMS_ENCRYPTION):
        return {}
    params = {"ServerSideEncryption": str(spec.encryption)}
    if spec.encryption_key_id and spec.encryption in _KMS_ENCRYPTION:
        params["SSEKMSKeyId"] = spec.encryption_key_id
    return params


def _customer_key_params(key: bytes | None) -> dict[str, Any]:
    """SSE-C request parameters; botocore adds the base64 key and its MD5 headers."""
    if key is None:
        return {}
    return {"SSECustomerAlgorithm": SSE_C_ALGORITHM, "SSECustomerKey": key}


def _refuse_presigned_customer_key(spec: ObjectSpec) -> None:
    if spec.encryption == "sse-c":
        raise NotSupportedError(
            f"presigned requests for {spec.target.uri} would have to carry the SSE-C "
            "key to the outside uploader",
            hint="upload with `cloudput upload --sse-c-key-file`, or use --sse",
        )


_SIGNED_HEADERS = {
    "ContentEncoding": "Content-Encoding",
    "ContentDisposition": "Content-Disposition",
    "ACL": "x-amz-acl",
    "Tagging": "x-amz-tagging",
}


def _signed_object_headers(params: Mapping[str, Any]) -> dict[str, str]:
    """The headers a presigned PutObject signs for ``params``; the sender sends them."""
    headers = {"Content-Type": str(params["ContentType"])}
    if "CacheControl" in params:
        headers["Cache-Control"] = str(params["CacheControl"])
    for name, value in params.get("Metadata", {}).items():
        headers[f"x-amz-meta-{name}"] = str(value)
    if "StorageClass" in params:
        headers["x-amz-storage-class"] = str(params["StorageClass"])
    for param, header in _SIGNED_HEADERS.items():
        if param in params:
            headers[header] = str(params[param])
    if "ServerSideEncryption" in params:
        headers["x-amz-server-side-encryption"] = str(params["ServerSideEncryption"])
    if "SSEKMSKeyId" in params:
        headers["x-amz-server-side-encryption-aws-kms-key-id"] = str(
            params["SSEKMSKeyId"]
        )
    return headers


def _receipt_from_listing(listed: Mapping[str, Any], part: PartSpec) -> Receipt:
    """A receipt for a listed part: its ETag verbatim and the digest S3 shows for it."""
    etag = str(listed["ETag"])
    checksum = listed.get("ChecksumCRC32C")
    if checksum is None and _MD5_HEX.match(etag.strip('"')):
        checksum = checksums.hex_to_b64(etag.strip('"'))
    return Receipt(part.number, etag, part.size_bytes, checksum)


def _ordered_receipts(receipts: Sequence[Receipt], target: Target) -> list[Receipt]:
    """Receipts ascending, each number once, numbered 1..N without a gap."""
    by_number: dict[int, Receipt] = {}
    for receipt in receipts:
        earlier = by_number.get(receipt.number)
        if earlier is not None and earlier.etag != receipt.etag:
            raise CloudputError(
                f"{target.uri}: two different receipts for part {receipt.number}"
            )
        by_number[receipt.number] = receipt
    ordered = [by_number[number] for number in sorted(by_number)]
    missing = sorted(set(range(1, len(ordered) + 1)) - set(by_number))
    if not ordered or missing:
        raise CloudputError(
            f"{target.uri}: refusing to complete without part(s) {missing or [1]}",
            hint="resume the upload to send the missing parts",
        )
    return ordered


def _complete_parts(
    ordered: Sequence[Receipt], spec: ObjectSpec
) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for receipt in ordered:
        entry: dict[str, Any] = {"PartNumber": receipt.number, "ETag": receipt.etag}
        if spec.checksum_algorithm == "crc32c" and receipt.checksum:
            entry["ChecksumCRC32C"] = receipt.checksum
        parts.append(entry)
    return parts


def _remote_object(response: Mapping[str, Any]) -> RemoteObject:
    found = {
        name.removeprefix("Checksum").lower(): str(value)
        for name, value in response.items()
        if name.startswith("Checksum") and name != "ChecksumType" and value
    }
    version = response.get("VersionId")
    return RemoteObject(
        size_bytes=int(response.get("ContentLength", 0)),
        etag=response.get("ETag"),
        checksums=found,
        metadata=dict(response.get("Metadata", {})),
        generation=version if version and version != "null" else None,
        content_type=response.get("ContentType"),
    )


def _is_etag_md5_based(response: Mapping[str, Any]) -> bool:
    """SSE-KMS and SSE-C objects have ETags that are not md5 digests."""
    return response.get(
        "ServerSideEncryption"
    ) not in _KMS_ENCRYPTION and not response.get("SSECustomerAlgorithm")


def _expected_multipart_etag(
    ordered: Sequence[Receipt], expected: Expected
) -> str | None:
    """md5-of-md5s "-N" from the local part md5s, else from the parts' own ETags."""
    local = [d for d in expected.part_digests if d.algorithm == "md5"]
    if local and len(local) == len(ordered):
        return checksums.multipart_etag(local)
    hexes = [receipt.etag.strip('"') for receipt in ordered]
    if all(_MD5_HEX.match(value) for value in hexes):
        return checksums.multipart_etag(
            Digest("md5", checksums.hex_to_b64(value)) for value in hexes
        )
    return None


def _composite_crc32c(expected: Expected, count: int) -> str | None:
    """S3's composite CRC32C of a multipart object, from the local part digests."""
    local = [d for d in expected.part_digests if d.algorithm == "crc32c"]
    if not local or len(local) != count:
        return None
    joined = b"".join(base64.b64decode(d.value_b64) for d in local)
    composite = checksums.digest_of(joined, "crc32c")
    assert composite is not None
    return composite.value_b64


def _judge_multipart(
    spec: ObjectSpec,
    ordered: Sequence[Receipt],
    expected: Expected,
    response: Mapping[str, Any],
) -> tuple[Verified, str | None]:
    """Compare a completed object with what was sent; returns (verdict, problem)."""
    remote = _remote_object(response)
    if remote.size_bytes != expected.size_bytes:
        problem = f"S3 holds {remote.size_bytes} bytes, expected {expected.size_bytes}"
        return Verified(remote, spec.checksum_algorithm, None, "size"), problem
    if spec.checksum_algorithm == "crc32c":
        return _judge_crc32c(spec, ordered, expected, remote, response)
    return _judge_etag(spec, ordered, expected, remote, response)


def _judge_crc32c(
    spec: ObjectSpec,
    ordered: Sequence[Receipt],
    expected: Expected,
    remote: RemoteObject,
    response: Mapping[str, Any],
) -> tuple[Verified, str | None]:
    shown = remote.checksums.get("crc32c")
    wanted = _composite_crc32c(expected, len(ordered))
    if shown is None or wanted is None:
        return _judge_etag(spec, ordered, expected, remote, response)
    if shown.split("-")[0] != wanted:
        return Verified(remote, "crc32c", shown, "size"), (
            f"S3's composite CRC32C {shown} differs from the parts sent ({wanted})"
        )
    return Verified(remote, "crc32c", shown, "crc32c"), None


def _judge_etag(
    spec: ObjectSpec,
    ordered: Sequence[Receipt],
    expected: Expected,
    remote: RemoteObject,
    response: Mapping[str, Any],
) -> tuple[Verified, str | None]:
    wanted = _expected_multipart_etag(ordered, expected)
    algorithm = spec.checksum_algorithm
    if wanted is None or not _is_etag_md5_based(response) or remote.etag is None:
        return Verified(remote, algorithm, None, "size"), None
    shown = remote.etag.strip('"')
    if shown != wanted:
        return Verified(remote, algorithm, None, "size"), (
            f"S3's multipart ETag {shown} differs from the parts sent ({wanted})"
        )
    digest_hex, _, count = wanted.partition("-")
    value = f"{checksums.hex_to_b64(digest_hex)}-{count}"
    return Verified(remote, algorithm, value, "part-etags"), None


def _proven_by_put_answer(
    size_bytes: int, digest: Digest | None, answer: Mapping[str, Any]
) -> Verified | None:
    """The PutObject answer as proof of the stored bytes, or None to ask HeadObject.

    An MD5-based ETag is the MD5 of the bytes the server stored (moto and S3 alike),
    so an ETag equal to the body's MD5 proves them, size included; a differing one is
    a body corrupted in transit. A CRC32C is proof where the server checks it (S3);
    the answer echoes it. SSE-KMS/SSE-C ETags and uploads without a checksum prove
    nothing and get a HeadObject.
    """
    if digest is None:
        return None
    remote = replace(_remote_object(answer), size_bytes=size_bytes)
    if digest.algorithm == "crc32c":
        if remote.checksums.get("crc32c") == digest.value_b64:
            return Verified(remote, "crc32c", digest.value_b64, "crc32c")
        return None
    if not _is_etag_md5_based(answer) or remote.etag is None:
        return None
    shown = remote.etag.strip('"')
    wanted = base64.b64decode(digest.value_b64).hex()
    if not _MD5_HEX.match(shown):
        return None
    if shown != wanted:
        raise BadDigestError(
            f"S3 stored a body with MD5 {shown}, the file's is {wanted} "
            "(corrupted in transit)",
            hint="the file is sent again",
        )
    return Verified(remote, "md5", digest.value_b64, "md5")


def _judge_single(
    size_bytes: int, digest: Digest | None, response: Mapping[str, Any]
) -> tuple[Verified, str | None]:
    remote = _remote_object(response)
    algorithm = digest.algorithm if digest else "none"
    if remote.size_bytes != size_bytes:
        problem = f"S3 holds {remote.size_bytes} bytes, expected {size_bytes}"
        return Verified(remote, algorithm, None, "size"), problem
    if digest is None:
        return Verified(remote, "none", None, "size"), None
    if digest.algorithm == "crc32c":
        shown = remote.checksums.get("crc32c")
        if shown is None:
            return Verified(remote, "crc32c", digest.value_b64, "size"), None
        if shown != digest.value_b64:
            return Verified(remote, "crc32c", shown, "size"), (
                f"S3's CRC32C {shown} differs from the file's {digest.value_b64}"
            )
        return Verified(remote, "crc32c", shown, "crc32c"), None
    if not _is_etag_md5_based(response) or remote.etag is None:
        return Verified(remote, "md5", digest.value_b64, "size"), None
    wanted = base64.b64decode(digest.value_b64).hex()
    if remote.etag.strip('"') != wanted:
        return Verified(remote, "md5", None, "size"), (
            f"S3's ETag {remote.etag} differs from the file's md5 {wanted}"
        )
    return Verified(remote, "md5", digest.value_b64, "md5"), None
