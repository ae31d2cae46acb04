"""cloudput's client CPU per small file on S3 (issue 7: the small-file workload).

Uploads N files of 64 KiB (a directory) to a moto server this script starts, and a
single file of the same size to measure start-up, and prints the client's CPU seconds
(user + sys of the cloudput process, from ``os.wait4``) per file:
(CPU of N files - CPU of one file) / (N - 1), so imports and the S3 model are left
out. Not a test: it asserts nothing; the figures go into docs/performance.md.

    .venv/bin/python benchmarks/per_file.py                    # 2,000 files, 3 rounds
    .venv/bin/python benchmarks/per_file.py --files 500 --rounds 5 --extra "--checksum crc32c"
    .venv/bin/python benchmarks/per_file.py --src /tmp/old/src # another checkout's code
    .venv/bin/python benchmarks/per_file.py --answer           # PutObject answered in-process

``--answer`` answers every PutObject inside the cloudput process (answer_puts.py), so
what is measured is cloudput's own work per file plus botocore's request path, without
the socket and with no wait on the server: the steadiest figure on a loaded machine.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.backends import S3Backend  # noqa: E402
from tests.emulators import MotoServer  # noqa: E402

from benchmarks.run import (  # noqa: E402
    compile_sources,
    measure,
    stored,
    tool_environment,
)

FILE_BYTES = 64 * 1024
PYTHON = REPO_ROOT / ".venv" / "bin" / "python"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--extra", default="", help='more upload options, e.g. "--checksum crc32c"'
    )
    parser.add_argument(
        "--answer",
        action="store_true",
        help="answer PutObject in the cloudput process (benchmarks/answer_puts.py)",
    )
    parser.add_argument(
        "--src",
        help="run cloudput from this src/ (e.g. a git worktree of an old commit)",
    )
    return parser.parse_args(argv)


def make_files(folder: Path, count: int) -> None:
    folder.mkdir()
    for index in range(count):
        (folder / f"f{index:05d}.bin").write_bytes(os.urandom(FILE_BYTES))


def run_upload(
    args: argparse.Namespace,
    backend: S3Backend,
    source: Path,
    home: Path,
    expected: int,
) -> float:
    """CPU seconds of one upload of ``source``; exits when the run failed."""
    home.mkdir()
    entry = (
        [str(REPO_ROOT / "benchmarks" / "answer_puts.py")]
        if args.answer
        else ["-m", "cloudput"]
    )
    command = [
        str(PYTHON),
        *entry,
        "upload",
        str(source),
        f"s3://{backend.bucket}/{source.name}/",
        "--quiet",
        *shlex.split(args.extra),
    ]
    env = tool_environment(backend, home)
    if args.src:
        env["PYTHONPATH"] = str(Path(args.src).resolve())
    _, user_s, sys_s, _, code = measure(command, env, home / "out.log")
    count, total = stored(backend)
    if code != 0 or (
        not args.answer and (count, total) != (expected, expected * FILE_BYTES)
    ):
        sys.exit(
            f"FAILED (exit {code}, stored {count} objects, {total} bytes); "
            f"see {home / 'out.log'}"
        )
    return user_s + sys_s


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    compile_sources()
    with (
        tempfile.TemporaryDirectory(prefix="cloudput-per-file-") as tmp,
        MotoServer() as emulator,
    ):
        root = Path(tmp)
        many, one = root / "many", root / "one"
        make_files(many, args.files)
        make_files(one, 1)
        print(
            f"{args.files} x 64 KiB to moto{' (PutObject answered in-process)' if args.answer else ''}"
            f"; load average {os.getloadavg()[0]:.1f}; src {args.src or 'this checkout'}"
        )
        print("round | CPU s, N files | CPU s, 1 file | CPU ms per file")
        per_file: list[float] = []
        for number in range(args.rounds):
            figures = []
            for source, count in ((many, args.files), (one, 1)):
                emulator.reset()
                backend = S3Backend(emulator)
                backend.create_bucket()
                home = root / f"home-{number}-{source.name}"
                figures.append(run_upload(args, backend, source, home, count))
            each_ms = 1000 * (figures[0] - figures[1]) / (args.files - 1)
            per_file.append(each_ms)
            print(
                f"{number + 1:>5} | {figures[0]:>14.2f} | {figures[1]:>13.2f} | {each_ms:>15.2f}"
            )
        print(
            f"median {statistics.median(per_file):.2f} ms per file "
            f"(min {min(per_file):.2f}, max {max(per_file):.2f}); "
            f"load average {os.getloadavg()[0]:.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
