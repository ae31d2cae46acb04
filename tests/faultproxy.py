"""A fault-injecting HTTP reverse proxy for tests: cloudput -> FaultProxy -> emulator.

It records every request and, when a rule matches, answers for the server, resets the
connection, withholds or delays the answer, corrupts the request body or rewrites the
response. Test-only: it buffers whole bodies and speaks plain HTTP on 127.0.0.1.

    with FaultProxy(backend.endpoint) as proxy:
        proxy.respond(Match(method="PUT", query={"partNumber": "3"}), 500, times=None)
        run_cloudput(env={**os.environ, **backend.routed_through(proxy.url)})
        assert proxy.count(Match(method="PUT", query={"partNumber": "3"})) == 4

The proxy keeps the client's Host header, so signatures stay valid and the GCS
emulator's session URLs point back at the proxy. One rule at most acts on a request:
the first one added that matches and still has uses left.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

#: Headers that describe one connection, not the message (RFC 9110 section 7.6.1),
#: plus Expect, which the proxy answers itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
#: Seconds an idle client connection is kept open.
IDLE_TIMEOUT_S = 60.0
#: Seconds to wait for the upstream server's answer.
UPSTREAM_TIMEOUT_S = 120.0
#: How often the accept loop checks for stop(); bounds how long stop() takes.
SHUTDOWN_POLL_S = 0.05


@dataclass(frozen=True)
class RequestHead:
    """What a rule can match on: the request line and headers (names lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the proxy saw it from the client.

    `body_length` and `body_sha256` describe the bytes the client sent (before any
    corruption); `status` is what the client received, None when it got no answer;
    `action` names the rule that acted on it, None when forwarded untouched.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body_length: int
    body_sha256: str
    status: int | None
    action: str | None
    at_s: float


@dataclass(frozen=True)
class Match:
    """A predicate on a request; every field given must hold.

    method: exact, case-insensitive. path: a regular expression searched in the path
    (without the query). query: name -> value, or name -> None for "present".
    headers: name -> value (exact), or name -> None for "present".
    where: any further test on the RequestHead.
    """

    method: str | None = None
    path: str | None = None
    query: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str | None] = field(default_factory=dict)
    where: Callable[[RequestHead], bool] | None = None

    def __call__(self, head: RequestHead | RecordedRequest) -> bool:
        if self.method is not None and head.method.upper() != self.method.upper():
            return False
        if self.path is not None and re.search(self.path, head.path) is None:
            return False
        if not _pairs_match(self.query, head.query):
            return False
        lowered = {name.lower(): value for name, value in self.headers.items()}
        if not _pairs_match(lowered, head.headers):
            return False
        if self.where is not None:
            probe = RequestHead(head.method, head.path, head.query, head.headers)
            return self.where(probe)
        return True


ANY = Match()


def _pairs_match(wanted: dict[str, str | None], actual: dict[str, str]) -> bool:
    for name, value in wanted.items():
        if name not in actual or (value is not None and actual[name] != value):
            return False
    return True


@dataclass
class Rule:
    """A fault: which requests, what to do, how often, and when.

    times: uses left (None = unlimited). window_s: (start, end) seconds after the rule
    was added during which it is active. hits: how many requests it acted on.
    """

    match: Match
    action: str
    params: dict[str, Any]
    times: int | None = 1
    window_s: tuple[float, float] | None = None
    added_at: float = field(default_factory=time.monotonic)
    hits: int = 0

    def is_active(self, now: float) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.window_s is None:
            return True
        start, end = self.window_s
        return start <= now - self.added_at < end


class FaultProxy:
    """A threaded reverse proxy on 127.0.0.1 in front of `upstream` (http://host:port).

    Use as a context manager, or call start()/stop(). `.url` is what the client should
    use as its endpoint.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._requests: list[RecordedRequest] = []
        self._started_at = time.monotonic()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FaultProxy:
        handler = type("BoundHandler", (_ProxyHandler,), {"proxy": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_S},
            name="faultproxy",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "the proxy is not running"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- rules -----------------------------------------------------------------------

    def add_rule(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    def respond(
        self,
        match: Match,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        times: int | None = 1,
        window_s: tuple[float, float] | None = None,
    ) -> Rule:
        """Answer with `status`/`body`/`headers` without forwarding the request."""
        params = {"status": status, "body": body, "headers": headers or {}}
        return self.add_rule(Rule(match, "respond", params, times, window_s))

    def reset_after(
        self,
        match: Match,
        body_bytes: int,
        *,
        times: int | None = 1,
        window_s: tuple[float, float] | None = None,
    ) -> Rule:
        """Read `body_bytes` of the request body, then reset the connection (RST)."""
        params = {"body_bytes": body_bytes}
        return self.add_rule(Rule(match, "reset", params, times, window_s))

    def drop_response(
        self,
        match: Match,
        *,
        times: int | None = 1,
        window_s: tuple[float, float] | None = None,
    ) -> Rule:
        """Forward (the server acts on it), then reset instead of answering."""
        return self.add_rule(Rule(match, "drop", {}, times, window_s))

    def delay(
        self,
        match: Match,
        seconds: float,
        *,
        times: int | None = 1,
        window_s: tuple[float, float] | None = None,
    ) -> Rule:
        """Forward, then hold the answer for `seconds` before sending it."""
        params = {"seconds": seconds}
        return self.add_rule(Rule(match, "delay", params, times, window_s))

    def corrupt(
        self,
        match: Match,
        offset: int = 0,
        *,
        times: int | None = 1,
        window_s: tuple[float, float] | None = None,
    ) -> Rule:
        """Flip every bit of the request body's byte at `offset`, then forward."""
        params = {"offset": offset}
        return self.add_rule(Rule(match, "corrupt", params, times, window_s))

    def replace_response(
        self,
        match: Match,
        status: int | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        times: int | None = 1,
        window_s: tuple[float, float] | None = None,
    ) -> Rule:
        """Forward, then answer with this status/body (None keeps the server's) and
        these headers laid over the server's."""
        params = {"status": status, "body": body, "headers": headers or {}}
        return self.add_rule(Rule(match, "replace", params, times, window_s))

    def rewrite_header(
        self,
        match: Match,
        name: str,
        rewrite: Callable[[str], str | None],
        *,
        times: int | None = 1,
        window_s: tuple[float, float] | None = None,
    ) -> Rule:
        """Forward, then pass response header `name` (if present) through `rewrite`;
        None removes it. Example: strip ETag quotes with `lambda v: v.strip('"')`."""
        params = {"name": name, "rewrite": rewrite}
        return self.add_rule(Rule(match, "rewrite", params, times, window_s))

    def _take_rule(self, head: RequestHead) -> Rule | None:
        now = time.monotonic()
        with self._lock:
            for rule in self._rules:
                if rule.is_active(now) and rule.match(head):
                    rule.hits += 1
                    return rule
        return None

    # -- records ---------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request handled so far, in the order they were handled.

        A request is recorded just before its answer is sent, so once a client has its
        answer (or saw the reset) the record is there.
        """
        with self._lock:
            return list(self._requests)

    def matching(self, match: Match = ANY) -> list[RecordedRequest]:
        return [request for request in self.requests if match(request)]

    def count(self, match: Match = ANY) -> int:
        return len(self.matching(match))

    def body_bytes(self, match: Match = ANY) -> int:
        """Total request-body bytes clients sent in requests that match."""
        return sum(request.body_length for request in self.matching(match))

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _elapsed_s(self) -> float:
        return time.monotonic() - self._started_at


class _ProxyHandler(BaseHTTPRequestHandler):
    """One client connection; HTTP/1.1 keep-alive. `proxy` is set on a subclass."""

    proxy: FaultProxy
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S

    def do_any(self) -> None:
        head = self._head()
        rule = self.proxy._take_rule(head)
        action = rule.action if rule else None
        params = rule.params if rule else {}

        if action == "reset":
            body = self._read_body(limit=params["body_bytes"])
            self._record(head, body, None, action)
            self._reset()
            return
        body = self._read_body()
        if action == "respond":
            self._record(head, body, params["status"], action)
            self._answer(params["status"], params["body"], params["headers"])
            return

        sent = _flip_byte(body, params["offset"]) if action == "corrupt" else body
        status, reason, headers, reply = self._forward(sent)
        if action == "drop":
            self._record(head, body, None, action)
            self._reset()
            return
        status, headers, reply = _apply(action, params, status, headers, reply)
        self._record(head, body, status, action)
        self._answer(status, reply, headers, reason)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = do_any

    # -- reading ---------------------------------------------------------------------

    def _head(self) -> RequestHead:
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        headers = {name.lower(): value for name, value in self.headers.items()}
        return RequestHead(self.command, parts.path, query, headers)

    def _read_body(self, limit: int | None = None) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked(limit)
        length = int(self.headers.get("Content-Length") or 0)
        if limit is not None:
            length = min(length, limit)
        return self.rfile.read(length)

    def _read_chunked(self, limit: int | None) -> bytes:
        body = bytearray()
        while limit is None or len(body) < limit:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            want = size if limit is None else min(size, limit - len(body))
            body += self.rfile.read(want)
            if want == size:
                self.rfile.readline()  # CRLF after the chunk
        return bytes(body)

    # -- upstream --------------------------------------------------------------------

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """Send the request upstream on a fresh connection; return the whole answer."""
        connection = http.client.HTTPConnection(
            self.proxy.upstream_host,
            self.proxy.upstream_port,
            timeout=UPSTREAM_TIMEOUT_S,
        )
        try:
            connection.putrequest(
                self.command, self.path, skip_host=True, skip_accept_encoding=True
            )
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    connection.putheader(name, value)
            if body or self.command not in ("GET", "HEAD", "DELETE"):
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            reply = response.read()
            headers = [
                (name, value)
                for name, value in response.getheaders()
                if name.lower() not in HOP_BY_HOP
            ]
            return response.status, response.reason, headers, reply
        finally:
            connection.close()

    # -- answering -------------------------------------------------------------------

    def _answer(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str] | list[tuple[str, str]],
        reason: str | None = None,
    ) -> None:
        pairs = list(headers.items()) if isinstance(headers, dict) else headers
        self.send_response_only(status, reason)
        keep_length = self.command == "HEAD" or status in (204, 304)
        for name, value in pairs:
            if name.lower() == "content-length" and not keep_length:
                continue
            self.send_header(name, value)
        if not keep_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)
        self.wfile.flush()

    def _reset(self) -> None:
        """Close the client connection with a TCP RST (SO_LINGER 0), not a FIN."""
        linger = struct.pack("ii", 1, 0)
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        finally:
            self.close_connection = True
            self.connection.close()

    def _record(
        self, head: RequestHead, body: bytes, status: int | None, action: str | None
    ) -> None:
        self.proxy._record(
            RecordedRequest(
                method=head.method,
                path=head.path,
                query=head.query,
                headers=head.headers,
                body_length=len(body),
                body_sha256=hashlib.sha256(body).hexdigest(),
                status=status,
                action=action,
                at_s=self.proxy._elapsed_s(),
            )
        )

    def finish(self) -> None:
        try:
            super().finish()
        except (OSError, ValueError):
            pass  # the connection was reset on purpose

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded; no noise on stderr


def _flip_byte(body: bytes, offset: int) -> bytes:
    if offset >= len(body):
        return body
    changed = bytearray(body)
    changed[offset] ^= 0xFF
    return bytes(changed)


def _apply(
    action: str | None,
    params: dict[str, Any],
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Change a forwarded answer as the rule says (delay, replace, rewrite)."""
    if action == "delay":
        time.sleep(params["seconds"])
    elif action == "replace":
        overrides = {name.lower(): value for name, value in params["headers"].items()}
        headers = [(n, v) for n, v in headers if n.lower() not in overrides]
        headers += list(params["headers"].items())
        status = params["status"] if params["status"] is not None else status
        body = params["body"] if params["body"] is not None else body
    elif action == "rewrite":
        wanted = params["name"].lower()
        rewritten = [
            (name, params["rewrite"](value) if name.lower() == wanted else value)
            for name, value in headers
        ]
        headers = [(name, value) for name, value in rewritten if value is not None]
    return status, headers, body
