"""Upload policy: the largest object and the content types a tenant may upload.

Pure checks, made before any byte moves; a breach is exit 4 (``PolicyError``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from cloudput.errors import PolicyError
from cloudput.units import format_size


@dataclass(frozen=True)
class Policy:
    """``max_size_bytes`` None means no limit; empty ``allowed_types`` allows every type."""

    max_size_bytes: int | None = None
    allowed_types: Sequence[str] = ()
    #: Where each rule was set, for the hint: a flag wins over the config file, so
    #: "raise it in [policy]" would not help when the flag set it.
    max_size_from: str = "max_size in [policy]"
    allowed_types_from: str = "allowed_types in [policy]"

    def check(self, source_path: str, size_bytes: int, content_type: str) -> None:
        """Raise ``PolicyError`` naming the rule when the source breaks the policy."""
        if self.max_size_bytes is not None and size_bytes > self.max_size_bytes:
            raise PolicyError(
                f"{source_path} is {format_size(size_bytes)} ({size_bytes:,} bytes), over "
                f"the policy's maximum of {self.max_size_bytes:,} bytes",
                hint=f"raise {self.max_size_from} or leave the file out",
            )
        if self.allowed_types and not self.allows_type(content_type):
            raise PolicyError(
                f"{source_path} has content type {content_type}, which the policy does "
                f"not allow (allowed: {', '.join(self.allowed_types)})",
                hint=f"set --content-type, or add the type to {self.allowed_types_from}",
            )

    def allows_type(self, content_type: str) -> bool:
        base = content_type.split(";")[0].strip().lower()
        return any(
            fnmatch.fnmatchcase(base, pattern.lower()) for pattern in self.allowed_types
        )
