"""``cloudput init``, ``part-url`` and ``complete``: the upload lifecycle one step at a
time, for an uploader that holds no cloud credentials (docs/plumbing.md).

Each command is one call into ``engine.plumbing``; JSON goes to stdout. Only ``init``
and ``part-url`` print what lets a client write (that is their job); nothing logs it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from cloudput.cli.common import open_journal, provider_factory, settings, with_globals
from cloudput.cli.options import transfer_options
from cloudput.cli.render import emit, record_json
from cloudput.engine import plumbing
from cloudput.engine.plan import check_part_size
from cloudput.engine.runner import ProviderPool, TransferOptions
from cloudput.errors import ConfigError, UsageError
from cloudput.journal import Journal
from cloudput.keys import parse_target
from cloudput.units import parse_duration, parse_size

Opt = typer.Option
T = TypeVar("T")


@with_globals
def init(
    target: Annotated[str, typer.Argument(help="s3://, gs:// or az:// object.")],
    size: Annotated[str, Opt("--size", help="The object's size: bytes or 8MiB.")],
    content_type: Annotated[
        str | None, Opt(help="Content type (default: from the key's name).")
    ] = None,
    part_size: Annotated[
        str | None, Opt(help="Part size, e.g. 16MiB (default 8MiB; 32MiB on GCS).")
    ] = None,
    no_multipart: Annotated[
        bool, Opt("--no-multipart", help="One PUT for the whole object.")
    ] = False,
) -> None:
    """Plan an upload that another client sends; print its id and parts as JSON."""
    size_bytes = _parsed(parse_size, size, "--size")
    parsed_target = parse_target(target)
    options = transfer_options(
        {"part_size": part_size, "content_type": content_type},
        no_multipart=no_multipart,
    )
    request = plumbing.InitRequest(
        target=parsed_target,
        size_bytes=size_bytes,
        content_type=options.content_type,
        part_size_bytes=options.part_size_bytes,
        threshold_bytes=options.threshold_bytes,
        no_multipart=no_multipart,
        cache_control=options.cache_control,
        storage_class=options.storage_class,
        endpoint_url=options.endpoint_url,
        region=options.region,
        tenant=options.tenant,
    )
    initiated = _with_journal(
        options,
        lambda journal, pool: _init_checked(journal, pool, request, part_size),
    )
    record = initiated.record
    emit(
        {
            "id": record.id,
            "strategy": record.strategy,
            "part_size": record.part_size_bytes,
            "parts": [
                {"number": p.number, "offset": p.offset, "size": p.size_bytes}
                for p in initiated.parts
            ],
            "expires_at": record.expires_at,
        }
    )


def _init_checked(
    journal: Journal,
    pool: ProviderPool,
    request: plumbing.InitRequest,
    flag: str | None,
) -> plumbing.Initiated:
    """A part size from the config file against the rules is exit 3, from a flag 2."""
    if request.part_size_bytes is not None and flag is None:
        limits = pool.get(
            request.target.provider, request.endpoint_url, request.region
        ).limits
        try:
            check_part_size(request.part_size_bytes, limits)
        except UsageError as exc:
            where = settings().source_of("part_size")
            raise ConfigError(
                f"part_size from the {where} settings: {exc.message}"
            ) from exc
    return plumbing.init_upload(journal, pool, request)


@with_globals
def part_url(
    upload_id: Annotated[str, typer.Argument(help="Upload id from `init`.")],
    part_number: Annotated[int, typer.Argument(help="Part number, from 1.")],
    ttl: Annotated[str, Opt(help="URL lifetime, at most 7d (not for GCS).")] = "1h",
    content_md5: Annotated[
        str | None, Opt(help="Base64 MD5 of the part, signed into the request.")
    ] = None,
) -> None:
    """Print the request (url, method, headers) that sends one part without
    credentials; run it again for a fresh URL when one expired."""
    ttl_s = _parsed(parse_duration, ttl, "--ttl")
    issued = _with_journal(
        transfer_options({}),
        lambda journal, pool: plumbing.part_url(
            journal, pool, upload_id, part_number, ttl_s, content_md5
        ),
    )
    emit(
        {
            "url": issued.request.url,
            "method": issued.request.method,
            "headers": dict(issued.request.headers),
            "offset": issued.part.offset,
            "size": issued.part.size_bytes,
            "expires_at": issued.expires_at,
        }
    )


@with_globals
def complete(
    upload_id: Annotated[str, typer.Argument(help="Upload id from `init`.")],
    parts: Annotated[
        str | None,
        Opt(
            "--parts",
            help='JSON [{"number", "etag"}] from a file, or - for stdin '
            "(default: ask the provider).",
        ),
    ] = None,
) -> None:
    """Finish the upload once every part is sent; print the upload record as JSON."""
    reported = None if parts is None else plumbing.parse_reported(_read_json(parts))
    record = _with_journal(
        transfer_options({}),
        lambda journal, pool: plumbing.complete_upload(
            journal, pool, upload_id, reported
        ),
    )
    emit(record_json(record))


def _with_journal(
    options: TransferOptions, work: Callable[[Journal, ProviderPool], T]
) -> T:
    """Run ``work`` with the journal and a provider pool, closing both."""
    journal = open_journal()
    pool = ProviderPool(provider_factory(1, options.timeout_s))
    try:
        return work(journal, pool)
    finally:
        pool.close()
        journal.close()


def _parsed(parse: Callable[[str], T], text: str, flag: str) -> T:
    try:
        return parse(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from exc


def _read_json(source: str) -> Any:
    """The JSON text of a file, or of stdin for ``-`` (exit 2 when unreadable)."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise UsageError(f"--parts {source}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--parts {source}: not JSON ({exc.msg})") from exc
