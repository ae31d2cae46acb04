"""Benchmark harness: cloudput against the tools users would otherwise pick, side by side.

Starts moto, the GCS emulator and Azurite, makes the data in a temporary directory, runs
every tool in turn on the same server for several rounds (the order rotates each round),
and writes JSON, a markdown table and PNG plots to benchmarks/results/. Each run is one
child process measured with os.wait4 (its own CPU and peak RSS, children included).
Not a test: nothing here asserts a speed. Run it with `bash benchmarks/run.sh`.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.backends import (  # noqa: E402
    DUMMY_AWS_ENV,
    GCS_TEST_PROJECT,
    AzureBackend,
    Backend,
    GcsBackend,
    S3Backend,
)
from tests.emulators import (  # noqa: E402
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    Azurite,
    Emulator,
    GcsEmulator,
    MotoServer,
)

MIB = 1024 * 1024
GIB = 1024 * MIB
RESULTS_DIR = Path(__file__).resolve().parent / "results"
PEERS_SCRIPT = Path(__file__).resolve().parent / "peers.py"
#: A run that takes longer than this is killed and recorded as failed.
RUN_TIMEOUT_S = 900.0
#: The part-size by concurrency sweep for cloudput on S3 (issue 7).
SWEEP_PART_MIB = (5, 8, 16, 32, 64)
SWEEP_CONCURRENCY = (1, 2, 4, 8, 16)
#: How often the client's peak RSS (VmHWM) is read while it runs.
#: The engine's DEBUG line for each part sent (src/cloudput/engine/runner.py).
#: How often the client's peak RSS (VmHWM) is read while it runs.
RSS_POLL_S = 0.005
PART_LINE = re.compile(r"upload \S+ part \d+: (\d+) bytes in ([0-9.]+)s")


@dataclass(frozen=True)
class Workload:
    """What is uploaded: one big file or many small ones."""

    name: str
    files: int
    file_size_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.files * self.file_size_bytes


@dataclass
class Run:
    """One measured run of one tool."""

    provider: str
    workload: str
    tool: str
    round: int
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mib: float
    exit_code: int
    total_bytes: int
    verified: bool
    part_latencies_s: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


@dataclass
class Context:
    """Everything a tool's command line needs for one run."""

    backend: Backend
    source: Path
    key: str  # the object key, or a prefix ending in "/" for a directory
    env: dict[str, str]
    scratch: Path
    tools_bin: Path

    @property
    def is_dir(self) -> bool:
        return self.source.is_dir()


# -- measuring one child process -------------------------------------------------------


def peak_rss_kib(pid: int) -> int | None:
    """VmHWM of a running process (its own peak RSS since exec), or None once gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def measure(
    command: list[str], env: dict[str, str], log: Path
) -> tuple[float, float, float, float, int]:
    """Run `command`; return wall s, user s, sys s, peak RSS MiB and the exit code.

    CPU comes from os.wait4 (the child and the children it waited for). Peak RSS is
    the child's VmHWM polled every few ms: wait4's ru_maxrss would report this
    harness's own RSS, which a forked child inherits as its high-water mark.
    """
    with log.open("wb") as out:
        started = time.monotonic()
        process = subprocess.Popen(
            command,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = started + RUN_TIMEOUT_S
        peak_kib = 0
        while True:
            current = peak_rss_kib(process.pid)
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            peak_kib = max(peak_kib, current or 0)
            if time.monotonic() > deadline:
                process.kill()
            time.sleep(RSS_POLL_S)
        wall_s = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return wall_s, usage.ru_utime, usage.ru_stime, peak_kib / 1024.0, process.returncode


def part_latencies(log_file: Path) -> list[float]:
    """Seconds per part from cloudput's --log-file DEBUG lines."""
    if not log_file.exists():
        return []
    text = log_file.read_text(errors="replace")
    return [float(match.group(2)) for match in PART_LINE.finditer(text)]


# -- the tools -------------------------------------------------------------------------


def cloudput_command(ctx: Context, extra: list[str] | None = None) -> list[str]:
    scheme = ctx.backend.scheme
    target = f"{scheme}://{ctx.backend.bucket}/{ctx.key}"
    return [
        str(REPO_ROOT / ".venv" / "bin" / "cloudput"),
        "upload",
        str(ctx.source),
        target,
        "--quiet",
        "--log-file",
        str(ctx.scratch / "cloudput.log"),
        *(extra or []),
    ]


def peer_command(tool: str) -> Callable[[Context], list[str]]:
    def build(ctx: Context) -> list[str]:
        return [
            sys.executable,
            str(PEERS_SCRIPT),
            tool,
            str(ctx.source),
            ctx.backend.bucket,
            ctx.key,
        ]

    return build


def aws_command(ctx: Context) -> list[str]:
    target = f"s3://{ctx.backend.bucket}/{ctx.key}"
    command = [str(ctx.tools_bin / "aws"), "s3", "cp", str(ctx.source), target]
    if ctx.is_dir:
        command.append("--recursive")
    return [*command, "--only-show-errors", "--endpoint-url", ctx.backend.endpoint]


def s5cmd_command(ctx: Context) -> list[str]:
    source = f"{ctx.source}/*" if ctx.is_dir else str(ctx.source)
    target = f"s3://{ctx.backend.bucket}/{ctx.key}"
    return [
        str(ctx.tools_bin / "s5cmd"),
        "--endpoint-url",
        ctx.backend.endpoint,
        "cp",
        source,
        target,
    ]


def rclone_command(remote: str) -> Callable[[Context], list[str]]:
    def build(ctx: Context) -> list[str]:
        verb = "copy" if ctx.is_dir else "copyto"
        bucket_path = f"{ctx.backend.bucket}/{ctx.key}".rstrip("/")
        return ["rclone", verb, str(ctx.source), f"{remote}:{bucket_path}", "-q"]

    return build


def curl_urls(ctx: Context) -> list[tuple[Path, str]]:
    """(file, URL) pairs for a single PUT/POST of each file, no client-side signing."""
    from tests.backends import AzureBackend

    pairs = []
    files = (
        sorted(p for p in ctx.source.rglob("*") if p.is_file())
        if ctx.is_dir
        else [ctx.source]
    )
    for path in files:
        key = (
            ctx.key + path.relative_to(ctx.source).as_posix() if ctx.is_dir else ctx.key
        )
        if isinstance(ctx.backend, S3Backend):
            url = f"{ctx.backend.endpoint}/{ctx.backend.bucket}/{key}"
        elif isinstance(ctx.backend, AzureBackend):
            url = (
                f"{ctx.backend.endpoint}/{AZURITE_ACCOUNT}/{ctx.backend.bucket}/{key}"
                f"?{ctx.env['BENCH_AZURE_SAS']}"
            )
        else:
            url = (
                f"{ctx.backend.endpoint}/upload/storage/v1/b/{ctx.backend.bucket}/o"
                f"?uploadType=media&name={key}"
            )
        pairs.append((path, url))
    return pairs


def curl_command(ctx: Context) -> list[str]:
    """One curl process; a directory goes as a config file of uploads, 8 in parallel."""
    headers: list[str] = []
    method: list[str] = []
    if isinstance(ctx.backend, AzureBackend):
        headers = ["-H", "x-ms-blob-type: BlockBlob"]
    elif isinstance(ctx.backend, GcsBackend):
        method = ["-X", "POST"]
        headers = ["-H", "Content-Type: application/octet-stream"]
    pairs = curl_urls(ctx)
    # No "Expect: 100-continue": the GCS emulator never answers it (curl waits 1 s).
    base = ["curl", "-sS", "-f", "-o", "/dev/null", "-H", "Expect:", *method, *headers]
    if len(pairs) == 1:
        return [*base, "-T", str(pairs[0][0]), pairs[0][1]]
    config = ctx.scratch / "curl.conf"
    lines = []
    for path, url in pairs:
        lines.append(f'upload-file = "{path}"')
        lines.append(f'url = "{url}"')
        lines.append('output = "/dev/null"')
    config.write_text("\n".join(lines) + "\n")
    return [*base, "--parallel", "--parallel-max", "8", "-K", str(config)]


ToolTable = dict[str, Callable[[Context], list[str]]]


def cloudput_crc32c_command(ctx: Context) -> list[str]:
    """cloudput as it runs against AWS itself, where --checksum auto is crc32c; moto
    is a custom endpoint, where auto means md5 (docs/providers/s3.md)."""
    return cloudput_command(ctx, ["--checksum", "crc32c"])


S3_TOOLS: ToolTable = {
    "cloudput": cloudput_command,
    "cloudput-crc32c": cloudput_crc32c_command,
    "aws-cli": aws_command,
    "s5cmd": s5cmd_command,
    "rclone": rclone_command("bs3"),
    "boto3": peer_command("boto3"),
    "curl": curl_command,
}
AZURE_TOOLS: ToolTable = {
    "cloudput": cloudput_command,
    "azure-sdk": peer_command("azure-sdk"),
    "rclone": rclone_command("baz"),
    "curl": curl_command,
}
GCS_TOOLS: ToolTable = {
    "cloudput": cloudput_command,
    "gcs-sdk": peer_command("gcs-sdk"),
    "curl": curl_command,
}
#: Tools that are a ceiling (one request per file, no checksums), not a peer.
CEILINGS = {"curl"}


# -- providers -------------------------------------------------------------------------


def container_sas(backend: AzureBackend) -> str:
    """A container SAS for the dev account (rclone and curl need one)."""
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    return generate_container_sas(
        AZURITE_ACCOUNT,
        backend.bucket,
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(
            read=True, write=True, create=True, list=True, delete=True, add=True
        ),
        expiry=datetime.now(timezone.utc) + timedelta(hours=6),
    )


def tool_environment(backend: Backend, home: Path) -> dict[str, str]:
    """The environment every tool gets: the emulator's endpoint, dummy credentials."""
    base = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "AZURE_", "GOOGLE_", "CLOUDPUT_", "RCLONE_"))
        # PYTHONDONTWRITEBYTECODE: with it, Python still reads the .pyc files that pip
        # wrote for the peers, but an editable cloudput (and benchmarks/peers.py) would
        # be compiled from source on every run; compile_sources() writes theirs.
        and name not in ("STORAGE_EMULATOR_HOST", "PYTHONDONTWRITEBYTECODE")
    }
    env = {
        **base,
        **backend.env,
        "HOME": str(home),
        "CLOUDPUT_JOURNAL": str(home / "j.db"),
    }
    if isinstance(backend, S3Backend):
        env.update(
            RCLONE_CONFIG_BS3_TYPE="s3",
            RCLONE_CONFIG_BS3_PROVIDER="Other",
            RCLONE_CONFIG_BS3_ACCESS_KEY_ID=DUMMY_AWS_ENV["AWS_ACCESS_KEY_ID"],
            RCLONE_CONFIG_BS3_SECRET_ACCESS_KEY=DUMMY_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            RCLONE_CONFIG_BS3_ENDPOINT=backend.endpoint,
            RCLONE_CONFIG_BS3_REGION=DUMMY_AWS_ENV["AWS_DEFAULT_REGION"],
            RCLONE_CONFIG_BS3_NO_CHECK_BUCKET="true",
        )
    if isinstance(backend, AzureBackend):
        sas = container_sas(backend)
        env["BENCH_AZURE_SAS"] = sas
        env.update(
            RCLONE_CONFIG_BAZ_TYPE="azureblob",
            RCLONE_CONFIG_BAZ_SAS_URL=(
                f"{backend.endpoint}/{AZURITE_ACCOUNT}/{backend.bucket}?{sas}"
            ),
        )
    if isinstance(backend, GcsBackend):
        env["GOOGLE_CLOUD_PROJECT"] = GCS_TEST_PROJECT
    return env


def stored(backend: Backend) -> tuple[int, int]:
    """(objects, bytes) in the backend's bucket."""
    if isinstance(backend, S3Backend):
        count = total = 0
        for page in backend.client.get_paginator("list_objects_v2").paginate(
            Bucket=backend.bucket
        ):
            for item in page.get("Contents", []):
                count += 1
                total += int(item["Size"])
        return count, total
    if isinstance(backend, GcsBackend):
        blobs = list(backend.client.list_blobs(backend.bucket))
        return len(blobs), sum(int(b.size or 0) for b in blobs)
    assert isinstance(backend, AzureBackend)
    container = backend.client.get_container_client(backend.bucket)
    blobs = list(container.list_blobs())
    return len(blobs), sum(int(b.size or 0) for b in blobs)


@dataclass
class Provider:
    name: str
    emulator: Emulator
    backend_class: type[Backend]
    tools: ToolTable

    def fresh_backend(self) -> Backend:
        """Drop everything on the server and make one empty bucket."""
        self.emulator.reset()
        backend = self.backend_class(self.emulator)
        backend.create_bucket()
        return backend


# -- data ------------------------------------------------------------------------------


def compile_sources() -> None:
    """Write the .pyc files an installed cloudput has, so no run pays to compile it.

    pip compiles a package it installs from a wheel; an editable install (this
    checkout) is compiled on first import, and not at all where the caller sets
    PYTHONDONTWRITEBYTECODE. Each tool run would then add ~0.12 s of compile CPU.
    """
    for folder in (REPO_ROOT / "src" / "cloudput", REPO_ROOT / "benchmarks"):
        compileall.compile_dir(folder, quiet=1)


def make_file(path: Path, size_bytes: int) -> None:
    """Incompressible random bytes, written 4 MiB at a time."""
    with path.open("wb") as out:
        left = size_bytes
        while left > 0:
            out.write(os.urandom(min(left, 4 * MIB)))
            left -= min(left, 4 * MIB)


def make_data(root: Path, workloads: list[Workload]) -> dict[str, Path]:
    sources: dict[str, Path] = {}
    for workload in workloads:
        if workload.files == 1:
            path = root / f"{workload.name}.bin"
            make_file(path, workload.file_size_bytes)
        else:
            path = root / workload.name
            path.mkdir()
            for index in range(workload.files):
                (path / f"f{index:05d}.bin").write_bytes(
                    os.urandom(workload.file_size_bytes)
                )
        sources[workload.name] = path
    return sources


# -- running ---------------------------------------------------------------------------


def run_once(
    provider: Provider,
    tool: str,
    workload: Workload,
    source: Path,
    round_number: int,
    scratch_root: Path,
    tools_bin: Path,
    extra: list[str] | None = None,
) -> Run:
    backend = provider.fresh_backend()
    scratch = Path(tempfile.mkdtemp(prefix=f"{tool}-", dir=scratch_root))
    key = "bench/" if source.is_dir() else "bench/object.bin"
    ctx = Context(
        backend, source, key, tool_environment(backend, scratch), scratch, tools_bin
    )
    if tool == "cloudput":
        command = cloudput_command(ctx, extra)
    else:
        command = provider.tools[tool](ctx)
    wall_s, user_s, sys_s, rss_mib, code = measure(
        command, ctx.env, scratch / "out.log"
    )
    count, total = stored(backend)
    verified = code == 0 and count == workload.files and total == workload.total_bytes
    note = (
        ""
        if verified
        else (
            f"exit {code}, {count} objects, {total} bytes: "
            + (scratch / "out.log").read_text(errors="replace")[-400:]
        )
    )
    return Run(
        provider.name,
        workload.name,
        tool if not extra else f"cloudput {' '.join(extra)}",
        round_number,
        round(wall_s, 3),
        round(user_s, 3),
        round(sys_s, 3),
        round(rss_mib, 1),
        code,
        workload.total_bytes,
        verified,
        part_latencies(scratch / "cloudput.log") if tool.startswith("cloudput") else [],
        note,
    )


def run_workload(
    provider: Provider,
    workload: Workload,
    source: Path,
    rounds: int,
    scratch_root: Path,
    tools_bin: Path,
    only_tools: set[str] | None,
) -> list[Run]:
    """Every tool, `rounds` times, the order rotated each round; a fresh server first."""
    provider.emulator.restart()
    names = [n for n in provider.tools if only_tools is None or n in only_tools]
    runs: list[Run] = []
    for round_number in range(rounds):
        shift = round_number % len(names)
        for tool in names[shift:] + names[:shift]:
            result = run_once(
                provider, tool, workload, source, round_number, scratch_root, tools_bin
            )
            print(
                f"  {provider.name:5} {workload.name:8} r{round_number} {tool:10} "
                f"{result.wall_s:7.2f}s cpu {result.cpu_s:6.2f}s "
                f"rss {result.max_rss_mib:7.1f} MiB"
                + ("" if result.verified else f"  FAILED {result.note[:200]}"),
                flush=True,
            )
            runs.append(result)
    return runs


def run_sweep(
    provider: Provider,
    workload: Workload,
    source: Path,
    rounds: int,
    scratch_root: Path,
    tools_bin: Path,
) -> list[Run]:
    provider.emulator.restart()
    runs: list[Run] = []
    for round_number in range(rounds):
        for part_mib in SWEEP_PART_MIB:
            for concurrency in SWEEP_CONCURRENCY:
                extra = [
                    "--part-size",
                    f"{part_mib}MiB",
                    "--concurrency",
                    str(concurrency),
                ]
                result = run_once(
                    provider,
                    "cloudput",
                    workload,
                    source,
                    round_number,
                    scratch_root,
                    tools_bin,
                    extra,
                )
                print(
                    f"  sweep {part_mib:3} MiB x {concurrency:2}: {result.wall_s:6.2f}s "
                    f"cpu {result.cpu_s:6.2f}s rss {result.max_rss_mib:7.1f} MiB",
                    flush=True,
                )
                runs.append(result)
        provider.emulator.restart()
    return runs


# -- summarising -----------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summarise(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per (provider, workload, tool): medians, spread, ratios to the best peer."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.provider, run.workload, run.tool), []).append(run)
    rows = []
    for (provider, workload, tool), group in groups.items():
        good = [r for r in group if r.verified] or group
        walls = [r.wall_s for r in good]
        cpus = [r.cpu_s for r in good]
        gib = good[0].total_bytes / GIB
        latencies = [x for r in good for x in r.part_latencies_s]
        rows.append(
            {
                "provider": provider,
                "workload": workload,
                "tool": tool,
                "runs": len(group),
                "failed": sum(1 for r in group if not r.verified),
                "wall_s": statistics.median(walls),
                "wall_min_s": min(walls),
                "wall_max_s": max(walls),
                "mib_per_s": good[0].total_bytes / MIB / statistics.median(walls),
                "cpu_s": statistics.median(cpus),
                "cpu_s_per_gib": statistics.median(cpus) / gib,
                "max_rss_mib": statistics.median(r.max_rss_mib for r in good),
                "part_p50_s": percentile(latencies, 0.5) if latencies else None,
                "part_p90_s": percentile(latencies, 0.9) if latencies else None,
                "part_p99_s": percentile(latencies, 0.99) if latencies else None,
                "part_max_s": max(latencies) if latencies else None,
                "parts": len(latencies),
            }
        )
    for row in rows:
        peers = [
            r
            for r in rows
            if (r["provider"], r["workload"]) == (row["provider"], row["workload"])
            and r["tool"] not in CEILINGS
            and not r["tool"].startswith("cloudput")
            and r["failed"] < r["runs"]
        ]
        ceiling = [
            r
            for r in rows
            if (r["provider"], r["workload"]) == (row["provider"], row["workload"])
            and r["tool"] in CEILINGS
        ]
        if peers:
            row["wall_vs_best_peer"] = row["wall_s"] / min(p["wall_s"] for p in peers)
            row["cpu_vs_best_peer"] = row["cpu_s"] / min(p["cpu_s"] for p in peers)
        if ceiling:
            row["cpu_vs_curl"] = row["cpu_s"] / ceiling[0]["cpu_s"]
            row["wall_vs_curl"] = row["wall_s"] / ceiling[0]["wall_s"]
    return rows


def tool_versions(tools_bin: Path) -> dict[str, str]:
    def first_line(command: list[str]) -> str:
        try:
            out = subprocess.run(
                command, capture_output=True, text=True, timeout=30, check=False
            )
        except OSError as exc:
            return f"unavailable ({exc.strerror})"
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0] if text else "unknown"

    from importlib.metadata import version

    versions = {
        "cloudput": version("cloudput"),
        "aws-cli": first_line([str(tools_bin / "aws"), "--version"]),
        "s5cmd": first_line([str(tools_bin / "s5cmd"), "version"]),
        "rclone": first_line(["rclone", "version"]),
        "curl": first_line(["curl", "--version"]),
        "node": first_line(["node", "--version"]),
    }
    for package in (
        "boto3",
        "botocore",
        "azure-storage-blob",
        "google-cloud-storage",
        "moto",
        "gcp-storage-emulator",
    ):
        versions[package] = version(package)
    return versions


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total_kib = int(
        next(line for line in meminfo if line.startswith("MemTotal")).split()[1]
    )
    cpu_model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "memory_gib": round(total_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Benchmark results ({report['mode']}, {report['started_at']})",
        "",
        f"Machine: {report['machine']['nproc']} cores ({report['machine']['cpu']}), "
        f"{report['machine']['memory_gib']} GiB, Python {report['machine']['python']}. "
        f"Rounds: {report['rounds']} (tools alternate; medians, spread min–max).",
        f"Load average at start {report['load_start']}, at end {report['load_end']}.",
        "",
        "The emulators are single-core servers on a 2-core machine, so wall time is "
        "bounded by the server. **The fair figures are the ratio to the best peer in the "
        "same run (`wall/best`, `cpu/best`; below 1 is better) and client CPU seconds per "
        "GiB.** curl is the server's ceiling (one request per file, no checksums), not a "
        "peer. CPU is user+sys of the client process and its children (os.wait4); RSS "
        "is its peak.",
        "",
    ]
    header = (
        "| provider | workload | tool | wall s (min–max) | MiB/s | wall/best | CPU s "
        "| CPU s/GiB | cpu/best | cpu/curl | peak RSS MiB | part p50/p90/p99 s |"
    )
    lines += [header, "|" + "---|" * 12]
    for row in report["summary"]:
        latencies = (
            f"{fmt(row['part_p50_s'], 3)}/{fmt(row['part_p90_s'], 3)}/"
            f"{fmt(row['part_p99_s'], 3)}"
            if row["part_p50_s"] is not None
            else "–"
        )
        failed = f" ({row['failed']} failed)" if row["failed"] else ""
        lines.append(
            f"| {row['provider']} | {row['workload']} | {row['tool']}{failed} "
            f"| {fmt(row['wall_s'])} ({fmt(row['wall_min_s'])}–{fmt(row['wall_max_s'])}) "
            f"| {fmt(row['mib_per_s'], 1)} | {fmt(row.get('wall_vs_best_peer'))} "
            f"| {fmt(row['cpu_s'])} | {fmt(row['cpu_s_per_gib'])} "
            f"| {fmt(row.get('cpu_vs_best_peer'))} | {fmt(row.get('cpu_vs_curl'))} "
            f"| {fmt(row['max_rss_mib'], 0)} | {latencies} |"
        )
    lines += ["", "Tool versions:", ""]
    lines += [f"- {name}: {value}" for name, value in report["versions"].items()]
    lines += [
        "",
        "Settings: cloudput defaults (8 MiB parts, concurrency 8, checksum auto); "
        "aws-cli, s5cmd and rclone defaults; boto3 TransferConfig 8 MiB x 8 threads; "
        "upload_blob max_concurrency=8; GCS upload_from_filename chunk 8 MiB; the SDK "
        "helpers use 8 threads across files for a directory.",
        "",
    ]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB, 200 files")
    parser.add_argument("--sweep", action="store_true", help="also the S3 sweep")
    parser.add_argument("--sweep-only", action="store_true", help="only the sweep")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sweep-rounds", type=int, default=1)
    parser.add_argument("--only", default="s3,azure,gcs", help="providers to run")
    parser.add_argument(
        "--tools", default="", help="comma list of tools (all if empty)"
    )
    parser.add_argument("--workloads", default="large,small")
    parser.add_argument("--large-mib", type=int, default=0, help="override the size")
    parser.add_argument("--small-files", type=int, default=0, help="override the count")
    parser.add_argument("--label", default="", help="results file name (mode if empty)")
    parser.add_argument(
        "--tools-venv", default=str(REPO_ROOT / "benchmarks/.venv-tools")
    )
    return parser.parse_args(argv)


def build_providers(only: list[str]) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    if "s3" in only:
        providers["s3"] = Provider("s3", MotoServer(), S3Backend, S3_TOOLS)
    if "azure" in only:
        providers["azure"] = Provider("azure", Azurite(), AzureBackend, AZURE_TOOLS)
    if "gcs" in only:
        providers["gcs"] = Provider("gcs", GcsEmulator(), GcsBackend, GCS_TOOLS)
    return providers


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    mode = "quick" if args.quick else "full"
    large_mib = args.large_mib or (256 if args.quick else 1024)
    small_files = args.small_files or (200 if args.quick else 2000)
    workloads = {
        "large": Workload("large", 1, large_mib * MIB),
        "small": Workload("small", small_files, 64 * 1024),
    }
    chosen = [workloads[name] for name in args.workloads.split(",") if name]
    only_tools = set(args.tools.split(",")) if args.tools else None
    tools_bin = Path(args.tools_venv) / "bin"
    providers = build_providers(args.only.split(","))
    label = args.label or mode
    report: dict[str, Any] = {
        "mode": mode,
        "started_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "rounds": args.rounds,
        "workloads": {w.name: asdict(w) for w in chosen},
        "machine": machine(),
        "versions": tool_versions(tools_bin),
        "load_start": [round(x, 2) for x in os.getloadavg()],
        "load_by_workload": {},
    }
    runs: list[Run] = []
    compile_sources()
    with tempfile.TemporaryDirectory(prefix="cloudput-bench-") as tmp:
        root = Path(tmp)
        data = root / "data"
        data.mkdir()
        print(f"making data in {data} ...", flush=True)
        sources = make_data(
            data, chosen if not args.sweep_only else [workloads["large"]]
        )
        try:
            for provider in providers.values():
                provider.emulator.start()
            if not args.sweep_only:
                for workload in chosen:
                    for provider in providers.values():
                        print(f"{provider.name} / {workload.name}", flush=True)
                        runs += run_workload(
                            provider,
                            workload,
                            sources[workload.name],
                            args.rounds,
                            root,
                            tools_bin,
                            only_tools,
                        )
                        report["load_by_workload"][
                            f"{provider.name}/{workload.name}"
                        ] = [round(x, 2) for x in os.getloadavg()]
            if (args.sweep or args.sweep_only) and "s3" in providers:
                print("s3 / sweep", flush=True)
                sweep = run_sweep(
                    providers["s3"],
                    workloads["large"],
                    sources["large"],
                    args.sweep_rounds,
                    root,
                    tools_bin,
                )
                report["sweep"] = [
                    {**asdict(r), "cpu_s": r.cpu_s, "part_latencies_s": None}
                    for r in sweep
                ]
        finally:
            for provider in providers.values():
                provider.emulator.stop()
    report["load_end"] = [round(x, 2) for x in os.getloadavg()]
    report["summary"] = summarise(runs)
    report["runs"] = [
        {**asdict(r), "cpu_s": r.cpu_s, "part_latencies_s": None} for r in runs
    ]
    RESULTS_DIR.mkdir(exist_ok=True)
    json_path = RESULTS_DIR / f"{label}.json"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS_DIR / f"{label}.md").write_text(markdown(report))
    print(markdown(report))
    plot(tools_bin, json_path)
    return 0


def plot(tools_bin: Path, json_path: Path) -> None:
    """Draw the PNGs with matplotlib from the tools venv (kept out of cloudput's)."""
    python = tools_bin / "python"
    script = Path(__file__).resolve().parent / "plots.py"
    if not python.exists():
        print("no tools venv: skipping plots", file=sys.stderr)
        return
    subprocess.run([str(python), str(script), str(json_path)], check=False)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
