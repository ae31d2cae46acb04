"""Faults a fresh user met in round 3: the progress bars on a real terminal (several
files), and what the CLI prints around them.
"""

from __future__ import annotations

import os
import pty
import subprocess
import time
from pathlib import Path

from tests.backends import Backend
from tests.helpers import KIB, MIB, cloudput_command, process_env, write_random


def run_on_terminal(
    args: list[str], env: dict[str, str], timeout_s: float = 120.0
) -> tuple[int, str, str]:
    """Run cloudput with stderr on a pseudo-terminal (so rich draws its bars) and
    stdout on a pipe, as a user at a terminal piping results to a file; return the
    exit code, stdout and what the terminal showed."""
    main_fd, side_fd = pty.openpty()
    process = subprocess.Popen(
        cloudput_command(args),
        env=process_env({**env, "COLUMNS": "120", "TERM": "xterm"}),
        stdout=subprocess.PIPE,
        stderr=side_fd,
        text=True,
    )
    os.close(side_fd)
    shown = bytearray()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        shown += chunk
    os.close(main_fd)
    stdout, _ = process.communicate(timeout=timeout_s)
    return process.returncode, stdout, shown.decode("utf-8", "replace")


def test_several_files_on_a_terminal_all_report_uploaded(
    backend: Backend, tmp_path: Path
) -> None:
    """Was: the second file to finish on a terminal crashed the run (IndexError in
    the progress bars, exit 1, no result lines), after its upload had completed."""
    site = tmp_path / "site"
    write_random(site / "a.bin", 6 * MIB)
    for name in ("b.txt", "c/d.txt", "c/e.txt"):
        write_random(site / name, 3 * KIB)
    code, stdout, shown = run_on_terminal(
        ["upload", site, backend.uri("t/"), "--bwlimit", "12MiB"], backend.env
    )
    assert "internal error" not in shown
    assert code == 0, shown
    assert sorted(stdout.splitlines()) == sorted(
        f"uploaded {site / name} -> {backend.uri('t/' + name)}"
        for name in ("a.bin", "b.txt", "c/d.txt", "c/e.txt")
    )
    assert "4 files: 4 uploaded" in shown
    # the bars' rate is in the binary units of their sizes and of the summary
    assert "MiB/s" in shown
    assert " MB/s" not in shown and " kB/s" not in shown
    for name in ("a.bin", "b.txt", "c/d.txt", "c/e.txt"):
        assert backend.read("t/" + name) == (site / name).read_bytes()
