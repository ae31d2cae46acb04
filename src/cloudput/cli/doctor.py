"""``cloudput doctor [s3|gcs|azure] [--json]``: check config, credentials, endpoints,
clocks and SDK versions; a table on a terminal, JSON lines with ``--json``."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cloudput.cli.common import provider_factory, settings, with_globals
from cloudput.cli.render import emit
from cloudput.engine.doctor import Check, diagnose, is_configured
from cloudput.errors import EXIT_CONFIG, UsageError, combine_exit_codes

PROVIDERS = ("s3", "gcs", "azure")
#: The width of the table when stdout is not a terminal: wide enough for any detail.
NO_TERMINAL_WIDTH = 400
Opt = typer.Option


@with_globals
def doctor(
    provider: Annotated[
        str | None, typer.Argument(help="s3, gcs or azure (default: all).")
    ] = None,
    bucket: Annotated[str | None, Opt(help="Bucket or container to check.")] = None,
    endpoint_url: Annotated[
        str | None, Opt(help="Endpoint of an S3-compatible server.")
    ] = None,
    region: Annotated[str | None, Opt(help="Region (S3).")] = None,
    as_json: Annotated[bool, Opt("--json", help="One JSON object per check.")] = False,
) -> None:
    """Check each configured provider: SDKs, endpoint, clock, credentials, bucket."""
    if provider is not None and provider not in PROVIDERS:
        raise UsageError(f"unknown provider {provider!r}: use s3, gcs or azure")
    checks: list[Check] = []
    for name in [provider] if provider else PROVIDERS:
        if provider is None and not is_configured(name):
            checks.append(
                Check(name, "configured", "skip", "no credentials or endpoint set")
            )
            continue
        checks += _diagnose(name, bucket, endpoint_url, region)
    _print(checks, as_json)
    if all(check.status == "skip" for check in checks):
        sys.stderr.write(
            "cloudput: error: no provider is configured (set credentials or an "
            "endpoint: see the README's Configuration section)\n"
        )
        raise typer.Exit(EXIT_CONFIG)
    raise typer.Exit(combine_exit_codes([check.exit_code for check in checks]))


def _diagnose(
    name: str, bucket: str | None, endpoint_url: str | None, region: str | None
) -> list[Check]:
    wanted = bucket or (os.environ.get("AZURE_CONTAINER") if name == "azure" else None)
    resolved = settings()
    made = provider_factory(1, 15.0)(
        name,
        endpoint_url or (resolved.get("endpoint_url") if name == "s3" else None),
        region or resolved.get("region"),
    )
    try:
        return diagnose(name, made, wanted)
    finally:
        made.close()


def _print(checks: list[Check], as_json: bool) -> None:
    if as_json:
        for check in checks:
            emit(
                {
                    "provider": check.provider,
                    "check": check.name,
                    "status": check.status,
                    "detail": check.detail,
                }
            )
        return
    table = Table("provider", "check", "status", box=None)
    table.add_column("detail", overflow="fold")  # folded, never cut with an ellipsis
    styles = {"ok": "green", "warn": "yellow", "fail": "red", "skip": "dim"}
    for check in checks:
        table.add_row(
            check.provider,
            check.name,
            Text(check.status, style=styles[check.status]),
            Text(check.detail),  # an error's text, never markup
        )
    console = Console(soft_wrap=True)
    if not console.is_terminal:
        # A CI log or a pipe has no width: a detail (an endpoint, an error) is never
        # cut to 80 columns with an ellipsis.
        console = Console(soft_wrap=True, width=NO_TERMINAL_WIDTH)
    console.print(table)
