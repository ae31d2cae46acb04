"""The plumbing core: ``init``, ``part-url`` and ``complete`` for an uploader that holds
no cloud credentials (CONTRACT.md, "Plumbing"). Speaks to providers only through the
contract; it journals records and never stores or logs a presigned URL or SAS token.
"""

from __future__ import annotations

import base64
import binascii
import logging
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from cloudput.engine.plan import DEFAULT_MULTIPART_THRESHOLD_BYTES, Plan, make_plan
from cloudput.engine.runner import ProviderPool, spec_of
from cloudput.errors import (
    CloudputError,
    IntegrityError,
    TransientError,
    UsageError,
)
from cloudput.journal import (
    UNFINISHED,
    Attachment,
    Journal,
    UploadRecord,
    new_upload_id,
    utc_now,
)
from cloudput.keys import Target
from cloudput.providers.base import (
    Expected,
    PartSpec,
    PresignedRequest,
    Provider,
    ProviderLimits,
    Receipt,
    Verified,
)
from cloudput.units import format_duration

log = logging.getLogger(__name__)

#: A plumbing record has no local source; ``UploadRecord.is_plumbing`` reads this.
NO_SOURCE = ""
#: The checksum a plumbing record starts with: cloudput never sees the bytes.
NO_CHECKSUM = "none"
#: Lifetime of a part URL unless ``--ttl`` says otherwise (CONTRACT.md: 1 hour).
DEFAULT_TTL_S = 3600.0
#: The longest ``--ttl``: a SigV4 presigned URL is valid for at most 7 days (Amazon S3
#: User Guide, "Sharing objects with presigned URLs"); one rule for every provider.
MAX_TTL_S = 7 * 24 * 3600.0
#: Bytes in an MD5 digest (RFC 1321), the only digest ``--content-md5`` takes.
MD5_DIGEST_BYTES = 16


@dataclass(frozen=True)
class InitRequest:
    """What ``cloudput init`` asks for: a target, a size and the object's attributes."""

    target: Target
    size_bytes: int
    content_type: str | None = None
    part_size_bytes: int | None = None
    threshold_bytes: int = DEFAULT_MULTIPART_THRESHOLD_BYTES
    no_multipart: bool = False
    cache_control: str | None = None
    storage_class: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    tenant: str | None = None


@dataclass(frozen=True)
class Initiated:
    """A journaled plumbing upload and the parts its uploader sends."""

    record: UploadRecord
    parts: list[PartSpec]


@dataclass(frozen=True)
class PartUrl:
    """One request an uploader without credentials sends as-is, and its byte range."""

    request: PresignedRequest
    part: PartSpec
    expires_at: str | None


@dataclass(frozen=True)
class ReportedPart:
    """One entry of ``complete --parts``: a part number and what its PUT returned."""

    number: int
    etag: str


def iso_time(epoch_s: float | None) -> str | None:
    """Epoch seconds as CONTRACT.md's ISO 8601 with ``Z`` (to the second)."""
    if epoch_s is None:
        return None
    moment = datetime.fromtimestamp(epoch_s, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def plan_parts(record: UploadRecord) -> list[PartSpec]:
    """The record's parts; a single upload has one, empty for a 0-byte object."""
    if record.strategy == "single":
        return [PartSpec(1, 0, record.size_bytes)]
    parts = []
    for number in range(1, record.part_count + 1):
        offset = (number - 1) * record.part_size_bytes
        size = min(record.part_size_bytes, record.size_bytes - offset)
        parts.append(PartSpec(number, offset, size))
    return parts


# -- init ---------------------------------------------------------------------------


def init_upload(
    journal: Journal, pool: ProviderPool, request: InitRequest
) -> Initiated:
    """Plan the object, open the provider's session where it has one, journal it.

    A sequential provider (GCS) always gets a session, even for a single PUT: the
    session URL is what lets an uploader without credentials write there.

    Raises:
        UsageError: a prefix target, a negative size or a part size against the rules.
    """
    _check_init(request)
    provider = pool.get(request.target.provider, request.endpoint_url, request.region)
    plan = make_plan(
        request.size_bytes,
        provider.limits,
        part_size_bytes=request.part_size_bytes,
        threshold_bytes=request.threshold_bytes,
        no_multipart=request.no_multipart,
    )
    _note_plan(request, plan, provider.limits)
    record = _new_record(provider, request, plan.strategy, plan.part_size_bytes)
    record = record.with_changes(part_count=plan.part_count)
    provider.check_bucket(request.target)
    if plan.strategy != "single" or provider.limits.is_sequential:
        session = provider.start(spec_of(record), plan.part_size_bytes)
        record = record.with_changes(session=session)
        record = record.with_changes(expires_at=_session_end(provider, record))
    journal.add(record)
    log.info("upload %s initiated for an outside uploader: %s", record.id, record.uri)
    return Initiated(record, plan_parts(record))


def _note_plan(request: InitRequest, plan: Plan, limits: ProviderLimits) -> None:
    """Warn (stderr) where the plan differs from what was asked, as ``upload
    --dry-run`` does: parts below the threshold, or a raised part size."""
    name = request.target.uri
    if plan.over_single_limit:
        log.warning(
            "%s: %s bytes is above the %s-byte maximum of a single request on %s, "
            "so it goes in parts although it is below the multipart threshold",
            name,
            f"{plan.size_bytes:,}",
            f"{limits.max_single_size_bytes:,}",
            limits.name,
        )
    if plan.raised_from_bytes:
        log.warning(
            "%s: part size raised from %s to %s bytes to stay within %s parts",
            name,
            f"{plan.raised_from_bytes:,}",
            f"{plan.part_size_bytes:,}",
            f"{limits.max_parts:,}",
        )


def _check_init(request: InitRequest) -> None:
    if request.target.is_prefix:
        raise UsageError(
            f"init needs a full object key, not the prefix {request.target.uri!r}",
            hint="name the object, e.g. s3://bucket/path/file.bin",
        )
    if request.size_bytes < 0:
        raise UsageError(f"--size {request.size_bytes}: must not be negative")


def _new_record(
    provider: Provider, request: InitRequest, strategy: str, part_size_bytes: int
) -> UploadRecord:
    target = request.target
    return UploadRecord(
        id=new_upload_id(),
        provider=target.provider,
        bucket=target.bucket,
        key=target.key,
        uri=target.uri,
        storage_url=provider.storage_url(target),
        name=posixpath.basename(target.key),
        size_bytes=request.size_bytes,
        mime=request.content_type or _guess_type(target.key),
        strategy=strategy,
        part_size_bytes=part_size_bytes,
        part_count=1,
        status="initiated",
        initiated_at=utc_now(),
        source_path=NO_SOURCE,
        source_size_bytes=request.size_bytes,
        source_mtime_ns=0,
        source_inode=0,
        checksum_algorithm=NO_CHECKSUM,
        endpoint_url=request.endpoint_url,
        region=request.region,
        tenant=request.tenant,
        cache_control=request.cache_control,
        storage_class=request.storage_class,
        account=target.account,
    )


def _guess_type(key: str) -> str:
    import mimetypes

    guessed, _ = mimetypes.guess_type(key, strict=False)
    return guessed or "application/octet-stream"


def _session_end(provider: Provider, record: UploadRecord) -> str | None:
    """When a session URL handed out as the part URL stops working (GCS: a week after
    it opened); None where init hands out nothing that expires."""
    if not provider.limits.is_sequential or record.session is None:
        return None
    first = plan_parts(record)[0]
    issued = provider.presign_part(spec_of(record), record.session, first, MAX_TTL_S)
    return iso_time(issued.expires_at)


# -- part-url -----------------------------------------------------------------------


def part_url(
    journal: Journal,
    pool: ProviderPool,
    upload_id: str,
    number: int,
    ttl_s: float = DEFAULT_TTL_S,
    content_md5: str | None = None,
) -> PartUrl:
    """A fresh request for part ``number``; may be asked again when one expired.

    The request is returned, never journaled or logged; the record keeps only when the
    last URL issued for it expires.

    Raises:
        UsageError: unknown id, not a plumbing upload, finished, part out of range,
            a ``ttl_s`` over 7 days, a malformed ``content_md5``.
    """
    check_ttl(ttl_s)
    if content_md5 is not None:
        check_content_md5(content_md5)
    record = _open_record(journal, upload_id, "part-url")
    part = _part_of(record, number)
    provider = _provider(pool, record)
    spec = spec_of(record)
    if record.session:
        request = provider.presign_part(spec, record.session, part, ttl_s, content_md5)
    else:
        request = provider.presign_single(spec, ttl_s, content_md5)
    expires_at = iso_time(request.expires_at)
    if expires_at and (record.expires_at is None or expires_at > record.expires_at):
        journal.update(record.id, expires_at=expires_at)
    log.debug("upload %s: issued a request for part %d", record.id, number)
    return PartUrl(request, part, expires_at)


def check_ttl(ttl_s: float) -> None:
    """Refuse a URL lifetime of zero or beyond the 7-day SigV4 limit (exit 2)."""
    if not 0 < ttl_s <= MAX_TTL_S:
        raise UsageError(
            f"--ttl {format_duration(ttl_s)} is not within 1s..7d",
            hint="presigned URLs live at most 7 days (the S3 SigV4 limit)",
        )


def check_content_md5(value: str) -> None:
    """Refuse anything but the base64 of a 16-byte MD5 digest (exit 2)."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != MD5_DIGEST_BYTES:
        raise UsageError(
            f"--content-md5 {value!r} is not a base64 MD5 digest",
            hint="e.g. `openssl dgst -md5 -binary PART | base64`",
        )


def _open_record(journal: Journal, upload_id: str, command: str) -> UploadRecord:
    record = journal.get(upload_id)
    if not record.is_plumbing:
        raise UsageError(
            f"upload {record.id} was started by `cloudput upload`; {command} serves "
            "uploads made by `cloudput init`",
            hint=f"use `cloudput resume {record.id}`",
        )
    if record.status not in UNFINISHED:
        raise UsageError(
            f"upload {record.id} is {record.status}",
            hint="run `cloudput init` for a fresh upload",
        )
    return record


def _part_of(record: UploadRecord, number: int) -> PartSpec:
    parts = plan_parts(record)
    if not 1 <= number <= len(parts):
        raise UsageError(
            f"upload {record.id} has parts 1..{len(parts)}, not {number}",
            hint=f"see `cloudput show {record.id}`",
        )
    return parts[number - 1]


def _provider(pool: ProviderPool, record: UploadRecord) -> Provider:
    return pool.get(record.provider, record.endpoint_url, record.region)


# -- complete -----------------------------------------------------------------------


def parse_reported(data: Any) -> list[ReportedPart]:
    """``[{"number": 1, "etag": "..."}]`` as ``complete --parts`` reads it (exit 2 when
    malformed). An ``etag`` may be empty or missing where a PUT returns none (Azure)."""
    if not isinstance(data, list):
        raise UsageError('--parts: expected a JSON list of {"number", "etag"} objects')
    reported = []
    for entry in data:
        number = entry.get("number") if isinstance(entry, dict) else None
        etag = entry.get("etag") if isinstance(entry, dict) else None
        if not isinstance(number, int) or isinstance(number, bool):
            raise UsageError(f"--parts: entry {entry!r} has no integer 'number'")
        if etag is not None and not isinstance(etag, str):
            raise UsageError(f"--parts: entry {entry!r} has a non-text 'etag'")
        reported.append(ReportedPart(number, etag or ""))
    return reported


def complete_upload(
    journal: Journal,
    pool: ProviderPool,
    upload_id: str,
    reported: Sequence[ReportedPart] | None = None,
) -> UploadRecord:
    """Make the object visible, confirm its size, mark it completed with its attachment.

    Without ``reported`` the provider is asked which parts it holds. A completed
    upload is returned as it is (running ``complete`` twice is harmless).

    Raises:
        UsageError: unknown id, not a plumbing upload, aborted or failed, a part list
            that does not name each part once.
        TransientError: parts not sent yet (exit 7; send them and run it again).
        IntegrityError: the object's size or ETag is not what was planned (exit 8;
            the record is marked failed).
    """
    record = journal.get(upload_id)
    if record.is_plumbing and record.status == "completed":
        return record
    record = _open_record(journal, upload_id, "complete")
    if not journal.hold(record.id):
        raise UsageError(
            f"upload {record.id} is being completed or aborted by another process"
        )
    try:
        verified = _finish_at_provider(record, _provider(pool, record), reported)
    except IntegrityError as exc:
        journal.update(
            record.id, status="failed", error_code=exc.code, error_message=exc.message
        )
        raise
    except CloudputError as exc:
        journal.update(record.id, error_code=exc.code, error_message=exc.message)
        raise
    finally:
        journal.release(record.id)
    _mark_completed(journal, record, verified)
    log.info("upload %s completed: %s", record.id, record.uri)
    return journal.get(record.id)


def _finish_at_provider(
    record: UploadRecord, provider: Provider, reported: Sequence[ReportedPart] | None
) -> Verified:
    parts = plan_parts(record)
    if reported is not None:
        _check_reported(record, parts, reported)
    if record.session:
        receipts = _receipts(record, provider, parts, reported)
        verified = provider.complete(
            spec_of(record), record.session, receipts, Expected(record.size_bytes)
        )
    else:
        etag = reported[0].etag if reported else ""
        verified = _confirm_single(record, provider, etag)
    if verified.remote.size_bytes != record.size_bytes:
        raise IntegrityError(
            f"{record.uri} holds {verified.remote.size_bytes} bytes, planned "
            f"{record.size_bytes}",
            hint="the uploader sent other bytes; run `cloudput init` and send them again",
            code="size_mismatch",
        )
    return verified


def _check_reported(
    record: UploadRecord, parts: list[PartSpec], reported: Sequence[ReportedPart]
) -> None:
    numbers = sorted(part.number for part in reported)
    if numbers != [part.number for part in parts]:
        raise UsageError(
            f"--parts names parts {numbers}; upload {record.id} has parts "
            f"1..{len(parts)}, each once",
        )


def _receipts(
    record: UploadRecord,
    provider: Provider,
    parts: list[PartSpec],
    reported: Sequence[ReportedPart] | None,
) -> list[Receipt]:
    """The uploader's receipts, or what the provider says it holds (all parts)."""
    if reported is not None:
        sizes = {part.number: part.size_bytes for part in parts}
        return [Receipt(p.number, p.etag, sizes[p.number]) for p in reported]
    held = provider.held_parts(spec_of(record), record.session or "", parts)
    missing = [part.number for part in parts if part.number not in held]
    if missing:
        raise TransientError(
            f"upload {record.id}: {record.uri} does not hold part(s) "
            f"{_ranges(missing)} yet",
            hint="send them (`cloudput part-url`), then run `cloudput complete` again",
            code="parts_missing",
        )
    return [held[part.number] for part in parts]


def _confirm_single(record: UploadRecord, provider: Provider, etag: str) -> Verified:
    """A single PUT made the object: it must be there, and be the one that PUT made."""
    remote = provider.head(spec_of(record).target)
    if remote is None:
        raise TransientError(
            f"upload {record.id}: there is no object at {record.uri} yet",
            hint="send the PUT from `cloudput part-url`, then run complete again",
            code="parts_missing",
        )
    shown = (remote.etag or "").strip('"')
    if etag and shown and etag.strip('"') != shown:
        raise IntegrityError(
            f"{record.uri} has ETag {shown}, not the {etag.strip(chr(34))} its PUT "
            "returned: someone else wrote it since",
            hint="send it again, or check who else writes this key",
            code="etag_mismatch",
        )
    md5 = remote.checksums.get("md5")
    checked = "etag" if etag and shown else "size"
    return Verified(remote, "md5" if md5 else NO_CHECKSUM, md5, checked)


def _mark_completed(journal: Journal, record: UploadRecord, verified: Verified) -> None:
    attachment = Attachment(
        record.id,
        record.id,
        record.name,
        record.mime,
        record.size_bytes,
        record.storage_url,
    )
    journal.mark_completed(
        record.id,
        attachment,
        completed_at=utc_now(),
        checksum_algorithm=verified.algorithm,
        checksum_value=verified.value,
        checksum_verified=verified.verified,
        error_code=None,
        error_message=None,
    )


def _ranges(numbers: list[int]) -> str:
    """``1-3, 7`` for [1, 2, 3, 7]: short enough for a message about many parts."""
    spans: list[str] = []
    start = previous = numbers[0]
    for number in [*numbers[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        spans.append(f"{start}" if start == previous else f"{start}-{previous}")
        if number is not None:
            start = previous = number
    return ", ".join(spans)
