"""``cloudput abort UPLOAD_ID... [--all-failed]``: cancel at the provider, mark aborted."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from cloudput.cli.common import (
    journal_exists,
    open_journal,
    provider_factory,
    with_globals,
)
from cloudput.cli.render import emit, record_json
from cloudput.engine.runner import spec_of
from cloudput.errors import BucketNotFoundError, UsageError, combine_exit_codes
from cloudput.journal import Journal, UploadRecord

log = logging.getLogger(__name__)
ABORTABLE = ("initiated", "in_progress", "interrupted", "failed")


def abort_record(journal: Journal, record: UploadRecord) -> UploadRecord:
    """Cancel the provider's session (idempotent) and mark the record aborted."""
    if record.status in ("completed", "skipped"):
        raise UsageError(f"upload {record.id} is {record.status}; nothing to abort")
    if record.status == "aborted":
        return record
    if not journal.hold(record.id):
        raise UsageError(
            f"upload {record.id} is being sent by another process",
            hint="stop that process first",
        )
    try:
        # A single upload has a session only when `init` opened one (GCS).
        if record.session:
            provider = provider_factory(1, 60.0)(
                record.provider, record.endpoint_url, record.region
            )
            try:
                provider.abort(spec_of(record), record.session)
            except BucketNotFoundError as exc:
                # No bucket, no upload in it: nothing is left to cancel there, and
                # refusing would keep the record for `resume --all` to fail on forever.
                log.warning(
                    "%s: nothing left to cancel there; marked aborted", exc.message
                )
            finally:
                provider.close()
        journal.update(record.id, status="aborted")
        journal.forget_parts(record.id)
    finally:
        journal.release(record.id)
    return journal.get(record.id)


@with_globals
def abort(
    upload_ids: Annotated[list[str] | None, typer.Argument(help="Upload ids.")] = None,
    all_failed: Annotated[
        bool, typer.Option("--all-failed", help="Every failed upload.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the records as JSON.")
    ] = False,
) -> None:
    """Cancel uploads at the provider and mark them aborted in the journal."""
    if not upload_ids and not all_failed:
        raise UsageError("name the uploads to abort, or pass --all-failed")
    if not upload_ids and not journal_exists():
        sys.stderr.write("cloudput: no failed uploads to abort (no journal yet)\n")
        return
    journal = open_journal(must_exist=True)
    codes: list[int] = []
    try:
        records = [journal.get(upload_id) for upload_id in upload_ids or []]
        if all_failed:
            records += [
                r for r in journal.find("failed") if r.id not in (upload_ids or [])
            ]
        if not records:
            sys.stderr.write("cloudput: no failed uploads to abort\n")
        for record in records:
            aborted = abort_record(journal, record)
            if as_json:
                emit(record_json(aborted))
            else:
                print(f"aborted {aborted.id} {aborted.uri}", flush=True)
            codes.append(0)
    finally:
        journal.close()
    raise typer.Exit(combine_exit_codes(codes))
