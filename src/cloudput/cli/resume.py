"""``cloudput resume (UPLOAD_ID... | --all)``: continue journaled uploads."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from typing import Annotated

import typer

from cloudput.cli import options as shared
from cloudput.cli.common import journal_exists, open_journal, with_globals
from cloudput.cli.options import transfer_options
from cloudput.cli.transfer import run_engine
from cloudput.engine.runner import Outcome
from cloudput.errors import EXIT_OK, UsageError
from cloudput.journal import Journal, UploadRecord

Opt = typer.Option
log = logging.getLogger(__name__)


def select_for_resume(
    journal: Journal, ids: list[str], take_all: bool
) -> list[UploadRecord]:
    """The records ``resume`` works on (CONTRACT.md, "The journal")."""
    if ids and take_all:
        raise UsageError("give upload ids or --all, not both")
    if not ids and not take_all:
        raise UsageError(
            "name the uploads to resume, or pass --all", hint="see `cloudput list`"
        )
    if ids:
        return [journal.get(upload_id) for upload_id in ids]
    chosen = []
    for record in journal.find():
        if record.is_plumbing:
            continue  # sent by an outside uploader (`cloudput init`), not resumable
        if record.status not in ("interrupted", "initiated", "in_progress"):
            continue
        if journal.is_held_elsewhere(record.id):
            # Being done by a live process (an `upload` run, or another resume): not
            # left for this run (CONTRACT.md: resume --all exits 0 when nothing is).
            log.warning(
                "skipping upload %s (%s): a running cloudput process holds it",
                record.id,
                record.uri,
            )
            continue
        chosen.append(record)
    return chosen


def held_is_not_left(outcome: Outcome) -> Outcome:
    """For ``--all``: an upload a live process took meanwhile is not left undone."""
    if outcome.status == "held":
        return replace(outcome, exit_code=EXIT_OK)
    return outcome


@with_globals
def resume(
    upload_ids: Annotated[list[str] | None, typer.Argument(help="Upload ids.")] = None,
    take_all: Annotated[bool, Opt("--all", help="Every unfinished upload.")] = False,
    concurrency: shared.Concurrency = None,
    retries: shared.Retries = None,
    timeout: shared.Timeout = None,
    max_duration: shared.MaxDuration = None,
    as_json: shared.Json = False,
    quiet: shared.Quiet = False,
    sse_c_key_file: Annotated[
        str | None,
        Opt(help="S3 SSE-C: the same key file the upload was started with."),
    ] = None,
    ca_bundle: shared.CaBundle = None,
    no_verify_ssl: shared.NoVerifySsl = False,
    addressing_style: shared.AddressingStyle = None,
) -> None:
    """Finish interrupted uploads; sends only the parts the provider does not hold.

    The journaled plan (part size, checksum, endpoint) is kept; --part-size is not taken.
    """
    flags = {
        "concurrency": concurrency,
        "retries": retries,
        "timeout": timeout,
        "max_duration": max_duration,
        "sse_c_key_file": sse_c_key_file,
        "ca_bundle": ca_bundle,
        "addressing_style": addressing_style,
    }
    options = transfer_options(flags, no_verify_ssl=no_verify_ssl)
    if take_all and not upload_ids and not journal_exists():
        # Nothing was ever journaled here: nothing to resume, and no empty journal
        # made (a cron job's `resume --all` exits 0, as `abort --all-failed` does).
        if not quiet:
            sys.stderr.write("cloudput: nothing to resume (no journal yet)\n")
        raise typer.Exit(EXIT_OK)
    # An id names a journaled upload: a journal that is not there is a wrong path.
    journal = open_journal(must_exist=bool(upload_ids))
    try:
        records = select_for_resume(journal, list(upload_ids or []), take_all)
        if not records and not quiet:
            sys.stderr.write("cloudput: nothing to resume\n")
        code = run_engine(
            journal,
            options,
            lambda engine: (
                held_is_not_left(outcome) if take_all else outcome
                for outcome in engine.resume(records)
            ),
            as_json=as_json,
            quiet=quiet,
        )
    finally:
        journal.close()
    raise typer.Exit(code)
