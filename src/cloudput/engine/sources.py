"""Local sources: expanding SOURCE arguments (globs, directory walks, filters) into
(file, target) jobs lazily, fingerprints, and reading byte ranges without loading
whole files.

Never talks to a provider.
"""

from __future__ import annotations

import fnmatch
import glob
import io
import logging
import mmap
import os
import re
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

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
        raise SourceError(
            f"source {path} is {kind}, not a regular file",
            hint="name a file, or a directory to upload its contents"
            if kind == "a special file"
            else "a directory's contents are uploaded when it is named as a SOURCE",
        )
    return Fingerprint(st.st_size, st.st_mtime_ns, st.st_ino)


_GLOB_MAGIC = re.compile(r"[*?\[]")
DirId = tuple[int, int]  # (st_dev, st_ino) of a directory


@dataclass(frozen=True)
class Selection:
    """Which files a walk takes, and whether it follows links to directories.

    ``filters`` are ("include" | "exclude", pattern) pairs in command-line order. Each
    pattern is matched (fnmatch, case-sensitive, ``*`` also matches ``/``) against the
    path relative to the walked directory, or a named file's own name; the last pattern
    that matches decides, and a path no pattern matches is taken (as ``aws s3 cp``).
    """

    filters: tuple[tuple[str, str], ...] = ()
    follow_symlinks: bool = False

    def is_selected(self, relative: str) -> bool:
        taken = True
        for kind, pattern in self.filters:
            if fnmatch.fnmatchcase(relative, pattern):
                taken = kind == "include"
        return taken


def expand_globs(sources: Sequence[str]) -> tuple[list[str], set[str]]:
    """Expand SOURCE arguments the shell left alone (quoted globs, ``**`` included).

    A path that exists is taken as it is, even with ``*`` in its name. Returns the paths
    and the patterns that matched nothing (reported as missing sources, exit 4).
    """
    paths: list[str] = []
    unmatched: set[str] = set()
    for source in sources:
        if os.path.lexists(source) or not _GLOB_MAGIC.search(source):
            paths.append(source)
            continue
        matches = sorted(glob.glob(source, recursive=True))
        if not matches:
            unmatched.add(source)
            paths.append(source)
        paths.extend(matches)
    # A source named twice (``f`` and ``./f`` too) goes once, as first spelled.
    spelled = {
        os.path.normpath(os.path.abspath(path)): path for path in reversed(paths)
    }
    return list(dict.fromkeys(spelled[_normalized(path)] for path in paths)), unmatched


def _normalized(path: str) -> str:
    return os.path.normpath(os.path.abspath(path))


class SourceSet:
    """SOURCE arguments mapped to jobs by CONTRACT.md's target rules, enumerated lazily.

    ``check()`` walks everything once holding nothing but the keys of named files, and
    refuses unsafe keys and two sources mapping to one key before any request; ``jobs()``
    walks again, yielding one job at a time, so a million-file tree is never held in
    memory. Walk warnings (special files, broken links, loops, links to directories not
    followed) are logged; empty directories are announced through ``notice``.
    """

    def __init__(
        self,
        sources: Sequence[str],
        target: Target,
        selection: Selection | None = None,
        notice: Callable[[str], None] | None = None,
    ):
        self.target = target
        self.selection = selection or Selection()
        self._notice = notice or log.info
        self._paths, self._unmatched = expand_globs(sources)
        # Several SOURCE arguments make the target a prefix even when they name one
        # file twice (`upload f f s3://b/k` goes to k/f, as `upload f g` would).
        self._several = len(sources) > 1 or len(self._paths) > 1
        self._announced = False
        # Named files that a walk (or another name) already maps to the same key.
        self._duplicates: set[str] = set()

    def check(self) -> int:
        """Refuse unsafe keys and collisions (``UsageError``); return the file count."""
        file_keys: dict[str, str] = {}
        walked: list[str] = []
        count = 0
        for job, relative, root in self._enumerate(announce=True):
            count += 1
            if job.error is not None or not self._several:
                continue
            duplicate = self._refuse_collision(job, relative, root, file_keys, walked)
            if duplicate is not None:
                self._drop_duplicate(duplicate, job)
                count -= 1
            elif root is None:
                file_keys[job.target.key] = job.source_path
            if root is not None and (not walked or walked[-1] != root):
                walked.append(root)
        return count

    def jobs(self) -> Iterator[Job]:
        """Every job, lazily: directory walks in name order, depth first; a named file
        that ``check()`` found already mapped to its key by another source, once."""
        for job, _, root in self._enumerate(announce=not self._announced):
            if root is None and job.source_path in self._duplicates:
                continue
            yield job

    def _drop_duplicate(self, named: str, job: Job) -> None:
        """The same file reaches the same key through two sources: send it once."""
        self._duplicates.add(named)
        self._notice(
            f"{job.source_path} is named twice for {job.target.uri}: sent once"
        )

    def _enumerate(self, announce: bool) -> Iterator[tuple[Job, str, str | None]]:
        """(job, path relative to its walked directory, that directory or None)."""
        self._announced = self._announced or announce
        for source in self._paths:
            if source in self._unmatched:
                error = SourceError(
                    f"no file matches {source!r}", hint="check the pattern"
                )
                yield Job(source, self.target, error), "", None
            elif os.path.isdir(source):
                yield from self._walk_jobs(source, announce)
            else:
                job = _file_job(source, self.target, self._several)
                name = os.path.basename(source.rstrip(os.sep))
                if self.selection.is_selected(name):
                    yield job, name, None

    def _walk_jobs(
        self, root: str, announce: bool
    ) -> Iterator[tuple[Job, str, str | None]]:
        base = self.target if self.target.is_prefix else _as_prefix(self.target)
        walk = Walk(root, self.selection, announce, self._notice)
        for path, relative, error in walk.files():
            if error is not None:
                yield Job(path, base.child(relative), error), relative, root
                continue
            key = key_from_relative_path(relative)
            check_key(base.key + key)
            yield Job(path, base.child(key)), relative, root

    def _refuse_collision(
        self,
        job: Job,
        relative: str,
        current: str | None,
        file_keys: dict[str, str],
        walked: list[str],
    ) -> str | None:
        """Two sources map to one key: a named file's key seen before, or the same
        relative path taken by an earlier directory walk (looked up on disk, so
        nothing is remembered per walked file). The same file reached twice is no
        conflict: the named file of the two is returned, to be sent only once."""
        other = file_keys.get(job.target.key)
        if other is None:
            for root in walked:
                if root != current and Walk(root, self.selection).would_take(relative):
                    other = os.path.join(root, relative)
                    break
        if other is None:
            return None
        if _is_same_file(other, job.source_path):
            return job.source_path if current is None else other
        raise UsageError(
            f"{other} and {job.source_path} both map to {job.target.uri}",
            hint="upload them to different prefixes",
        )


def expand_sources(sources: Sequence[str], target: Target) -> list[Job]:
    """Every job at once (small inputs and tests); ``SourceSet`` is the lazy form."""
    source_set = SourceSet(sources, target)
    source_set.check()
    return list(source_set.jobs())


def _is_same_file(first: str, second: str) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return _normalized(first) == _normalized(second)


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


class Walk:
    """A depth-first walk of one directory in name order, without recursion.

    Links to files are followed; links to directories only with ``follow_symlinks``,
    and never to a directory already on the current path (a loop), found by
    (st_dev, st_ino). Special files, broken links and loops are skipped with a warning.
    """

    def __init__(
        self,
        root: str,
        selection: Selection,
        announce: bool = False,
        notice: Callable[[str], None] | None = None,
    ):
        self.root = root
        self.selection = selection
        self.announce = announce
        self._notice = notice or log.info

    def files(self) -> Iterator[tuple[str, str, SourceError | None]]:
        """(path, relative path with ``/``, error for an unreadable directory)."""
        pending: list[tuple[str, str, tuple[DirId, ...]]] = [
            (self.root, "", (_dir_id(os.stat(self.root)),))
        ]
        while pending:
            path, relative, ancestors = pending.pop()
            try:
                entries = _sorted_entries(path)
            except OSError as exc:
                error = SourceError(f"directory {path} cannot be read: {exc.strerror}")
                yield path, relative, error
                continue
            if not entries and relative and self.announce:
                self._notice(f"skipping empty directory {path} (no object is made)")
            subdirs: list[tuple[str, str, tuple[DirId, ...]]] = []
            for entry in entries:
                child = relative + entry.name
                kind, ident = self._kind(entry, ancestors)
                if kind == "dir":
                    subdirs.append((entry.path, child + "/", ancestors + (ident,)))
                elif kind == "file" and self.selection.is_selected(child):
                    yield entry.path, child, None
            pending.extend(reversed(subdirs))

    def would_take(self, relative: str) -> bool:
        """True if this walk yields ``relative`` (checked on disk, not by walking)."""
        if not self.selection.is_selected(relative):
            return False
        path = self.root
        names = relative.split("/")
        for name in names[:-1]:
            path = os.path.join(path, name)
            try:
                if os.path.islink(path) and not self.selection.follow_symlinks:
                    return False
                if not stat.S_ISDIR(os.stat(path).st_mode):
                    return False
            except OSError:
                return False
        mode = _mode_or_none(os.path.join(path, names[-1]))
        return mode is not None and stat.S_ISREG(mode)

    def _kind(
        self, entry: os.DirEntry[str], ancestors: tuple[DirId, ...]
    ) -> tuple[str | None, DirId]:
        """ "file", "dir" or None (skipped, warned), and a directory's id."""
        try:
            if entry.is_symlink():
                return self._link_kind(entry, ancestors)
            if entry.is_file(follow_symlinks=False):
                return "file", (0, 0)
            if entry.is_dir(follow_symlinks=False):
                ident = _dir_id(entry.stat(follow_symlinks=False))
                if ident in ancestors:  # a bind mount of a directory above
                    self._warn(f"skipping {entry.path}: it loops back to a parent")
                    return None, ident
                return "dir", ident
        except OSError as exc:
            self._warn(f"skipping {entry.path}: {exc.strerror}")
            return None, (0, 0)
        self._warn(f"skipping {entry.path}: not a regular file (special file)")
        return None, (0, 0)

    def _link_kind(
        self, entry: os.DirEntry[str], ancestors: tuple[DirId, ...]
    ) -> tuple[str | None, DirId]:
        try:
            st = os.stat(entry.path)
        except OSError:
            self._warn(f"skipping {entry.path}: broken link")
            return None, (0, 0)
        if stat.S_ISREG(st.st_mode):
            return "file", (0, 0)
        if not stat.S_ISDIR(st.st_mode):
            self._warn(f"skipping {entry.path}: links to a special file")
            return None, (0, 0)
        ident = _dir_id(st)
        if not self.selection.follow_symlinks:
            self._warn(
                f"skipping {entry.path}: a link to a directory "
                "(pass --follow-symlinks to follow it)"
            )
            return None, ident
        if ident in ancestors:
            self._warn(f"skipping {entry.path}: a link back to a parent (a loop)")
            return None, ident
        return "dir", ident

    def _warn(self, message: str) -> None:
        if self.announce:
            log.warning("%s", message)


def _dir_id(st: os.stat_result) -> DirId:
    return st.st_dev, st.st_ino


def _sorted_entries(path: str) -> list[os.DirEntry[str]]:
    with os.scandir(path) as found:
        return sorted(found, key=lambda entry: entry.name)


def _mode_or_none(path: str) -> int | None:
    try:
        return os.stat(path).st_mode
    except OSError:
        return None


class SourceReader:
    """Reads byte ranges of one source by offset and notices when it changes."""

    def __init__(self, path: str, expected: Fingerprint):
        self.path = path
        self.expected = expected
        self._unchecked_bytes = 0  # read since the last stat (approximate: threads)
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
        self._unchecked_bytes += size_bytes
        if self._unchecked_bytes >= CHECK_EVERY_BYTES:
            self._unchecked_bytes = 0
            self.check_unchanged()
        return data

    def read_into(self, offset: int, view: memoryview) -> None:
        """Fill ``view`` with the bytes at ``offset`` (one copy, from the page cache
        into the caller's buffer), then check the source is unchanged."""
        filled = 0
        while filled < len(view):
            count = os.preadv(self._fd, [view[filled:]], offset + filled)
            if not count:
                raise SourceChangedError(
                    f"source {self.path} changed during upload: it is shorter than journaled"
                )
            filled += count
        self._unchecked_bytes = 0
        self.check_unchanged()

    def check_rest(self) -> None:
        """``check_unchanged`` unless nothing was read since the last check."""
        if self._unchecked_bytes:
            self._unchecked_bytes = 0
            self.check_unchanged()

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


#: The most one read of a range body returns, so a part is never copied whole.
RANGE_READ_BYTES = 1024 * 1024
#: The source is stat'ed for changes once per this many bytes read, and when a body
#: has been read to its end.
CHECK_EVERY_BYTES = 1024 * 1024


class BufferBody:
    """A part (or a whole small file) already read into memory: what is sent is
    exactly what was hashed, and no read of the source happens while sending."""

    def __init__(self, view: memoryview):
        self._view = view
        self.size_bytes = len(view)

    def open(self) -> BinaryIO:
        """A file-like view whose reads are slices of the buffer (no copies)."""
        return cast(BinaryIO, _ViewFile(self._view))


class _SeekableBody(io.RawIOBase):
    """A seekable, read-only file of ``_size`` bytes; subclasses implement ``read``
    from ``_position`` (the SDKs seek back to the start to send a body again)."""

    _size: int
    _position: int

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}
        self._position = max(0, min(self._size, base[whence] + position))
        return self._position

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _ViewFile(_SeekableBody):
    """A file over a memoryview; ``read`` returns slices of it."""

    def __init__(self, view: memoryview):
        self._view = view.toreadonly()
        self._size = len(view)
        self._position = 0

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._view)
        if size is not None and size >= 0:
            end = min(end, self._position + size)
        chunk = self._view[self._position : end]
        self._position = end
        # A memoryview, not bytes: HTTP clients send any bytes-like object, and a
        # copy of every part is what this class exists to avoid.
        return cast(bytes, chunk)


class PartBuffers:
    """Reusable buffers for parts in flight, so a part is read once into memory that
    was already paid for instead of a fresh allocation per part.

    Buffers are only taken under the engine's budget of parts in flight, and a free
    buffer that is too small is dropped before a new one is made, so the buffers
    alive never outnumber the parts in flight (CONTRACT.md, "Promises": peak memory).

    A buffer is anonymous memory mapped for it: page-aligned, and zero-filled by the
    kernel only as it is first written. A ``bytearray`` starts 16 bytes into its
    allocation, and the kernel copied file pages into that misaligned memory at a
    quarter of the speed (0.40 s against 0.10 s of CPU per 512 MiB read here); it is
    also zeroed by a ``memset`` before the first read overwrites it
    (docs/performance.md, "Part buffers").
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[mmap.mmap] = []

    def take(self, size_bytes: int) -> mmap.mmap:
        with self._lock:
            for index, buffer in enumerate(self._free):
                if len(buffer) >= size_bytes:
                    return self._free.pop(index)
            if self._free:
                self._free.pop(0)  # too small for this part: let it go first
        return _anonymous_memory(max(size_bytes, 1))  # mmap refuses a length of 0

    def give(self, buffer: mmap.mmap) -> None:
        with self._lock:
            self._free.append(buffer)


def _anonymous_memory(size_bytes: int) -> mmap.mmap:
    """``size_bytes`` of private, page-aligned memory, unmapped when the last view of
    it goes."""
    if hasattr(mmap, "MAP_PRIVATE"):  # POSIX
        return mmap.mmap(-1, size_bytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return mmap.mmap(-1, size_bytes)  # Windows: backed by the paging file


class RangeBody:
    """A re-readable range of a source: a single-request body or one part."""

    def __init__(self, reader: SourceReader, offset: int, size_bytes: int):
        self._reader = reader
        self._offset = offset
        self.size_bytes = size_bytes

    def open(self) -> BinaryIO:
        """A file-like view whose reads go straight to ``pread`` (no buffer between:
        each byte is copied once, from the page cache into the bytes the HTTP
        client sends)."""
        return cast(BinaryIO, _RangeFile(self._reader, self._offset, self.size_bytes))


class _RangeFile(_SeekableBody):
    """A seekable read-only view of ``size_bytes`` at ``offset`` of a source."""

    def __init__(self, reader: SourceReader, offset: int, size_bytes: int):
        self._reader = reader
        self._offset = offset
        self._size = size_bytes
        self._position = 0

    def read(self, size: int | None = -1) -> bytes:
        """``size`` bytes, fewer only at the end (the rest when ``size`` is -1 or
        None), from the source in reads of at most ``RANGE_READ_BYTES``; a read of
        up to that size is one ``pread`` and no further copy."""
        if size is None or size < 0:
            size = self._size - self._position
        chunks = []
        wanted = min(size, self._size - self._position)
        while wanted > 0:
            count = min(wanted, RANGE_READ_BYTES)
            chunks.append(self._reader.read(self._offset + self._position, count))
            self._position += count
            wanted -= count
        if self._position == self._size:
            self._reader.check_rest()  # a body ends only on an unchanged source
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
