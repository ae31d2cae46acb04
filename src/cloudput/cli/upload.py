"""``cloudput upload SOURCE... TARGET``: one call into the engine."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from cloudput.cli.common import (
    duration_option,
    provider_factory,
    metadata_option,
    open_journal,
    size_option,
    with_globals,
)
from cloudput.cli.transfer import run_engine
from cloudput.engine.plan import DEFAULT_MULTIPART_THRESHOLD_BYTES, check_part_size
from cloudput.engine.runner import TransferOptions
from cloudput.engine.sources import expand_sources
from cloudput.errors import ConfigError, UsageError
from cloudput.keys import parse_target
from cloudput.units import parse_duration

DEFAULT_RETRY_BASE_DELAY_S = 0.5


def tuning_options(
    concurrency: int, retries: int, timeout: str | None, max_duration: str | None
) -> dict[str, object]:
    """Validate the tuning options ``upload`` and ``resume`` share."""
    if concurrency < 1 or concurrency > 256:
        raise UsageError(f"--concurrency {concurrency}: use a number from 1 to 256")
    if retries < 0 or retries > 100:
        raise UsageError(f"--retries {retries}: use a number from 0 to 100")
    return {
        "concurrency": concurrency,
        "retries": retries,
        "retry_base_delay_s": retry_base_delay(),
        "max_duration_s": duration_option(max_duration, "--max-duration"),
        "timeout_s": duration_option(timeout, "--timeout"),
    }


def retry_base_delay() -> float:
    """CLOUDPUT_RETRY_BASE_DELAY (seconds, or a duration such as 2s): the first retry's
    wait, doubled on each further attempt. Default 0.5 s; tests make it short."""
    text = os.environ.get("CLOUDPUT_RETRY_BASE_DELAY")
    if not text:
        return DEFAULT_RETRY_BASE_DELAY_S
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"CLOUDPUT_RETRY_BASE_DELAY: {exc}") from exc


@with_globals
def upload(
    paths: Annotated[list[str], typer.Argument(help="SOURCE... TARGET", metavar="SOURCE... TARGET")],
    part_size: Annotated[str | None, typer.Option(help="Part size, e.g. 8MiB.")] = None,
    multipart_threshold: Annotated[str, typer.Option(help="Files this big go multipart.")] = "8MiB",
    no_multipart: Annotated[bool, typer.Option(help="Send each file in one request.")] = False,
    concurrency: Annotated[int, typer.Option(help="Parts in flight across all files.")] = 8,
    checksum: Annotated[str, typer.Option(help="auto|crc32c|md5|none")] = "auto",
    retries: Annotated[int, typer.Option(help="Retries per request.")] = 5,
    timeout: Annotated[str | None, typer.Option(help="Per-request timeout, e.g. 60s.")] = None,
    content_type: Annotated[str | None, typer.Option(help="Content type of every object.")] = None,
    cache_control: Annotated[str | None, typer.Option(help="Cache-Control of objects.")] = None,
    metadata: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable.")] = None,
    storage_class: Annotated[str | None, typer.Option(help="Storage class / tier.")] = None,
    region: Annotated[str | None, typer.Option(help="Region (S3).")] = None,
    endpoint_url: Annotated[str | None, typer.Option(help="Endpoint of an S3-compatible server.")] = None,
    max_duration: Annotated[str | None, typer.Option(help="Stop cleanly after this long.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON record per upload.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or messages.")] = False,
) -> None:
    """Upload files or directories to s3://, gs:// or az:// targets."""
    if len(paths) < 2:
        raise UsageError("upload needs at least one SOURCE and a TARGET")
    *sources, target_text = paths
    target = parse_target(target_text)
    if checksum not in ("auto", "crc32c", "md5", "none"):
        raise UsageError(f"--checksum {checksum!r}: use auto, crc32c, md5 or none")
    tuning = tuning_options(concurrency, retries, timeout, max_duration)
    threshold = size_option(multipart_threshold, "--multipart-threshold")
    part_size_bytes = size_option(part_size, "--part-size")
    options = TransferOptions(
        concurrency=concurrency,
        retries=retries,
        retry_base_delay_s=tuning["retry_base_delay_s"],  # type: ignore[arg-type]
        timeout_s=tuning["timeout_s"] or 60.0,  # type: ignore[arg-type]
        part_size_bytes=part_size_bytes,
        threshold_bytes=threshold or DEFAULT_MULTIPART_THRESHOLD_BYTES,
        no_multipart=no_multipart,
        checksum=checksum,
        content_type=content_type,
        cache_control=cache_control,
        metadata=metadata_option(metadata),
        storage_class=storage_class,
        max_duration_s=tuning["max_duration_s"],  # type: ignore[arg-type]
        endpoint_url=endpoint_url,
        region=region,
    )
    provider = provider_factory(concurrency, options.timeout_s)(target.provider, endpoint_url, region)
    try:
        if part_size_bytes is not None:
            check_part_size(part_size_bytes, provider.limits)
        jobs = expand_sources(sources, target)
        provider.check_bucket(target)
    finally:
        provider.close()
    journal = open_journal()
    try:
        code = run_engine(journal, options, lambda engine: engine.upload(jobs), as_json=as_json,
                          quiet=quiet)
    finally:
        journal.close()
    raise typer.Exit(code)
