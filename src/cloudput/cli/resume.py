"""``cloudput resume (UPLOAD_ID... | --all)``: continue journaled uploads."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cloudput.cli.common import open_journal, with_globals
from cloudput.cli.transfer import run_engine
from cloudput.cli.upload import tuning_options
from cloudput.engine.runner import TransferOptions
from cloudput.errors import UsageError
from cloudput.journal import Journal, UploadRecord


def select_for_resume(journal: Journal, ids: list[str], take_all: bool) -> list[UploadRecord]:
    """The records ``resume`` works on (CONTRACT.md, "The journal")."""
    if ids and take_all:
        raise UsageError("give upload ids or --all, not both")
    if not ids and not take_all:
        raise UsageError("name the uploads to resume, or pass --all", hint="see `cloudput list`")
    if ids:
        return [journal.get(upload_id) for upload_id in ids]
    chosen = []
    for record in journal.find():
        if record.status in ("interrupted", "initiated"):
            chosen.append(record)
        elif record.status == "in_progress" and not journal.is_held_elsewhere(record.id):
            chosen.append(record)
    return chosen


@with_globals
def resume(
    upload_ids: Annotated[list[str] | None, typer.Argument(help="Upload ids.")] = None,
    take_all: Annotated[bool, typer.Option("--all", help="Every unfinished upload.")] = False,
    concurrency: Annotated[int, typer.Option(help="Parts in flight across all files.")] = 8,
    retries: Annotated[int, typer.Option(help="Retries per request.")] = 5,
    timeout: Annotated[str | None, typer.Option(help="Per-request timeout, e.g. 60s.")] = None,
    max_duration: Annotated[str | None, typer.Option(help="Stop cleanly after this long.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON record per upload.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or messages.")] = False,
) -> None:
    """Finish interrupted uploads; sends only the parts the provider does not hold."""
    tuning = tuning_options(concurrency, retries, timeout, max_duration)
    journal = open_journal()
    try:
        records = select_for_resume(journal, list(upload_ids or []), take_all)
        if not records and not quiet:
            sys.stderr.write("cloudput: nothing to resume\n")
        options = TransferOptions(
            concurrency=concurrency,
            retries=retries,
            retry_base_delay_s=tuning["retry_base_delay_s"],  # type: ignore[arg-type]
            timeout_s=tuning["timeout_s"] or 60.0,  # type: ignore[arg-type]
            max_duration_s=tuning["max_duration_s"],  # type: ignore[arg-type]
        )
        code = run_engine(journal, options, lambda engine: engine.resume(records),
                          as_json=as_json, quiet=quiet)
    finally:
        journal.close()
    raise typer.Exit(code)
