"""Choosing and journaling the upload record for a job: continue an unfinished upload
of the same unchanged file, or plan and journal a new one (retiring a changed one).

It sends no part; the only provider calls are the limits it plans with and the abort
of an upload whose source changed.
"""

from __future__ import annotations

import logging
import mimetypes
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from cloudput.engine.existing import WHOLE_MD5_METADATA, LocalDigests
from cloudput.engine.plan import Plan, make_plan
from cloudput.engine.retry import RetryPolicy
from cloudput.engine.sources import Fingerprint, Job, fingerprint
from cloudput.errors import CloudputError, NotSupportedError, SourceChangedError
from cloudput.journal import Journal, UploadRecord, new_upload_id, utc_now
from cloudput.keys import Target
from cloudput.providers.base import ObjectSpec, Provider, check_object_options

if TYPE_CHECKING:  # runner imports this module; the options type is only annotated
    from cloudput.engine.runner import TransferOptions

log = logging.getLogger(__name__)
#: What an object is sent as when its name says nothing about its content.
DEFAULT_CONTENT_TYPE = "application/octet-stream"


class ProviderSource(Protocol):
    """Where the provider of a (provider, endpoint, region) comes from
    (``runner.ProviderPool``)."""

    def get(
        self, provider: str, endpoint_url: str | None, region: str | None
    ) -> Provider: ...


def spec_of(record: UploadRecord) -> ObjectSpec:
    """The object a record describes, as the provider contract wants it."""
    return ObjectSpec(
        target=Target(record.provider, record.bucket, record.key, record.account),
        size_bytes=record.size_bytes,
        content_type=record.mime,
        cache_control=record.cache_control,
        metadata=dict(record.metadata),
        storage_class=record.storage_class,
        checksum_algorithm=record.checksum_algorithm,
        upload_id=record.id,
        content_encoding=record.content_encoding,
        content_disposition=record.content_disposition,
        tags=dict(record.tags),
        acl=record.acl,
        encryption=record.encryption,
        encryption_key_id=record.encryption_key_id,
    )


def fingerprint_of(record: UploadRecord) -> Fingerprint:
    """The source's fingerprint as it was when the record was journaled."""
    return Fingerprint(
        record.source_size_bytes, record.source_mtime_ns, record.source_inode
    )


def guess_content_type(path: str) -> str:
    """The content type a file's name suggests, or ``DEFAULT_CONTENT_TYPE``."""
    guessed, _ = mimetypes.guess_type(path, strict=False)
    return guessed or DEFAULT_CONTENT_TYPE


class RecordKeeper:
    """Finds or journals the record each job is uploaded under, for one run.

    Args:
        journal: where records live.
        providers: the run's providers (for limits, storage URLs and aborts).
        options: the run's ``TransferOptions`` (plan, checksum, object attributes).
        retry: the policy the abort of a changed upload is sent under.
        notice: tells the user something on the progress display.
    """

    def __init__(
        self,
        journal: Journal,
        providers: ProviderSource,
        options: TransferOptions,
        retry: RetryPolicy,
        notice: Callable[[str], None],
    ):
        self.journal = journal
        self.providers = providers
        self.options = options
        self.retry = retry
        self.notice = notice

    def record_for(
        self,
        job: Job,
        digests: LocalDigests | None = None,
        current: Fingerprint | None = None,
    ) -> tuple[UploadRecord, bool] | None:
        """Continue an unfinished upload of this source and target, or journal a new
        one; either way the record comes back held by this process (None: another
        process holds it), with True when it is new. The choice is made under a
        per-(source, target) lock so two runs of the same command never start two
        uploads of one file.

        A new record is journaled ``in_progress``, held from before it is written:
        no other process can have read or changed it, so the caller needs neither
        to read it again nor to mark it in progress. ``current``: the source's
        fingerprint if the caller just took it.
        """
        source_path = os.path.abspath(job.source_path)
        if current is None:
            current = fingerprint(source_path)
        with self.journal.key_lock(f"{source_path}\0{job.target.uri}"):
            for old in self.journal.find_unfinished(
                source_path, job.target.uri, self.options.endpoint_url
            ):
                if not self.journal.hold(old.id):
                    self.notice(
                        f"{old.id} ({job.target.uri}) is held by another process"
                    )
                    return None
                if fingerprint_of(old) == current:
                    self._note_kept_plan(old)
                    self.notice(f"continuing upload {old.id} of {job.source_path}")
                    return old, False
                self._replace_changed(old, job)
            record = self._planned(job, source_path, current, digests, "in_progress")
            self.journal.hold(record.id)  # a fresh id: no other process holds it
            try:
                self.journal.add(record)
            except BaseException:
                self.journal.release(record.id, finished=True)
                raise
            return record, True

    def fail_changed(self, record: UploadRecord, exc: SourceChangedError) -> None:
        """Mark an upload whose source changed as failed, aborting its session at the
        provider (a failed abort is a warning: ``cloudput cleanup`` finds it later)."""
        if record.session and record.strategy != "single":
            provider = self.providers.get(
                record.provider, record.endpoint_url, record.region
            )
            try:
                self.retry.call(
                    "abort", provider.abort, spec_of(record), record.session
                )
            except CloudputError as abort_exc:
                log.warning(
                    "could not abort upload %s at the provider: %s",
                    record.id,
                    abort_exc,
                )
        self.journal.update(
            record.id,
            status="failed",
            error_code="source_changed",
            error_message=exc.message,
        )

    def new_record(
        self,
        job: Job,
        source_path: str,
        current: Fingerprint,
        digests: LocalDigests | None = None,
        status: str = "initiated",
    ) -> UploadRecord:
        """Plan the upload of ``job`` and journal its record (not held)."""
        record = self._planned(job, source_path, current, digests, status)
        self.journal.add(record)
        return record

    def _planned(
        self,
        job: Job,
        source_path: str,
        current: Fingerprint,
        digests: LocalDigests | None,
        status: str,
    ) -> UploadRecord:
        """The record of a new upload of ``job``, planned and checked (not journaled)."""
        provider = self.providers.get(
            job.target.provider, self.options.endpoint_url, self.options.region
        )
        plan = self._plan(job, provider, current.size_bytes)
        record = self._describe(job, provider, plan, source_path, current, status)
        record = record.with_changes(
            metadata=self._metadata_for(plan.strategy, digests)
        )
        check_object_options(spec_of(record), provider.limits)
        return record

    def _replace_changed(self, old: UploadRecord, job: Job) -> None:
        message = (
            f"source {job.source_path} changed since upload {old.id} was journaled"
        )
        self.fail_changed(old, SourceChangedError(message))
        self.journal.release(old.id)
        log.warning("%s: starting a fresh upload", message)

    def _note_kept_plan(self, record: UploadRecord) -> None:
        asked = self.options.part_size_bytes
        if asked and record.strategy != "single" and asked != record.part_size_bytes:
            log.warning(
                "upload %s keeps its journaled part size of %d bytes (--part-size %d ignored)",
                record.id,
                record.part_size_bytes,
                asked,
            )

    def _plan(self, job: Job, provider: Provider, size_bytes: int) -> Plan:
        plan = make_plan(
            size_bytes,
            provider.limits,
            part_size_bytes=self.options.part_size_bytes,
            threshold_bytes=self.options.threshold_bytes,
            no_multipart=self.options.no_multipart,
        )
        if plan.raised_from_bytes:
            log.warning(
                "%s: part size raised to %d bytes to stay within %d parts",
                job.source_path,
                plan.part_size_bytes,
                provider.limits.max_parts,
            )
        return plan

    def _describe(
        self,
        job: Job,
        provider: Provider,
        plan: Plan,
        source_path: str,
        current: Fingerprint,
        status: str,
    ) -> UploadRecord:
        """The record of a new upload: the job, its plan and the run's options."""
        options = self.options
        return UploadRecord(
            id=new_upload_id(),
            provider=job.target.provider,
            bucket=job.target.bucket,
            key=job.target.key,
            uri=job.target.uri,
            storage_url=provider.storage_url(job.target),
            name=os.path.basename(source_path),
            size_bytes=current.size_bytes,
            mime=options.content_type or guess_content_type(source_path),
            strategy=plan.strategy,
            part_size_bytes=plan.part_size_bytes,
            part_count=plan.part_count,
            status=status,
            initiated_at=utc_now(),
            source_path=source_path,
            source_size_bytes=current.size_bytes,
            source_mtime_ns=current.mtime_ns,
            source_inode=current.inode,
            checksum_algorithm=self._checksum_for(provider),
            endpoint_url=options.endpoint_url,
            region=options.region,
            tenant=options.tenant,
            cache_control=options.cache_control,
            storage_class=options.storage_class,
            account=job.target.account,
            content_encoding=options.content_encoding,
            content_disposition=options.content_disposition,
            tags=dict(options.tags),
            acl=options.acl,
            encryption=options.encryption,
            encryption_key_id=options.encryption_key_id,
        )

    def _metadata_for(
        self, strategy: str, digests: LocalDigests | None
    ) -> dict[str, str]:
        """The user's metadata, plus the whole file's MD5 for a multipart upload under
        ``--skip-existing`` (one extra read of the file before it is sent; a single
        request adds it while it hashes the body anyway)."""
        metadata = dict(self.options.metadata)
        if digests is not None and self.options.skip_existing and strategy != "single":
            metadata[WHOLE_MD5_METADATA] = digests.get("md5")
        return metadata

    def _checksum_for(self, provider: Provider) -> str:
        wanted = self.options.checksum
        if wanted == "auto":
            return provider.limits.default_checksum
        if wanted != "none" and wanted not in provider.limits.checksums:
            raise NotSupportedError(
                f"--checksum {wanted} is not supported on {provider.limits.name}",
                hint=f"use one of: auto, {', '.join(provider.limits.checksums)}, none",
            )
        return wanted
