"""cloudput's start-up cost: instructions and CPU of one small upload to S3 (issue 7).

Uploads one file (1 byte unless --bytes) to a moto server this script starts, once to
warm the bytecode and create the journal, then measures the next upload of each source
tree two ways:

- instructions the cloudput process executed, counted by valgrind's callgrind: the
  same count run after run whatever else the machine is doing, so two trees (or two
  library versions) compare exactly on a loaded machine;
- CPU seconds (user + sys, ``os.wait4``), median of --rounds runs interleaved between
  the trees: what a user pays, but noisy under load.

Not a test: it asserts nothing; the figures go into docs/performance.md ("Start-up").

    .venv/bin/python benchmarks/startup.py                       # this checkout
    .venv/bin/python benchmarks/startup.py --src /tmp/old/src --src src
    .venv/bin/python benchmarks/startup.py --src src --src src:/tmp/typer-0.29
    .venv/bin/python benchmarks/startup.py --bytes 268435456 --extra "--checksum crc32c"

Each --src is put first on PYTHONPATH (``a:b`` puts both), so an old commit's
``src`` (``git worktree add``) or a folder of other library versions
(``pip install --no-deps --target DIR typer==0.29.2``) is what the upload imports.
Needs valgrind (Debian package ``valgrind``) for the instruction counts; without it,
only CPU seconds are printed.
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.backends import S3Backend  # noqa: E402
from tests.emulators import MotoServer  # noqa: E402

from benchmarks.run import compile_sources, measure, tool_environment  # noqa: E402

PYTHON = REPO_ROOT / ".venv" / "bin" / "python"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--src",
        action="append",
        help="put this first on PYTHONPATH (repeat to compare; default: this checkout)",
    )
    parser.add_argument("--bytes", type=int, default=1, help="size of the file")
    parser.add_argument("--rounds", type=int, default=11, help="CPU-second runs")
    parser.add_argument(
        "--extra", default="", help='more upload options, e.g. "--checksum crc32c"'
    )
    parser.add_argument(
        "--no-count", action="store_true", help="CPU seconds only, no callgrind run"
    )
    return parser.parse_args(argv)


def upload_command(source: Path, key: str, extra: str, bucket: str) -> list[str]:
    return [
        str(PYTHON),
        "-m",
        "cloudput",
        "upload",
        str(source),
        f"s3://{bucket}/{key}",
        "--quiet",
        *shlex.split(extra),
    ]


def instructions(command: list[str], env: dict[str, str]) -> int:
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
        env=env,
        capture_output=True,
        text=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        sys.exit(
            f"FAILED under callgrind (exit {done.returncode}): {done.stderr[-400:]}"
        )
    return int(found.group(1))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    trees = args.src or [str(REPO_ROOT / "src")]
    paths = {
        tree: ":".join(str(Path(part).resolve()) for part in tree.split(":"))
        for tree in trees
    }
    compile_sources()
    for path in paths.values():
        for part in path.split(":"):
            compileall.compile_dir(part, quiet=1)
    with (
        tempfile.TemporaryDirectory(prefix="cloudput-startup-") as tmp,
        MotoServer() as emulator,
    ):
        root = Path(tmp)
        source = root / "file.bin"
        source.write_bytes(os.urandom(args.bytes))
        backend = S3Backend(emulator)
        backend.create_bucket()
        envs = {}
        for number, tree in enumerate(trees):
            home = root / f"home-{number}"
            home.mkdir()
            env = tool_environment(backend, home)
            env["PYTHONPATH"] = paths[tree]
            envs[tree] = env
            warm = upload_command(source, f"warm-{number}", args.extra, backend.bucket)
            _, _, _, _, code = measure(warm, env, home / "out.log")
            if code != 0:
                sys.exit(f"FAILED (exit {code}): see {home / 'out.log'}")
        print(
            f"one {args.bytes}-byte upload to moto {args.extra}; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        if shutil.which("valgrind") and not args.no_count:
            for tree in trees:
                command = upload_command(source, "counted", args.extra, backend.bucket)
                count = instructions(command, envs[tree])
                print(f"{tree}: {count / 1e6:,.0f} M instructions")
        cpu: dict[str, list[float]] = {tree: [] for tree in trees}
        for number in range(args.rounds):
            order = trees if number % 2 == 0 else trees[::-1]
            for tree in order:
                home = Path(envs[tree]["HOME"])
                command = upload_command(
                    source, f"r{number}", args.extra, backend.bucket
                )
                _, user_s, sys_s, _, code = measure(
                    command, envs[tree], home / "out.log"
                )
                if code != 0:
                    sys.exit(f"FAILED (exit {code}): see {home / 'out.log'}")
                cpu[tree].append(user_s + sys_s)
        for tree, values in cpu.items():
            print(
                f"{tree}: CPU median {statistics.median(values):.3f} s "
                f"(min {min(values):.3f}, max {max(values):.3f}, {len(values)} runs)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
