"""Is the object at a key the same as a local file? For ``--skip-existing``,
``--no-clobber`` and ``cloudput verify``.

Compares sizes and checksums only; asks the provider nothing itself (the caller hands
in what ``Provider.head`` returned) and reads a local file only when a digest is asked.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass

from cloudput.checksums import RunningDigest, digest_of, multipart_etag
from cloudput.engine.sources import Fingerprint, SourceReader, fingerprint
from cloudput.journal import UploadRecord
from cloudput.keys import Target
from cloudput.providers.base import Digest, Provider, RemoteObject

#: Metadata name under which cloudput stores the whole file's MD5 (base64). Lowercase
#: letters only: S3 lowercases metadata names, Azure wants C# identifiers (no "-"), and
#: some proxies in front of S3-compatible servers drop headers with "_".
WHOLE_MD5_METADATA = "cloudputmd5"
HASH_READ_BYTES = 4 * 1024 * 1024
_PLAIN_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-(\d+)$")


class LocalDigests:
    """Whole-file digests of one source, computed at most once each, on demand.

    ``known`` seeds digests from the journal (the last finished upload of the same
    source and target with the same fingerprint), so an unchanged file is not re-read.
    """

    def __init__(
        self, path: str, expected: Fingerprint, known: dict[str, str] | None = None
    ):
        self.path = path
        self.expected = expected
        self._digests: dict[str, str] = dict(known or {})
        self.reads = 0  # how many times the file was read whole (for logs and tests)

    def get(self, algorithm: str) -> str:
        """The base64 digest of the whole file with ``algorithm`` ("md5", "crc32c")."""
        if algorithm not in self._digests:
            self._digests[algorithm] = self._read(RunningDigest(algorithm)).value_b64
        return self._digests[algorithm]

    def known(self, algorithm: str) -> str | None:
        """The digest if it was computed or journaled already; never reads."""
        return self._digests.get(algorithm)

    def multipart_etag(self, part_size_bytes: int) -> str:
        """S3's ETag for this file sent in parts of ``part_size_bytes``."""
        key = f"etag:{part_size_bytes}"
        if key not in self._digests:
            digests: list[Digest] = []
            with SourceReader(self.path, self.expected) as reader:
                for offset in range(0, self.expected.size_bytes, part_size_bytes):
                    size = min(part_size_bytes, self.expected.size_bytes - offset)
                    digest = digest_of(_read(reader, offset, size), "md5")
                    assert digest is not None
                    digests.append(digest)
            self.reads += 1
            self._digests[key] = multipart_etag(digests)
        return self._digests[key]

    def _read(self, hasher: RunningDigest) -> Digest:
        with SourceReader(self.path, self.expected) as reader:
            size = self.expected.size_bytes
            for offset in range(0, size, HASH_READ_BYTES):
                hasher.update(reader.read(offset, min(HASH_READ_BYTES, size - offset)))
        self.reads += 1
        return hasher.digest()


def _read(reader: SourceReader, offset: int, size_bytes: int) -> bytes:
    chunks = []
    for start in range(offset, offset + size_bytes, HASH_READ_BYTES):
        chunks.append(
            reader.read(start, min(HASH_READ_BYTES, offset + size_bytes - start))
        )
    return b"".join(chunks)


@dataclass(frozen=True)
class Comparison:
    """The answer: ``same`` True, False, or None (nothing to compare by); ``by`` names
    what was compared ("size", "cloudputmd5", "md5", "crc32c", "etag", "part-etags")."""

    same: bool | None
    by: str
    detail: str = ""


def compare(
    remote: RemoteObject,
    size_bytes: int,
    local: LocalDigests,
    part_size_bytes: int | None = None,
) -> Comparison:
    """Compare the remote object with the local file, cheapest evidence first.

    Order: size; cloudput's whole-file MD5 in the metadata; the provider's whole-object
    MD5 or CRC32C; an S3 ETag that is a plain MD5; an S3 multipart ETag when the part
    size is known. A file is never called the same on size alone.
    """
    if remote.size_bytes != size_bytes:
        return Comparison(
            False,
            "size",
            f"{remote.size_bytes} bytes at the provider, {size_bytes} here",
        )
    checks: list[tuple[str, str | None, Callable[[], str]]] = [
        (WHOLE_MD5_METADATA, _metadata(remote), lambda: local.get("md5")),
        ("md5", _whole(remote.checksums.get("md5")), lambda: local.get("md5")),
        ("crc32c", _whole(remote.checksums.get("crc32c")), lambda: local.get("crc32c")),
        ("etag", _plain_etag(remote.etag), lambda: _hex(local.get("md5"))),
    ]
    for name, value, mine in checks:
        if value is not None:
            return _verdict(name, value, mine())
    parts_etag = _multipart_etag(remote.etag)
    if parts_etag is not None and part_size_bytes:
        return _verdict("part-etags", parts_etag, local.multipart_etag(part_size_bytes))
    return Comparison(
        None, "size", "the provider shows no checksum cloudput can compute"
    )


def _verdict(name: str, theirs: str, mine: str) -> Comparison:
    if theirs == mine:
        return Comparison(True, name)
    return Comparison(False, name, f"{name} {theirs} at the provider, {mine} here")


def _metadata(remote: RemoteObject) -> str | None:
    for name, value in remote.metadata.items():
        if name.lower() == WHOLE_MD5_METADATA:
            return value
    return None


def _whole(value: str | None) -> str | None:
    """A whole-object checksum; S3's composite ("...-N") values are not."""
    return None if value is None or "-" in value else value


def _plain_etag(etag: str | None) -> str | None:
    value = (etag or "").strip('"').lower()
    return value if _PLAIN_MD5_ETAG.match(value) else None


def _multipart_etag(etag: str | None) -> str | None:
    value = (etag or "").strip('"').lower()
    return value if _MULTIPART_ETAG.match(value) else None


def _hex(value_b64: str) -> str:
    return base64.b64decode(value_b64).hex()


def verify_upload(record: UploadRecord, provider: Provider) -> Comparison:
    """Re-read the record's source and compare it with the object at its key.

    Raises ``SourceError`` (exit 4) when the source is missing or unreadable.
    """
    current = fingerprint(record.source_path)
    target = Target(record.provider, record.bucket, record.key, record.account)
    remote = provider.head(target)
    if remote is None:
        return Comparison(False, "presence", f"no object at {record.uri}")
    part_size = record.part_size_bytes if record.strategy != "single" else None
    return compare(
        remote, current.size_bytes, LocalDigests(record.source_path, current), part_size
    )
