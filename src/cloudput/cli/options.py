"""The options ``upload`` and ``resume`` share: each declared once here (a typer
``Annotated`` alias), and the flags plus resolved settings turned into the engine's
``TransferOptions``. A bad flag is exit 2, a bad file value exit 3.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from typing import Annotated, Any

import typer

from cloudput import checksums
from cloudput.cli.common import metadata_option, pairs_option, settings
from cloudput.engine.policy import Policy
from cloudput.engine.runner import TransferOptions
from cloudput.errors import UsageError

#: An SSE-C key is 256 bits (Amazon S3 User Guide, "Using server-side encryption
#: with customer-provided keys (SSE-C)").
SSE_C_KEY_BYTES = 32
#: The largest key file read: base64 of the key, a line end and some spaces.
SSE_C_KEY_FILE_MAX_BYTES = 64

Opt = typer.Option

# Options of both ``upload`` and ``resume``; each command gives the default in its
# signature (None: the setting of the same name decides, in ``transfer_options``).
Concurrency = Annotated[int | None, Opt(help="Parts in flight, all files (default 8).")]
Retries = Annotated[int | None, Opt(help="Retries per request (default 5).")]
Timeout = Annotated[str | None, Opt(help="Per-request timeout (default 60s).")]
MaxDuration = Annotated[str | None, Opt(help="Stop cleanly after this long.")]
Json = Annotated[bool, Opt("--json", help="One JSON record per upload.")]
Quiet = Annotated[bool, Opt("--quiet", "-q", help="No progress or messages.")]
CaBundle = Annotated[str | None, Opt(help="CA bundle (PEM) to verify the server with.")]
NoVerifySsl = Annotated[
    bool, Opt("--no-verify-ssl", help="Do not verify TLS certificates.")
]
AddressingStyle = Annotated[str | None, Opt(help="S3 addressing: auto|path|virtual.")]


def transfer_options(
    flags: dict[str, Any],
    metadata: list[str] | None = None,
    no_multipart: bool = False,
    max_size: str | None = None,
    allowed_types: list[str] | None = None,
    tags: list[str] | None = None,
    no_verify_ssl: bool = False,
) -> TransferOptions:
    """Resolve every tuning and object setting: flag > env > tenant > file > default."""
    resolved = settings()
    value = {name: resolved.get(name, flag) for name, flag in flags.items()}
    for name in (
        "concurrency",
        "retries",
        "retry_base_delay",
        "timeout",
        "multipart_threshold",
        "checksum",
        "endpoint_url",
        "region",
        "max_duration",
        "ca_bundle",
        "addressing_style",
        "sse_c_key_file",
    ):
        value.setdefault(name, resolved.get(name))
    encryption, key_id, customer_key = _encryption(value)
    return TransferOptions(
        concurrency=value["concurrency"],
        retries=value["retries"],
        retry_base_delay_s=value["retry_base_delay"],
        timeout_s=value["timeout"],
        part_size_bytes=value.get("part_size"),
        threshold_bytes=value["multipart_threshold"],
        no_multipart=no_multipart,
        checksum=value["checksum"],
        content_type=value.get("content_type"),
        cache_control=value.get("cache_control"),
        metadata=metadata_option(metadata),
        storage_class=value.get("storage_class"),
        max_duration_s=value["max_duration"],
        endpoint_url=value["endpoint_url"],
        region=value["region"],
        tenant=resolved.tenant,
        policy=Policy(
            *resolved.policy(max_size, allowed_types),
            max_size_from="--max-size"
            if max_size is not None
            else "max_size in [policy]",
            allowed_types_from="--allow-type"
            if allowed_types
            else "allowed_types in [policy]",
        ),
        content_encoding=value.get("content_encoding"),
        content_disposition=value.get("content_disposition"),
        tags=pairs_option(tags, "--tags"),
        acl=value.get("acl"),
        encryption=encryption,
        encryption_key_id=key_id,
        verify_ssl=_verify_ssl(value.get("ca_bundle"), no_verify_ssl),
        addressing_style=value.get("addressing_style"),
        customer_key=customer_key,
    )


def _verify_ssl(ca_bundle: str | None, no_verify_ssl: bool) -> bool | str:
    """False for --no-verify-ssl, a CA bundle's path, or True (the SDK's default)."""
    verify = settings().get("verify_ssl", False if no_verify_ssl else None)
    if verify is False:
        if ca_bundle:
            raise UsageError("give --ca-bundle or --no-verify-ssl, not both")
        return False
    if ca_bundle and not os.path.isfile(os.path.expanduser(ca_bundle)):
        raise UsageError(f"--ca-bundle {ca_bundle}: no such file")
    return os.path.expanduser(ca_bundle) if ca_bundle else True


def _encryption(value: dict[str, Any]) -> tuple[str | None, str | None, bytes | None]:
    """(ObjectSpec.encryption, its key id, the SSE-C key) from --sse,
    --sse-kms-key-id, --sse-c-key-file, --kms-key and --encryption-scope; at most one
    kind of encryption. The SSE-C key is read here and only its MD5 is kept as id."""
    sse, kms_key_id = value.get("sse"), value.get("sse_kms_key_id")
    key_file = value.get("sse_c_key_file")
    kinds = {
        "--sse/--sse-kms-key-id": sse or kms_key_id,
        "--sse-c-key-file": key_file,
        "--kms-key": value.get("kms_key"),
        "--encryption-scope": value.get("encryption_scope"),
    }
    given = [flag for flag, chosen in kinds.items() if chosen]
    if len(given) > 1:
        raise UsageError(f"choose one kind of encryption, not {' and '.join(given)}")
    if kms_key_id and sse not in (None, "aws:kms", "aws:kms:dsse"):
        raise UsageError(f"--sse-kms-key-id needs --sse aws:kms, not --sse {sse}")
    customer_key = read_customer_key(key_file) if key_file else None
    if sse or kms_key_id:
        return sse or "aws:kms", kms_key_id, customer_key
    if value.get("kms_key"):
        return "kms", value["kms_key"], customer_key
    if value.get("encryption_scope"):
        return "scope", value["encryption_scope"], customer_key
    if customer_key is not None:
        return "sse-c", checksums.b64(hashlib.md5(customer_key).digest()), customer_key
    return None, None, None


def read_customer_key(path: str) -> bytes:
    """The 32-byte SSE-C key in ``path``: raw bytes, or their base64 on one line.

    Messages name the file, never its content.
    """
    try:
        with open(os.path.expanduser(path), "rb") as handle:
            raw = handle.read(SSE_C_KEY_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"--sse-c-key-file {path}: {exc.strerror}") from None
    if len(raw) == SSE_C_KEY_BYTES:
        return raw
    try:
        decoded = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != SSE_C_KEY_BYTES:
        raise UsageError(
            f"--sse-c-key-file {path}: does not hold a {SSE_C_KEY_BYTES}-byte key",
            hint="give the key's 32 raw bytes, or their base64 on one line",
        )
    return decoded
