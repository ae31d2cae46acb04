"""The local SQLite journal: upload records, part checkpoints, attachments and holds.

Owns every SQL statement in cloudput. It stores no credentials, presigned URLs or SAS
tokens; a GCS session URL (a bearer secret) may sit in ``uploads.session``, which is why
the file is created with mode 0600.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudput.errors import JournalError, UsageError

if TYPE_CHECKING:
    import sqlite_utils

log = logging.getLogger(__name__)

#: How long a journal write waits for another program's lock before giving up.
LOCK_WAIT_S = 30.0
SCHEMA_VERSION = 2
#: Columns schema 2 added to ``uploads`` (object options resume must send again).
V2_COLUMNS = (
    "content_encoding",
    "content_disposition",
    "tags",
    "acl",
    "encryption",
    "encryption_key_id",
)
UNFINISHED = ("initiated", "in_progress", "interrupted")
STATUSES = (
    "initiated",
    "in_progress",
    "interrupted",
    "completed",
    "skipped",
    "failed",
    "aborted",
)


def utc_now() -> str:
    """The current time as ISO 8601 with ``Z``, to the millisecond."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def new_upload_id() -> str:
    """A fresh upload id: 12 hex characters (fixed width; Azure block ids carry it)."""
    return secrets.token_hex(6)


@dataclass(frozen=True)
class UploadRecord:
    """One upload: a source, a target, the plan, and where it stands."""

    id: str
    provider: str
    bucket: str
    key: str
    uri: str
    storage_url: str
    name: str
    size_bytes: int
    mime: str
    strategy: str
    part_size_bytes: int
    part_count: int
    status: str
    initiated_at: str
    source_path: str
    source_size_bytes: int
    source_mtime_ns: int
    source_inode: int
    checksum_algorithm: str = "md5"
    checksum_value: str | None = None
    checksum_verified: str | None = None
    session: str | None = None
    completed_at: str | None = None
    expires_at: str | None = None
    updated_at: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    tenant: str | None = None
    cache_control: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    storage_class: str | None = None
    account: str | None = None
    content_encoding: str | None = None
    content_disposition: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    acl: str | None = None
    # ObjectSpec.encryption and its key id (a KMS key, an Azure scope, or for SSE-C
    # the customer key's MD5 as S3 shows it: never the key itself).
    encryption: str | None = None
    encryption_key_id: str | None = None

    def with_changes(self, **changes: Any) -> UploadRecord:
        """A copy with ``changes``. Copies the fields instead of calling
        ``dataclasses.replace``, which passes all 41 through ``__init__`` (ten times
        the cost; a record is copied several times per small file). The class has no
        ``__post_init__``, so nothing is skipped."""
        unknown = changes.keys() - _UPLOAD_COLUMNS
        if unknown:
            raise TypeError(f"unknown upload fields {sorted(unknown)}")
        copy = object.__new__(UploadRecord)
        copy.__dict__.update(self.__dict__, **changes)
        return copy

    @property
    def is_plumbing(self) -> bool:
        """Made by ``cloudput init``: an outside uploader sends the bytes, so there is
        no local source (``source_path`` is empty) and ``resume`` cannot continue it."""
        return self.source_path == ""


@dataclass(frozen=True)
class PartRow:
    """A part the provider acknowledged: number, range, receipt and digest."""

    upload_id: str
    number: int
    offset: int
    size_bytes: int
    etag: str
    checksum: str | None
    completed_at: str


@dataclass(frozen=True)
class Attachment:
    """The chat-attachment view of a completed upload."""

    id: str
    upload_id: str
    name: str
    mime_type: str
    size: int
    url: str


#: Hex digits of a name's SHA-1 that pick its key-lock file: 256 files at most.
KEY_LOCK_STRIPE_HEX = 2
_UPLOAD_ORDER = tuple(f.name for f in fields(UploadRecord))
_UPLOAD_COLUMNS = set(_UPLOAD_ORDER)
_INSERT_UPLOAD = (
    f"INSERT INTO uploads ({', '.join(f'[{n}]' for n in _UPLOAD_ORDER)}) "
    f"VALUES ({', '.join('?' for _ in _UPLOAD_ORDER)})"
)
_UPSERT_PART = (
    "INSERT OR REPLACE INTO parts (upload_id, number, [offset], size_bytes, etag, "
    "checksum, completed_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_ATTACHMENT = (
    "INSERT OR REPLACE INTO attachments (id, upload_id, name, mime_type, size, url) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_MAPPING_COLUMNS = ("metadata", "tags")  # stored as JSON text


class Journal:
    """A journal file; safe to share between threads of one process."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.RLock()
        self._holds: dict[str, int] = {}
        self._locks_dir = str(path.parent / (path.name + ".locks"))
        with _opening(path):
            self._conn = _connect(path)
            with self._guard():
                _migrate(self._conn)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Journal:
        """Open (creating with mode 0600) the journal at ``path``; raise ``JournalError``."""
        journal_path = Path(path).expanduser()
        log.info("journal: %s", journal_path)
        return cls(journal_path)

    def close(self) -> None:
        with self._lock:
            for upload_id in list(self._holds):
                self.release(upload_id)
            self._conn.close()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        with self._lock:
            try:
                yield
            except sqlite3.DatabaseError as exc:
                raise _journal_error(self.path, exc) from exc

    # The calls made per file (add, get, update, find_*, record_part, mark_completed)
    # are plain SQL on the connection: sqlite-utils reads the table's schema on every
    # insert and update, which cost more than the statement itself. sqlite-utils
    # keeps creating and migrating the schema.

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """Several statements as one transaction (the connection autocommits)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _select(self, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        cursor = self._conn.cursor()
        cursor.row_factory = sqlite3.Row
        return [dict(row) for row in cursor.execute(sql, args)]

    def add(self, record: UploadRecord) -> None:
        """Insert a new upload record."""
        row = _to_row(record)
        with self._guard(), self._conn:
            self._conn.execute(_INSERT_UPLOAD, [row[name] for name in _UPLOAD_ORDER])

    def get(self, upload_id: str) -> UploadRecord:
        """Return the record, or raise ``UsageError`` for an unknown id."""
        with self._guard():
            rows = self._select("SELECT * FROM uploads WHERE id = ?", [upload_id])
        if not rows:
            raise UsageError(
                f"unknown upload id {upload_id!r}", hint="see `cloudput list`"
            )
        return _from_row(rows[0])

    def find(self, status: str | None = None) -> list[UploadRecord]:
        """Records, oldest first, optionally with one status."""
        where, args = ("WHERE status = ?", [status]) if status else ("", [])
        with self._guard():
            rows = self._select(
                f"SELECT * FROM uploads {where} ORDER BY initiated_at, rowid", args
            )
        return [_from_row(row) for row in rows]

    def find_unfinished(
        self, source_path: str, uri: str, endpoint_url: str | None
    ) -> list[UploadRecord]:
        """Unfinished uploads of this source to this target, newest first."""
        marks = ", ".join("?" for _ in UNFINISHED)
        where = (
            f"source_path = ? AND uri = ? AND status IN ({marks}) AND endpoint_url IS ?"
        )
        with self._guard():
            rows = self._select(
                f"SELECT * FROM uploads WHERE {where} ORDER BY rowid DESC",
                [source_path, uri, *UNFINISHED, endpoint_url],
            )
        return [_from_row(row) for row in rows]

    def find_finished(
        self, source_path: str, uri: str, endpoint_url: str | None
    ) -> UploadRecord | None:
        """The newest completed or skipped upload of this source to this target."""
        where = (
            "source_path = ? AND uri = ? AND status IN ('completed', 'skipped') "
            "AND endpoint_url IS ?"
        )
        with self._guard():
            rows = self._select(
                f"SELECT * FROM uploads WHERE {where} ORDER BY rowid DESC LIMIT 1",
                [source_path, uri, endpoint_url],
            )
        return _from_row(rows[0]) if rows else None

    def update(self, upload_id: str, **changes: Any) -> None:
        """Change fields of a record (commits at once)."""
        row = _to_row_fields(changes)
        row["updated_at"] = utc_now()
        with self._guard(), self._conn:
            self._update_upload(upload_id, row)

    def updated(self, record: UploadRecord, **changes: Any) -> UploadRecord:
        """``update`` a record this process holds and return it as now journaled,
        without reading it back: under the hold no other process writes it, so
        ``record`` (as this process last wrote or read it) plus the changes is the
        row."""
        row = _to_row_fields(changes)
        row["updated_at"] = utc_now()
        with self._guard(), self._conn:
            self._update_upload(record.id, row)
        return record.with_changes(**changes, updated_at=row["updated_at"])

    def _update_upload(self, upload_id: str, row: Mapping[str, Any]) -> None:
        assignments = ", ".join(f"[{name}] = ?" for name in row)
        cursor = self._conn.execute(
            f"UPDATE uploads SET {assignments} WHERE id = ?", [*row.values(), upload_id]
        )
        if cursor.rowcount == 0:
            raise UsageError(
                f"unknown upload id {upload_id!r}", hint="see `cloudput list`"
            )

    def record_part(self, upload_id: str, row: PartRow) -> None:
        """Checkpoint one acknowledged part; committed before the call returns."""
        with self._guard(), self._conn:
            self._conn.execute(_UPSERT_PART, _values(row))

    def parts(self, upload_id: str) -> list[PartRow]:
        with self._guard():
            rows = self._select(
                "SELECT * FROM parts WHERE upload_id = ? ORDER BY number", [upload_id]
            )
        return [PartRow(**row) for row in rows]

    def forget_parts(
        self, upload_id: str, numbers: Iterable[int] | None = None
    ) -> None:
        """Drop part rows (all, or those ``numbers``): the provider no longer holds them."""
        with self._guard(), self._transaction():
            if numbers is None:
                self._conn.execute(
                    "DELETE FROM parts WHERE upload_id = ?", (upload_id,)
                )
                return
            self._conn.executemany(
                "DELETE FROM parts WHERE upload_id = ? AND number = ?",
                [(upload_id, number) for number in numbers],
            )

    def mark_completed(
        self, upload_id: str, attachment: Attachment, **changes: Any
    ) -> str:
        """Mark an upload completed and write its attachment in one transaction;
        return the ``updated_at`` written."""
        row = _to_row_fields(changes)
        row.update(status="completed", updated_at=utc_now())
        with self._guard(), self._transaction():
            self._update_upload(upload_id, row)
            self._conn.execute(_UPSERT_ATTACHMENT, _values(attachment))
        return str(row["updated_at"])

    def completed(
        self, record: UploadRecord, attachment: Attachment, **changes: Any
    ) -> UploadRecord:
        """``mark_completed`` a record this process holds and return it as now
        journaled, without reading it back (see ``updated``)."""
        updated_at = self.mark_completed(record.id, attachment, **changes)
        return record.with_changes(**changes, status="completed", updated_at=updated_at)

    def attachments(self) -> list[Attachment]:
        with self._guard():
            rows = self._select("SELECT * FROM attachments ORDER BY rowid", [])
        return [Attachment(**row) for row in rows]

    def hold(self, upload_id: str) -> bool:
        """Take the upload for this process; False if a live process holds it.

        The hold is an advisory lock on a file beside the journal, so it dies with the
        process: after a SIGKILL the upload can be resumed at once.
        """
        with self._lock:
            if upload_id in self._holds:
                return True
            fd = self._open_lock(upload_id)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._holds[upload_id] = fd
            return True

    @contextmanager
    def key_lock(self, name: str) -> Iterator[None]:
        """Serialise a short decision across processes (and threads) by ``name``."""
        digest = hashlib.sha1(name.encode("utf-8"), usedforsecurity=False).hexdigest()
        # One of KEY_LOCK_STRIPES files, not one per name: a tree of a million files
        # must not leave a million lock files; two names sharing a stripe only wait
        # for each other's short decision.
        stripe = digest[:KEY_LOCK_STRIPE_HEX]
        fd = self._open_lock(f"key-{stripe}")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def release(self, upload_id: str, finished: bool = False) -> None:
        """Let go of the upload; ``finished``: it is completed (or otherwise final),
        so its lock file goes too (a later ``hold`` re-reads the record anyway)."""
        with self._lock:
            fd = self._holds.pop(upload_id, None)
        if fd is not None:
            if finished:
                with suppress(FileNotFoundError):
                    os.unlink(self._lock_path(upload_id))
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def is_held_elsewhere(self, upload_id: str) -> bool:
        """True if another live process holds the upload."""
        if upload_id in self._holds:
            return False
        if not self.hold(upload_id):
            return True
        self.release(upload_id)
        return False

    def settle_orphans(self, records: list[UploadRecord]) -> list[UploadRecord]:
        """The records with each ``in_progress`` one whose process is gone (killed,
        crashed, the machine rebooted) marked ``interrupted``, in the journal too: only
        a live process's upload is in progress. The check takes the upload's hold for
        a moment, so a process starting it then finds it held and passes it over."""
        settled = []
        for record in records:
            if record.status == "in_progress" and self.hold(record.id):
                try:
                    current = self.get(record.id)
                    if current.status == "in_progress":
                        self.update(
                            record.id,
                            status="interrupted",
                            error_code="process_gone",
                            error_message="the process sending it stopped",
                        )
                    record = self.get(record.id)
                finally:
                    self.release(record.id)
            settled.append(record)
        return settled

    def _lock_path(self, upload_id: str) -> str:
        return os.path.join(self._locks_dir, f"{upload_id}.lock")

    def _open_lock(self, name: str) -> int:
        """Open (creating) the lock file ``name``; its folder is made on first need,
        not checked on every call (several lock files are opened per small file)."""
        path = self._lock_path(name)
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            os.makedirs(self._locks_dir, mode=0o700, exist_ok=True)
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


@contextmanager
def _opening(path: Path) -> Iterator[None]:
    """One process at a time opens the journal: two runs started together on a new
    file would both switch it to WAL and create its tables ("database is locked",
    "table already exists"), which is not a corrupt journal."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        locks = path.parent / (path.name + ".locks")
        locks.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(locks / "open.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise JournalError(
            f"cannot open journal {path}: {exc.strerror}",
            hint="check the path and its permissions, or pass --journal",
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        conn = sqlite3.connect(
            path, timeout=LOCK_WAIT_S, check_same_thread=False, isolation_level=None
        )
        conn.execute(f"PRAGMA busy_timeout = {int(LOCK_WAIT_S * 1000)}")
        if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("quick_check failed")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    except OSError as exc:
        raise JournalError(
            f"cannot open journal {path}: {exc.strerror}",
            hint="check the path and its permissions, or pass --journal",
        ) from exc
    except sqlite3.DatabaseError as exc:
        raise _journal_error(path, exc) from exc
    return conn


def _journal_error(path: Path, exc: sqlite3.DatabaseError) -> JournalError:
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc).lower():
        return JournalError(
            f"journal {path} is locked by another program ({exc})",
            hint="the file is fine: wait for that program (an sqlite3 shell, a backup) "
            "to let go, then run again; do not move the journal aside",
            code="journal_locked",
        )
    return JournalError(
        f"journal {path} is corrupt or unreadable ({exc})",
        hint="move it aside and run again; uploads it held can be found with `cloudput cleanup`",
    )


def _schema_version(conn: sqlite3.Connection) -> int | None:
    """The journal's schema version; None for a file without the meta table."""
    try:
        row = conn.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'"
        ).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    return int(row[0]) if row else 0


def _migrate(conn: sqlite3.Connection) -> None:
    """Create or bring the schema up to date (sqlite-utils, imported only then)."""
    if _schema_version(conn) == SCHEMA_VERSION:
        return
    import sqlite_utils

    # No plugins: loading them scans every installed package's entry points (about
    # 30 ms of the 80 a new journal took), and cloudput's schema needs none.
    db = sqlite_utils.Database(conn, execute_plugins=False)
    meta = db.table("meta")
    if not meta.exists():
        meta.create({"key": str, "value": str}, pk="key")
    rows = {row["key"]: row["value"] for row in meta.rows}
    version = int(rows.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"journal {db.conn.execute('PRAGMA database_list').fetchone()[2]} is from a newer "
            f"cloudput (schema {version}, this one knows {SCHEMA_VERSION})",
            hint="upgrade cloudput, or pass --journal with another file",
        )
    if version < 1:
        _create_tables(db)
    elif version < 2:
        _add_v2_columns(db)
    if version < SCHEMA_VERSION:
        meta.upsert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key")


def _add_v2_columns(db: sqlite_utils.Database) -> None:
    """Schema 1 -> 2: ALTER TABLE ADD COLUMN for the object options (NULL in old
    rows, read back as "not set"). Under a write lock, adding only what is missing,
    so two processes opening an old journal at once both succeed."""
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        present = {row[1] for row in db.conn.execute("PRAGMA table_info(uploads)")}
        for name in V2_COLUMNS:
            if name not in present:
                db.conn.execute(f"ALTER TABLE uploads ADD COLUMN [{name}] TEXT")
        db.conn.execute("COMMIT")
    except BaseException:
        db.conn.execute("ROLLBACK")
        raise
    log.info("journal migrated to schema 2 (object options)")


def _create_tables(db: sqlite_utils.Database) -> None:
    """A new journal at the current schema: the uploads table has one column per
    ``UploadRecord`` field."""
    columns: dict[str, Any] = {}
    for f in fields(UploadRecord):
        columns[f.name] = int if f.type in ("int",) else str
    db.table("uploads").create(
        columns, pk="id", not_null={"provider", "bucket", "key", "status"}
    )
    db.table("uploads").create_index(["status"])
    db.table("uploads").create_index(["source_path", "uri"])
    db.table("parts").create(
        {
            "upload_id": str,
            "number": int,
            "offset": int,
            "size_bytes": int,
            "etag": str,
            "checksum": str,
            "completed_at": str,
        },
        pk=("upload_id", "number"),
        foreign_keys=[("upload_id", "uploads", "id")],
    )
    db.table("attachments").create(
        {
            "id": str,
            "upload_id": str,
            "name": str,
            "mime_type": str,
            "size": int,
            "url": str,
        },
        pk="id",
        foreign_keys=[("upload_id", "uploads", "id")],
    )


def _values(row: PartRow | Attachment) -> tuple[Any, ...]:
    """The row's fields in column order: a flat record needs no ``astuple``, which
    deep-copies every value (a part is journaled for every part sent)."""
    return tuple(getattr(row, name) for name in row.__dataclass_fields__)


def _to_row_fields(changes: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(changes) - _UPLOAD_COLUMNS
    if unknown:
        raise ValueError(f"unknown upload fields {sorted(unknown)}")
    row = dict(changes)
    for name in _MAPPING_COLUMNS:
        if name in row:
            row[name] = json.dumps(dict(row[name]), sort_keys=True)
    return row


def _to_row(record: UploadRecord) -> dict[str, Any]:
    return _to_row_fields({name: getattr(record, name) for name in _UPLOAD_ORDER})


def _from_row(row: Mapping[str, Any]) -> UploadRecord:
    values = {name: row[name] for name in _UPLOAD_COLUMNS if name in row}
    for name in _MAPPING_COLUMNS:
        values[name] = json.loads(values.get(name) or "{}")
    return UploadRecord(**values)
