"""``cloudput upload SOURCE... TARGET``: one call into the engine."""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

try:  # typer >= 0.2x vendors click; earlier releases use click itself
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import get_current_context  # type: ignore[no-redef]

from cloudput.cli import options as shared
from cloudput.cli.common import open_journal, settings, with_globals
from cloudput.cli.dryrun import print_plan
from cloudput.cli.options import transfer_options
from cloudput.cli.transfer import provider_pool, run_engine
from cloudput.engine.plan import check_part_size
from cloudput.engine.runner import ProviderPool, TransferOptions
from cloudput.engine.sources import Selection, SourceSet
from cloudput.errors import ConfigError, NotSupportedError, TransientError, UsageError
from cloudput.keys import Target, parse_target
from cloudput.providers.base import (
    ObjectSpec,
    Provider,
    ProviderLimits,
    check_object_options,
)

Opt = typer.Option
_FILTER_FLAGS = {"--include": "include", "--exclude": "exclude"}
#: The source name that means standard input (refused: docs/limitations.md).
STDIN_SOURCE = "-"


class UploadCommand(TyperCommand):
    """Keeps the command-line order of --include and --exclude (click groups each
    option's values apart), since the last matching pattern decides."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        ctx.meta["cloudput_filters"] = filters_in_order(args)
        return super().parse_args(ctx, args)


def filters_in_order(args: list[str]) -> list[tuple[str, str]]:
    """("include" | "exclude", pattern) pairs as they appear in ``args``."""
    found: list[tuple[str, str]] = []
    position = 0
    while position < len(args):
        arg = args[position]
        if arg == "--":
            break
        flag, sep, value = arg.partition("=")
        if flag in _FILTER_FLAGS:
            if not sep:
                position += 1
                value = args[position] if position < len(args) else ""
            found.append((_FILTER_FLAGS[flag], value))
        position += 1
    return found


def _selection(
    include: list[str] | None, exclude: list[str] | None, follow_symlinks: bool
) -> Selection:
    context = get_current_context(silent=True)
    ordered = context.meta.get("cloudput_filters") if context else None
    given = sorted(
        [("include", p) for p in include or []]
        + [("exclude", p) for p in exclude or []]
    )
    if ordered is None or sorted(ordered) != given:
        # Not parsed by UploadCommand: excludes first, so an --include wins.
        ordered = [("exclude", p) for p in exclude or []] + [
            ("include", p) for p in include or []
        ]
    return Selection(tuple(ordered), follow_symlinks)


@with_globals
def upload(
    paths: Annotated[
        list[str], typer.Argument(help="SOURCE... TARGET", metavar="SOURCE... TARGET")
    ],
    part_size: Annotated[
        str | None, Opt(help="Part size, e.g. 16MiB (default 8MiB; 32MiB on GCS).")
    ] = None,
    multipart_threshold: Annotated[
        str | None, Opt(help="Files this big go multipart (default 8MiB).")
    ] = None,
    no_multipart: Annotated[
        bool, Opt("--no-multipart", help="One request per file.")
    ] = False,
    concurrency: shared.Concurrency = None,
    checksum: Annotated[
        str | None, Opt(help="auto|crc32c|md5|none (default auto).")
    ] = None,
    retries: shared.Retries = None,
    timeout: shared.Timeout = None,
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
    max_duration: shared.MaxDuration = None,
    include: Annotated[
        list[str] | None,
        Opt(help="Take files matching this pattern (repeatable; last match wins)."),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        Opt(help="Leave files matching this pattern (repeatable; last match wins)."),
    ] = None,
    follow_symlinks: Annotated[
        bool, Opt("--follow-symlinks", help="Follow links to directories.")
    ] = False,
    skip_existing: Annotated[
        bool,
        Opt("--skip-existing", help="Skip files whose object is already identical."),
    ] = False,
    no_clobber: Annotated[
        bool, Opt("--no-clobber", help="Never overwrite an existing object.")
    ] = False,
    dry_run: Annotated[
        bool, Opt("--dry-run", help="Print the plan; send nothing.")
    ] = False,
    as_json: shared.Json = False,
    quiet: shared.Quiet = False,
    max_size: Annotated[
        str | None, Opt(help="Policy: refuse files larger than this (exit 4).")
    ] = None,
    manifest: Annotated[
        str | None,
        Opt(help="Append each completed upload's attachment JSON to this file."),
    ] = None,
    allow_type: Annotated[
        list[str] | None,
        Opt(help="Policy: only these content types, e.g. 'image/*' (repeatable)."),
    ] = None,
    content_encoding: Annotated[
        str | None, Opt(help="Content-Encoding of the objects, e.g. gzip.")
    ] = None,
    content_disposition: Annotated[
        str | None, Opt(help="Content-Disposition, e.g. 'attachment'.")
    ] = None,
    tags: Annotated[
        list[str] | None,
        Opt(help="KEY=VALUE object tags (S3) / index tags (Azure), repeatable."),
    ] = None,
    acl: Annotated[str | None, Opt(help="S3 canned ACL, e.g. private.")] = None,
    sse: Annotated[
        str | None, Opt(help="S3 server-side encryption: AES256|aws:kms.")
    ] = None,
    sse_kms_key_id: Annotated[
        str | None, Opt(help="S3 KMS key id (implies --sse aws:kms).")
    ] = None,
    sse_c_key_file: Annotated[
        str | None,
        Opt(help="S3 SSE-C: file holding a 32-byte key; resume needs it too."),
    ] = None,
    kms_key: Annotated[str | None, Opt(help="GCS Cloud KMS key name.")] = None,
    encryption_scope: Annotated[str | None, Opt(help="Azure encryption scope.")] = None,
    ca_bundle: shared.CaBundle = None,
    no_verify_ssl: shared.NoVerifySsl = False,
    addressing_style: shared.AddressingStyle = None,
) -> None:
    """Upload files or directories to s3://, gs:// or az:// targets.

    Directories are walked recursively; quoted globs are expanded by cloudput.
    """
    if len(paths) < 2:
        raise UsageError("upload needs at least one SOURCE and a TARGET")
    *sources, target_text = paths
    if STDIN_SOURCE in sources:
        raise NotSupportedError(
            "a '-' source (standard input) is not supported",
            hint="write the stream to a file first, then upload the file "
            "(an upload from a file can be resumed; see docs/limitations.md)",
        )
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
        "content_encoding": content_encoding,
        "content_disposition": content_disposition,
        "acl": acl,
        "sse": sse,
        "sse_kms_key_id": sse_kms_key_id,
        "sse_c_key_file": sse_c_key_file,
        "kms_key": kms_key,
        "encryption_scope": encryption_scope,
        "ca_bundle": ca_bundle,
        "addressing_style": addressing_style,
    }
    options = dataclasses.replace(
        transfer_options(
            flags,
            metadata,
            no_multipart,
            max_size,
            allow_type,
            tags=tags,
            no_verify_ssl=no_verify_ssl,
        ),
        skip_existing=skip_existing,
        no_clobber=no_clobber,
    )
    source_set = SourceSet(
        sources,
        target,
        _selection(include, exclude, follow_symlinks),
        notice=None if quiet else _notice,
    )
    if not source_set.check() and not quiet:
        _notice("no file to upload: the sources and filters select none")
    if manifest and not dry_run:
        check_manifest(manifest)
    pool = provider_pool(options)
    try:
        limits = _preflight(
            pool.get(target.provider, options.endpoint_url, options.region),
            target,
            options.part_size_bytes,
            part_size,
            options,
            check_bucket=not dry_run,
        )
        if dry_run:
            code = print_plan(source_set.jobs(), limits, options, as_json, quiet)
        else:
            code = _run_uploads(source_set, options, pool, as_json, quiet, manifest)
    finally:
        pool.close()
    raise typer.Exit(code)


def _run_uploads(
    source_set: SourceSet,
    options: TransferOptions,
    pool: ProviderPool,
    as_json: bool,
    quiet: bool,
    manifest: str | None,
) -> int:
    journal = open_journal()
    try:
        return run_engine(
            journal,
            options,
            lambda engine: engine.upload(source_set.jobs()),
            as_json=as_json,
            quiet=quiet,
            manifest=manifest,
            pool=pool,
        )
    finally:
        journal.close()


def check_manifest(path: str) -> None:
    """Refuse a --manifest that cannot be appended to before any request: found after
    the first upload, it stopped the run with an internal error."""
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise UsageError(
            f"--manifest {path}: cannot write there ({exc.strerror or exc})",
            hint="give a file in a directory that exists and is writable",
        ) from None


def _notice(message: str) -> None:
    sys.stderr.write(f"cloudput: {message}\n")


def _preflight(
    provider: Provider,
    target: Target,
    part_size_bytes: int | None,
    flag: str | None,
    options: Any,
    check_bucket: bool = True,
) -> ProviderLimits:
    """Check the part size against the provider's rules and (unless ``--dry-run``,
    which sends no request at all) that the bucket exists, before any upload starts."""
    check_object_options(_sample_spec(target, options), provider.limits)
    if part_size_bytes is not None:
        _check_part_size(part_size_bytes, provider.limits, from_flag=flag is not None)
    if check_bucket:
        try:
            provider.check_bucket(target)
        except TransientError as exc:
            exc.hint = _hint_before_journal(exc.hint)
            raise
    return provider.limits


def _hint_before_journal(hint: str | None) -> str:
    """The hint of a failure before anything was journaled: `resume` has nothing to
    continue then, so the way on is the same command again."""
    again = "run the same command again: nothing was sent or journaled"
    if hint and "resume" in hint:
        head = hint.split("then `cloudput resume", 1)[0].rstrip(", ")
        return f"{head}, then {again}" if head and head != hint else again
    return f"{hint}; {again}" if hint else again


def _sample_spec(target: Target, options: TransferOptions) -> ObjectSpec:
    """The object options of this run, as every upload's spec will carry them."""
    return ObjectSpec(
        target=target,
        size_bytes=0,
        content_type=options.content_type or "application/octet-stream",
        storage_class=options.storage_class,
        content_encoding=options.content_encoding,
        content_disposition=options.content_disposition,
        tags=options.tags,
        acl=options.acl,
        encryption=options.encryption,
        encryption_key_id=options.encryption_key_id,
    )


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
