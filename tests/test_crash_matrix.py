"""The crash matrix: SIGKILL a real `cloudput upload` at seeded random moments, resume.

For each provider and seed, random.Random(seed) picks one moment of an upload of
8 x concurrency parts and more: right after the k-th part answer reached the client
(its journal write follows, so the kill often lands in it), a little later, after the
provider processed Complete / Put Block List / the final chunk but before its answer
left the proxy, or as Complete arrives (never processed). The proxy sends the SIGKILL
itself, from the request thread, so the moment is exact. Then `cloudput resume --all`
must give an identical object, re-send at most `concurrency` parts (one chunk on GCS)
and leave nothing unfinished at the provider.

Seeds per provider: CLOUDPUT_CRASH_SEEDS (default 3). The full run of
docs/reliability.md, which also writes reports/crash-matrix.json:

    CLOUDPUT_CRASH_SEEDS=20 .venv/bin/pytest tests/test_crash_matrix.py
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.backends import Backend
from tests.faultproxy import FaultProxy, RecordedRequest, RequestHead
from tests.helpers import (
    FAST_RETRY_ENV,
    finish,
    only_record,
    run_cli,
    sha256_of,
    start_cloudput,
    wait_until,
    write_random,
)
from tests.test_contract import PROFILES, part_identity, the_record, use_env

#: Parts in flight (--concurrency); the upload has PARTS_PER_SLOT times as many parts.
CONCURRENCY = 2
#: Issue 4: "an upload of at least eight times `concurrency` parts".
PARTS_PER_SLOT = 8
#: Bytes of a short last part, so the plan has 8 x concurrency + 1 parts.
TAIL_BYTES = 123_457
#: Seeds per provider in the normal run; the full matrix uses 20.
DEFAULT_SEEDS = 3
SEEDS = int(os.environ.get("CLOUDPUT_CRASH_SEEDS") or DEFAULT_SEEDS)
#: Share of seeds that kill during the final commit (the rest kill between parts).
COMPLETE_SHARE = 0.3
#: Longest extra wait after the k-th part answer before the kill.
MAX_LATE_S = 0.3
#: Where the summary of a run goes (one JSON document).
REPORT = Path(__file__).resolve().parent.parent / "reports" / "crash-matrix.json"

_RESULTS: list[dict[str, Any]] = []


@dataclass(frozen=True)
class Moment:
    """When to kill: after `parts` part answers (+ `late_s`), or at the commit."""

    kind: str  # "part" | "complete-processed" | "complete-arrived"
    parts: int = 0
    late_s: float = 0.0

    def describe(self) -> str:
        if self.kind == "part":
            return f"after part answer {self.parts} + {self.late_s * 1000:.0f} ms"
        return self.kind


def choose_moment(seed: int, part_count: int, is_sequential: bool) -> Moment:
    """The kill moment for `seed`: deterministic, spread over the whole upload."""
    rng = random.Random(seed)
    if rng.random() < COMPLETE_SHARE:
        return Moment(rng.choice(["complete-processed", "complete-arrived"]))
    # On a sequential provider the last part *is* the commit: kill before it.
    last = part_count - 1 if is_sequential else part_count
    late_s = 0.0 if rng.random() < 0.5 else rng.uniform(0.0, MAX_LATE_S)
    return Moment("part", rng.randint(1, last), round(late_s, 3))


# -- which request is what ---------------------------------------------------------


def is_commit(head: RequestHead | RecordedRequest, size_bytes: int) -> bool:
    """S3 CompleteMultipartUpload, Azure Put Block List, or the final GCS chunk."""
    method = head.method.upper()
    if method == "POST" and "uploadId" in head.query:
        return True
    if method == "PUT" and head.query.get("comp") == "blocklist":
        return True
    identity = part_identity(head)
    content_range = head.headers.get("content-range", "")
    return identity is not None and content_range.endswith(
        f"-{size_bytes - 1}/{size_bytes}"
    )


def is_part(head: RequestHead | RecordedRequest, size_bytes: int) -> bool:
    return part_identity(head) is not None and not is_commit(head, size_bytes)


def is_answered(status: int) -> bool:
    return 200 <= status < 300 or status == 308


# -- the killing proxy -------------------------------------------------------------


class Killer:
    """Arms a FaultProxy to SIGKILL one process at a Moment, from inside the proxy."""

    def __init__(self, proxy: FaultProxy, moment: Moment, size_bytes: int) -> None:
        self.moment = moment
        self.size_bytes = size_bytes
        self.pid: int | None = None
        self.killed = threading.Event()
        self.in_flight = 0
        self.started: set[str] = set()  # parts whose request reached the proxy
        self._answers = 0
        self._lock = threading.Lock()
        self._install(proxy)

    def kill(self) -> None:
        with self._lock:
            if self.killed.is_set() or self.pid is None:
                return
            self.killed.set()
        os.kill(self.pid, signal.SIGKILL)

    def _after_answer(self, head: RequestHead, status: int) -> None:
        if self.moment.kind != "part" or not is_part(head, self.size_bytes):
            return
        if not is_answered(status):
            return
        with self._lock:
            self._answers += 1
            reached = self._answers == self.moment.parts
        if not reached:
            return
        if self.moment.late_s:
            threading.Timer(self.moment.late_s, self.kill).start()
        else:
            self.kill()

    def _before_forward(self, head: RequestHead) -> bool:
        """True: kill now and do not forward (the commit never reaches the server)."""
        if self.killed.is_set() or self.moment.kind != "complete-arrived":
            return False
        if is_commit(head, self.size_bytes):
            self.kill()
            return True
        return False

    def _after_forward(self, head: RequestHead) -> None:
        if self.moment.kind == "complete-processed" and is_commit(
            head, self.size_bytes
        ):
            self.kill()

    def _install(self, proxy: FaultProxy) -> None:
        """Swap the proxy's handler class for one that calls back into this Killer."""
        killer = self
        server: Any = proxy._server
        base = server.RequestHandlerClass

        class Killing(base):  # type: ignore[misc, valid-type]
            def do_any(self) -> None:
                identity = part_identity(self._head())
                with killer._lock:
                    killer.in_flight += 1
                    if identity is not None and not killer.killed.is_set():
                        killer.started.add(identity)
                try:
                    super().do_any()
                finally:
                    with killer._lock:
                        killer.in_flight -= 1

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_any

            def _forward(self, body: bytes) -> tuple[int, str, list[Any], bytes]:
                head = self._head()
                if killer._before_forward(head):
                    return 503, "Killed", [], b""
                answer = super()._forward(body)
                killer._after_forward(head)
                return answer  # type: ignore[no-any-return]

            def _answer(self, status: int, *args: Any, **kwargs: Any) -> None:
                super()._answer(status, *args, **kwargs)
                killer._after_answer(self._head(), status)

        server.RequestHandlerClass = Killing


# -- files ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sources() -> dict[int, tuple[Path, str]]:
    """Random files by part size, each written once and shared by every seed."""
    return {}


def source_for(
    made: dict[int, tuple[Path, str]], root: Path, part_bytes: int
) -> tuple[Path, str]:
    """The file for `part_bytes` (8 x concurrency parts and a tail) and its SHA-256."""
    if part_bytes not in made:
        path = root / f"crash-{part_bytes}.bin"
        size_bytes = PARTS_PER_SLOT * CONCURRENCY * part_bytes + TAIL_BYTES
        made[part_bytes] = (path, write_random(path, size_bytes))
    return made[part_bytes]


@pytest.fixture(scope="module", autouse=True)
def crash_report() -> Iterator[None]:
    """Write reports/crash-matrix.json once the module's kills are done."""
    yield
    if not _RESULTS:
        return
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"seeds_per_provider": SEEDS, "providers": {}}
    for name in sorted({row["provider"] for row in _RESULTS}):
        rows = [row for row in _RESULTS if row["provider"] == name]
        summary["providers"][name] = {
            "kills": len(rows),
            "identical": sum(row["identical"] for row in rows),
            "completed_before_kill": sum(row["completed_before_kill"] for row in rows),
            "resume_exit_0": sum(row["resume_exit"] == 0 for row in rows),
            "orphans_after": sum(row["incomplete_after"] for row in rows),
            "max_parts_resent": max(row["parts_resent"] for row in rows),
            "max_bytes_resent": max(row["bytes_resent"] for row in rows),
            "total_bytes_resent": sum(row["bytes_resent"] for row in rows),
            "moments": {
                kind: sum(row["moment"].startswith(kind) for row in rows)
                for kind in ("after part", "complete-processed", "complete-arrived")
            },
        }
    summary["kills"] = _RESULTS
    REPORT.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


# -- the matrix ----------------------------------------------------------------------


def kill_at(
    backend: Backend, proxy: FaultProxy, moment: Moment, source: Path, size_bytes: int
) -> Killer:
    """Start `cloudput upload` through `proxy` and let the Killer end it."""
    part_bytes = PROFILES[backend.name].crash_part_bytes
    killer = Killer(proxy, moment, size_bytes)
    args = [
        "upload", source, backend.uri("crash.bin"), "--quiet",
        "--part-size", str(part_bytes), "--multipart-threshold", str(part_bytes),
        "--concurrency", str(CONCURRENCY),
    ]  # fmt: skip
    env = {**backend.routed_through(proxy.url), **FAST_RETRY_ENV}
    process = start_cloudput(args, env)
    killer.pid = process.pid
    try:
        wait_until(lambda: killer.killed.is_set() or process.poll() is not None, 120)
    finally:
        if process.poll() is None and not killer.killed.is_set():
            process.kill()
    result = finish(process)
    assert result.code == -signal.SIGKILL, f"ended before the kill: {result.stderr}"
    # Requests the dead client had already sent are still forwarded: let them land.
    wait_until(lambda: killer.in_flight == 0, 60)
    time.sleep(0.1)
    return killer


def resent(started: set[str], after: list[RecordedRequest]) -> list[RecordedRequest]:
    """Part requests of resume for parts the killed run had begun to send."""
    return [r for r in after if part_identity(r) in started]


@pytest.mark.crash
@pytest.mark.slow
@pytest.mark.parametrize("seed", range(SEEDS))
def test_sigkill_at_a_seeded_moment_then_resume_gives_the_same_object(
    backend: Backend,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
    sources: dict[int, tuple[Path, str]],
    seed: int,
) -> None:
    profile = PROFILES[backend.name]
    part_bytes = profile.crash_part_bytes
    source, digest = source_for(sources, tmp_path_factory.getbasetemp(), part_bytes)
    size_bytes = source.stat().st_size
    part_count = -(-size_bytes // part_bytes)
    in_flight = profile.parts_in_flight or CONCURRENCY
    moment = choose_moment(seed, part_count, profile.parts_in_flight == 1)

    with FaultProxy(backend.endpoint) as proxy:
        killer = kill_at(backend, proxy, moment, source, size_bytes)
        upload_id = only_record().id
        finished_before_kill = only_record().status == "completed"
        proxy.clear_requests()
        use_env(monkeypatch, backend.routed_through(proxy.url))

        result = run_cli(
            ["resume", "--all", "--json", "--concurrency", str(CONCURRENCY)]
        )
        after = [r for r in proxy.requests if part_identity(r) is not None]

    again = resent(killer.started, after)
    identical = sha256_of(backend.read("crash.bin")) == digest
    row = {
        "provider": backend.name,
        "seed": seed,
        "moment": moment.describe(),
        "completed_before_kill": finished_before_kill,
        "parts": part_count,
        "part_bytes": part_bytes,
        "parts_begun_before_kill": len(killer.started),
        "parts_sent_by_resume": len(after),
        "parts_resent": len({part_identity(r) for r in again}),
        "bytes_resent": sum(r.body_length for r in again),
        "resume_exit": result.code,
        "identical": identical,
        "incomplete_after": backend.incomplete("crash.bin"),
    }
    _RESULTS.append(row)

    assert result.code == 0, result.stderr
    if finished_before_kill:  # the kill came after the journal said completed
        assert result.json_lines() == [] and after == []
    else:
        record = the_record(result)
        assert (record["id"], record["status"]) == (upload_id, "completed")
    assert identical, row
    assert row["parts_resent"] <= in_flight, row
    assert row["bytes_resent"] <= in_flight * part_bytes, row
    assert row["incomplete_after"] == 0, row


def test_seeds_choose_every_kind_of_moment() -> None:
    """The default seeds and the full set between them reach parts and the commit."""
    kinds = {choose_moment(seed, 17, False).kind for seed in range(20)}
    assert kinds == {"part", "complete-processed", "complete-arrived"}
    assert choose_moment(7, 17, False) == choose_moment(7, 17, False)
    assert all(choose_moment(s, 17, True).parts < 17 for s in range(20))
