"""Part plans: how a source of a given size is cut into parts for a provider.

Pure: sizes in, plan out. Raises ``UsageError`` for a part size against the provider's
rules, before any request is made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cloudput.errors import UsageError
from cloudput.providers.base import PartSpec, ProviderLimits
from cloudput.units import format_size

DEFAULT_MULTIPART_THRESHOLD_BYTES = 8 * 1024 * 1024  # CONTRACT.md: default 8 MiB
GROWN_PART_MULTIPLE_BYTES = 1024 * 1024  # a part size cloudput raises is whole MiB


@dataclass(frozen=True)
class Plan:
    """How one source goes up: in one request ("single") or in numbered parts."""

    strategy: str  # "single" | "multipart" | "resumable"
    size_bytes: int
    part_size_bytes: int
    raised_from_bytes: int | None = None  # the part size asked for, when it had to grow
    # True when the file is below the multipart threshold but above the provider's
    # largest single request, so it goes in parts anyway.
    over_single_limit: bool = False

    @property
    def part_count(self) -> int:
        if self.strategy == "single":
            return 1
        return max(1, -(-self.size_bytes // self.part_size_bytes))

    def parts(self) -> list[PartSpec]:
        """Every part of the plan; never a zero-length part except a 0-byte single."""
        if self.strategy == "single":
            return [PartSpec(1, 0, self.size_bytes)]
        return [self.part(number) for number in range(1, self.part_count + 1)]

    def part(self, number: int) -> PartSpec:
        offset = (number - 1) * self.part_size_bytes
        return PartSpec(
            number, offset, min(self.part_size_bytes, self.size_bytes - offset)
        )


def check_part_size(part_size_bytes: int, limits: ProviderLimits) -> None:
    """Raise ``UsageError`` naming the rule if the part size breaks the provider's limits."""
    rule = f"{limits.name} ({limits.rule_source})"
    if part_size_bytes < limits.min_part_size_bytes:
        raise UsageError(
            f"--part-size {part_size_bytes:,} bytes is below the minimum of "
            f"{limits.min_part_size_bytes:,} bytes ({format_size(limits.min_part_size_bytes)}) "
            f"for every part but the last on {rule}",
            hint=f"use --part-size {limits.min_part_size_bytes} or more",
        )
    if part_size_bytes > limits.max_part_size_bytes:
        raise UsageError(
            f"--part-size {part_size_bytes:,} bytes is above the maximum of "
            f"{limits.max_part_size_bytes:,} bytes per part on {rule}"
        )
    if part_size_bytes % limits.part_size_multiple_bytes:
        raise UsageError(
            f"--part-size {part_size_bytes:,} bytes is not a multiple of "
            f"{limits.part_size_multiple_bytes:,} bytes, as {rule} requires of every chunk "
            "but the last",
            hint=f"use --part-size {_next_multiple(part_size_bytes, limits)} "
            f"(any multiple of {format_size(limits.part_size_multiple_bytes)})",
        )


def _next_multiple(size_bytes: int, limits: ProviderLimits) -> int:
    multiple = limits.part_size_multiple_bytes
    return max(-(-size_bytes // multiple) * multiple, limits.min_part_size_bytes)


def make_plan(
    size_bytes: int,
    limits: ProviderLimits,
    *,
    part_size_bytes: int | None = None,
    threshold_bytes: int = DEFAULT_MULTIPART_THRESHOLD_BYTES,
    no_multipart: bool = False,
) -> Plan:
    """Plan the upload of ``size_bytes`` within ``limits``.

    A file of at least ``threshold_bytes`` goes in parts; the part size grows (in steps
    of the provider's multiple) so that no file needs more than ``limits.max_parts``.
    """
    if part_size_bytes is not None:
        check_part_size(part_size_bytes, limits)
    _check_object_size(size_bytes, limits)
    too_big_for_one = size_bytes > limits.max_single_size_bytes
    if no_multipart and too_big_for_one:
        raise UsageError(
            f"{size_bytes:,} bytes is above the {limits.max_single_size_bytes:,}-byte "
            f"maximum of a single request on {limits.name}",
            hint="drop --no-multipart",
        )
    if not too_big_for_one and (
        no_multipart or size_bytes < threshold_bytes or size_bytes == 0
    ):
        return Plan("single", size_bytes, size_bytes)
    asked = part_size_bytes or limits.default_part_size_bytes
    size = _grow_to_fit(asked, size_bytes, limits)
    return Plan(
        limits.strategy,
        size_bytes,
        size,
        raised_from_bytes=asked if size != asked else None,
        over_single_limit=size_bytes < threshold_bytes,
    )


def _check_object_size(size_bytes: int, limits: ProviderLimits) -> None:
    """Refuse a file above the largest object, where that is the single-request limit.

    A resumable session (GCS) makes one object no larger than one request may (5 TiB),
    so a larger file cannot go in chunks either; on S3 and Azure parts carry what one
    request cannot.
    """
    if limits.strategy != "resumable":
        return
    if size_bytes > limits.max_single_size_bytes:
        raise UsageError(
            f"{size_bytes:,} bytes is above the {limits.max_single_size_bytes:,}-byte "
            f"maximum of an object on {limits.name}"
        )


def _grow_to_fit(part_size_bytes: int, size_bytes: int, limits: ProviderLimits) -> int:
    needed = -(-size_bytes // limits.max_parts)
    size = max(part_size_bytes, limits.min_part_size_bytes)
    multiple = limits.part_size_multiple_bytes
    if needed > size:
        # Grown sizes are whole MiB (a multiple of every provider's chunk rule), so a
        # raised plan reads as 6 MiB rather than 5,242,881 bytes.
        multiple = math.lcm(multiple, GROWN_PART_MULTIPLE_BYTES)
        size = needed
    size = -(-size // multiple) * multiple
    if size > limits.max_part_size_bytes:
        size = (
            -(-needed // limits.part_size_multiple_bytes)
            * limits.part_size_multiple_bytes
        )
    if size > limits.max_part_size_bytes:
        raise UsageError(
            f"{size_bytes:,} bytes needs parts above {limits.name}'s maximum of "
            f"{limits.max_part_size_bytes:,} bytes at {limits.max_parts:,} parts"
        )
    return size
