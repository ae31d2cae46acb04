"""Settings from the TOML config file, ``CLOUDPUT_*`` variables and flags.

Resolution: flag > ``CLOUDPUT_*`` environment > the tenant's section > the file's top
level > built-in defaults. Reads files and the environment; never talks to a provider.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from cloudput.errors import ConfigError, UsageError
from cloudput.units import parse_duration, parse_size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def _positive_int(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        wanted = f"use a whole number from {low} to {high}"
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(wanted) from None
        if (
            isinstance(value, bool)
            or not low <= number <= high
            or str(number) != str(value).strip()
        ):
            raise ValueError(wanted)
        return number

    return parse


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"use one of {', '.join(choices)}")
        return str(value)

    return parse


def _size(value: Any) -> int:
    return (
        value
        if isinstance(value, int) and not isinstance(value, bool)
        else parse_size(str(value))
    )


def _duration(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("must be greater than zero")
        return float(value)
    return parse_duration(str(value))


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("use a non-empty string")
    return value


def _seconds(value: Any) -> float:
    """Seconds as a number or a duration (``0.5``, ``2s``); zero allowed."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return parse_duration(str(value))
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError("use true or false")


#: S3 canned ACLs (Amazon S3 User Guide, "Canned ACL").
S3_CANNED_ACLS = (
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
    "log-delivery-write",
)


def _rate(value: Any) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be greater than zero")
    return number


#: Every setting a file, a variable or a flag may give, with its parser.
SETTINGS: dict[str, Callable[[Any], Any]] = {
    "journal": _text,
    "concurrency": _positive_int(1, 256),
    "retries": _positive_int(0, 100),
    "retry_base_delay": _seconds,
    "timeout": _duration,
    "part_size": _size,
    "multipart_threshold": _size,
    "checksum": _choice("auto", "crc32c", "md5", "none"),
    "endpoint_url": _text,
    "region": _text,
    "storage_class": _text,
    "cache_control": _text,
    "content_type": _text,
    "max_duration": _duration,
    "audit_log": _text,
    "bwlimit": _size,
    "max_requests_per_second": _rate,
    "content_encoding": _text,
    "content_disposition": _text,
    "acl": _choice(*S3_CANNED_ACLS),
    "sse": _choice("AES256", "aws:kms", "aws:kms:dsse"),
    "sse_kms_key_id": _text,
    "sse_c_key_file": _text,
    "kms_key": _text,
    "encryption_scope": _text,
    "ca_bundle": _text,
    "verify_ssl": _boolean,
    "addressing_style": _choice("auto", "path", "virtual"),
}
#: Built-in defaults (CONTRACT.md).
DEFAULTS: dict[str, Any] = {
    "concurrency": 8,
    "retries": 5,
    "retry_base_delay": 0.5,
    "timeout": 60.0,
    "multipart_threshold": 8 * 1024 * 1024,
    "checksum": "auto",
}


def _types(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(
        isinstance(item, str) and "/" in item for item in items
    ):
        raise ValueError('use a list of MIME types or patterns such as "image/*"')
    return tuple(items)


#: Keys of a [policy] section (and of --max-size / --allow-type).
POLICY_SETTINGS: dict[str, Callable[[Any], Any]] = {
    "max_size": _size,
    "allowed_types": _types,
}


@dataclass(frozen=True)
class Settings:
    """Resolved settings, remembering where each value came from (for messages)."""

    path: Path | None
    tenant: str | None
    file_values: Mapping[str, Any] = field(default_factory=dict)
    tenant_values: Mapping[str, Any] = field(default_factory=dict)
    tenant_env: Mapping[str, str] = field(default_factory=dict)
    policy_values: Mapping[str, Any] = field(default_factory=dict)

    def get(self, name: str, flag: Any = None) -> Any:
        """The value of ``name``: the flag if given, else env, tenant, file, default."""
        if flag is not None:
            return self._parse(name, flag, f"--{name.replace('_', '-')}", UsageError)
        variable = f"CLOUDPUT_{name.upper()}"
        if os.environ.get(variable):
            return self._parse(name, os.environ[variable], variable, ConfigError)
        if name in self.tenant_values:
            return self.tenant_values[name]
        if name in self.file_values:
            return self.file_values[name]
        return DEFAULTS.get(name)

    def source_of(self, name: str, flag: Any = None) -> str:
        """Where the value of ``name`` came from: "flag", "env", "file" or "default"."""
        if flag is not None:
            return "flag"
        if os.environ.get(f"CLOUDPUT_{name.upper()}"):
            return "env"
        if name in self.tenant_values or name in self.file_values:
            return "file"
        return "default"

    def policy(
        self, max_size: Any = None, allowed_types: Any = None
    ) -> tuple[Any, Any]:
        """(max size in bytes, allowed type patterns): flags win over the file."""
        size = (
            self._parse("max_size", max_size, "--max-size", UsageError, POLICY_SETTINGS)
            if max_size is not None
            else self.policy_values.get("max_size")
        )
        types = (
            self._parse(
                "allowed_types",
                allowed_types,
                "--allow-type",
                UsageError,
                POLICY_SETTINGS,
            )
            if allowed_types
            else self.policy_values.get("allowed_types", ())
        )
        return size, types

    def describe(self, name: str) -> str:
        section = (
            f"[tenant.{self.tenant}]" if name in self.tenant_values else "top level"
        )
        return f"{self.path}: {name} ({section})"

    @staticmethod
    def _parse(
        name: str,
        value: Any,
        where: str,
        error: type[Exception],
        table: Mapping[str, Callable[[Any], Any]] | None = None,
    ) -> Any:
        try:
            return (table or SETTINGS)[name](value)
        except (ValueError, TypeError) as exc:
            shown = repr(value)
            if where.startswith("--") and isinstance(value, list | tuple):
                shown = " ".join(
                    repr(item) for item in value
                )  # a repeated flag's values
            raise error(f"{where} {shown}: {exc}") from exc


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir("cloudput")) / "config.toml"


def load_settings(config: str | None, tenant: str | None) -> Settings:
    """Read and validate the config file; raise ``ConfigError`` naming file and key."""
    tenant = tenant or os.environ.get("CLOUDPUT_TENANT") or None
    explicit = config or os.environ.get("CLOUDPUT_CONFIG")
    path = Path(explicit).expanduser() if explicit else default_config_path()
    if not path.exists():
        if explicit:
            raise ConfigError(
                f"config file {path} not found", hint="check --config / CLOUDPUT_CONFIG"
            )
        if tenant:
            raise ConfigError(
                f"tenant {tenant!r} is not configured: no config file at {path}"
            )
        return Settings(None, None)
    data = _read_toml(path)
    tenants = data.pop("tenant", {})
    policy = _validated_policy(data.pop("policy", {}), path, "[policy]")
    file_values = _validated(data, path, "top level")
    if not tenant:
        return Settings(path, None, file_values, policy_values=policy)
    if not isinstance(tenants, dict) or tenant not in tenants:
        raise ConfigError(
            f"tenant {tenant!r} is not defined in {path}",
            hint=f"add a [tenant.{tenant}] section",
        )
    section = dict(tenants[tenant])
    env = section.pop("env", {})
    policy.update(
        _validated_policy(section.pop("policy", {}), path, f"[tenant.{tenant}.policy]")
    )
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ConfigError(
            f"{path}: [tenant.{tenant}.env] must map variable names to strings"
        )
    values = _validated(section, path, f"[tenant.{tenant}]")
    return Settings(path, tenant, file_values, values, env, policy)


def _validated_policy(values: Any, path: Path, section: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: {section} must be a table")
    parsed = {}
    for key, value in values.items():
        if key not in POLICY_SETTINGS:
            raise ConfigError(
                f"{path}: unknown key {key!r} in {section}",
                hint=f"known keys: {', '.join(sorted(POLICY_SETTINGS))}",
            )
        try:
            parsed[key] = POLICY_SETTINGS[key](value)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: {key} = {value!r} in {section}: {exc}") from exc
    return parsed


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def _validated(values: Mapping[str, Any], path: Path, section: str) -> dict[str, Any]:
    parsed = {}
    for key, value in values.items():
        if key not in SETTINGS:
            raise ConfigError(
                f"{path}: unknown key {key!r} in {section}",
                hint=f"known keys: {', '.join(sorted(SETTINGS))}",
            )
        try:
            parsed[key] = SETTINGS[key](value)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: {key} = {value!r} in {section}: {exc}") from exc
    return parsed
