"""Targets (``s3://b/k``, ``gs://b/k``, ``az://c/b``) and the object-key safety rules.

Pure: parses and validates text, maps local paths to keys; never touches the network.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from cloudput.errors import UsageError

MAX_KEY_BYTES = 1024  # S3, GCS and Azure all cap names at 1024 bytes (UTF-8).

_SCHEMES = {"s3": "s3", "gs": "gcs", "az": "azure"}
URI_SCHEMES = {"s3": "s3", "gcs": "gs", "azure": "az"}


@dataclass(frozen=True)
class Target:
    """One provider location: a bucket (container) and a key or key prefix."""

    provider: str  # "s3" | "gcs" | "azure"
    bucket: str
    key: str  # may be "" (the bucket itself) or end with "/" (a prefix)
    account: str | None = None  # Azure account named in an https target

    @property
    def is_prefix(self) -> bool:
        return self.key == "" or self.key.endswith("/")

    @property
    def uri(self) -> str:
        return f"{URI_SCHEMES[self.provider]}://{self.bucket}/{self.key}"

    def child(self, relative_key: str) -> Target:
        """Return the target for ``relative_key`` under this prefix."""
        return Target(self.provider, self.bucket, self.key + relative_key, self.account)


def parse_target(text: str) -> Target:
    """Parse a target URL, or raise ``UsageError`` naming the accepted forms."""
    if text.startswith("https://") and ".blob.core.windows.net" in text.split("/")[2]:
        return _parse_azure_https(text)
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise UsageError(
            f"malformed target {text!r}",
            hint="use s3://BUCKET/KEY, gs://BUCKET/KEY or az://CONTAINER/BLOB",
        )
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise UsageError(
            f"malformed target {text!r}: the bucket name is missing",
            hint="use s3://BUCKET/KEY, gs://BUCKET/KEY or az://CONTAINER/BLOB",
        )
    target = Target(_SCHEMES[scheme], bucket, unicodedata.normalize("NFC", key))
    if key:
        check_key(target.key.rstrip("/") if target.is_prefix else target.key, text)
    return target


def _parse_azure_https(text: str) -> Target:
    parts = urlsplit(text)
    account = parts.netloc.split(".")[0]
    container, _, blob = unquote(parts.path.lstrip("/")).partition("/")
    if not container:
        raise UsageError(f"malformed target {text!r}: the container name is missing")
    target = Target("azure", container, unicodedata.normalize("NFC", blob), account)
    if blob:
        check_key(target.key.rstrip("/") if target.is_prefix else target.key, text)
    return target


def check_key(key: str, shown_as: str | None = None) -> None:
    """Raise ``UsageError`` if ``key`` is unsafe (CONTRACT.md, "Targets")."""
    where = shown_as or key
    if not key:
        raise UsageError(f"unsafe key in {where!r}: the key is empty")
    if key.startswith("/"):
        raise UsageError(
            f"unsafe key {key!r}: it starts with '/'", hint="remove the leading slash"
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        raise UsageError(
            f"unsafe key {key!r}: it contains a control character",
            hint="rename the file or give a target key without it",
        )
    segments = key.split("/")
    if any(segment in (".", "..") for segment in segments):
        raise UsageError(
            f"unsafe key {key!r}: '.' and '..' segments are refused",
            hint="providers and SDKs resolve them differently; name the key without them",
        )
    if "" in segments[:-1]:
        raise UsageError(
            f"unsafe key {key!r}: it has an empty segment ('//')",
            hint="use a single '/' between segments",
        )
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise UsageError(
            f"unsafe key {key[:40] + '...' + key[-40:]!r}: "
            f"{len(key.encode('utf-8'))} bytes is over {MAX_KEY_BYTES}",
            hint="providers cap names at 1024 bytes of UTF-8; use a shorter key",
        )


def key_from_relative_path(relative: str) -> str:
    """Turn a path relative to a walked directory into a key fragment using ``/``."""
    parts = [part for part in relative.split(os.sep) if part not in ("", ".")]
    if any(part == ".." for part in parts):
        raise UsageError(f"path {relative!r} escapes its directory")
    return unicodedata.normalize("NFC", "/".join(parts))
