"""Helpers shared by the CLI tests: random files, running cloudput, reading the journal.

Kept small and stable: tests/test_contract.py and the S3 CLI tests import from here.
Nothing here talks to an emulator; that is tests/backends.py's job.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudput.journal import Journal, PartRow, UploadRecord
from tests.faultproxy import FaultProxy

KIB = 1024
MIB = 1024 * 1024
#: Bytes written per os.urandom call when making a random file.
_WRITE_CHUNK_BYTES = 4 * MIB
#: A retry base delay short enough for tests (read by cloudput from the environment).
FAST_RETRY_ENV = {"CLOUDPUT_RETRY_BASE_DELAY": "0.01"}


@contextlib.contextmanager
def proxy_in_front(backend: Any, monkeypatch: Any) -> Iterator[FaultProxy]:
    """A FaultProxy before ``backend``'s emulator, with fast retries: in-process
    cloudput uses it through the environment (and so every URL it signs)."""
    with FaultProxy(backend.endpoint) as running:
        routed = {**backend.routed_through(running.url), **FAST_RETRY_ENV}
        for name, value in routed.items():
            monkeypatch.setenv(name, value)
        yield running


# -- files ------------------------------------------------------------------------


def write_random(path: Path, size_bytes: int) -> str:
    """Write `size_bytes` random bytes to `path` (parents made); return the SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        remaining = size_bytes
        while remaining:
            chunk = os.urandom(min(remaining, _WRITE_CHUNK_BYTES))
            digest.update(chunk)
            out.write(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def sha256_of(data: bytes | None) -> str | None:
    """The SHA-256 of `data` in hex, or None for None (no object)."""
    return None if data is None else hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for chunk in iter(lambda: source.read(_WRITE_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- running cloudput -------------------------------------------------------------


@dataclass(frozen=True)
class CliResult:
    """What one cloudput run gave back."""

    code: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        """stdout parsed as one JSON object per non-empty line."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def run_cli(args: Sequence[str]) -> CliResult:
    """Run cloudput in this process (environment as the test set it up)."""
    from cloudput.cli.app import run

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run([str(arg) for arg in args])
    return CliResult(code, out.getvalue(), err.getvalue())


def cloudput_command(args: Sequence[str]) -> list[str]:
    """The argv of a real `python -m cloudput` process."""
    return [sys.executable, "-m", "cloudput", *[str(arg) for arg in args]]


def process_env(extra: Mapping[str, str]) -> dict[str, str]:
    """os.environ (already cleaned by the clean_env fixture) with `extra` laid over."""
    return {**os.environ, **extra}


def start_cloudput(
    args: Sequence[str], env: Mapping[str, str]
) -> subprocess.Popen[str]:
    """Start a real cloudput process; `env` is merged over os.environ."""
    return subprocess.Popen(
        cloudput_command(args),
        env=process_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cloudput(
    args: Sequence[str], env: Mapping[str, str], timeout_s: float = 120.0
) -> CliResult:
    """Run a real cloudput process to its end."""
    done = subprocess.run(
        cloudput_command(args),
        env=process_env(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def finish(process: subprocess.Popen[str], timeout_s: float = 60.0) -> CliResult:
    """Wait for a started process and collect its output."""
    stdout, stderr = process.communicate(timeout=timeout_s)
    return CliResult(process.returncode, stdout, stderr)


def wait_until(
    condition: Callable[[], bool], timeout_s: float = 30.0, poll_s: float = 0.02
) -> None:
    """Poll `condition` until it holds; AssertionError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(poll_s)


# -- the journal ------------------------------------------------------------------


def journal_path() -> Path:
    """The journal the clean_env fixture points cloudput at (CLOUDPUT_JOURNAL)."""
    return Path(os.environ["CLOUDPUT_JOURNAL"])


def records(path: Path | None = None) -> list[UploadRecord]:
    """Every upload record in the journal, oldest first ([] when there is no file)."""
    where = path or journal_path()
    if not where.exists():
        return []
    journal = Journal.open(where)
    try:
        return journal.find()
    finally:
        journal.close()


def only_record(path: Path | None = None) -> UploadRecord:
    """The journal's single record; fails the test if there is not exactly one."""
    found = records(path)
    assert len(found) == 1, f"expected one upload record, found {len(found)}"
    return found[0]


def parts_of(upload_id: str, path: Path | None = None) -> list[PartRow]:
    """The part rows journaled for `upload_id`, by number."""
    journal = Journal.open(path or journal_path())
    try:
        return journal.parts(upload_id)
    finally:
        journal.close()


def journaled_part_count(path: Path | None = None) -> int:
    """Part rows in the journal, read-only: safe while a cloudput process creates it."""
    where = path or journal_path()
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{where}?mode=ro", uri=True, timeout=5)
        ) as conn:
            return int(conn.execute("SELECT count(*) FROM parts").fetchone()[0])
    except sqlite3.Error:
        return 0  # no file or no table yet


def kill_after_parts(
    process: subprocess.Popen[str],
    parts: int,
    sig: int = signal.SIGKILL,
    timeout_s: float = 60.0,
) -> CliResult:
    """Send `sig` once the journal holds `parts` part rows; return its output.

    Fails the test if the process ended before that (it finished too fast to kill).
    """

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                f"cloudput ended (exit {process.returncode}) before the kill"
            )
        return journaled_part_count() >= parts

    wait_until(ready, timeout_s)
    process.send_signal(sig)
    return finish(process)
