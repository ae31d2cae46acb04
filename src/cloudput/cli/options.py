"""Turning flags plus resolved settings into the engine's ``TransferOptions``.

Shared by ``upload`` and ``resume``; a bad flag is exit 2, a bad file value exit 3.
"""

from __future__ import annotations

from typing import Any

from cloudput.cli.common import metadata_option, settings
from cloudput.engine.policy import Policy
from cloudput.engine.runner import TransferOptions


def transfer_options(
    flags: dict[str, Any],
    metadata: list[str] | None = None,
    no_multipart: bool = False,
    max_size: str | None = None,
    allowed_types: list[str] | None = None,
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
    ):
        value.setdefault(name, resolved.get(name))
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
        policy=Policy(*resolved.policy(max_size, allowed_types)),
    )
