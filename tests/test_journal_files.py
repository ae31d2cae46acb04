"""The journal file itself: permissions, corruption, truncation, newer schema (exit 9)."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from cloudput.journal import SCHEMA_VERSION, Journal, PartRow
from tests.helpers import run_cli


def test_journal_is_created_with_mode_0600(tmp_path):
    path = tmp_path / "sub" / "journal.db"
    Journal.open(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_garbage_journal_is_exit_9_with_one_line(tmp_path):
    path = tmp_path / "journal.db"
    path.write_bytes(b"this is not a database at all" * 100)
    result = run_cli(["list", "--journal", str(path)])
    assert result.code == 9
    assert "corrupt" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_truncated_journal_is_exit_9(tmp_path):
    path = tmp_path / "journal.db"
    journal = Journal.open(path)
    journal.close()
    with sqlite3.connect(
        path
    ) as db:  # fold the WAL in so the main file holds the schema
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)
    for leftover in (tmp_path / "journal.db-wal", tmp_path / "journal.db-shm"):
        leftover.unlink(missing_ok=True)
    result = run_cli(["list", "--journal", str(path)])
    assert result.code == 9
    assert "Traceback" not in result.stderr


def test_journal_from_a_newer_version_is_exit_9(tmp_path):
    path = tmp_path / "journal.db"
    Journal.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'",
            (str(SCHEMA_VERSION + 1),),
        )
    result = run_cli(["list", "--journal", str(path)])
    assert result.code == 9
    assert "newer" in result.stderr


def test_unreadable_journal_directory_is_exit_9(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli(["list", "--journal", str(blocker / "journal.db")])
    assert result.code == 9


def test_journal_locked_by_another_program_is_not_called_corrupt(tmp_path, monkeypatch):
    import cloudput.journal as journal_module
    from cloudput.errors import JournalError

    monkeypatch.setattr(journal_module, "LOCK_WAIT_S", 0.2)
    path = tmp_path / "journal.db"
    journal = Journal.open(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(JournalError) as caught:
            journal.record_part("u", PartRow("u", 1, 0, 1, "e", None, "t"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        journal.close()
    assert "locked" in str(caught.value)
    assert "corrupt" not in str(caught.value)
    assert caught.value.exit_code == 9


def test_a_tree_leaves_few_lock_files_and_none_for_finished_uploads(
    s3, clean_env, monkeypatch, tmp_path
):
    """Hold files of completed uploads go; key locks are a bounded set of stripes,
    so a cron job over a large tree does not fill the journal's folder."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    tree = tmp_path / "tree"
    for number in range(40):
        (tree / f"d{number % 4}").mkdir(parents=True, exist_ok=True)
        (tree / f"d{number % 4}" / f"f{number}.txt").write_text(str(number))

    result = run_cli(["upload", tree, s3.uri("t/"), "--json"])

    assert result.code == 0, result.stderr
    ids = {line["id"] for line in result.json_lines()}
    assert len(ids) == 40
    locks = {
        path.name for path in (clean_env.parent / (clean_env.name + ".locks")).iterdir()
    }
    assert not {f"{upload_id}.lock" for upload_id in ids} & locks
    key_locks = {name for name in locks if name.startswith("key-")}
    assert key_locks and all(len(name) == len("key-ab.lock") for name in key_locks)
