"""Peak memory of `cloudput upload` against the promised bound (CONTRACT.md, "Promises").

The promise: peak RSS under (concurrency + 1) x part size + 100 MiB. This uploads one
file to moto at several concurrencies with a fixed part size and prints the client's
peak RSS (its VmHWM, polled while it runs) next to the bound. Not a test: it asserts
nothing; the figures go into docs/performance.md.

    .venv/bin/python benchmarks/memory.py                      # 256 MiB, 8 MiB parts
    .venv/bin/python benchmarks/memory.py --concurrency 1,8,16 --part-mib 8 --rounds 2
    .venv/bin/python benchmarks/memory.py --src /tmp/old/src   # another checkout's code
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.backends import S3Backend  # noqa: E402
from tests.emulators import MotoServer  # noqa: E402

from benchmarks.run import (  # noqa: E402
    MIB,
    compile_sources,
    make_file,
    measure,
    stored,
    tool_environment,
)

#: The fixed allowance on top of the part buffers (CONTRACT.md, "Promises").
BOUND_BASE_MIB = 100


def bound_mib(concurrency: int, part_mib: int) -> int:
    return (concurrency + 1) * part_mib + BOUND_BASE_MIB


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file-mib", type=int, default=256)
    parser.add_argument("--part-mib", type=int, default=8)
    parser.add_argument("--concurrency", default="1,8,16")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--src",
        help="run cloudput from this src/ (e.g. a git worktree of an old commit)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    levels = [int(value) for value in args.concurrency.split(",") if value]
    emulator = MotoServer()
    compile_sources()
    with tempfile.TemporaryDirectory(prefix="cloudput-memory-") as tmp:
        root = Path(tmp)
        source = root / "big.bin"
        make_file(source, args.file_mib * MIB)
        emulator.start()
        try:
            print(
                f"{args.file_mib} MiB to moto, {args.part_mib} MiB parts; "
                "peak RSS (VmHWM) of the cloudput process"
            )
            print("concurrency | peak RSS MiB | bound MiB | within | client CPU s")
            for concurrency in levels:
                for round_number in range(args.rounds):
                    emulator.reset()
                    backend = S3Backend(emulator)
                    backend.create_bucket()
                    home = root / f"home-{concurrency}-{round_number}"
                    home.mkdir()
                    command = [
                        str(REPO_ROOT / ".venv" / "bin" / "python"),
                        "-m",
                        "cloudput",
                        "upload",
                        str(source),
                        f"s3://{backend.bucket}/big.bin",
                        "--quiet",
                        "--concurrency",
                        str(concurrency),
                        "--part-size",
                        f"{args.part_mib}MiB",
                    ]
                    env = tool_environment(backend, home)
                    if args.src:
                        env["PYTHONPATH"] = str(Path(args.src).resolve())
                    _, user_s, sys_s, peak_mib, code = measure(
                        command, env, home / "out.log"
                    )
                    count, total = stored(backend)
                    if code != 0 or (count, total) != (1, args.file_mib * MIB):
                        print(
                            f"{concurrency}: FAILED (exit {code}, stored {count} "
                            f"objects, {total} bytes); see {home / 'out.log'}"
                        )
                        return 1
                    limit = bound_mib(concurrency, args.part_mib)
                    verdict = "yes" if peak_mib < limit else "NO"
                    print(
                        f"{concurrency:>11} | {peak_mib:>12.0f} | {limit:>9} | "
                        f"{verdict:>6} | {user_s + sys_s:>12.2f}"
                    )
        finally:
            emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
