"""How soon `cloudput resume` starts sending when its journal holds ~10,000 parts.

The target (docs/performance.md): "`cloudput resume` of an upload whose journal holds
10,000 parts starts sending within 2 seconds". This measures it: for an S3 multipart
upload of a sparse file whose parts all but the last are journaled and held by the
server, the time from just before `cloudput resume UPLOAD_ID --journal J` is started
to the first UploadPart request the server receives, and the run's total time and exit
code. The same is measured with a 100-part upload, so what the 10,000 parts cost can be
told apart from interpreter start-up and imports. Not a test: it asserts no speed; it
exits non-zero only when a cloudput run fails (exit code not 0) or sends the wrong
parts.

    .venv/bin/python benchmarks/resume_start.py                 # 10,000 and 100 parts, 3 rounds
    .venv/bin/python benchmarks/resume_start.py --parts 10000 --rounds 5
    .venv/bin/python benchmarks/resume_start.py --log-requests  # print every request line
    .venv/bin/python benchmarks/resume_start.py --py-spy DIR    # one more profiled run each
    .venv/bin/python benchmarks/resume_start.py --cloudput "OTHER/.venv/bin/cloudput"

Why a stand-in server, not moto: moto keeps every part body in memory, and S3's
smallest part is 5 MiB, so 10,000 held parts would be 50 GB. The script instead runs a
small HTTP server on 127.0.0.1 that answers only the S3 requests `resume` makes for
a multipart upload: ListParts (paginated as S3 does, at most 1,000 parts a page, with
IsTruncated / NextPartNumberMarker and part-number-marker honoured), UploadPart (the
body is read, checked against Content-MD5 and thrown away; the ETag is its quoted MD5),
CompleteMultipartUpload (checks part order, ETags and the 5 MiB minimum, answers the
multipart ETag), HeadObject and AbortMultipartUpload. It is NOT the S3 API: no
signature is checked, nothing is stored, and any other request is answered 501 and
reported. Its answers are kept consistent with the journal: each held part has the
planned size and the ETag the journal holds. Being local and thin, it answers faster
than S3 would; the figures are cloudput's own cost, not a network's.

The source is a sparse file (os.truncate: no disk used) of N parts of 5 MiB, the last
one 1 MiB; the upload's record and its N-1 part rows are written with cloudput's own
Journal, as the engine writes them (runner.Engine._new_record, _send_one). S3 allows at
most 10,000 parts, and cloudput's planner raises the part size rather than plan more,
so the largest case is 10,000 planned parts of which 9,999 are journaled and held and
one is sent. Each round resumes a fresh copy of the journal against a fresh server
state; the cases alternate within a round, after one unmeasured warm-up run. Compiled
modules are cached in the work dir (PYTHONPYCACHEPREFIX) even where
PYTHONDONTWRITEBYTECODE is set, as an installed cloudput has its .pyc files;
--no-pyc-cache leaves the caller's setting.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from cloudput.engine.plan import make_plan  # noqa: E402
from cloudput.engine.runner import guess_content_type  # noqa: E402
from cloudput.engine.sources import fingerprint  # noqa: E402
from cloudput.journal import (  # noqa: E402
    Journal,
    PartRow,
    UploadRecord,
    new_upload_id,
    utc_now,
)
from cloudput.keys import Target  # noqa: E402
from cloudput.providers.s3 import (  # noqa: E402
    S3_LIMITS,
    S3_LIST_PAGE_MAX,
    S3_MAX_PARTS,
    S3_MIN_PART_SIZE_BYTES,
)

MIB = 1024 * 1024
TARGET_S = 2.0
BUCKET = "bench"
#: A run that takes longer than this is killed and counted as failed.
RUN_TIMEOUT_S = 600.0
S3_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
READ_BLOCK = 1024 * 1024
PY_SPY_RATE = 200  # samples a second
QUOTES = {'"': "&quot;"}  # S3 writes an ETag's quotes as entities


# ----- the stand-in S3 server ---------------------------------------------------------


@dataclass
class HeldPart:
    size_bytes: int
    etag: str  # quoted MD5 hex, as S3 shows it


@dataclass
class MultipartUpload:
    bucket: str
    key: str
    parts: dict[int, HeldPart]


@dataclass
class StoredObject:
    size_bytes: int
    etag: str


@dataclass
class Timings:
    """Monotonic times (time.monotonic) of what the server saw in one run."""

    first_request: float | None = None
    first_list: float | None = None
    last_list_answered: float | None = None
    first_part: float | None = None
    complete: float | None = None
    parts_received: list[int] = field(default_factory=list)
    operations: Counter[str] = field(default_factory=Counter)
    handler_s: dict[str, float] = field(default_factory=dict)  # server time per op
    request_lines: list[tuple[float, str]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class StandInState:
    """What the stand-in knows: multipart uploads, completed objects, timings."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.uploads: dict[str, MultipartUpload] = {}
        self.objects: dict[tuple[str, str], StoredObject] = {}
        self.timings = Timings()
        self.last_modified = "2025-01-01T00:00:00.000Z"

    def reset(self, session: str, upload: MultipartUpload) -> None:
        with self.lock:
            self.uploads = {session: upload}
            self.objects = {}
            self.timings = Timings()


class StandInHandler(BaseHTTPRequestHandler):
    """Path-style S3 requests: /BUCKET/KEY?query."""

    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pool expects
    server_version = "cloudput-bench-standin"
    state: StandInState  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # request lines are kept in Timings instead

    # -- dispatch ------------------------------------------------------------------

    def _begin(self) -> tuple[float, str, str, dict[str, str]]:
        now = time.monotonic()
        split = urlsplit(self.path)
        bucket, _, key = unquote(split.path).lstrip("/").partition("/")
        query = {
            name: values[-1]
            for name, values in parse_qs(split.query, keep_blank_values=True).items()
        }
        with self.state.lock:
            timings = self.state.timings
            if timings.first_request is None:
                timings.first_request = now
            timings.request_lines.append((now, self.requestline))
        return now, bucket, key, query

    def _account(self, operation: str, started: float) -> None:
        with self.state.lock:
            self.state.timings.operations[operation] += 1
            spent = self.state.timings.handler_s
            spent[operation] = spent.get(operation, 0.0) + time.monotonic() - started

    def do_GET(self) -> None:
        started, bucket, key, query = self._begin()
        if "uploadId" in query and key:
            self._list_parts(started, bucket, key, query)
            self._account("ListParts", started)
        else:
            self._unexpected()

    def do_PUT(self) -> None:
        started, bucket, key, query = self._begin()
        if "uploadId" in query and "partNumber" in query and key:
            self._upload_part(started, query)
            self._account("UploadPart", started)
        else:
            self._unexpected()

    def do_POST(self) -> None:
        started, bucket, key, query = self._begin()
        if "uploadId" in query and key:
            self._complete(started, bucket, key, query)
            self._account("CompleteMultipartUpload", started)
        else:
            self._unexpected()

    def do_HEAD(self) -> None:
        started, bucket, key, query = self._begin()
        if key and not query.keys() - {"partNumber", "versionId"}:
            self._head_object(bucket, key)
            self._account("HeadObject", started)
        else:
            self._unexpected()

    def do_DELETE(self) -> None:
        started, bucket, key, query = self._begin()
        if "uploadId" in query and key:
            self._read_body()
            with self.state.lock:
                gone = self.state.uploads.pop(query["uploadId"], None) is None
            if gone:
                self._error(404, "NoSuchUpload", "The specified upload does not exist.")
            else:
                self._send(204, b"")
            self._account("AbortMultipartUpload", started)
        else:
            self._unexpected()

    # -- operations ----------------------------------------------------------------

    def _list_parts(
        self, started: float, bucket: str, key: str, query: dict[str, str]
    ) -> None:
        with self.state.lock:
            timings = self.state.timings
            if timings.first_list is None:
                timings.first_list = started
            upload = self.state.uploads.get(query["uploadId"])
            if upload is None or (upload.bucket, upload.key) != (bucket, key):
                held: list[tuple[int, HeldPart]] | None = None
            else:
                held = sorted(upload.parts.items())
        if held is None:
            self._error(404, "NoSuchUpload", "The specified upload does not exist.")
            return
        try:
            marker = int(query.get("part-number-marker") or 0)
            max_parts = int(query.get("max-parts") or S3_LIST_PAGE_MAX)
        except ValueError:
            self._error(400, "InvalidArgument", "bad part-number-marker or max-parts")
            return
        max_parts = max(0, min(max_parts, S3_LIST_PAGE_MAX))
        after = [item for item in held if item[0] > marker]
        page = after[:max_parts]
        truncated = len(after) > len(page)
        next_marker = page[-1][0] if page else marker
        lines = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            f'<ListPartsResult xmlns="{S3_XMLNS}">',
            f"<Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key>",
            f"<UploadId>{escape(query['uploadId'])}</UploadId>",
            f"<PartNumberMarker>{marker}</PartNumberMarker>",
            f"<NextPartNumberMarker>{next_marker}</NextPartNumberMarker>",
            f"<MaxParts>{max_parts}</MaxParts>",
            f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>",
            "<StorageClass>STANDARD</StorageClass>",
        ]
        modified = self.state.last_modified
        for number, part in page:
            lines.append(
                f"<Part><PartNumber>{number}</PartNumber>"
                f"<LastModified>{modified}</LastModified>"
                f"<ETag>{escape(part.etag, QUOTES)}</ETag>"
                f"<Size>{part.size_bytes}</Size></Part>"
            )
        lines.append("</ListPartsResult>")
        self._send(200, "".join(lines).encode(), "application/xml")
        with self.state.lock:
            self.state.timings.last_list_answered = time.monotonic()

    def _upload_part(self, started: float, query: dict[str, str]) -> None:
        with self.state.lock:
            if self.state.timings.first_part is None:
                self.state.timings.first_part = started
        if self.headers.get("x-amz-content-sha256", "").startswith("STREAMING-"):
            self._read_body()
            self._unexpected("aws-chunked bodies are not implemented")
            return
        md5 = hashlib.md5()
        size = 0
        for block in self._body_blocks():
            md5.update(block)
            size += len(block)
        sent_md5 = self.headers.get("Content-MD5")
        if sent_md5 and sent_md5 != base64.b64encode(md5.digest()).decode():
            self._error(400, "BadDigest", "The Content-MD5 you specified did not match")
            return
        try:
            number = int(query["partNumber"])
        except ValueError:
            number = 0
        if not 1 <= number <= S3_MAX_PARTS:
            self._error(
                400,
                "InvalidArgument",
                f"Part number must be an integer between 1 and {S3_MAX_PARTS}",
            )
            return
        etag = f'"{md5.hexdigest()}"'
        with self.state.lock:
            upload = self.state.uploads.get(query["uploadId"])
            if upload is not None:
                upload.parts[number] = HeldPart(size, etag)
                self.state.timings.parts_received.append(number)
        if upload is None:
            self._error(404, "NoSuchUpload", "The specified upload does not exist.")
            return
        self._send(200, b"", extra={"ETag": etag})

    def _complete(
        self, started: float, bucket: str, key: str, query: dict[str, str]
    ) -> None:
        with self.state.lock:
            self.state.timings.complete = started
        body = self._read_body()
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError:
            self._error(400, "MalformedXML", "The XML you provided was not well-formed")
            return
        asked = [
            (int(_child_text(part, "PartNumber")), _child_text(part, "ETag"))
            for part in root
            if _local_name(part.tag) == "Part"
        ]
        with self.state.lock:
            upload = self.state.uploads.get(query["uploadId"])
            problem = _check_completion(upload, asked)
            if upload is not None and problem is None:
                digests = b"".join(
                    bytes.fromhex(upload.parts[n].etag.strip('"')) for n, _ in asked
                )
                size = sum(upload.parts[n].size_bytes for n, _ in asked)
                etag = f'"{hashlib.md5(digests).hexdigest()}-{len(asked)}"'
                self.state.objects[(bucket, key)] = StoredObject(size, etag)
                del self.state.uploads[query["uploadId"]]
        if upload is None:
            self._error(404, "NoSuchUpload", "The specified upload does not exist.")
            return
        if problem is not None:
            self._error(400, *problem)
            return
        answer = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<CompleteMultipartUploadResult xmlns="{S3_XMLNS}">'
            f"<Location>http://{self.headers.get('Host', '')}/{escape(bucket)}/"
            f"{escape(quote(key))}</Location>"
            f"<Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key>"
            f"<ETag>{escape(etag, QUOTES)}</ETag>"
            "</CompleteMultipartUploadResult>"
        )
        self._send(200, answer.encode(), "application/xml")

    def _head_object(self, bucket: str, key: str) -> None:
        with self.state.lock:
            found = self.state.objects.get((bucket, key))
        if found is None:
            self._send(404, b"", "application/xml")  # a HEAD error has no body
            return
        self._send(
            200,
            b"",
            "application/octet-stream",
            extra={
                "ETag": found.etag,
                "Last-Modified": "Wed, 01 Jan 2025 00:00:00 GMT",
                "Accept-Ranges": "bytes",
            },
            content_length=found.size_bytes,
        )

    # -- plumbing ------------------------------------------------------------------

    def _body_blocks(self) -> Any:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                remaining = size
                while remaining:
                    block = self.rfile.read(min(READ_BLOCK, remaining))
                    if not block:
                        return
                    remaining -= len(block)
                    yield block
                self.rfile.readline()
            return
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining:
            block = self.rfile.read(min(READ_BLOCK, remaining))
            if not block:
                self.close_connection = True
                return
            remaining -= len(block)
            yield block

    def _read_body(self) -> bytes:
        return b"".join(self._body_blocks())

    def _unexpected(self, why: str = "not answered by the stand-in") -> None:
        if self.command in ("PUT", "POST"):
            self._read_body()
        with self.state.lock:
            self.state.timings.unexpected.append(f"{self.requestline} ({why})")
        self._error(501, "NotImplemented", why)

    def _error(self, status: int, code: str, message: str) -> None:
        with self.state.lock:
            self.state.timings.errors.append(f"{self.requestline}: {status} {code}")
        if self.command == "HEAD":
            self._send(status, b"", "application/xml")
            return
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>"
            "<RequestId>standin</RequestId></Error>"
        ).encode()
        self._send(status, body, "application/xml")

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str | None = None,
        extra: dict[str, str] | None = None,
        content_length: int | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("x-amz-request-id", "standin")
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        length = len(body) if content_length is None else content_length
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)


def _local_name(tag: str) -> str:
    return tag.rpartition("}")[2]


def _child_text(element: ElementTree.Element, name: str) -> str:
    for child in element:
        if _local_name(child.tag) == name:
            return child.text or ""
    return ""


def _check_completion(
    upload: MultipartUpload | None, asked: list[tuple[int, str]]
) -> tuple[str, str] | None:
    """S3's checks on CompleteMultipartUpload: (code, message) of the first failed."""
    if upload is None:
        return None  # answered NoSuchUpload by the caller
    if not asked:
        return ("MalformedXML", "no parts named")
    numbers = [number for number, _ in asked]
    if numbers != sorted(set(numbers)):
        return ("InvalidPartOrder", "The list of parts was not in ascending order.")
    for index, (number, etag) in enumerate(asked):
        held = upload.parts.get(number)
        if held is None or held.etag.strip('"') != etag.strip('"'):
            return ("InvalidPart", f"part {number} is not held with ETag {etag}")
        last = index == len(asked) - 1
        if not last and held.size_bytes < S3_MIN_PART_SIZE_BYTES:
            return ("EntityTooSmall", f"part {number} is below the minimum size")
    return None


class StandInServer:
    """The stand-in on 127.0.0.1, an ephemeral port, in a daemon thread."""

    def __init__(self) -> None:
        self.state = StandInState()
        handler = type("Handler", (StandInHandler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="standin", daemon=True
        )

    def __enter__(self) -> StandInServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


# ----- set-up: a sparse source and its journal ----------------------------------------


@dataclass
class Case:
    """One upload to resume: its source, template journal and server-side state."""

    planned_parts: int
    held_parts: int
    source: Path
    journal_template: Path
    upload_id: str
    session: str
    key: str
    part_size_bytes: int
    size_bytes: int
    build_s: float  # time to write the journal's part rows (set-up, not measured)

    def server_upload(self, held_etag: str) -> MultipartUpload:
        parts = {
            n: HeldPart(self.part_size_bytes, held_etag)
            for n in range(1, self.held_parts + 1)
        }
        return MultipartUpload(BUCKET, self.key, parts)


def zero_part_digests(part_size_bytes: int) -> tuple[str, str]:
    """(quoted MD5 hex ETag, base64 MD5) of a part of zeros: what a sparse part is."""
    digest = hashlib.md5(bytes(part_size_bytes)).digest()
    return f'"{digest.hex()}"', base64.b64encode(digest).decode()


def build_case(
    root: Path,
    planned_parts: int,
    missing: int,
    part_size_bytes: int,
    last_part_bytes: int,
    checksum: str,
    url: str,
) -> Case:
    """Make the sparse source and a journal holding all parts but the last ``missing``."""
    folder = root / f"case-{planned_parts}"
    folder.mkdir()
    source = folder / f"source-{planned_parts}.bin"
    size = (planned_parts - 1) * part_size_bytes + last_part_bytes
    with open(source, "wb"):
        pass
    os.truncate(source, size)  # sparse: no blocks allocated
    current = fingerprint(str(source))
    plan = make_plan(current.size_bytes, S3_LIMITS, part_size_bytes=part_size_bytes)
    if plan.raised_from_bytes or plan.part_count != planned_parts:
        raise SystemExit(
            f"{planned_parts} parts of {part_size_bytes} bytes is not a plan cloudput "
            f"makes (it plans {plan.part_count} parts of {plan.part_size_bytes} bytes; "
            f"S3 allows at most {S3_MAX_PARTS} parts)"
        )
    key = f"resume-start/{source.name}"
    target = Target("s3", BUCKET, key)
    session = f"standin-{new_upload_id()}"
    record = UploadRecord(
        id=new_upload_id(),
        provider="s3",
        bucket=BUCKET,
        key=key,
        uri=target.uri,
        storage_url=f"{url}/{BUCKET}/{quote(key, safe='/~')}",
        name=source.name,
        size_bytes=current.size_bytes,
        mime=guess_content_type(str(source)),
        strategy=plan.strategy,
        part_size_bytes=plan.part_size_bytes,
        part_count=plan.part_count,
        status="interrupted",
        initiated_at=utc_now(),
        source_path=str(source.resolve()),
        source_size_bytes=current.size_bytes,
        source_mtime_ns=current.mtime_ns,
        source_inode=current.inode,
        checksum_algorithm=checksum,
        session=session,
        updated_at=utc_now(),
        error_code="interrupted",
        error_message="interrupted by the benchmark's set-up",
        endpoint_url=url,
    )
    etag, md5_b64 = zero_part_digests(plan.part_size_bytes)
    held = planned_parts - missing
    template = folder / "journal-template.sqlite"
    journal = Journal.open(template)
    started = time.monotonic()
    try:
        journal.add(record)
        # Journal.record_part commits each row (the API has no batch), as the engine
        # does per part sent; it is set-up, timed only to be shown.
        for part in plan.parts()[:held]:
            journal.record_part(
                record.id,
                PartRow(
                    record.id,
                    part.number,
                    part.offset,
                    part.size_bytes,
                    etag,
                    md5_b64 if checksum != "none" else None,
                    utc_now(),
                ),
            )
    finally:
        journal.close()
    return Case(
        planned_parts=planned_parts,
        held_parts=held,
        source=source,
        journal_template=template,
        upload_id=record.id,
        session=session,
        key=key,
        part_size_bytes=plan.part_size_bytes,
        size_bytes=current.size_bytes,
        build_s=time.monotonic() - started,
    )


def fresh_journal(case: Case, folder: Path) -> Path:
    """A copy of the case's template journal in a new folder (a run completes it)."""
    folder.mkdir(parents=True)
    journal = folder / "journal.sqlite"
    for suffix in ("", "-wal"):
        original = Path(str(case.journal_template) + suffix)
        if original.exists():
            shutil.copyfile(original, str(journal) + suffix)
    return journal


# ----- the measured run -----------------------------------------------------------------


@dataclass
class Run:
    planned_parts: int
    held_parts: int
    exit_code: int
    total_s: float
    first_request_s: float | None
    first_list_s: float | None
    list_done_s: float | None
    first_part_s: float | None
    complete_s: float | None
    parts_sent: list[int]
    operations: dict[str, int]
    server_s: dict[str, float]
    problems: list[str]


def cloudput_env(root: Path, pyc_cache: bool) -> dict[str, str]:
    """The caller's environment without AWS/cloudput settings, plus dummy keys.

    With ``pyc_cache``, compiled modules are cached under ``root`` (PYTHONPYCACHEPREFIX,
    so nothing is written beside the sources) even if the caller sets
    PYTHONDONTWRITEBYTECODE: an installed cloudput has its .pyc files, and a run that
    compiles every module it imports would add its compile time to the figures.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "CLOUDPUT_"))
    }
    if pyc_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    config = root / "config"
    config.mkdir(exist_ok=True)
    env.update(
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="x",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(config / "aws-config-absent"),
        AWS_SHARED_CREDENTIALS_FILE=str(config / "aws-credentials-absent"),
        AWS_EC2_METADATA_DISABLED="true",
        XDG_CONFIG_HOME=str(config),  # no user cloudput config.toml
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    return env


def cloudput_command(given: str | None = None) -> list[str]:
    """``--cloudput`` as given, else the cloudput beside this Python, else on PATH."""
    if given:
        return shlex.split(given)
    beside = Path(sys.executable).parent / "cloudput"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("cloudput")
    if found:
        return [found]
    return [sys.executable, "-m", "cloudput"]


def measure(
    case: Case,
    server: StandInServer,
    folder: Path,
    env: dict[str, str],
    held_etag: str,
    command_prefix: list[str],
    wrap: list[str] | None = None,
) -> tuple[Run, list[tuple[float, str]]]:
    """Resume a fresh copy of the case's upload once; time it from the server's side."""
    journal = fresh_journal(case, folder)
    server.state.reset(case.session, case.server_upload(held_etag))
    command = [
        *(wrap or []),
        *command_prefix,
        "resume",
        case.upload_id,
        "--journal",
        str(journal),
        "--json",
    ]
    with open(folder / "stdout", "wb") as out, open(folder / "stderr", "wb") as err:
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        try:
            exit_code = process.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            exit_code = process.wait()
        total = time.monotonic() - started
    with server.state.lock:
        timings = server.state.timings
        stored = server.state.objects.get((BUCKET, case.key))

    def since(moment: float | None) -> float | None:
        return None if moment is None else moment - started

    expected = list(range(case.held_parts + 1, case.planned_parts + 1))
    problems = [f"not answered: {line}" for line in timings.unexpected]
    if exit_code != 0:
        tail = (folder / "stderr").read_text(errors="replace").strip()[-800:]
        problems.append(f"cloudput exit code {exit_code}: {tail}")
    if sorted(timings.parts_received) != expected:
        problems.append(
            f"parts sent {sorted(timings.parts_received)[:20]}, expected {expected[:20]}"
        )
    if stored is None or stored.size_bytes != case.size_bytes:
        problems.append(
            f"object after the run: {stored}, expected {case.size_bytes} bytes"
        )
    return Run(
        planned_parts=case.planned_parts,
        held_parts=case.held_parts,
        exit_code=exit_code,
        total_s=total,
        first_request_s=since(timings.first_request),
        first_list_s=since(timings.first_list),
        list_done_s=since(timings.last_list_answered),
        first_part_s=since(timings.first_part),
        complete_s=since(timings.complete),
        parts_sent=sorted(timings.parts_received),
        operations=dict(timings.operations),
        server_s={op: round(s, 4) for op, s in timings.handler_s.items()},
        problems=problems,
    ), timings.request_lines


# ----- report ---------------------------------------------------------------------------


def median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def seconds(value: float | None) -> str:
    return "   -   " if value is None else f"{value:7.3f}"


def summarise(case: Case, runs: list[Run]) -> dict[str, Any]:
    def figures(name: str) -> dict[str, Any]:
        values = [getattr(run, name) for run in runs]
        present = [v for v in values if v is not None]
        return {
            "median": median(values),
            "min": min(present) if present else None,
            "max": max(present) if present else None,
            "all": values,
        }

    first_part = figures("first_part_s")
    return {
        "planned_parts": case.planned_parts,
        "held_parts": case.held_parts,
        "part_size_bytes": case.part_size_bytes,
        "size_bytes": case.size_bytes,
        "journal_build_s": round(case.build_s, 3),
        "rounds": len(runs),
        "first_request_s": figures("first_request_s"),
        "first_list_s": figures("first_list_s"),
        "list_done_s": figures("list_done_s"),
        "first_part_s": first_part,
        "complete_s": figures("complete_s"),
        "total_s": figures("total_s"),
        "exit_codes": [run.exit_code for run in runs],
        "operations": runs[-1].operations if runs else {},
        "server_s": runs[-1].server_s if runs else {},
        "within_target": (
            None if first_part["max"] is None else first_part["max"] <= TARGET_S
        ),
    }


def print_table(summaries: list[dict[str, Any]]) -> None:
    columns = (
        ("first request", "first_request_s"),
        ("first ListParts", "first_list_s"),
        ("ListParts done", "list_done_s"),
        ("FIRST PART", "first_part_s"),
        ("Complete", "complete_s"),
        ("total", "total_s"),
    )
    print()
    print("seconds from just before the process starts; median (min-max) of the rounds")
    print(f"{'held/planned parts':>20}  " + "  ".join(f"{t:>23}" for t, _ in columns))
    for summary in summaries:
        label = f"{summary['held_parts']:,}/{summary['planned_parts']:,}"
        cells = []
        for _, name in columns:
            figure = summary[name]
            cells.append(
                f"{seconds(figure['median'])} ({seconds(figure['min']).strip()}-"
                f"{seconds(figure['max']).strip()})".rjust(23)
            )
        print(f"{label:>20}  " + "  ".join(cells))
    print()
    for summary in summaries:
        first = summary["first_part_s"]["median"]
        verdict = {
            True: "within",
            False: "NOT within (slowest round)",
            None: "no measured round for",
        }[summary["within_target"]]
        print(
            f"{summary['held_parts']:,} journaled parts: first part sent after "
            f"{seconds(first).strip()} s (median): {verdict} the {TARGET_S:g} s target; "
            f"requests {summary['operations']}, stand-in time {summary['server_s']}"
        )
    if len(summaries) >= 2:
        big, small = summaries[0], summaries[-1]
        a, b = big["first_part_s"]["median"], small["first_part_s"]["median"]
        if a is not None and b is not None:
            print(
                f"cost of {big['held_parts'] - small['held_parts']:,} more journaled "
                f"parts before the first part: {a - b:.3f} s (difference of medians)"
            )


# ----- main -------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts",
        default="10000,100",
        help="planned part counts, comma-separated (at most 10000, S3's limit)",
    )
    parser.add_argument(
        "--missing", type=int, default=1, help="parts left to send (the last ones)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs first")
    parser.add_argument("--part-mib", type=int, default=5)
    parser.add_argument("--last-part-mib", type=int, default=1)
    parser.add_argument("--checksum", choices=("md5", "none"), default="md5")
    parser.add_argument("--workdir", help="keep the files here (default: a temp dir)")
    parser.add_argument(
        "--log-requests", action="store_true", help="print each run's request lines"
    )
    parser.add_argument(
        "--py-spy",
        metavar="DIR",
        help="after the rounds, one run per case under `py-spy record --rate 200 "
        "--format raw` (raw collapsed stacks written to DIR)",
    )
    parser.add_argument(
        "--no-pyc-cache",
        action="store_true",
        help="run cloudput with the caller's bytecode settings (by default compiled "
        "modules are cached in the work dir, filled by the warm-up run)",
    )
    parser.add_argument(
        "--cloudput",
        metavar="CMD",
        help="the command to run instead of .venv/bin/cloudput (split like a shell "
        "line), e.g. another checkout's for a before/after",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    counts = [int(value) for value in args.parts.split(",") if value]
    if args.missing < 1 or any(args.missing >= count for count in counts):
        raise SystemExit("--missing must be at least 1 and below every --parts count")
    if args.last_part_mib > args.part_mib or args.last_part_mib < 1:
        raise SystemExit("--last-part-mib must be 1..--part-mib")
    part_size = args.part_mib * MIB
    held_etag, _ = zero_part_digests(part_size)
    temp = None if args.workdir else tempfile.TemporaryDirectory(prefix="resume-start-")
    root = Path(args.workdir or temp.name)  # type: ignore[union-attr]
    root.mkdir(parents=True, exist_ok=True)
    env = cloudput_env(root, pyc_cache=not args.no_pyc_cache)
    command = cloudput_command(args.cloudput)
    print(f"command: {shlex.join(command)} resume UPLOAD_ID --journal J --json")
    state = source_state()
    print(f"cloudput: commit {state['commit']}, src/ changed: {state['src_changed']}")
    failed = False
    try:
        with StandInServer() as server:
            cases = []
            for count in counts:
                case = build_case(
                    root,
                    count,
                    args.missing,
                    part_size,
                    args.last_part_mib * MIB,
                    args.checksum,
                    server.url,
                )
                print(
                    f"set-up: {case.held_parts:,} of {case.planned_parts:,} parts "
                    f"journaled in {case.build_s:.1f}s; source {case.size_bytes:,} "
                    f"bytes (sparse), upload {case.upload_id}",
                    flush=True,
                )
                cases.append(case)
            runs: dict[int, list[Run]] = {case.planned_parts: [] for case in cases}
            serial = 0
            for round_number in range(-args.warmup, args.rounds):
                order = cases if round_number % 2 == 0 else list(reversed(cases))
                if round_number < 0:
                    order = [min(cases, key=lambda c: c.planned_parts)]
                for case in order:
                    serial += 1
                    run, lines = measure(
                        case, server, root / f"run-{serial}", env, held_etag, command
                    )
                    tag = "warm-up" if round_number < 0 else f"round {round_number + 1}"
                    print(
                        f"{tag}: {case.held_parts:,}/{case.planned_parts:,} parts: "
                        f"first part {seconds(run.first_part_s).strip()} s, total "
                        f"{run.total_s:.3f} s, exit {run.exit_code}",
                        flush=True,
                    )
                    if args.log_requests:
                        for moment, line in lines:
                            print(f"    {moment - lines[0][0]:8.4f}  {line}")
                    for problem in run.problems:
                        print(f"    PROBLEM: {problem}", flush=True)
                    if run.problems:
                        failed = True
                    if round_number >= 0:
                        runs[case.planned_parts].append(run)
            if args.py_spy:
                failed |= profile(Path(args.py_spy), cases, server, root, env, command)
            summaries = [summarise(case, runs[case.planned_parts]) for case in cases]
    finally:
        if temp is not None:
            temp.cleanup()
    print_table(summaries)
    print(
        json.dumps(
            {
                "benchmark": "resume_start",
                "target_first_part_s": TARGET_S,
                "checksum": args.checksum,
                "missing_parts": args.missing,
                "cloudput": source_state(),
                "machine": {
                    "cores": os.cpu_count(),
                    "loadavg": os.getloadavg(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "cases": summaries,
            },
            separators=(",", ":"),
        )
    )
    return 1 if failed else 0


def source_state() -> dict[str, Any]:
    """The checkout's commit and the files under src/ that differ from it."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True
            ).stdout
        except OSError:
            return ""

    changed = git("status", "--porcelain", "--", "src")
    return {
        "commit": git("rev-parse", "HEAD").strip() or None,
        "src_changed": [line[3:] for line in changed.splitlines()],
    }


def profile(
    folder: Path,
    cases: list[Case],
    server: StandInServer,
    root: Path,
    env: dict[str, str],
    command: list[str],
) -> bool:
    """One run per case under py-spy (every thread: the engine works in a pool, so
    cProfile, which sees the main thread only, would miss it); True on a failure."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    held_etag, _ = zero_part_digests(cases[0].part_size_bytes)
    spy = Path(sys.executable).parent / "py-spy"
    failed = False
    for case in cases:
        output = folder / f"resume-{case.planned_parts}.txt"
        # An unprofiled run first, so imports come from a warm bytecode cache.
        measure(
            case,
            server,
            root / f"py-spy-warm-{case.planned_parts}",
            env,
            held_etag,
            command,
        )
        wrap = [str(spy) if spy.exists() else "py-spy", "record"]
        wrap += ["--rate", str(PY_SPY_RATE)]
        wrap += ["--format", "raw", "--output", str(output), "--"]
        run, _ = measure(
            case,
            server,
            root / f"py-spy-{case.planned_parts}",
            env,
            held_etag,
            command,
            wrap,
        )
        print(
            f"py-spy: {case.held_parts:,}/{case.planned_parts:,} parts: first part "
            f"{seconds(run.first_part_s).strip()} s (profiled, slower), exit "
            f"{run.exit_code}; raw stacks in {output}",
            flush=True,
        )
        if output.exists():
            print_hot_functions(output)
        failed |= bool(run.problems)
        for problem in run.problems:
            print(f"    PROBLEM: {problem}", flush=True)
    return failed


def print_hot_functions(raw: Path, count: int = 30) -> None:
    """The functions with the most samples on the stack (inclusive), all threads."""
    inclusive: Counter[str] = Counter()
    total = 0
    with open(raw) as lines:
        for line in lines:
            stack, _, number = line.rstrip("\n").rpartition(" ")
            if not number.isdigit():
                continue
            total += int(number)
            frames = {re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")}
            for frame in frames:
                inclusive[frame] += int(number)
    print(f"    {total} samples (non-idle, all threads); most on the stack:")
    for frame, samples in inclusive.most_common(count):
        print(f"    {samples:6d} {samples / PY_SPY_RATE:6.2f}s  {frame}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
