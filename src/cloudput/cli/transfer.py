"""What ``upload`` and ``resume`` share: the engine's lifetime, signals, output, exit code.

Calls into the engine; prints results to stdout and progress to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType

from cloudput.cli.common import provider_factory
from cloudput.cli.render import (
    attachment_json,
    emit,
    is_not_started,
    make_progress,
    outcome_json,
    outcome_line,
)
from cloudput.cli.summary import RunSummary
from cloudput.engine.runner import (
    Engine,
    Outcome,
    ProviderPool,
    StopSignal,
    TransferOptions,
)
from cloudput.errors import (
    EXIT_SIGINT,
    EXIT_SIGTERM,
    BucketNotFoundError,
    InterruptedRunError,
    combine_exit_codes,
)
from cloudput.journal import Attachment, Journal, UploadRecord

log = logging.getLogger(__name__)
#: Upload ids named in the closing `cloudput resume ...` hint.
MAX_IDS_SHOWN = 10
#: The error code of a bucket or container that does not exist.
BUCKET_GONE = BucketNotFoundError.code


def provider_pool(options: TransferOptions) -> ProviderPool:
    """The run's providers, one per (provider, endpoint, region), made on first use:
    the preflight's provider is the one the uploads use (one client per run)."""
    return ProviderPool(
        provider_factory(
            options.concurrency,
            options.timeout_s,
            verify_ssl=options.verify_ssl,
            addressing_style=options.addressing_style,
            customer_key=options.customer_key,
        )
    )


def run_engine(
    journal: Journal,
    options: TransferOptions,
    start: Callable[[Engine], Iterator[Outcome]],
    *,
    as_json: bool,
    quiet: bool,
    manifest: str | None = None,
    pool: ProviderPool | None = None,
) -> int:
    """Run uploads, print one result per upload, and return the run's exit code.

    With ``manifest``, each completed upload's attachment is appended to that file as
    one JSON line, after the journal committed it. ``pool``: the providers the command
    already made (its preflight), closed here with the rest.
    """
    stop = StopSignal()
    progress = make_progress(quiet)
    pool = pool or provider_pool(options)
    engine = Engine(journal, pool, options, progress, stop)
    codes: set[int] = set()  # distinct codes only: memory stays flat per file
    resumable: list[str] = []
    orphaned: list[str] = []  # kept uploads whose bucket is not there
    summary = RunSummary()
    not_started = 0  # files stopped before they were journaled
    restore = _install_signal_handlers(stop)
    try:
        for outcome in start(engine):
            codes.add(outcome.exit_code)
            not_started += is_not_started(outcome)
            summary.add(outcome)
            if outcome.status == "interrupted" and outcome.record is not None:
                if outcome.error is not None and outcome.error.code == BUCKET_GONE:
                    # resume cannot help until the bucket is back: not sent there.
                    if len(orphaned) <= MAX_IDS_SHOWN:
                        orphaned.append(outcome.record.id)
                elif len(resumable) <= MAX_IDS_SHOWN:
                    resumable.append(outcome.record.id)
            _print_outcome(outcome, as_json, quiet)
            if (
                manifest
                and outcome.status == "completed"
                and outcome.record is not None
            ):
                _append_manifest(manifest, outcome.record)
    finally:
        restore()
        engine.close()
        pool.close()
        progress.close()
    if engine.unstarted and stop.error is not None:
        # Counted in the closing line too: it names every file of the run.
        summary.add_not_started(engine.unstarted, stop.error.code)
    if not quiet:
        summary.write(sys.stderr)
    if stop.is_set() and isinstance(stop.error, InterruptedRunError):
        codes.add(stop.error.exit_code)
    not_started += engine.unstarted
    if not_started and stop.error is not None:
        codes.add(stop.error.exit_code)
        if not quiet:
            sys.stderr.write(
                f"cloudput: {not_started} files not started ({stop.error.message}); "
                "run the same command again to continue (`cloudput resume` knows only "
                "uploads already begun)\n"
            )
    if resumable and not quiet:
        sys.stderr.write(
            f"cloudput: to continue, run: cloudput resume {_ids(resumable)}\n"
        )
    if orphaned and not quiet:
        sys.stderr.write(
            "cloudput: the bucket is not there: create it, then `cloudput resume`; or "
            f"drop the uploads: cloudput abort {_ids(orphaned)}\n"
        )
    return combine_exit_codes(sorted(codes))


def _ids(upload_ids: list[str]) -> str:
    shown = " ".join(upload_ids[:MAX_IDS_SHOWN])
    return shown + (" ..." if len(upload_ids) > MAX_IDS_SHOWN else "")


def _append_manifest(path: str, record: UploadRecord) -> None:
    line = attachment_json(
        Attachment(
            record.id,
            record.id,
            record.name,
            record.mime,
            record.size_bytes,
            record.storage_url,
        )
    )
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line, ensure_ascii=False) + "\n")


def _print_outcome(outcome: Outcome, as_json: bool, quiet: bool) -> None:
    if as_json:
        emit(outcome_json(outcome))
    else:
        # Results go to stdout even with --quiet, which silences stderr only
        # (CONTRACT.md, "Output").
        print(outcome_line(outcome), flush=True)


def _install_signal_handlers(stop: StopSignal) -> Callable[[], None]:
    """SIGINT/SIGTERM stop new parts; a second signal exits at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        code = EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM
        if stop.is_set() and isinstance(stop.error, InterruptedRunError):
            # At once, as asked: the journal holds every part acknowledged so far
            # (each is committed when it is), so resume sends only the rest.
            sys.stderr.write(
                "cloudput: quit at once; parts in flight are sent again by: "
                "cloudput resume --all\n"
            )
            sys.stderr.flush()
            os._exit(code)
        sys.stderr.write(
            "cloudput: stopping: letting parts in flight finish (signal again to quit)\n"
        )
        stop.set(InterruptedRunError(code))

    previous = {
        sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)
    }

    def restore() -> None:
        if stop.is_set() and isinstance(stop.error, InterruptedRunError):
            # Stopping on a signal: a second one during the rest of the exit still
            # quits at once with the line above, not Python's KeyboardInterrupt
            # traceback from wherever the interpreter then is.
            return
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
