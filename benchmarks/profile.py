"""Profile one cloudput upload to moto with py-spy: a flame graph plus a text summary.

`.venv/bin/python benchmarks/profile.py [--mib 1024] [--extra "--part-size 16MiB"]`
writes benchmarks/results/profile-s3.svg (flame graph) and profile-s3.txt (the
functions with the most samples, inclusive and own). The data lives in a temp dir.
"""

from __future__ import annotations

import argparse
import collections
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.backends import S3Backend  # noqa: E402
from tests.emulators import MotoServer  # noqa: E402

from benchmarks.run import MIB, REPO_ROOT, RESULTS_DIR, make_file, tool_environment  # noqa: E402

PY_SPY = REPO_ROOT / ".venv" / "bin" / "py-spy"
#: Sampling rate (per second) of py-spy.
RATE_HZ = 100
#: Functions listed in the text summary.
TOP = 30


def summarise(raw: Path) -> str:
    """Inclusive and own sample counts per function from py-spy's collapsed stacks."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [
            f.split(" (")[0] + " " + f.split("/")[-1].rstrip(")")
            for f in stack.split(";")
        ]
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    lines = [f"samples: {total} at {RATE_HZ} Hz (all threads)", "", "inclusive:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(TOP)]
    lines += ["", "own:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(TOP)]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument(
        "--files", type=int, default=0, help="N files of 64 KiB instead"
    )
    parser.add_argument("--extra", default="")
    parser.add_argument("--label", default="profile-s3")
    parser.add_argument("--idle", action="store_true", help="include idle threads")
    args = parser.parse_args(argv)
    RESULTS_DIR.mkdir(exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="cloudput-profile-") as tmp,
        MotoServer() as moto,
    ):
        root = Path(tmp)
        source = root / "big.bin"
        if args.files:
            source = root / "small"
            source.mkdir()
            for index in range(args.files):
                (source / f"f{index:05d}.bin").write_bytes(os.urandom(64 * 1024))
        else:
            make_file(source, args.mib * MIB)
        backend = S3Backend(moto)
        backend.create_bucket()
        env = tool_environment(backend, root)
        command = [
            str(REPO_ROOT / ".venv" / "bin" / "cloudput"),
            "upload",
            str(source),
            f"s3://{backend.bucket}/big.bin",
            "--quiet",
            *shlex.split(args.extra),
        ]
        for fmt, out in (
            ("flamegraph", f"{args.label}.svg"),
            ("raw", f"{args.label}.raw"),
        ):
            spy = [
                str(PY_SPY),
                "record",
                "--rate",
                str(RATE_HZ),
                "--format",
                fmt,
                "-o",
                str(RESULTS_DIR / out),
                "--subprocesses",
                "--nonblocking",
            ]
            if args.idle:
                spy.append("--idle")
            subprocess.run([*spy, "--", *command], env=env, check=True)
            moto.reset()
            backend.create_bucket()
    raw = RESULTS_DIR / f"{args.label}.raw"
    (RESULTS_DIR / f"{args.label}.txt").write_text(summarise(raw))
    raw.unlink()
    print((RESULTS_DIR / f"{args.label}.txt").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
