"""Field case BC-32 of ../shared/cases/FIELD_CASES.md: peak memory with many parts in
flight or many files, against CONTRACT.md's promise (peak RSS under (concurrency + 1) x
part size + 100 MiB, whatever the file size or the number of files), on moto.

The figure is the cloudput process's own peak RSS (ru_maxrss), a bound on memory, not
a timing. It is read by a small launcher process that starts cloudput and waits for
it: a child started by pytest itself would report pytest's RSS as its high-water mark,
since Linux carries the parent's into a forked child's ru_maxrss across exec.
Parts up to 64 MiB are read into reused buffers (engine/sources.py PartBuffers), so
those buffers are what the bound has to cover.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.backends import Backend, S3Backend
from tests.helpers import KIB, MIB, CliResult, cloudput_command, process_env

#: Memory the contract allows on top of the parts in flight (CONTRACT.md, "Promises").
BOUND_BASE_BYTES = 100 * MIB
#: Default part size of `cloudput upload` on S3 (docs/cli.md, --part-size).
DEFAULT_PART_BYTES = 8 * MIB
#: How much the peak RSS of a run may differ from one over a tenth of the files.
MANY_FILES_TOLERANCE = 0.20
#: Runs `argv[2:]` as its child, writes that child's peak RSS (KiB, ru_maxrss from
#: wait4) to the file `argv[1]` and exits with the child's exit code. Started fresh
#: (exec), its own RSS is a few MiB, well under any cloudput run's.
LAUNCHER = (
    "import os, sys\n"
    "pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "with open(sys.argv[1], 'w') as out:\n"
    "    out.write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)
#: Seconds a measured run may take before the test fails.
RUN_TIMEOUT_S = 240.0


@dataclass(frozen=True)
class Measured:
    """One cloudput run and its process's peak RSS."""

    result: CliResult
    peak_rss_bytes: int


def measure(args: list[str], env: dict[str, str], report: Path) -> Measured:
    """Run cloudput with `args` (env laid over os.environ) through the launcher;
    `report` is the file the launcher writes the peak RSS to."""
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(report), *cloudput_command(args)],
        env=process_env(env),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    result = CliResult(done.returncode, done.stdout, done.stderr)
    return Measured(result, int(report.read_text()) * KIB)


def bound_bytes(concurrency: int, part_bytes: int) -> int:
    """CONTRACT.md's peak-memory promise for these settings."""
    return (concurrency + 1) * part_bytes + BOUND_BASE_BYTES


def mib(size_bytes: int) -> str:
    return f"{size_bytes / MIB:.0f} MiB"


def streamed_sha256(s3: S3Backend, key: str) -> tuple[int, str]:
    """(size, SHA-256) of an object, read in 8 MiB pieces (never held whole)."""
    body = s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"]
    digest = hashlib.sha256()
    size_bytes = 0
    for chunk in body.iter_chunks(8 * MIB):
        digest.update(chunk)
        size_bytes += len(chunk)
    return size_bytes, digest.hexdigest()


def zeros_sha256(size_bytes: int) -> str:
    digest = hashlib.sha256()
    block = bytes(8 * MIB)
    for start in range(0, size_bytes, len(block)):
        digest.update(block[: min(len(block), size_bytes - start)])
    return digest.hexdigest()


# -- (a) many large parts in flight -------------------------------------------------

#: BC-32 (a) asks for a 2 GiB sparse file, 64 MiB parts, --concurrency 16 (bound
#: 1,188 MiB); scaled down so the test takes seconds: 512 MiB, 32 MiB parts, 8 in
#: flight (16 parts, so every slot is used twice), bound 388 MiB.
SPARSE_FILE_BYTES = 512 * MIB
SPARSE_PART_BYTES = 32 * MIB
SPARSE_CONCURRENCY = 8


@pytest.mark.heavy
def test_bc32_a_peak_rss_of_a_large_sparse_file_stays_within_the_bound(
    s3: S3Backend, tmp_path: Path
) -> None:
    """BC-32 (a), scaled down (the case: 2 GiB sparse, --part-size 64MiB
    --concurrency 16): 512 MiB sparse, 32 MiB parts, 8 in flight. The cloudput
    process's peak RSS is at most (8 + 1) x 32 MiB + 100 MiB = 388 MiB; exit 0 and
    [OBJ] (size and SHA-256 read back from moto)."""
    source = tmp_path / "sparse.bin"
    source.touch()
    os.truncate(source, SPARSE_FILE_BYTES)  # a hole: no disk blocks, reads as zeros
    args = ["upload", str(source), s3.uri("sparse.bin"), "--quiet",
            "--part-size", str(SPARSE_PART_BYTES),
            "--concurrency", str(SPARSE_CONCURRENCY)]  # fmt: skip

    run = measure(args, s3.env, tmp_path / "rss.txt")

    bound = bound_bytes(SPARSE_CONCURRENCY, SPARSE_PART_BYTES)
    assert run.result.code == 0, run.result.stdout + run.result.stderr
    assert run.peak_rss_bytes <= bound, (
        f"peak RSS {mib(run.peak_rss_bytes)} over the bound {mib(bound)}"
    )
    stored = streamed_sha256(s3, "sparse.bin")
    assert stored == (SPARSE_FILE_BYTES, zeros_sha256(SPARSE_FILE_BYTES))


# -- (b) many files -----------------------------------------------------------------

#: BC-32 (b) asks for 5,000 files of 1 MiB against 500, --concurrency 16; scaled down
#: to 2,000 files of 64 KiB against 200 (the same tenfold step), --concurrency 16.
FEW_FILES = 200
MANY_FILES = 2_000
SMALL_FILE_BYTES = 64 * KIB
MANY_FILES_CONCURRENCY = 16


def small_tree(root: Path, count: int) -> Path:
    """`count` files of SMALL_FILE_BYTES in 100-file folders; each file's bytes name
    it, so a sample can be checked after the upload."""
    for index in range(count):
        path = root / f"d{index // 100:03d}" / f"f{index:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(file_bytes(index))
    return root


def file_bytes(index: int) -> bytes:
    seed = hashlib.sha256(str(index).encode()).digest()
    return (seed * (SMALL_FILE_BYTES // len(seed) + 1))[:SMALL_FILE_BYTES]


def upload_tree(s3: Backend, tmp_path: Path, count: int, prefix: str) -> Measured:
    """Upload a fresh tree of `count` files under `prefix`, with its own journal."""
    tree = small_tree(tmp_path / prefix, count)
    env = {**s3.env, "CLOUDPUT_JOURNAL": str(tmp_path / f"{prefix}.sqlite3")}
    args = ["upload", str(tree), s3.uri(f"{prefix}/"), "--quiet",
            "--concurrency", str(MANY_FILES_CONCURRENCY)]  # fmt: skip
    return measure(args, env, tmp_path / f"{prefix}-rss.txt")


@pytest.mark.heavy
def test_bc32_b_peak_rss_does_not_grow_with_the_number_of_files(
    s3: Backend, tmp_path: Path
) -> None:
    """BC-32 (b), scaled down (the case: 5,000 files of 1 MiB against 500): the peak
    RSS of a run over 2,000 files of 64 KiB (125 MiB in all) is within 20% of a run
    over 200 such files (memory grows neither with the files nor with the bytes sent),
    both runs are under the contract's bound at --concurrency 16 and the default 8 MiB
    part size, exit 0, every key is there and a sample of objects reads back as its
    file ([OBJ])."""
    few = upload_tree(s3, tmp_path, FEW_FILES, "few")
    many = upload_tree(s3, tmp_path, MANY_FILES, "many")

    assert few.result.code == 0, few.result.stdout[-2000:] + few.result.stderr
    assert many.result.code == 0, many.result.stdout[-2000:] + many.result.stderr
    low, high = sorted((few.peak_rss_bytes, many.peak_rss_bytes))
    assert high - low <= MANY_FILES_TOLERANCE * low, (
        f"peak RSS {mib(few.peak_rss_bytes)} for {FEW_FILES} files, "
        f"{mib(many.peak_rss_bytes)} for {MANY_FILES}"
    )
    assert high <= bound_bytes(MANY_FILES_CONCURRENCY, DEFAULT_PART_BYTES)
    keys = s3.keys()
    assert sum(key.startswith("many/") for key in keys) == MANY_FILES
    assert sum(key.startswith("few/") for key in keys) == FEW_FILES
    for index in (0, 999, MANY_FILES - 1):
        key = f"many/d{index // 100:03d}/f{index:05d}.bin"
        assert s3.read(key) == file_bytes(index)
