"""Local sources: expanding SOURCE arguments into (file, target) jobs, fingerprints,
and reading byte ranges without loading whole files.

Never talks to a provider.
"""

from __future__ import annotations

import io
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from cloudput.errors import SourceChangedError, SourceError, UsageError
from cloudput.keys import Target, check_key, key_from_relative_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a version of a local file: size, mtime and inode."""

    size_bytes: int
    mtime_ns: int
    inode: int


@dataclass(frozen=True)
class Job:
    """One source file to one target key, or a source that cannot be read."""

    source_path: str
    target: Target
    error: SourceError | None = None


def fingerprint(path: str) -> Fingerprint:
    """Stat ``path``; raise ``SourceError`` when it is missing, unreadable or special."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise SourceError(f"source {path} not found", hint="check the path") from exc
    except OSError as exc:
        raise SourceError(f"source {path} cannot be read: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a special file"
        raise SourceError(f"source {path} is {kind}, not a regular file")
    return Fingerprint(st.st_size, st.st_mtime_ns, st.st_ino)


def expand_sources(sources: Sequence[str], target: Target) -> list[Job]:
    """Map SOURCE arguments to jobs by CONTRACT.md's target rules.

    Raises ``UsageError`` when two sources map to one key or a key is unsafe.
    """
    several = len(sources) > 1
    jobs: list[Job] = []
    for source in sources:
        if os.path.isdir(source):
            base = target if target.is_prefix else _as_prefix(target)
            jobs.extend(_walk(source, base))
        else:
            jobs.append(_file_job(source, target, several))
    _refuse_collisions(jobs)
    return jobs


def _as_prefix(target: Target) -> Target:
    return Target(target.provider, target.bucket, target.key + "/", target.account)


def _file_job(source: str, target: Target, several: bool) -> Job:
    if target.is_prefix or several:
        base = target if target.is_prefix else _as_prefix(target)
        key = base.key + os.path.basename(source.rstrip(os.sep))
        job_target = base.child(os.path.basename(source.rstrip(os.sep)))
        check_key(key)
    else:
        job_target = target
    error = None
    try:
        fingerprint(source)
    except SourceError as exc:
        error = exc
    return Job(source, job_target, error)


def _walk(root: str, base: Target) -> Iterator[Job]:
    """Files under ``root`` in a stable order; special files and broken links warned."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if not dirnames and not filenames and dirpath != root:
            log.info("skipping empty directory %s", dirpath)
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            mode = _mode_or_none(path)
            if mode is None:
                log.warning("skipping %s: broken link or unreadable", path)
                continue
            if not stat.S_ISREG(mode):
                log.warning("skipping %s: not a regular file", path)
                continue
            relative = key_from_relative_path(os.path.relpath(path, root))
            check_key(base.key + relative)
            yield Job(path, base.child(relative))


def _mode_or_none(path: str) -> int | None:
    try:
        return os.stat(path).st_mode
    except OSError:
        return None


def _refuse_collisions(jobs: list[Job]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for job in jobs:
        ident = (job.target.bucket, job.target.key)
        if ident in seen:
            raise UsageError(
                f"{seen[ident]} and {job.source_path} both map to {job.target.uri}",
                hint="upload them to different prefixes",
            )
        seen[ident] = job.source_path


class SourceReader:
    """Reads byte ranges of one source by offset and notices when it changes."""

    def __init__(self, path: str, expected: Fingerprint):
        self.path = path
        self.expected = expected
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise SourceError(f"source {path} cannot be read: {exc.strerror}") from exc
        self.check_unchanged()

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> SourceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, offset: int, size_bytes: int) -> bytes:
        """Read exactly ``size_bytes`` at ``offset``; short reads are continued."""
        chunks = []
        remaining = size_bytes
        position = offset
        while remaining:
            chunk = os.pread(self._fd, remaining, position)
            if not chunk:
                raise SourceChangedError(
                    f"source {self.path} changed during upload: it is shorter than journaled"
                )
            chunks.append(chunk)
            remaining -= len(chunk)
            position += len(chunk)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.check_unchanged()
        return data

    def check_unchanged(self) -> None:
        """Raise ``SourceChangedError`` if size, mtime or inode moved since journaled."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise SourceChangedError(
                f"source {self.path} changed during upload: gone"
            ) from exc
        now = Fingerprint(st.st_size, st.st_mtime_ns, st.st_ino)
        if now != self.expected:
            raise SourceChangedError(
                f"source {self.path} changed during upload "
                f"(size {self.expected.size_bytes}->{now.size_bytes}, mtime or inode moved)",
                hint="the old upload is not spliced; run `cloudput upload` again to start fresh",
            )


class RangeBody:
    """A re-readable range of a source, for single-request uploads."""

    def __init__(self, reader: SourceReader, offset: int, size_bytes: int):
        self._reader = reader
        self._offset = offset
        self.size_bytes = size_bytes

    def open(self) -> BinaryIO:
        raw = _RangeFile(self._reader, self._offset, self.size_bytes)
        return io.BufferedReader(raw, buffer_size=1024 * 1024)


class _RangeFile(io.RawIOBase):
    """A seekable read-only view of ``size_bytes`` at ``offset`` of a source."""

    def __init__(self, reader: SourceReader, offset: int, size_bytes: int):
        self._reader = reader
        self._offset = offset
        self._size = size_bytes
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[
            whence
        ]
        self._position = max(0, min(self._size, base + position))
        return self._position

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self._size - self._position)
        if count <= 0:
            return 0
        data = self._reader.read(self._offset + self._position, count)
        buffer[:count] = data
        self._position += count
        return count
