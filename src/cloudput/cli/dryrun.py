"""``upload --dry-run``: print what would be sent (files, keys, part sizes and counts).

Sends no request and writes nothing to the journal: it reads the local files' sizes and
the provider's limits only, so it cannot know what ``--skip-existing`` would skip.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from cloudput.cli.render import emit
from cloudput.engine.plan import Plan, make_plan
from cloudput.engine.runner import TransferOptions
from cloudput.engine.sources import Job, fingerprint
from cloudput.errors import EXIT_OK, CloudputError, combine_exit_codes
from cloudput.providers.base import ProviderLimits
from cloudput.units import format_size


def print_plan(
    jobs: Iterable[Job],
    limits: ProviderLimits,
    options: TransferOptions,
    as_json: bool,
    quiet: bool,
) -> int:
    """One line (or JSON object) per file; return the exit code the run would have
    for sources that cannot be read (4), else 0."""
    codes = {EXIT_OK}
    files = 0
    total_bytes = 0
    for job in jobs:
        try:
            size_bytes = _size_of(job)
            plan = make_plan(
                size_bytes,
                limits,
                part_size_bytes=options.part_size_bytes,
                threshold_bytes=options.threshold_bytes,
                no_multipart=options.no_multipart,
            )
        except CloudputError as exc:
            codes.add(exc.exit_code)
            _show_failure(job, exc, as_json)
            continue
        files += 1
        total_bytes += size_bytes
        if not quiet:
            warn_about_plan(job.source_path, plan, limits)
        _show(job, plan, as_json)
    if not quiet:
        sys.stderr.write(
            f"cloudput: dry run: {files} {'file' if files == 1 else 'files'}, "
            f"{format_size(total_bytes)}; "
            "nothing was sent\n"
        )
    return combine_exit_codes(sorted(codes))


def warn_about_plan(name: str, plan: Plan, limits: ProviderLimits) -> None:
    """Tell on stderr where the plan is not what was asked: a part size raised to stay
    within the part limit, or parts for a file below the multipart threshold."""
    if plan.over_single_limit:
        sys.stderr.write(
            f"cloudput: WARNING: {name}: {plan.size_bytes:,} bytes is above the "
            f"{limits.max_single_size_bytes:,}-byte maximum of a single request on "
            f"{limits.name}, so it goes in parts although it is below the multipart "
            "threshold\n"
        )
    if plan.raised_from_bytes:
        sys.stderr.write(
            f"cloudput: WARNING: {name}: part size raised from "
            f"{plan.raised_from_bytes:,} to {plan.part_size_bytes:,} bytes to stay "
            f"within {limits.max_parts:,} parts\n"
        )


def _size_of(job: Job) -> int:
    if job.error is not None:
        raise job.error
    return fingerprint(job.source_path).size_bytes


def _show(job: Job, plan: Plan, as_json: bool) -> None:
    if as_json:
        emit(plan_json(job, plan))
        return
    if plan.strategy == "single":
        how = "in one request"
    else:
        how = f"in {plan.part_count} parts of {format_size(plan.part_size_bytes)}"
    print(
        f"would upload {job.source_path} -> {job.target.uri} "
        f"({format_size(plan.size_bytes)} {how})",
        flush=True,
    )


def plan_json(job: Job, plan: Plan) -> dict[str, Any]:
    """The plan of one file: status ``planned``, with its strategy and parts."""
    return {
        "source": job.source_path,
        "uri": job.target.uri,
        "bucket": job.target.bucket,
        "key": job.target.key,
        "size": plan.size_bytes,
        "strategy": plan.strategy,
        "part_size": plan.part_size_bytes,
        "parts": plan.part_count,
        "status": "planned",
    }


def _show_failure(job: Job, exc: CloudputError, as_json: bool) -> None:
    if as_json:
        emit(
            {
                "source": job.source_path,
                "uri": job.target.uri,
                "status": "failed",
                "error": {"code": exc.code, "message": str(exc)},
            }
        )
        return
    print(f"failed {job.source_path} -> {job.target.uri}: {exc}", flush=True)
