"""Bad input not covered elsewhere (issue 4, "Bad input"): a socket met while walking a
directory, a link from a directory to its own parent, and negative or absurd option
values. Each ends with its exit code and a one-line message, before any request.

(Tree walks with FIFOs, broken links and links to directories are in test_bulk.py.)
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudput.journal import Journal
from tests.backends import Backend
from tests.faultproxy import FaultProxy
from tests.helpers import run_cli, sha256_of, write_random
from tests.test_contract import use_env

#: A walk of a small tree with a loop must end well within this (it never hangs).
WALK_LIMIT_S = 30.0


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    """A listening Unix socket at tree/s.sock (short path: sun_path is ~108 bytes)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    path = tree / "s.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    try:
        yield path
    finally:
        server.close()


def test_socket_inside_a_walked_directory_is_warned_and_skipped(
    backend: Backend,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    unix_socket: Path,
) -> None:
    tree = unix_socket.parent
    digest = write_random(tree / "a.txt", 100)
    backend.apply_env(monkeypatch)

    result = run_cli(["upload", tree, backend.uri("p/"), "--json"])

    assert result.code == 0, result.stderr
    assert backend.keys() == ["p/a.txt"]
    assert sha256_of(backend.read("p/a.txt")) == digest
    assert "s.sock" in result.stderr and "special file" in result.stderr
    assert "Traceback" not in result.stderr


def test_socket_named_as_a_source_exits_4(
    s3: Backend, monkeypatch: pytest.MonkeyPatch, unix_socket: Path
) -> None:
    s3.apply_env(monkeypatch)

    result = run_cli(["upload", unix_socket, s3.uri("k")])

    assert result.code == 4, result.stderr
    assert "special file" in result.stdout + result.stderr
    assert s3.keys() == []


@pytest.mark.parametrize("follow", [False, True], ids=["default", "follow-symlinks"])
def test_link_from_a_directory_to_its_parent_is_not_walked_round(
    s3: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, follow: bool
) -> None:
    """tree/a/up -> tree/a/.. : bounded, no key with a repeated segment."""
    tree = tmp_path / "tree"
    digest = write_random(tree / "a" / "f.txt", 10)
    write_random(tree / "top.txt", 5)
    (tree / "a" / "up").symlink_to("..", target_is_directory=True)
    s3.apply_env(monkeypatch)
    started = time.monotonic()

    result = run_cli(
        ["upload", tree, s3.uri("p/"), "--quiet"]
        + (["--follow-symlinks"] if follow else [])
    )

    assert time.monotonic() - started < WALK_LIMIT_S
    assert result.code == 0, result.stderr
    assert s3.keys() == ["p/a/f.txt", "p/top.txt"]
    assert sha256_of(s3.read("p/a/f.txt")) == digest


BAD_OPTIONS = {
    "concurrency-negative": ["--concurrency", "-1"],
    "concurrency-zero": ["--concurrency", "0"],
    "concurrency-absurd": ["--concurrency", "100000"],
    "retries-absurd": ["--retries", "1000"],
    "retries-negative": ["--retries", "-1"],
    "part-size-zero": ["--part-size", "0"],
    "part-size-negative": ["--part-size", "-5MiB"],
    "part-size-absurd": ["--part-size", "10TiB"],
    "timeout-zero": ["--timeout", "0s"],
    "timeout-negative": ["--timeout", "-1s"],
    "max-duration-words": ["--max-duration", "abc"],
    "multipart-threshold-words": ["--multipart-threshold", "lots"],
    "checksum-unknown": ["--checksum", "sha1"],
}


@pytest.mark.parametrize("option", list(BAD_OPTIONS.values()), ids=list(BAD_OPTIONS))
def test_negative_or_absurd_option_value_exits_2_with_one_line_before_any_request(
    backend: Backend,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    option: list[str],
) -> None:
    source = tmp_path / "f.bin"
    write_random(source, 1000)
    with FaultProxy(backend.endpoint) as proxy:
        use_env(monkeypatch, backend.routed_through(proxy.url))

        result = run_cli(["upload", source, backend.uri("f.bin"), *option])
        sent = proxy.requests

    assert result.code == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert option[0] in lines[0] or option[0].lstrip("-") in lines[0], lines[0]
    assert sent == []


@pytest.mark.parametrize(
    "option",
    [["--concurrency", "-1"], ["--retries", "1000"], ["--max-duration", "abc"]],
    ids=["concurrency", "retries", "max-duration"],
)
def test_resume_refuses_absurd_option_values_with_exit_2(
    option: list[str],
) -> None:
    result = run_cli(["resume", "--all", *option])

    assert result.code == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    "command",
    [["show", "0123456789ab"], ["verify", "0123456789ab"], ["abort", "0123456789ab"]],
    ids=["show", "verify", "abort"],
)
def test_a_command_on_uploads_of_a_journal_that_is_not_there_exits_2_and_creates_none(
    command: list[str], tmp_path: Path
) -> None:
    """A mistyped --journal must not look like an empty journal, nor leave one."""
    journal = tmp_path / "typo" / "journal.db"

    result = run_cli([*command, "--journal", journal])

    assert result.code == 2
    assert result.stderr.count("\n") == 1
    assert f"no journal at {journal}" in result.stderr
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize(
    "command", [["list"], ["list", "--json"], ["abort", "--all-failed"]]
)
def test_listing_or_aborting_all_failed_without_a_journal_is_nothing_to_do(
    command: list[str], tmp_path: Path
) -> None:
    """What a cron job runs on a fresh machine: exit 0, a notice, no journal made."""
    journal = tmp_path / "fresh" / "journal.db"

    result = run_cli([*command, "--journal", journal])

    assert result.code == 0, result.stderr
    assert result.stdout == ""
    assert "no journal" in result.stderr
    assert not (tmp_path / "fresh").exists()


def test_abort_all_failed_with_none_failed_exits_0(tmp_path: Path) -> None:
    journal = tmp_path / "journal.db"
    Journal.open(journal).close()

    result = run_cli(["abort", "--all-failed", "--journal", journal])

    assert result.code == 0, result.stderr
    assert result.stderr == "cloudput: no failed uploads to abort\n"


def test_abort_without_ids_or_all_failed_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli(["abort", "--journal", tmp_path / "journal.db"])

    assert result.code == 2
    assert "name the uploads to abort, or pass --all-failed" in result.stderr


def test_filters_that_select_no_file_say_so_and_send_nothing(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a.txt").write_bytes(b"a")

    result = run_cli(
        ["upload", tmp_path / "tree", "s3://bucket/p/", "--exclude", "*", "--dry-run"]
    )

    assert result.code == 0, result.stderr
    assert "no file to upload: the sources and filters select none" in result.stderr
