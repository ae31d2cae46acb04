"""Checksums of part bodies and whole files, in the base64 form providers show.

Owns the digest arithmetic only: no I/O beyond the bytes it is handed.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable

import crc32c

from cloudput.providers.base import Digest

ALGORITHMS = ("md5", "crc32c")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def digest_of(body: bytes | memoryview, algorithm: str) -> Digest | None:
    """Return the digest of ``body`` with ``algorithm`` ("none" gives None)."""
    if algorithm == "none":
        return None
    hasher = RunningDigest(algorithm)
    hasher.update(body)
    return hasher.digest()


class RunningDigest:
    """An incremental md5 or crc32c over bytes fed in order."""

    def __init__(self, algorithm: str):
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown checksum algorithm {algorithm!r}")
        self.algorithm = algorithm
        self._md5 = hashlib.md5(usedforsecurity=False) if algorithm == "md5" else None
        # The crc32c package, not google-crc32c: it takes any buffer (a memoryview of
        # a reused part buffer) where google-crc32c wants bytes, which would cost a
        # copy of every part; and it releases the GIL on large buffers.
        self._crc = crc32c.CRC32CHash() if algorithm == "crc32c" else None

    def update(self, data: bytes | memoryview) -> None:
        if self._md5 is not None:
            self._md5.update(data)
        else:
            assert self._crc is not None
            self._crc.update(data)

    def raw(self) -> bytes:
        if self._md5 is not None:
            return self._md5.digest()
        assert self._crc is not None
        return self._crc.digest()

    def digest(self) -> Digest:
        return Digest(self.algorithm, b64(self.raw()))


def multipart_etag(part_md5s: Iterable[Digest]) -> str:
    """S3's ETag of a multipart object: md5 of the parts' md5s, then ``-N``."""
    raws = [base64.b64decode(d.value_b64) for d in part_md5s]
    return (
        f"{hashlib.md5(b''.join(raws), usedforsecurity=False).hexdigest()}-{len(raws)}"
    )


def hex_to_b64(hex_digest: str) -> str:
    return b64(bytes.fromhex(hex_digest))
