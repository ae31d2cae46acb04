"""The main job, for real, against local emulators (run through scripts/demo.sh).

For each provider: upload a directory (one large file, several small ones), SIGKILL the
upload of the large file part-way, `cloudput resume --all`, then read every object back
and compare SHA-256 with the file. Exits non-zero if anything differs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.backends import AzureBackend, GcsBackend, S3Backend  # noqa: E402
from tests.emulators import Azurite, GcsEmulator, MotoServer  # noqa: E402

CONCURRENCY = 4
KILL_AFTER_PARTS = 6
SMALL_FILES = {
    "README.txt": 1_200,
    "config/app.json": 5_000,
    "img/logo.png": 120_000,
    "img/empty.gif": 0,
    "notes/2026/december.md": 70_000,
}


def make_data(root: Path, big_mib: int) -> dict[str, Path]:
    """The directory to upload: one large random file and several small ones."""
    if root.exists():
        shutil.rmtree(root)
    files = {"big/dataset.bin": big_mib * 1024 * 1024, **SMALL_FILES}
    paths = {}
    for relative, size in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            for _ in range(size // (8 << 20)):
                handle.write(os.urandom(8 << 20))
            handle.write(os.urandom(size % (8 << 20)))
        paths[relative] = path
    return paths


def cloudput(args: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cloudput", *args], env=env, **kwargs
    )


def journal_parts(journal: Path) -> tuple[str | None, int]:
    """The in-flight upload of the large file and how many parts it has checkpointed."""
    if not journal.exists():
        return None, 0
    try:
        with sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1) as db:
            row = db.execute(
                "SELECT id FROM uploads WHERE name = 'dataset.bin' "
                "AND status = 'in_progress'"
            ).fetchone()
            if row is None:
                return None, 0
            count = db.execute(
                "SELECT count(*) FROM parts WHERE upload_id = ?", row
            ).fetchone()
            return row[0], count[0]
    except sqlite3.Error:
        return None, 0


def run_provider(
    name: str, emulator, data: Path, files: dict[str, Path], work: Path
) -> bool:
    backend = {"s3": S3Backend, "gcs": GcsBackend, "azure": AzureBackend}[name](
        emulator
    )
    backend.create_bucket()
    journal = work / f"{name}.journal.db"
    env = {**os.environ, **backend.env, "CLOUDPUT_JOURNAL": str(journal)}
    target = backend.uri("demo/")
    print(
        f"\n== {name}: cloudput upload {data} {target} --concurrency {CONCURRENCY}",
        flush=True,
    )
    first = cloudput(
        ["upload", str(data), target, "--concurrency", str(CONCURRENCY)], env
    )
    upload_id, held = None, 0
    deadline = time.monotonic() + 300
    while (
        first.poll() is None and held < KILL_AFTER_PARTS and time.monotonic() < deadline
    ):
        upload_id, held = journal_parts(journal)
        time.sleep(0.02)
    if first.poll() is not None:
        print(
            f"   the upload finished before it could be killed (exit {first.returncode})"
        )
        return False
    first.send_signal(signal.SIGKILL)
    first.wait()
    print(
        f"== {name}: SIGKILLed upload {upload_id} after {held} parts were checkpointed"
    )
    print(f"== {name}: cloudput resume --all -v", flush=True)
    resumed = cloudput(["resume", "--all", "-v"], env)
    if resumed.wait() != 0:
        print(f"   resume failed with exit {resumed.returncode}")
        return False
    return verify(name, backend, files, "demo/")


def verify(name: str, backend, files: dict[str, Path], prefix: str) -> bool:
    ok = True
    for relative, path in files.items():
        remote = backend.read(prefix + relative)
        local = hashlib.sha256(path.read_bytes()).hexdigest()
        same = remote is not None and hashlib.sha256(remote).hexdigest() == local
        ok &= same
        print(
            f"   {'identical' if same else 'DIFFERENT'}  {prefix + relative} "
            f"({path.stat().st_size:,} bytes, sha256 {local[:16]}...)"
        )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--big-mib", type=int, default=300, help="size of the large file"
    )
    parser.add_argument("--providers", default="s3,gcs,azure")
    args = parser.parse_args()
    work = REPO / "demo-work"
    work.mkdir(exist_ok=True)
    for journal in work.glob("*.journal.db*"):
        shutil.rmtree(journal) if journal.is_dir() else journal.unlink()
    data = work / "data"
    files = make_data(data, args.big_mib)
    emulators = {"s3": MotoServer, "gcs": GcsEmulator, "azure": Azurite}
    results = {}
    for name in args.providers.split(","):
        with emulators[name]() as emulator:
            results[name] = run_provider(name, emulator, data, files, work)
    print(
        "\n"
        + "\n".join(
            f"{name}: {'all objects identical' if ok else 'FAILED'}"
            for name, ok in results.items()
        )
    )
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
