"""cloudput's engine alone, per small file: no CLI, no SDK, no server.

Runs ``Engine.upload`` in this process over N files of 64 KiB with a provider that
confirms every single request at once (it sends nothing), a real journal in a temp
dir, and prints the CPU seconds per file: the journal, the holds and key locks, the
stats and reads of the source, the MD5 (the default checksum on a custom endpoint),
the retry policy and the record objects. What botocore adds per PutObject is not in
it (see per_file.py --answer). Not a test: it asserts nothing.

    .venv/bin/python benchmarks/engine_per_file.py                  # 1,000 files, 5 rounds
    .venv/bin/python benchmarks/engine_per_file.py --src /tmp/old/src
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FILE_BYTES = 64 * 1024


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument(
        "--src", help="import cloudput from this src/ (e.g. an old commit's)"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.src:
        sys.path.insert(0, str(Path(args.src).resolve()))
    from cloudput.engine.runner import Engine, ProviderPool, TransferOptions
    from cloudput.engine.sources import SourceSet
    from cloudput.journal import Journal
    from cloudput.keys import parse_target
    from cloudput.providers.base import RemoteObject, Verified
    from cloudput.providers.s3 import S3_LIMITS

    class Confirming:
        """A provider that confirms each single request at once (sends nothing)."""

        limits = S3_LIMITS

        def storage_url(self, target: Any) -> str:
            return f"http://127.0.0.1:9/{target.bucket}/{target.key}"

        def put_single(self, spec: Any, body: Any, digest: Any) -> Any:
            remote = RemoteObject(size_bytes=body.size_bytes)
            return Verified(remote, digest.algorithm, digest.value_b64, "md5")

        def close(self) -> None:
            pass

    with tempfile.TemporaryDirectory(prefix="cloudput-engine-") as tmp:
        folder = Path(tmp) / "files"
        folder.mkdir()
        for index in range(args.files):
            (folder / f"f{index:05d}.bin").write_bytes(os.urandom(FILE_BYTES))
        print(
            f"{args.files} x 64 KiB, engine only, --concurrency {args.concurrency}; "
            f"src {args.src or 'this checkout'}"
        )
        per_file: list[float] = []
        for number in range(args.rounds):
            journal = Journal.open(Path(tmp) / f"journal-{number}.sqlite3")
            pool = ProviderPool(lambda *_: Confirming())
            options = TransferOptions(
                concurrency=args.concurrency, endpoint_url="http://127.0.0.1:9"
            )
            engine = Engine(journal, pool, options)
            jobs = list(SourceSet([str(folder)], parse_target("s3://b/p/")).jobs())
            started = time.process_time()
            outcomes = list(engine.upload(jobs))
            spent_s = time.process_time() - started
            engine.close()
            journal.close()
            if any(outcome.status != "completed" for outcome in outcomes):
                sys.exit(
                    f"FAILED: {[o for o in outcomes if o.status != 'completed'][:1]}"
                )
            per_file.append(1000 * spent_s / args.files)
            print(f"round {number + 1}: {per_file[-1]:.2f} ms per file")
        print(
            f"median {statistics.median(per_file):.2f} ms per file "
            f"(min {min(per_file):.2f}); load average {os.getloadavg()[0]:.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
