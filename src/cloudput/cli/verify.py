"""``cloudput verify UPLOAD_ID...``: re-read the source, compare it with the object.

Exit 0 when identical, 8 on a mismatch (or no object), 4 when the source is missing,
2 for an unknown id, 10 when the object shows no checksum cloudput can compute.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cloudput.cli.common import open_journal, provider_factory, with_globals
from cloudput.cli.render import emit
from cloudput.engine.existing import Comparison, verify_upload
from cloudput.errors import (
    EXIT_INTEGRITY,
    EXIT_NOT_SUPPORTED,
    EXIT_OK,
    CloudputError,
    UsageError,
    combine_exit_codes,
)
from cloudput.journal import UploadRecord

#: Concurrency and timeout of the one provider client ``verify`` opens.
VERIFY_CONCURRENCY = 1
VERIFY_TIMEOUT_S = 60.0


@with_globals
def verify(
    upload_ids: Annotated[list[str], typer.Argument(help="Upload ids.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per upload.")
    ] = False,
) -> None:
    """Re-read each upload's source and compare it with the object's size and checksum."""
    journal = open_journal(must_exist=True)
    try:
        records = [journal.get(upload_id) for upload_id in upload_ids]
    finally:
        journal.close()
    codes = [_verify_one(record, as_json) for record in records]
    raise typer.Exit(combine_exit_codes(codes))


def _verify_one(record: UploadRecord, as_json: bool) -> int:
    if not record.source_path:
        raise UsageError(
            f"upload {record.id} was made by `cloudput init`: there is no local source"
        )
    provider = provider_factory(VERIFY_CONCURRENCY, VERIFY_TIMEOUT_S)(
        record.provider, record.endpoint_url, record.region
    )
    try:
        found = verify_upload(record, provider)
    except CloudputError as exc:
        _report(record, "failed", str(exc), exc.code, as_json)
        return exc.exit_code
    finally:
        provider.close()
    return _report_comparison(record, found, as_json)


def _report_comparison(record: UploadRecord, found: Comparison, as_json: bool) -> int:
    if found.same:
        _report(record, "identical", f"same size and {found.by}", None, as_json)
        return EXIT_OK
    if found.same is None:
        _report(record, "unknown", found.detail, "no_checksum", as_json)
        return EXIT_NOT_SUPPORTED
    _report(record, "mismatch", found.detail, "checksum_mismatch", as_json)
    return EXIT_INTEGRITY


def _report(
    record: UploadRecord, verdict: str, detail: str, code: str | None, as_json: bool
) -> None:
    if as_json:
        emit(
            {
                "id": record.id,
                "source": record.source_path,
                "uri": record.uri,
                "verdict": verdict,
                "detail": detail,
                "error": {"code": code, "message": detail} if code else None,
            }
        )
        return
    print(f"{verdict} {record.source_path} -> {record.uri}: {detail}", flush=True)
