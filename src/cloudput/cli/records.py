"""``cloudput list`` and ``cloudput show``: read the journal, print records."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cloudput.cli.common import (
    current,
    journal_exists,
    journal_path,
    open_journal,
    with_globals,
)
from cloudput.cli.render import attachment_json, emit, part_json, record_json
from cloudput.errors import UsageError
from cloudput.journal import STATUSES
from cloudput.units import format_size


@with_globals
def list_uploads(
    status: Annotated[
        str | None, typer.Option(help="Only uploads with this status.")
    ] = None,
    attachments: Annotated[
        bool, typer.Option("--attachments", help="List attachments.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line.")
    ] = False,
) -> None:
    """List uploads (or attachments) in the journal, oldest first."""
    if status is not None and status not in STATUSES:
        raise UsageError(f"--status {status!r}: use one of {', '.join(STATUSES)}")
    if not journal_exists():
        path = journal_path(current())
        sys.stderr.write(f"cloudput: no journal at {path}: nothing journaled there\n")
        return
    journal = open_journal()
    try:
        if attachments:
            for attachment in journal.attachments():
                data = attachment_json(attachment)
                emit(data) if as_json else print(
                    f"{data['id']}  {data['name']}  {data['url']}"
                )
            return
        if status in (None, "in_progress", "interrupted"):
            journal.settle_orphans(journal.find("in_progress"))
        records = journal.find(status)
    finally:
        journal.close()
    if as_json:
        for record in records:
            emit(record_json(record))
        return
    for record in records:
        print(
            f"{record.id}  {record.status:<11} {format_size(record.size_bytes):>10}  "
            f"{record.part_count:>5} parts  {record.source_path} -> {record.uri}"
        )


@with_globals
def show(
    upload_id: Annotated[str, typer.Argument(help="Upload id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one upload with its parts."""
    journal = open_journal(must_exist=True)
    try:
        (record,) = journal.settle_orphans([journal.get(upload_id)])
        parts = journal.parts(upload_id)
    finally:
        journal.close()
    data = record_json(record)
    data["part_size"] = record.part_size_bytes
    data["parts_done"] = [part_json(row) for row in parts]
    if as_json:
        emit(data)
        return
    for key in (
        "id",
        "status",
        "source",
        "uri",
        "url",
        "size",
        "mimeType",
        "parts",
        "part_size",
        "initiated_at",
        "completed_at",
    ):
        print(f"{key:>13}: {'-' if data[key] is None else data[key]}")
    checksum = data["checksum"]
    if checksum["value"] is None:
        print(f"{'checksum':>13}: {checksum['algorithm']} (not verified yet)")
    else:
        print(
            f"{'checksum':>13}: {checksum['algorithm']} {checksum['value']} "
            f"(verified: {checksum['verified']})"
        )
    if data["error"]:
        print(f"{'error':>13}: {data['error']['code']}: {data['error']['message']}")
    print(f"{'parts done':>13}: {len(parts)} of {record.part_count}")
