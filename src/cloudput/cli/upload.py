"""``cloudput upload SOURCE... TARGET``: one call into the engine."""

from __future__ import annotations

from typing import Annotated

import typer

from cloudput.cli.common import open_journal, provider_factory, settings, with_globals
from cloudput.cli.options import transfer_options
from cloudput.cli.transfer import run_engine
from cloudput.engine.plan import check_part_size
from cloudput.engine.sources import expand_sources
from cloudput.errors import ConfigError, UsageError
from cloudput.keys import Target, parse_target
from cloudput.providers.base import ProviderLimits

Opt = typer.Option


@with_globals
def upload(
    paths: Annotated[
        list[str], typer.Argument(help="SOURCE... TARGET", metavar="SOURCE... TARGET")
    ],
    part_size: Annotated[
        str | None, Opt(help="Part size, e.g. 8MiB (default 8MiB).")
    ] = None,
    multipart_threshold: Annotated[
        str | None, Opt(help="Files this big go multipart (default 8MiB).")
    ] = None,
    no_multipart: Annotated[
        bool, Opt("--no-multipart", help="One request per file.")
    ] = False,
    concurrency: Annotated[
        int | None, Opt(help="Parts in flight, all files (default 8).")
    ] = None,
    checksum: Annotated[
        str | None, Opt(help="auto|crc32c|md5|none (default auto).")
    ] = None,
    retries: Annotated[int | None, Opt(help="Retries per request (default 5).")] = None,
    timeout: Annotated[
        str | None, Opt(help="Per-request timeout (default 60s).")
    ] = None,
    content_type: Annotated[
        str | None, Opt(help="Content type (default: from the name).")
    ] = None,
    cache_control: Annotated[
        str | None, Opt(help="Cache-Control of the objects.")
    ] = None,
    metadata: Annotated[list[str] | None, Opt(help="KEY=VALUE, repeatable.")] = None,
    storage_class: Annotated[
        str | None, Opt(help="Storage class / access tier.")
    ] = None,
    region: Annotated[str | None, Opt(help="Region (S3).")] = None,
    endpoint_url: Annotated[
        str | None, Opt(help="Endpoint of an S3-compatible server.")
    ] = None,
    max_duration: Annotated[
        str | None, Opt(help="Stop cleanly after this long.")
    ] = None,
    as_json: Annotated[bool, Opt("--json", help="One JSON record per upload.")] = False,
    quiet: Annotated[
        bool, Opt("--quiet", "-q", help="No progress or messages.")
    ] = False,
) -> None:
    """Upload files or directories to s3://, gs:// or az:// targets."""
    if len(paths) < 2:
        raise UsageError("upload needs at least one SOURCE and a TARGET")
    *sources, target_text = paths
    target = parse_target(target_text)
    flags = {
        "part_size": part_size,
        "multipart_threshold": multipart_threshold,
        "concurrency": concurrency,
        "checksum": checksum,
        "retries": retries,
        "timeout": timeout,
        "content_type": content_type,
        "cache_control": cache_control,
        "storage_class": storage_class,
        "region": region,
        "endpoint_url": endpoint_url,
        "max_duration": max_duration,
    }
    options = transfer_options(flags, metadata, no_multipart)
    jobs = expand_sources(sources, target)
    _preflight(target, options.part_size_bytes, part_size, options)
    journal = open_journal()
    try:
        code = run_engine(
            journal,
            options,
            lambda engine: engine.upload(jobs),
            as_json=as_json,
            quiet=quiet,
        )
    finally:
        journal.close()
    raise typer.Exit(code)


def _preflight(
    target: Target, part_size_bytes: int | None, flag: str | None, options
) -> None:
    """Check the part size against the provider's rules and that the bucket exists,
    before any upload starts."""
    provider = provider_factory(options.concurrency, options.timeout_s)(
        target.provider, options.endpoint_url, options.region
    )
    try:
        if part_size_bytes is not None:
            _check_part_size(
                part_size_bytes, provider.limits, from_flag=flag is not None
            )
        provider.check_bucket(target)
    finally:
        provider.close()


def _check_part_size(
    part_size_bytes: int, limits: ProviderLimits, from_flag: bool
) -> None:
    try:
        check_part_size(part_size_bytes, limits)
    except UsageError as exc:
        if from_flag:
            raise
        where = settings().source_of("part_size")
        raise ConfigError(
            f"part_size from the {where} settings: {exc.message}"
        ) from exc
