"""The provider contract shared by S3, GCS and Azure, and the records it speaks in.

Provider differences live here as data (``ProviderLimits``); the engine never branches
on a provider's name and never imports an SDK.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from cloudput.errors import NotSupportedError, UsageError
from cloudput.keys import Target

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


@dataclass(frozen=True)
class ProviderLimits:
    """What a provider allows for part sizes and counts; the planner obeys these.

    ``strategy`` is "multipart" (parts in any order, in parallel: S3 parts, Azure blocks)
    or "resumable" (one session, bytes in order: GCS). ``is_sequential`` providers get
    their parts one at a time, in order, and a whole-file running checksum from the
    engine.
    """

    name: str
    strategy: str
    is_sequential: bool
    min_part_size_bytes: int  # every part but the last
    max_part_size_bytes: int
    max_parts: int
    part_size_multiple_bytes: int  # every part but the last is a multiple of this
    default_part_size_bytes: int
    max_single_size_bytes: int  # largest object one request may create
    default_checksum: str  # "md5" | "crc32c"
    checksums: tuple[str, ...]  # algorithms a part may carry: "md5", "crc32c"
    rule_source: str  # the document the limits come from, named in messages
    # Object options (ObjectSpec fields) this provider cannot store, each with the
    # workaround named in the not-supported error (docs/limitations.md).
    unsupported: Mapping[str, str] = field(default_factory=dict)
    # The only storage classes accepted, compared without case; empty: any is passed on.
    storage_classes: tuple[str, ...] = ()
    # Values ObjectSpec.encryption may take here; empty: none.
    encryptions: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProviderSettings:
    """How to reach a provider: everything resume needs besides credentials."""

    endpoint_url: str | None = None
    region: str | None = None
    concurrency: int = 8
    timeout_s: float = 60.0
    public_domain: str | None = None  # AWS_PUBLIC_DOMAIN: base of storage_url
    verify_ssl: bool | str = True  # False, or a CA bundle's path (--ca-bundle)
    extra: Mapping[str, str] = field(default_factory=dict)
    addressing_style: str | None = None  # S3: "auto" | "path" | "virtual"
    # S3 SSE-C: the 32-byte customer key, sent with each request; never journaled,
    # logged or shown (hence repr=False).
    customer_key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ObjectSpec:
    """The object to create: where, how big, and its stored attributes.

    Every field is journaled, so ``resume`` reaches the same object with the same
    attributes. Which provider uses what (docs/providers/*.md):

    - ``content_encoding``, ``content_disposition``: all three.
    - ``tags``: S3 object tags, Azure blob index tags; not GCS.
    - ``acl``: an S3 canned ACL; not GCS or Azure.
    - ``encryption`` and ``encryption_key_id``: S3 ``AES256``, ``aws:kms`` or
      ``aws:kms:dsse`` with the KMS key id, or ``sse-c`` with the customer key's MD5
      (base64; the key itself is in ``ProviderSettings.customer_key``); GCS ``kms``
      with the key's resource name; Azure ``scope`` with the encryption scope's name.
    """

    target: Target
    size_bytes: int
    content_type: str
    cache_control: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    storage_class: str | None = None
    checksum_algorithm: str = "md5"  # "md5" | "crc32c" | "none"
    upload_id: str = ""  # cloudput's id; Azure block ids carry it
    content_encoding: str | None = None
    content_disposition: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    acl: str | None = None
    encryption: str | None = None
    encryption_key_id: str | None = None


#: ObjectSpec fields that are options a provider may not support, and their flags.
OPTION_FLAGS: dict[str, str] = {
    "content_encoding": "--content-encoding",
    "content_disposition": "--content-disposition",
    "tags": "--tags",
    "acl": "--acl",
}
#: The flag that asks for each value of ObjectSpec.encryption.
ENCRYPTION_FLAGS: dict[str, str] = {
    "AES256": "--sse AES256",
    "aws:kms": "--sse aws:kms",
    "aws:kms:dsse": "--sse aws:kms:dsse",
    "sse-c": "--sse-c-key-file",
    "kms": "--kms-key",
    "scope": "--encryption-scope",
}


def check_object_options(spec: ObjectSpec, limits: ProviderLimits) -> None:
    """Refuse, before any request, an option this provider cannot store.

    Raises ``NotSupportedError`` (exit 10) naming the feature, the provider and a
    workaround (``limits.unsupported``), or ``UsageError`` (exit 2) for a storage
    class the provider does not have.
    """
    for name, flag in OPTION_FLAGS.items():
        if getattr(spec, name) and name in limits.unsupported:
            raise NotSupportedError(
                f"{flag} is not supported on {limits.name} ({spec.target.uri})",
                hint=limits.unsupported[name],
            )
    if spec.encryption and spec.encryption not in limits.encryptions:
        flag = ENCRYPTION_FLAGS.get(spec.encryption, spec.encryption)
        raise NotSupportedError(
            f"{flag} is not supported on {limits.name} ({spec.target.uri})",
            hint=limits.unsupported.get("encryption", "leave the option out"),
        )
    wanted = (spec.storage_class or "").lower()
    allowed = {value.lower() for value in limits.storage_classes}
    if wanted and allowed and wanted not in allowed:
        raise UsageError(
            f"--storage-class {spec.storage_class!r} is not a {limits.name} "
            "storage class",
            hint=f"use one of: {', '.join(limits.storage_classes)}",
        )


@dataclass(frozen=True)
class PartSpec:
    """One numbered byte range of the source; parts are numbered from 1."""

    number: int
    offset: int
    size_bytes: int

    @property
    def end(self) -> int:
        return self.offset + self.size_bytes


@dataclass(frozen=True)
class Digest:
    """A checksum of some bytes: algorithm name and base64 value as providers show it."""

    algorithm: str  # "md5" | "crc32c"
    value_b64: str


@dataclass(frozen=True)
class Receipt:
    """What the provider returned for a part: S3 ETag (exactly as sent back), Azure
    block id (before base64), GCS "" (the session keeps the bytes)."""

    number: int
    etag: str
    size_bytes: int
    checksum: str | None = None  # the per-part digest we sent, base64


@dataclass(frozen=True)
class Expected:
    """What the final object must be: its size and every digest computed locally.

    ``part_digests`` are the per-part digests in part order (S3 derives its multipart
    ETag from them); ``whole`` are whole-file digests where the engine could compute
    them (sequential providers and single-request uploads).
    """

    size_bytes: int
    part_digests: Sequence[Digest] = ()
    whole: Sequence[Digest] = ()


@dataclass(frozen=True)
class RemoteObject:
    """What the provider holds at a key."""

    size_bytes: int
    etag: str | None = None
    checksums: Mapping[str, str] = field(default_factory=dict)  # algorithm -> base64
    metadata: Mapping[str, str] = field(default_factory=dict)
    generation: str | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class Verified:
    """A final object the provider confirmed: what was checked and the value shown."""

    remote: RemoteObject
    algorithm: str  # the checksum named in the record ("md5", "crc32c", "none")
    value: str | None  # the provider's checksum value (base64), or None
    verified: str  # what the provider confirmed: "md5", "crc32c", "part-etags", ...


@dataclass(frozen=True)
class PresignedRequest:
    """A request an uploader without credentials can send as-is."""

    url: str
    method: str
    headers: Mapping[str, str]
    expires_at: float | None  # epoch seconds


@dataclass(frozen=True)
class Incomplete:
    """An unfinished upload found at the provider (for ``cleanup``)."""

    target: Target
    session: str
    initiated_at: float | None


class Body(Protocol):
    """A re-readable byte source of known size (a single-request body or one part)."""

    size_bytes: int

    def open(self) -> BinaryIO:
        """Return a fresh reader positioned at the start."""
        ...


class Provider(Protocol):
    """The small backend contract every cloud implements.

    Errors are raised as ``cloudput.errors`` classes, translated where the SDK is
    called: ``TransientError`` (may be retried), ``ThrottledError``,
    ``CredentialsError``, ``BucketNotFoundError``, ``IntegrityError``,
    ``UploadGoneError`` (the session is unknown), ``NotSupportedError``.
    A provider never retries on its own; the engine owns retry policy.
    """

    limits: ProviderLimits

    def check_bucket(self, target: Target) -> None:
        """Raise ``BucketNotFoundError`` / ``CredentialsError`` before any upload."""
        ...

    def start(self, spec: ObjectSpec, part_size_bytes: int) -> str:
        """Open a session (S3 UploadId, GCS session URL, Azure block-id prefix)."""
        ...

    def held_parts(
        self, spec: ObjectSpec, session: str, parts: Sequence[PartSpec]
    ) -> dict[int, Receipt]:
        """Ask the provider which planned parts it already holds, in full.

        Raises ``UploadGoneError`` when the session no longer exists.
        """
        ...

    def send_part(
        self,
        spec: ObjectSpec,
        session: str,
        part: PartSpec,
        body: Body,
        digest: Digest | None,
    ) -> Receipt:
        """Send one part; ``digest`` is of ``body`` and is checked by the provider.

        ``body`` holds exactly the part's bytes; each ``body.open()`` gives a fresh
        seekable reader at its start. Stream from it: never read the part whole.
        """
        ...

    def complete(
        self,
        spec: ObjectSpec,
        session: str,
        receipts: Sequence[Receipt],
        expected: Expected,
    ) -> Verified:
        """Make the object visible and confirm its size and checksum.

        Must be safe to call again after a lost response: if the object is already
        there as expected, return it. Raises ``IntegrityError`` on a mismatch.
        """
        ...

    def abort(self, spec: ObjectSpec, session: str) -> None:
        """Cancel the session; idempotent (a gone session is fine)."""
        ...

    def put_single(
        self, spec: ObjectSpec, body: Body, digest: Digest | None
    ) -> Verified:
        """Create the whole object in one request and confirm it."""
        ...

    def head(self, target: Target) -> RemoteObject | None:
        """Return what the provider holds at the target's key, or None."""
        ...

    def storage_url(self, target: Target) -> str:
        """The object's canonical https URL (key percent-encoded)."""
        ...

    def presign_part(
        self,
        spec: ObjectSpec,
        session: str,
        part: PartSpec,
        ttl_s: float,
        content_md5: str | None = None,
    ) -> PresignedRequest:
        """A request that sends one part without credentials."""
        ...

    def presign_single(
        self, spec: ObjectSpec, ttl_s: float, content_md5: str | None = None
    ) -> PresignedRequest:
        """A request that creates the whole object without credentials."""
        ...

    def list_incomplete(self, target: Target, older_than_s: float) -> list[Incomplete]:
        """Unfinished uploads at the provider under the target prefix."""
        ...

    def endpoint(self) -> str:
        """The base URL requests go to (``doctor`` checks it answers, and its clock)."""
        ...

    def close(self) -> None:
        """Release clients and pools."""
        ...
