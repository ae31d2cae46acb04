"""Options every command takes, and turning them into a journal and providers.

The CLI's shared plumbing; it never touches SQL or an SDK directly.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import platformdirs
import typer

from cloudput import startup
from cloudput.audit import AuditLog
from cloudput.config import Settings, load_settings
from cloudput.engine.metered import MeteredProvider
from cloudput.engine.throttle import TokenBucket
from cloudput.errors import CloudputError, ConfigError, UsageError
from cloudput.journal import Journal
from cloudput.logs import setup_logging
from cloudput.providers import open_provider
from cloudput.providers.base import Provider, ProviderSettings


@dataclass(frozen=True)
class GlobalOptions:
    """The options of CONTRACT.md that every command takes."""

    journal: str | None = None
    config: str | None = None
    tenant: str | None = None
    verbose: int = 0
    log_file: str | None = None
    debug: bool = False
    audit_log: str | None = None
    bwlimit: str | None = None
    max_requests_per_second: float | None = None


_metering: ContextVar[tuple[Any, Any, Any]] = ContextVar(
    "cloudput_metering", default=(None, None, None)
)
# Both defaults are frozen dataclasses: immutable, so sharing them is safe.
_current: ContextVar[GlobalOptions] = ContextVar(
    "cloudput_globals",
    default=GlobalOptions(),  # noqa: B039
)
_settings: ContextVar[Settings] = ContextVar(
    "cloudput_settings",
    default=Settings(None, None),  # noqa: B039
)

_GLOBAL_PARAMS = [
    (
        "journal",
        Annotated[
            str | None,
            typer.Option("--journal", help="Journal file (SQLite).", envvar=None),
        ],
        None,
    ),
    (
        "config",
        Annotated[str | None, typer.Option("--config", help="TOML config file.")],
        None,
    ),
    (
        "tenant",
        Annotated[str | None, typer.Option("--tenant", help="Tenant section to use.")],
        None,
    ),
    (
        "verbose",
        Annotated[
            int,
            typer.Option(
                "--verbose", "-v", count=True, help="-v for INFO, -vv for DEBUG."
            ),
        ],
        0,
    ),
    (
        "log_file",
        Annotated[
            str | None, typer.Option("--log-file", help="Write DEBUG logs here.")
        ],
        None,
    ),
    ("debug", Annotated[bool, typer.Option("--debug", help="Show tracebacks.")], False),
    (
        "audit_log",
        Annotated[
            str | None,
            typer.Option(
                "--audit-log", help="Append one JSON line per lifecycle step."
            ),
        ],
        None,
    ),
    (
        "bwlimit",
        Annotated[
            str | None,
            typer.Option(
                "--bwlimit", help="Bytes per second for all transfers, e.g. 10MiB."
            ),
        ],
        None,
    ),
    (
        "max_requests_per_second",
        Annotated[
            float | None,
            typer.Option("--max-requests-per-second", help="Requests per second, all."),
        ],
        None,
    ),
]


def with_globals(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add the global options to a command and make them available via ``current()``."""
    signature = inspect.signature(fn, eval_str=True)
    extra = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind
        )
        for name, kind, default in _GLOBAL_PARAMS
    ]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        options = GlobalOptions(
            **{name: kwargs.pop(name) for name, _, _ in _GLOBAL_PARAMS}
        )
        _current.set(options)
        quiet = bool(kwargs.get("quiet", False))
        try:
            setup_logging(options.verbose, options.log_file, quiet=quiet)
        except OSError as exc:
            raise _unwritable("--log-file", options.log_file, exc, UsageError) from None
        resolved = load_settings(options.config, options.tenant)
        _settings.set(resolved)
        # A tenant's own credentials and endpoints win over the caller's environment.
        os.environ.update(resolved.tenant_env)
        _start_metering(options, resolved)
        try:
            return fn(*args, **kwargs)
        finally:
            stop_metering()

    params = [p for p in signature.parameters.values()] + extra
    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def current() -> GlobalOptions:
    return _current.get()


def settings() -> Settings:
    """The settings resolved from the config file for this command."""
    return _settings.get()


def journal_path(options: GlobalOptions) -> Path:
    """``--journal`` > ``CLOUDPUT_JOURNAL`` > the config file (tenant section first) >
    the tenant's or the user's data directory."""
    if options.journal:
        return Path(options.journal)
    if os.environ.get("CLOUDPUT_JOURNAL"):
        return Path(os.environ["CLOUDPUT_JOURNAL"])
    configured = settings().get("journal")
    if configured:
        return Path(configured).expanduser()
    base = Path(platformdirs.user_data_dir("cloudput"))
    tenant = options.tenant or os.environ.get("CLOUDPUT_TENANT")
    if tenant:
        return base / "tenants" / tenant / "journal.db"
    return base / "journal.db"


def open_journal(must_exist: bool = False) -> Journal:
    """The journal of this command; ``must_exist``: a command that only reads or
    changes journaled uploads refuses a journal that is not there instead of creating
    an empty one (a mistyped ``--journal`` must not look like "no uploads")."""
    path = journal_path(current())
    if must_exist and _is_missing(path):
        raise UsageError(
            f"no journal at {path}",
            hint="uploads are journaled where `cloudput upload` ran with the same "
            "--journal, CLOUDPUT_JOURNAL, --tenant or config file",
        )
    return Journal.open(path)


def journal_exists() -> bool:
    """False when this command's journal is simply not there yet (a path that cannot
    be a journal, under a file, counts as there: opening it fails with exit 9)."""
    return not _is_missing(journal_path(current()))


def _is_missing(path: Path) -> bool:
    path = path.expanduser()
    if path.exists():
        return False
    for parent in path.parents:
        if parent.exists():
            return parent.is_dir()
    return True


def provider_factory(
    concurrency: int,
    timeout_s: float,
    *,
    verify_ssl: bool | str = True,
    addressing_style: str | None = None,
    customer_key: bytes | None = None,
) -> Callable[[str, str | None, str | None], Provider]:
    """Make providers for the engine's pool, with settings from options and environment.

    ``verify_ssl`` is False (--no-verify-ssl) or a CA bundle (--ca-bundle);
    ``customer_key`` is the S3 SSE-C key, kept out of every record and message.
    """

    def make(name: str, endpoint_url: str | None, region: str | None) -> Provider:
        settings = ProviderSettings(
            endpoint_url=endpoint_url,
            region=region,
            concurrency=concurrency,
            timeout_s=timeout_s,
            public_domain=os.environ.get("AWS_PUBLIC_DOMAIN") or None,
            verify_ssl=verify_ssl,
            addressing_style=addressing_style,
            customer_key=customer_key,
        )
        with startup.loading():  # the provider's SDK and client live until exit
            provider = open_provider(name, settings)
        return metered(provider, metering)

    # Read here, in the command's thread: worker threads do not see its context.
    metering = _metering.get()
    return make


def metered(provider: Provider, metering: tuple[Any, Any, Any]) -> Provider:
    """Wrap a provider with this command's audit log and client-side limits."""
    audit, bandwidth, requests = metering
    if audit is None and bandwidth is None and requests is None:
        return provider
    return MeteredProvider(provider, audit, bandwidth, requests)


def _start_metering(options: GlobalOptions, resolved: Settings) -> None:
    """One audit log and one pair of buckets per command, shared by every provider."""
    path = resolved.get("audit_log", options.audit_log)
    rate = resolved.get("bwlimit", options.bwlimit)
    per_second = resolved.get(
        "max_requests_per_second", options.max_requests_per_second
    )
    try:
        audit = AuditLog(path) if path else None
    except OSError as exc:
        # A flag is a usage error; a value from CLOUDPUT_AUDIT_LOG or the config file
        # is configuration.
        if options.audit_log:
            raise _unwritable("--audit-log", path, exc, UsageError) from None
        where = "audit_log (CLOUDPUT_AUDIT_LOG or the config file)"
        raise _unwritable(where, path, exc, ConfigError) from None
    _metering.set(
        (
            audit,
            TokenBucket(rate) if rate else None,
            TokenBucket(per_second) if per_second else None,
        )
    )


def _unwritable(
    option: str, path: Any, exc: OSError, kind: type[CloudputError]
) -> CloudputError:
    """A log file that cannot be opened: one line before any request (was an internal
    error)."""
    return kind(
        f"{option} {path}: cannot write there ({exc.strerror or exc})",
        hint="give a file in a directory that exists and is writable",
    )


def stop_metering() -> None:
    audit = _metering.get()[0]
    if audit is not None:
        audit.close()
    _metering.set((None, None, None))


def metadata_option(pairs: list[str] | None) -> dict[str, str]:
    return pairs_option(pairs, "--metadata")


def pairs_option(pairs: list[str] | None, flag: str) -> dict[str, str]:
    """KEY=VALUE flags (repeatable) as a mapping; a later KEY wins."""
    found: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {pair!r}: use KEY=VALUE")
        found[key] = value
    return found
