"""The transfer engine: a bounded pool of part sends across all uploads, checkpoints,
resume reconciliation, cancellation and the source-change guard. Its retry policy is
in ``retry.py``; which record a job is uploaded under is chosen in ``records.py``.

It speaks to providers only through ``providers.base.Provider`` and never imports an SDK.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cloudput.checksums import RunningDigest
from cloudput.engine.events import NullSubscriber, Subscriber
from cloudput.engine.existing import WHOLE_MD5_METADATA, LocalDigests, compare
from cloudput.engine.plan import DEFAULT_MULTIPART_THRESHOLD_BYTES
from cloudput.engine.policy import Policy
from cloudput.engine.records import (
    RecordKeeper,
    fingerprint_of,
    guess_content_type,
    spec_of,
)
from cloudput.engine.retry import Backoff, RetryPolicy, most_severe
from cloudput.engine.sources import (
    BufferBody,
    Fingerprint,
    Job,
    PartBuffers,
    RangeBody,
    SourceReader,
    fingerprint,
)
from cloudput.errors import (
    EXIT_BUCKET,
    EXIT_CREDENTIALS,
    EXIT_JOURNAL,
    EXIT_OK,
    EXIT_RESUMABLE,
    CloudputError,
    DeadlineError,
    IntegrityError,
    InterruptedRunError,
    SourceChangedError,
    SourceError,
    TransientError,
    UploadGoneError,
    UsageError,
)
from cloudput.journal import (
    UNFINISHED,
    Attachment,
    Journal,
    PartRow,
    UploadRecord,
    utc_now,
)
from cloudput.providers.base import (
    Body,
    Digest,
    Expected,
    PartSpec,
    Provider,
    Receipt,
    Verified,
)

log = logging.getLogger(__name__)
#: Outcome.message of a file the run stopped before it was journaled.
NOT_STARTED = "not started"
#: Exit codes of an upload's failure that stop the whole run (CONTRACT: 5, 6 and 9
#: "stop the run as soon as they are known"; 2 and 3 are found before it starts).
RUN_STOPPING_EXITS = frozenset({EXIT_CREDENTIALS, EXIT_BUCKET, EXIT_JOURNAL})
# Parts are hashed and sent in reads of at most 1 MiB, so a part in flight costs a
# read buffer, not its size (CONTRACT.md, "Promises": peak memory bound).
HASH_READ_BYTES = 1024 * 1024
#: A part (or a single-request body) up to this size is read once into a reused
#: buffer, hashed there and sent from it: one copy of its bytes, and what is sent is
#: exactly what was hashed. Larger ones are streamed from the file (read twice: hash,
#: then send), so memory stays bounded by concurrency x this size.
BUFFERED_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class TransferOptions:
    """Tuning and object attributes for a run (CONTRACT.md, options of ``upload``)."""

    concurrency: int = 8
    retries: int = 5
    timeout_s: float = 60.0
    retry_base_delay_s: float = 0.5
    retry_max_delay_s: float = 20.0
    part_size_bytes: int | None = None
    threshold_bytes: int = DEFAULT_MULTIPART_THRESHOLD_BYTES
    no_multipart: bool = False
    checksum: str = "auto"
    content_type: str | None = None
    cache_control: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    storage_class: str | None = None
    max_duration_s: float | None = None
    endpoint_url: str | None = None
    region: str | None = None
    tenant: str | None = None
    policy: Policy = field(default_factory=Policy)
    skip_existing: bool = False  # skip a file whose object is already identical
    no_clobber: bool = False  # never overwrite an existing object
    content_encoding: str | None = None
    content_disposition: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    acl: str | None = None
    encryption: str | None = None  # ObjectSpec.encryption
    encryption_key_id: str | None = None
    verify_ssl: bool | str = True  # False (--no-verify-ssl) or a CA bundle path
    addressing_style: str | None = None  # S3: auto | path | virtual
    customer_key: bytes | None = field(default=None, repr=False)  # S3 SSE-C key


@dataclass(frozen=True)
class Outcome:
    """How one upload ended in this run."""

    source_path: str
    uri: str
    status: str  # completed | skipped | failed | interrupted | aborted | held
    record: UploadRecord | None = None
    error: CloudputError | None = None
    exit_code: int = EXIT_OK
    message: str | None = None
    sent_bytes: int = 0  # bytes this run sent (a resume sends only what was missing)


class StopSignal:
    """Tells every worker to stop sending new parts, and why."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.error: CloudputError | None = None

    def set(self, error: CloudputError) -> None:
        if not self._event.is_set():
            self.error = error
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout_s: float) -> bool:
        return self._event.wait(timeout_s)


class ProviderPool:
    """One provider instance per (provider, endpoint, region, account), shared by threads."""

    def __init__(self, factory: Callable[[str, str | None, str | None], Provider]):
        self._factory = factory
        self._lock = threading.Lock()
        self._providers: dict[tuple[str, str | None, str | None], Provider] = {}

    def get(
        self, provider: str, endpoint_url: str | None, region: str | None
    ) -> Provider:
        key = (provider, endpoint_url, region)
        with self._lock:
            if key not in self._providers:
                self._providers[key] = self._factory(provider, endpoint_url, region)
            return self._providers[key]

    def close(self) -> None:
        with self._lock:
            for provider in self._providers.values():
                provider.close()
            self._providers.clear()


class Engine:
    """Runs uploads under one budget of ``concurrency`` parts in flight."""

    def __init__(
        self,
        journal: Journal,
        providers: ProviderPool,
        options: TransferOptions,
        subscriber: Subscriber | None = None,
        stop: StopSignal | None = None,
        sleep: Callable[[float], Any] | None = None,
    ):
        self.journal = journal
        self.providers = providers
        self.options = options
        self.subscriber = subscriber or NullSubscriber()
        self.stop = stop or StopSignal()
        # Waiting on the stop signal: a stop (signal, deadline) cuts a backoff short.
        self.retry = RetryPolicy(
            attempts=options.retries + 1,
            backoff=Backoff(options.retry_base_delay_s, options.retry_max_delay_s),
            stop=self.stop,
            sleep=sleep or self.stop.wait,
            log=log,
        )
        self.records = RecordKeeper(
            journal, providers, options, self.retry, self.subscriber.notice
        )
        self._budget = threading.BoundedSemaphore(options.concurrency)
        self._parts = ThreadPoolExecutor(options.concurrency, thread_name_prefix="part")
        self._buffers = PartBuffers()  # taken only under the budget
        self._deadline_timer: threading.Timer | None = None
        self.unstarted = 0  # items never begun because the run was stopped
        self._stop_on_run_errors = False  # set per run: upload stops, resume goes on
        # Bytes the provider already held when an upload (re)started in this run.
        self._held_bytes: dict[str, int] = {}

    def close(self) -> None:
        if self._deadline_timer:
            self._deadline_timer.cancel()
        self._parts.shutdown(wait=True)

    def provider_for(self, record: UploadRecord) -> Provider:
        return self.providers.get(record.provider, record.endpoint_url, record.region)

    # ----- entry points -------------------------------------------------------------

    def upload(self, jobs: Iterable[Job]) -> Iterator[Outcome]:
        """Upload each job; yields outcomes as uploads finish."""
        return self._run(jobs, self._upload_job, stop_on_run_errors=True)

    def resume(self, records: Iterable[UploadRecord]) -> Iterator[Outcome]:
        """Continue journaled uploads; yields outcomes as uploads finish."""
        # Not stopped by one upload's refusal: `resume --all` may hold uploads to other
        # buckets and providers, which a gone bucket must not keep from finishing.
        return self._run(records, self._resume_record, stop_on_run_errors=False)

    def _run(
        self,
        items: Iterable[Any],
        work: Callable[[Any], Outcome],
        stop_on_run_errors: bool,
    ) -> Iterator[Outcome]:
        self._stop_on_run_errors = stop_on_run_errors
        self._start_deadline()
        pending: set[Future[Outcome]] = set()
        slots = threading.BoundedSemaphore(self.options.concurrency * 2)
        done: list[Future[Outcome]] = []
        done_lock = threading.Condition()

        def finished(future: Future[Outcome]) -> None:
            slots.release()
            with done_lock:
                done.append(future)
                done_lock.notify_all()

        with ThreadPoolExecutor(
            self.options.concurrency, thread_name_prefix="upload"
        ) as pool:
            for item in items:
                while not slots.acquire(timeout=0.2):
                    yield from self._drain(done, done_lock, pending)
                if self.stop.is_set():
                    slots.release()
                    self.unstarted += 1
                    continue
                future = pool.submit(self._guarded, work, item)
                pending.add(future)
                future.add_done_callback(finished)
                yield from self._drain(done, done_lock, pending)
            while pending:
                with done_lock:
                    if not done:
                        done_lock.wait(0.2)
                yield from self._drain(done, done_lock, pending)

    def _drain(
        self,
        done: list[Future[Outcome]],
        lock: threading.Condition,
        pending: set[Future[Outcome]],
    ) -> Iterator[Outcome]:
        with lock:
            ready = list(done)
            done.clear()
        for future in ready:
            pending.discard(future)
            outcome = future.result()
            self._stop_on_run_error(outcome)
            yield outcome

    def _stop_on_run_error(self, outcome: Outcome) -> None:
        """Credentials refused, a bucket gone or a journal failing stop the run as
        soon as they are known (CONTRACT, exit codes): every other file would meet the
        same refusal, one request each. Uploads in flight stop at their next part and
        stay resumable; files not taken are reported not started."""
        if not self._stop_on_run_errors or outcome.error is None:
            return
        if outcome.exit_code in RUN_STOPPING_EXITS:
            if not self.stop.is_set():
                self.stop.set(outcome.error)

    def _guarded(self, work: Callable[[Any], Outcome], item: Any) -> Outcome:
        try:
            return work(item)
        except CloudputError as exc:
            source = getattr(item, "source_path", "")
            uri = item.target.uri if isinstance(item, Job) else getattr(item, "uri", "")
            return Outcome(source, uri, "failed", error=exc, exit_code=exc.exit_code)

    def _start_deadline(self) -> None:
        if self.options.max_duration_s and self._deadline_timer is None:
            error = DeadlineError(
                f"--max-duration of {self.options.max_duration_s:g}s reached",
                hint="run the same command or `cloudput resume --all` to continue",
            )
            self._deadline_timer = threading.Timer(
                self.options.max_duration_s, self.stop.set, [error]
            )
            self._deadline_timer.daemon = True
            self._deadline_timer.start()

    # ----- preparing records ------------------------------------------------------

    def _upload_job(self, job: Job) -> Outcome:
        if job.error is not None:
            raise job.error
        current: Fingerprint | None = self._check_policy(job)
        if self.stop.is_set():
            return self._stopped_before_start(job)
        digests: LocalDigests | None = None
        if self.options.skip_existing or self.options.no_clobber:
            skipped, digests = self._check_existing(job)
            if skipped is not None:
                return skipped
            current = None  # stat again: the lookup took a request's time
        chosen = self.records.record_for(job, digests, current)
        if chosen is None:
            return Outcome(
                job.source_path,
                job.target.uri,
                "held",
                exit_code=EXIT_RESUMABLE,
                message="held by another cloudput process",
            )
        record, is_new = chosen
        return self._transfer(record, resuming=False, is_new=is_new)

    def _check_policy(self, job: Job) -> Fingerprint:
        """Refuse a source against the policy before anything is journaled or sent;
        return its fingerprint."""
        current = fingerprint(job.source_path)
        mime = self.options.content_type or guess_content_type(job.source_path)
        self.options.policy.check(job.source_path, current.size_bytes, mime)
        return current

    def _stopped_before_start(self, job: Job) -> Outcome:
        error = self.stop.error or InterruptedRunError(130)
        return Outcome(
            job.source_path,
            job.target.uri,
            "interrupted",
            error=error,
            exit_code=error.exit_code,
            message=NOT_STARTED,
        )

    def _check_existing(self, job: Job) -> tuple[Outcome | None, LocalDigests | None]:
        """``--skip-existing`` / ``--no-clobber``: a skipped outcome, or None and the
        file's digests (seeded from the journal when the file is unchanged since its
        last finished upload to this target, so an unchanged file is not re-read)."""
        source_path = os.path.abspath(job.source_path)
        current = fingerprint(source_path)
        endpoint = self.options.endpoint_url
        unfinished = self.journal.find_unfinished(source_path, job.target.uri, endpoint)
        if not self.options.no_clobber and any(
            fingerprint_of(old) == current for old in unfinished
        ):
            return None, None  # an unfinished upload of this very file continues
        last = self.journal.find_finished(source_path, job.target.uri, endpoint)
        known = {}
        if last is not None and fingerprint_of(last) == current:
            if WHOLE_MD5_METADATA in last.metadata:
                known["md5"] = last.metadata[WHOLE_MD5_METADATA]
        digests = LocalDigests(source_path, current, known)
        provider = self.providers.get(
            job.target.provider, endpoint, self.options.region
        )
        remote = self.retry.call(
            f"looking up {job.target.uri}", provider.head, job.target
        )
        if remote is None:
            return None, digests
        if self.options.skip_existing:
            part_size = last.part_size_bytes if last is not None else None
            found = compare(remote, current.size_bytes, digests, part_size)
            if found.same:
                return self._skip(job, current, last, digests, found.by, None), None
            log.info("%s differs (%s)", job.target.uri, found.detail or found.by)
        if self.options.no_clobber:
            return self._skip(
                job, current, last, digests, None, "exists; --no-clobber"
            ), None
        return None, digests

    def _skip(
        self,
        job: Job,
        current: Fingerprint,
        last: UploadRecord | None,
        digests: LocalDigests,
        by: str | None,
        message: str | None,
    ) -> Outcome:
        """Journal a ``skipped`` upload; the newest skipped record of an unchanged file
        is reused, so an hourly run over the same tree does not grow the journal."""
        md5 = digests.known("md5")
        changes: dict[str, Any] = {"checksum_verified": by}
        if md5 and by:
            changes.update(checksum_algorithm="md5", checksum_value=md5)
        if (
            last is not None
            and last.status == "skipped"
            and fingerprint_of(last) == current
        ):
            record_id = last.id
        else:
            record_id = self.records.new_record(
                job, os.path.abspath(job.source_path), current, status="skipped"
            ).id
        if md5:
            metadata = {**self.journal.get(record_id).metadata, WHOLE_MD5_METADATA: md5}
            changes["metadata"] = metadata
        changes["completed_at"] = utc_now()  # after the record's initiated_at
        self.journal.update(record_id, **changes)
        log.info("skipped %s: %s", job.target.uri, message or f"identical ({by})")
        return Outcome(
            job.source_path,
            job.target.uri,
            "skipped",
            self.journal.get(record_id),
            message=message,
        )

    def _resume_record(self, record: UploadRecord) -> Outcome:
        if record.status == "completed":
            return Outcome(
                record.source_path,
                record.uri,
                "completed",
                record,
                message="already completed",
            )
        if record.is_plumbing:
            error = UsageError(
                f"upload {record.id} was made by `cloudput init` and has no local "
                "source to resume from",
                hint="its uploader sends the parts (`cloudput part-url`), then "
                f"`cloudput complete {record.id}`",
            )
            return Outcome(
                record.source_path, record.uri, "failed", record, error, error.exit_code
            )
        if record.status in ("aborted", "failed", "skipped"):
            error = UsageError(
                f"upload {record.id} is {record.status} and cannot be resumed",
                hint="run `cloudput upload` again to start a fresh upload",
            )
            return Outcome(
                record.source_path, record.uri, "failed", record, error, error.exit_code
            )
        return self._transfer(record, resuming=True)

    # ----- transferring -----------------------------------------------------------

    def _transfer(
        self, record: UploadRecord, resuming: bool, is_new: bool = False
    ) -> Outcome:
        """Send a record under its hold. ``is_new``: ``record_for`` journaled it just
        now, in progress and held from the start, so it is not read again."""
        if not self.journal.hold(record.id):
            self.subscriber.notice(
                f"{record.id} ({record.uri}) is held by another process"
            )
            return Outcome(
                record.source_path,
                record.uri,
                "held",
                record,
                exit_code=EXIT_RESUMABLE,
                message="held by another cloudput process",
            )
        outcome: Outcome | None = None
        try:
            if not is_new:
                # Read again under the hold: another process may have finished it
                # between our reading the record and taking the hold.
                record = self.journal.get(record.id)
            if record.status not in UNFINISHED:
                outcome = self._finished_elsewhere(record)
            else:
                outcome = self._transfer_held(record, is_new)
            return outcome
        finally:
            finished = outcome is not None and outcome.status == "completed"
            self.journal.release(record.id, finished=finished)
            self._held_bytes.pop(record.id, None)

    def _finished_elsewhere(self, record: UploadRecord) -> Outcome:
        message = f"{record.status} by another cloudput process"
        if record.status in ("completed", "skipped"):
            return Outcome(
                record.source_path, record.uri, record.status, record, message=message
            )
        error = UsageError(
            f"upload {record.id} was {message}",
            hint="run `cloudput upload` again to start a fresh upload",
        )
        return Outcome(
            record.source_path, record.uri, "failed", record, error, error.exit_code
        )

    def _transfer_held(self, record: UploadRecord, is_new: bool) -> Outcome:
        try:
            record, verified = self._start_sending(record, is_new)
        except SourceChangedError as exc:
            self.records.fail_changed(self.journal.get(record.id), exc)
            return self._outcome_failed(record, exc, "failed")
        except IntegrityError as exc:
            self._journal_ended(record, "failed", exc.code, exc.message)
            return self._outcome_failed(record, exc, "failed")
        except CloudputError as exc:
            self._journal_ended(record, "interrupted", exc.code, exc.message)
            return self._outcome_failed(record, exc, "interrupted")
        except BaseException as exc:
            self._journal_ended(record, "interrupted", "internal", str(exc))
            raise
        return self._finish(record, verified)

    def _start_sending(
        self, record: UploadRecord, is_new: bool
    ) -> tuple[UploadRecord, Verified]:
        """Mark the record in progress and send it; return it as journaled (a single
        request's whole-file MD5 not yet written: ``_finish`` writes it) and what the
        provider confirmed. A new record is journaled in progress already, its source
        stat'ed just before (the reader checks the source again as it reads)."""
        if not is_new:
            self._check_source(record)
            record = self.journal.updated(
                record, status="in_progress", error_code=None, error_message=None
            )
        log.info(
            "upload %s: %s -> %s (%d bytes)",
            record.id,
            record.source_path,
            record.uri,
            record.size_bytes,
        )
        return self._send(record)

    def _journal_ended(
        self, record: UploadRecord, status: str, error_code: str, error_message: str
    ) -> None:
        self.journal.update(
            record.id,
            status=status,
            error_code=error_code,
            error_message=error_message,
        )

    def _outcome_failed(
        self, record: UploadRecord, exc: CloudputError, status: str
    ) -> Outcome:
        self.subscriber.upload_finished(record.id, status)
        log.info("upload %s %s: %s", record.id, status, exc.message)
        return Outcome(
            record.source_path,
            record.uri,
            status,
            self.journal.get(record.id),
            exc,
            exc.exit_code,
        )

    def _check_source(self, record: UploadRecord) -> None:
        try:
            current = fingerprint(record.source_path)
        except SourceError as exc:
            if os.path.isfile(record.source_path):
                raise  # there but unreadable now: fix it, then resume
            # Deleted, moved away or replaced by a directory: nothing to resume from,
            # and a cron job's `resume --all` must not fail on it every hour.
            what = (
                "is no longer a regular file"
                if os.path.lexists(record.source_path)
                else "was deleted or moved"
            )
            raise SourceChangedError(
                f"source {record.source_path} {what} since upload {record.id} was "
                "journaled",
                hint="the old upload is aborted; run `cloudput upload` again to start "
                "fresh",
            ) from exc
        if current != fingerprint_of(record):
            raise SourceChangedError(
                f"source {record.source_path} changed since upload {record.id} was journaled",
                hint="the old upload is aborted; run `cloudput upload` again to start fresh",
            )

    def _finish(self, record: UploadRecord, verified: Verified) -> Outcome:
        """Journal the upload completed (with its metadata, which may carry the
        whole-file MD5 noted while sending) and its attachment, in one transaction."""
        attachment = Attachment(
            record.id,
            record.id,
            record.name,
            record.mime,
            record.size_bytes,
            record.storage_url,
        )
        record = self.journal.completed(
            record,
            attachment,
            completed_at=utc_now(),
            checksum_value=verified.value,
            checksum_verified=verified.verified,
            error_code=None,
            error_message=None,
            metadata=record.metadata,
        )
        self.subscriber.upload_finished(record.id, "completed")
        log.info("upload %s completed: %s", record.id, record.uri)
        held_bytes = self._held_bytes.pop(record.id, 0)
        return Outcome(
            record.source_path,
            record.uri,
            "completed",
            record,
            sent_bytes=record.size_bytes - held_bytes,
        )

    def _send(self, record: UploadRecord) -> tuple[UploadRecord, Verified]:
        provider = self.provider_for(record)
        with SourceReader(record.source_path, fingerprint_of(record)) as reader:
            if record.strategy == "single":
                return self._send_single(record, provider, reader)
            try:
                verified = self._send_parts(record, provider, reader)
            except UploadGoneError:
                self.subscriber.notice(
                    f"upload {record.id} vanished at the provider; starting over"
                )
                self._start_over(record)
                verified = self._send_parts(
                    self.journal.get(record.id), provider, reader
                )
        # Sending parts journaled a session: the record as it stands now.
        return self.journal.get(record.id), verified

    def _send_single(
        self, record: UploadRecord, provider: Provider, reader: SourceReader
    ) -> tuple[UploadRecord, Verified]:
        """PutObject (or the provider's single request) of the whole file; return the
        record with the whole-file MD5 in its metadata (sent with the object, to be
        journaled by ``_finish``) and what the provider confirmed."""
        self.subscriber.upload_started(record.id, record.uri, record.size_bytes, 0)
        if not self._acquire_budget():  # stopped while waiting: nothing to release
            raise self.stop.error or InterruptedRunError(130)
        try:
            # The MD5 goes into the object's metadata (--skip-existing compares it);
            # with --checksum md5 it is the body's digest itself.
            md5 = None
            if record.checksum_algorithm not in ("none", "md5"):
                md5 = RunningDigest("md5")
            whole = (md5,) if md5 else ()
            with self._loaded(record, reader, 0, record.size_bytes, whole) as loaded:
                body, digest = loaded
                whole_md5 = md5.digest() if md5 else digest
                if whole_md5 is not None:
                    record = self._with_whole_md5(record, whole_md5.value_b64)
                verified = self.retry.call(
                    f"upload of {record.uri}",
                    provider.put_single,
                    spec_of(record),
                    body,
                    digest,
                )
        finally:
            self._budget.release()
        # What was sent is what was read, but a file written to after the read (a log
        # still growing, a build overwriting its artifact) is not what was uploaded:
        # reported as a changed source, as a multipart upload's is at Complete.
        reader.check_unchanged()
        expected = Expected(
            record.size_bytes, (digest,) if digest else (), (digest,) if digest else ()
        )
        self._check_verified(record, verified, expected)
        self.subscriber.bytes_done(record.id, record.size_bytes)
        return record, verified

    @staticmethod
    def _with_whole_md5(record: UploadRecord, whole_md5: str) -> UploadRecord:
        if record.metadata.get(WHOLE_MD5_METADATA) == whole_md5:
            return record
        metadata = {**record.metadata, WHOLE_MD5_METADATA: whole_md5}
        return record.with_changes(metadata=metadata)

    @contextmanager
    def _loaded(
        self,
        record: UploadRecord,
        reader: SourceReader,
        offset: int,
        size_bytes: int,
        whole: tuple[RunningDigest, ...] = (),
    ) -> Iterator[tuple[Body, Digest | None]]:
        """The body of ``size_bytes`` at ``offset`` and its digest; ``whole`` hashers
        are fed the same bytes. Call it holding the budget: a small body is read once
        into a reused buffer (given back on exit), a large one is streamed."""
        hasher = None
        if record.checksum_algorithm != "none":
            hasher = RunningDigest(record.checksum_algorithm)
        hashers = (hasher, *whole) if hasher else whole
        if size_bytes > BUFFERED_MAX_BYTES:
            self._hash_range(hashers, reader, offset, offset + size_bytes)
            yield (
                RangeBody(reader, offset, size_bytes),
                (hasher.digest() if hasher else None),
            )
            return
        buffer = self._buffers.take(size_bytes)
        try:
            view = memoryview(buffer)[:size_bytes]
            reader.read_into(offset, view)
            for each in hashers:
                each.update(view)
            yield BufferBody(view), hasher.digest() if hasher else None
        finally:
            self._buffers.give(buffer)

    @staticmethod
    def _hash_range(
        hashers: tuple[RunningDigest, ...], reader: SourceReader, start: int, end: int
    ) -> None:
        """Feed bytes ``start`` to ``end`` of the source to each hasher, in reads of
        at most ``HASH_READ_BYTES``."""
        for offset in range(start, end, HASH_READ_BYTES):
            data = reader.read(offset, min(HASH_READ_BYTES, end - offset))
            for each in hashers:
                each.update(data)

    def _check_verified(
        self, record: UploadRecord, verified: Verified, expected: Expected
    ) -> None:
        if verified.remote.size_bytes != expected.size_bytes:
            raise IntegrityError(
                f"{record.uri} holds {verified.remote.size_bytes} bytes, expected "
                f"{expected.size_bytes}",
                hint=f"the object is not what {record.source_path} holds; upload it again",
                code="size_mismatch",
            )

    def _start_over(self, record: UploadRecord) -> None:
        self.journal.forget_parts(record.id)
        self.journal.update(record.id, session=None)

    def _open_session(
        self, record: UploadRecord, provider: Provider
    ) -> tuple[str, dict[int, Receipt]]:
        spec = spec_of(record)
        parts = self._plan_parts(record)
        if record.session:
            try:
                held = self.retry.call(
                    f"listing parts of {record.uri}",
                    provider.held_parts,
                    spec,
                    record.session,
                    parts,
                )
                return record.session, self._reconcile(record, held)
            except UploadGoneError:
                finished = self._maybe_completed(record, provider)
                if finished is not None:
                    return record.session, finished
                self.subscriber.notice(
                    f"upload {record.id}: the provider no longer knows it; starting over from part 1"
                )
                self._start_over(record)
        session = self.retry.call(
            f"starting {record.uri}", provider.start, spec, record.part_size_bytes
        )
        self.journal.update(record.id, session=session)
        return session, {}

    def _maybe_completed(
        self, record: UploadRecord, provider: Provider
    ) -> dict[int, Receipt] | None:
        """The journaled receipts when the session is gone because it was completed.

        A run killed after the provider processed Complete (or the final chunk) but
        before it heard the answer leaves every part journaled and no session. When an
        object of the planned size is at the key, ``complete`` is asked to confirm it
        (it checks the checksum, never re-uploads); otherwise None: start over.
        """
        rows = self.journal.parts(record.id)
        if len(rows) != record.part_count:
            return None
        remote = self.retry.call(
            f"checking {record.uri}", provider.head, spec_of(record).target
        )
        if remote is None or remote.size_bytes != record.size_bytes:
            return None
        log.info("upload %s: session gone, object present; confirming it", record.id)
        return {
            row.number: Receipt(row.number, row.etag, row.size_bytes, row.checksum)
            for row in rows
        }

    def _reconcile(
        self, record: UploadRecord, held: dict[int, Receipt]
    ) -> dict[int, Receipt]:
        """Make the journal agree with what the provider holds; the provider wins."""
        journaled = {row.number: row for row in self.journal.parts(record.id)}
        gone = set(journaled) - set(held)
        if gone:
            self.journal.forget_parts(record.id, gone)
        merged: dict[int, Receipt] = {}
        for number, receipt in held.items():
            row = journaled.get(number)
            checksum = receipt.checksum or (row.checksum if row else None)
            merged[number] = Receipt(number, receipt.etag, receipt.size_bytes, checksum)
            if row is None or row.etag != receipt.etag:
                part = self._plan_part(record, number)
                self._journal_part(record, part, receipt.etag, checksum)
        return merged

    @staticmethod
    def _plan_parts(record: UploadRecord) -> list[PartSpec]:
        return [Engine._plan_part(record, n) for n in range(1, record.part_count + 1)]

    @staticmethod
    def _plan_part(record: UploadRecord, number: int) -> PartSpec:
        offset = (number - 1) * record.part_size_bytes
        return PartSpec(
            number, offset, min(record.part_size_bytes, record.size_bytes - offset)
        )

    def _send_parts(
        self, record: UploadRecord, provider: Provider, reader: SourceReader
    ) -> Verified:
        session, held = self._open_session(record, provider)
        record = self.journal.get(record.id)
        missing = [part for part in self._plan_parts(record) if part.number not in held]
        held_bytes = sum(r.size_bytes for r in held.values())
        self._held_bytes[record.id] = held_bytes
        self.subscriber.upload_started(
            record.id, record.uri, record.size_bytes, held_bytes
        )
        if held:
            log.info(
                "upload %s resumes: %d of %d parts held",
                record.id,
                len(held),
                record.part_count,
            )
        if provider.limits.is_sequential:
            sent, whole = self._send_in_order(
                record, provider, session, reader, missing
            )
        else:
            sent, whole = (
                self._send_concurrently(record, provider, session, reader, missing),
                (),
            )
        receipts = {**held, **sent}
        return self._complete(record, provider, session, reader, receipts, whole)

    def _complete(
        self,
        record: UploadRecord,
        provider: Provider,
        session: str,
        reader: SourceReader,
        receipts: dict[int, Receipt],
        whole: tuple[Digest, ...],
    ) -> Verified:
        ordered = [receipts[number] for number in sorted(receipts)]
        if len(ordered) != record.part_count:
            raise TransientError(
                f"{record.uri}: {record.part_count - len(ordered)} parts not sent"
            )
        reader.check_unchanged()
        part_digests = self._part_digests(record, reader, ordered)
        expected = Expected(record.size_bytes, part_digests, whole)
        verified = self.retry.call(
            f"completing {record.uri}",
            provider.complete,
            spec_of(record),
            session,
            ordered,
            expected,
        )
        self._check_verified(record, verified, expected)
        return verified

    def _part_digests(
        self, record: UploadRecord, reader: SourceReader, ordered: list[Receipt]
    ) -> tuple[Digest, ...]:
        if record.checksum_algorithm == "none":
            return ()
        digests = []
        for receipt in ordered:
            if receipt.checksum:
                digests.append(Digest(record.checksum_algorithm, receipt.checksum))
                continue
            part = self._plan_part(record, receipt.number)
            digest = self._part_digest(record, reader, part)
            assert digest is not None
            digests.append(digest)
        return tuple(digests)

    def _part_digest(
        self, record: UploadRecord, reader: SourceReader, part: PartSpec
    ) -> Digest | None:
        """The digest of one part, read in chunks (never the whole part at once)."""
        if record.checksum_algorithm == "none":
            return None
        hasher = RunningDigest(record.checksum_algorithm)
        self._hash_range((hasher,), reader, part.offset, part.offset + part.size_bytes)
        return hasher.digest()

    def _send_concurrently(
        self,
        record: UploadRecord,
        provider: Provider,
        session: str,
        reader: SourceReader,
        missing: list[PartSpec],
    ) -> dict[int, Receipt]:
        failed = threading.Event()
        futures: list[Future[Receipt]] = []
        for part in missing:
            if failed.is_set() or self.stop.is_set():
                break
            if not self._acquire_budget(failed):
                break
            futures.append(
                self._parts.submit(
                    self._send_part_released,
                    record,
                    provider,
                    session,
                    reader,
                    part,
                    failed,
                )
            )
        return self._collect(futures)

    def _collect(self, futures: list[Future[Receipt]]) -> dict[int, Receipt]:
        receipts: dict[int, Receipt] = {}
        errors: list[BaseException] = []
        for future in futures:
            try:
                receipt = future.result()
                receipts[receipt.number] = receipt
            except BaseException as exc:
                errors.append(exc)
        if errors:
            raise most_severe(errors)
        if self.stop.is_set():
            raise self.stop.error or InterruptedRunError(130)
        return receipts

    def _acquire_budget(self, failed: threading.Event | None = None) -> bool:
        """Take a slot of the budget; False (holding none) once the run is stopped or
        a part of this upload failed, also when the slot came free because it did."""

        def stopped() -> bool:
            return self.stop.is_set() or (failed is not None and failed.is_set())

        while not self._budget.acquire(timeout=0.2):
            if stopped():
                return False
        if stopped():
            self._budget.release()
            return False
        return True

    def _send_part_released(
        self,
        record: UploadRecord,
        provider: Provider,
        session: str,
        reader: SourceReader,
        part: PartSpec,
        failed: threading.Event,
    ) -> Receipt:
        try:
            with self._loaded(record, reader, part.offset, part.size_bytes) as loaded:
                body, digest = loaded
                return self._send_one(record, provider, session, part, body, digest)
        except BaseException:
            failed.set()
            raise
        finally:
            self._budget.release()

    def _send_one(
        self,
        record: UploadRecord,
        provider: Provider,
        session: str,
        part: PartSpec,
        body: Body,
        digest: Digest | None,
    ) -> Receipt:
        started = time.monotonic()
        receipt = self.retry.call(
            f"part {part.number} of {record.uri}",
            provider.send_part,
            spec_of(record),
            session,
            part,
            body,
            digest,
        )
        checksum = digest.value_b64 if digest else receipt.checksum
        self._journal_part(record, part, receipt.etag, checksum)
        log.debug(
            "upload %s part %d: %d bytes in %.3fs",
            record.id,
            part.number,
            part.size_bytes,
            time.monotonic() - started,
        )
        self.subscriber.bytes_done(record.id, part.size_bytes)
        return Receipt(part.number, receipt.etag, part.size_bytes, checksum)

    def _journal_part(
        self, record: UploadRecord, part: PartSpec, etag: str, checksum: str | None
    ) -> None:
        """Commit a part the provider acknowledged (a resume will not send it again)."""
        row = PartRow(
            record.id,
            part.number,
            part.offset,
            part.size_bytes,
            etag,
            checksum,
            utc_now(),
        )
        self.journal.record_part(record.id, row)

    def _send_in_order(
        self,
        record: UploadRecord,
        provider: Provider,
        session: str,
        reader: SourceReader,
        missing: list[PartSpec],
    ) -> tuple[dict[int, Receipt], tuple[Digest, ...]]:
        hasher = (
            RunningDigest(record.checksum_algorithm)
            if record.checksum_algorithm != "none"
            else None
        )
        first_offset = missing[0].offset if missing else record.size_bytes
        if hasher:
            self._hash_range((hasher,), reader, 0, first_offset)
        receipts: dict[int, Receipt] = {}
        for part in missing:
            if self.stop.is_set():
                raise self.stop.error or InterruptedRunError(130)
            if not self._acquire_budget():  # stopped while waiting
                raise self.stop.error or InterruptedRunError(130)
            try:
                whole = (hasher,) if hasher else ()
                with self._loaded(
                    record, reader, part.offset, part.size_bytes, whole
                ) as (body, digest):
                    receipts[part.number] = self._send_one(
                        record, provider, session, part, body, digest
                    )
            finally:
                self._budget.release()
        return receipts, (hasher.digest(),) if hasher else ()
