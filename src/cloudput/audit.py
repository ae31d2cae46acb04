"""The audit log: one JSON line per lifecycle step (init, part, complete, abort).

Each line carries a request id, start and end times, the upload id, provider, bucket,
key, bytes and outcome; never a credential, signed URL or session URL.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudput.journal import utc_now
from cloudput.keys import Target

STEPS = ("init", "part", "complete", "abort")


@dataclass(frozen=True)
class Step:
    """One step about to happen; ``finish`` writes its line."""

    log: AuditLog
    name: str
    upload_id: str
    target: Target
    started_at: str
    request_id: str
    size_bytes: int
    part: int | None

    def finish(self, outcome: str = "ok", error_code: str | None = None) -> None:
        line = {
            "request_id": self.request_id,
            "step": self.name,
            "started_at": self.started_at,
            "finished_at": utc_now(),
            "upload_id": self.upload_id,
            "provider": self.target.provider,
            "bucket": self.target.bucket,
            "key": self.target.key,
            "part": self.part,
            "bytes": self.size_bytes,
            "outcome": outcome,
            "error": error_code,
        }
        self.log.write(line)


class AuditLog:
    """Appends lines to a file (created 0600), safe across threads."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._lock = threading.Lock()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")

    def begin(
        self,
        name: str,
        upload_id: str,
        target: Target,
        size_bytes: int = 0,
        part: int | None = None,
    ) -> Step:
        """Start timing a step; call ``finish`` on what comes back."""
        assert name in STEPS, name
        request_id = uuid.uuid4().hex
        return Step(
            self, name, upload_id, target, utc_now(), request_id, size_bytes, part
        )

    def write(self, line: dict[str, Any]) -> None:
        with self._lock:
            self._file.write(json.dumps(line) + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()
