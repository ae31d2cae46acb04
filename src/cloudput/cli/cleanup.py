"""``cloudput cleanup TARGET [--older-than 1d] [--dry-run]``: abort orphaned uploads."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cloudput.cli.common import open_journal, provider_factory, with_globals
from cloudput.cli.render import emit
from cloudput.config import SETTINGS
from cloudput.engine.cleanup import abort_orphan, find_orphans
from cloudput.errors import CloudputError, UsageError, combine_exit_codes
from cloudput.keys import parse_target

Opt = typer.Option


@with_globals
def cleanup(
    target_text: Annotated[
        str, typer.Argument(metavar="TARGET", help="Bucket or prefix.")
    ],
    older_than: Annotated[str, Opt(help="Only uploads started this long ago.")] = "1d",
    dry_run: Annotated[bool, Opt("--dry-run", help="List, abort nothing.")] = False,
    endpoint_url: Annotated[
        str | None, Opt(help="Endpoint of an S3-compatible server.")
    ] = None,
    region: Annotated[str | None, Opt(help="Region (S3).")] = None,
    as_json: Annotated[bool, Opt("--json", help="One JSON object per upload.")] = False,
) -> None:
    """Find unfinished uploads under TARGET at the provider and abort them.

    S3: ListMultipartUploads; Azure: blobs holding only uncommitted blocks; GCS: the
    sessions this journal knows. Completed objects are never touched.
    """
    target = parse_target(target_text)
    try:
        older_than_s = SETTINGS["max_duration"](older_than)
    except ValueError as exc:
        raise UsageError(f"--older-than {older_than!r}: {exc}") from exc
    provider = provider_factory(1, 60.0)(target.provider, endpoint_url, region)
    journal = open_journal()
    codes: list[int] = []
    try:
        for orphan in find_orphans(provider, journal, target, older_than_s):
            codes.append(_handle(provider, journal, orphan, dry_run, as_json))
    finally:
        journal.close()
        provider.close()
    if not codes:
        # Younger unfinished uploads may be there, left alone on purpose: say so.
        sys.stderr.write(
            f"cloudput: no unfinished upload to clean up in {target.uri} (none "
            f"started over {older_than} ago; --older-than sets the age)\n"
        )
    raise typer.Exit(combine_exit_codes(codes))


def _handle(provider, journal, orphan, dry_run: bool, as_json: bool) -> int:
    uri = orphan.incomplete.target.uri
    upload_id = orphan.record.id if orphan.record else None
    action, code, reason = ("would abort" if dry_run else "aborted"), 0, None
    if not dry_run:
        try:
            abort_orphan(provider, journal, orphan)
        except CloudputError as exc:
            action, code, reason = "failed", exc.exit_code, str(exc)
    if as_json:
        emit(
            {
                "uri": uri,
                "upload_id": upload_id,
                "action": action.replace(" ", "_"),
                "error": reason,
            }
        )
    else:
        suffix = f" (upload {upload_id})" if upload_id else " (not in this journal)"
        print(f"{action} {uri}{suffix}" + (f": {reason}" if reason else ""), flush=True)
    return code
