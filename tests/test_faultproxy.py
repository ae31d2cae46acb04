"""The fault proxy against a tiny local upstream: forwarding, recording, each fault."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import requests
from azure.storage.blob import BlobServiceClient
from boto3.s3.transfer import TransferConfig
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs_storage

from tests.backends import Backend
from tests.faultproxy import FaultProxy, Match

MIB = 1024 * 1024


class _Upstream(BaseHTTPRequestHandler):
    """Echoes what it received as JSON and remembers each body it was sent."""

    protocol_version = "HTTP/1.1"
    received: list[bytes] = []

    def do_any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        type(self).received.append(body)
        reply = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "host": self.headers.get("Host"),
                "sha256": hashlib.sha256(body).hexdigest(),
            }
        ).encode()
        self.send_response(200)
        self.send_header("ETag", '"abc123"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_any

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[tuple[str, list[bytes]]]:
    handler = type("Upstream", (_Upstream,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.received
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream: tuple[str, list[bytes]]) -> Iterator[FaultProxy]:
    with FaultProxy(upstream[0]) as running:
        yield running


def test_forwards_and_records_requests(proxy: FaultProxy) -> None:
    body = b"x" * 100_000

    response = requests.put(f"{proxy.url}/b/k?partNumber=2&uploadId=u", data=body)

    assert response.status_code == 200
    assert response.json()["sha256"] == hashlib.sha256(body).hexdigest()
    assert response.json()["host"] == urlsplit(proxy.url).netloc  # Host kept
    [seen] = proxy.requests
    assert (seen.method, seen.path) == ("PUT", "/b/k")
    assert seen.query == {"partNumber": "2", "uploadId": "u"}
    assert seen.body_length == len(body)
    assert seen.body_sha256 == hashlib.sha256(body).hexdigest()
    assert (seen.status, seen.action) == (200, None)


def test_keeps_the_client_connection_alive(proxy: FaultProxy) -> None:
    with requests.Session() as session:
        for _ in range(3):
            assert session.get(f"{proxy.url}/x").status_code == 200

    assert proxy.count(Match(method="GET", path="^/x$")) == 3


def test_answers_expect_100_continue(proxy: FaultProxy) -> None:
    netloc = urlsplit(proxy.url).netloc
    connection = http.client.HTTPConnection(netloc, timeout=10)
    connection.putrequest("PUT", "/b/k")
    connection.putheader("Content-Length", "5")
    connection.putheader("Expect", "100-continue")
    connection.endheaders()
    interim = connection.sock.recv(100)  # type: ignore[union-attr]
    connection.send(b"hello")

    response = connection.getresponse()

    assert interim.startswith(b"HTTP/1.1 100")
    assert response.status == 200
    assert json.loads(response.read())["sha256"] == hashlib.sha256(b"hello").hexdigest()


def test_respond_answers_without_forwarding(
    proxy: FaultProxy, upstream: tuple[str, list[bytes]]
) -> None:
    proxy.respond(Match(query={"partNumber": "3"}), 503, b"<Error>SlowDown</Error>")

    first = requests.put(f"{proxy.url}/b/k?partNumber=3", data=b"abc")
    second = requests.put(f"{proxy.url}/b/k?partNumber=3", data=b"abc")

    assert (first.status_code, first.content) == (503, b"<Error>SlowDown</Error>")
    assert second.status_code == 200  # times=1: used up
    assert len(upstream[1]) == 1
    assert [r.action for r in proxy.requests] == ["respond", None]


def test_unlimited_rule_matches_only_its_requests(proxy: FaultProxy) -> None:
    rule = proxy.respond(Match(method="PUT"), 500, times=None)

    statuses = [requests.put(f"{proxy.url}/k", data=b"1").status_code for _ in range(4)]
    other = requests.get(f"{proxy.url}/k")

    assert statuses == [500] * 4
    assert other.status_code == 200
    assert rule.hits == 4


def test_rule_outside_its_time_window_does_nothing(proxy: FaultProxy) -> None:
    proxy.respond(Match(), 500, times=None, window_s=(0.0, 0.3))

    early = requests.get(f"{proxy.url}/k").status_code
    time.sleep(0.4)
    late = requests.get(f"{proxy.url}/k").status_code

    assert (early, late) == (500, 200)


def test_reset_after_n_body_bytes(
    proxy: FaultProxy, upstream: tuple[str, list[bytes]]
) -> None:
    proxy.reset_after(Match(method="PUT"), body_bytes=1000)

    with pytest.raises(requests.ConnectionError):
        requests.put(f"{proxy.url}/k", data=b"z" * 5_000_000)

    [seen] = proxy.requests
    assert (seen.body_length, seen.status, seen.action) == (1000, None, "reset")
    assert upstream[1] == []


def test_drop_response_forwards_but_never_answers(
    proxy: FaultProxy, upstream: tuple[str, list[bytes]]
) -> None:
    proxy.drop_response(Match(method="POST"))

    with pytest.raises(requests.ConnectionError):
        requests.post(f"{proxy.url}/k?uploads", data=b"done")

    assert upstream[1] == [b"done"]  # the server did act on it
    assert proxy.requests[0].status is None


def test_delay_holds_the_answer(proxy: FaultProxy) -> None:
    proxy.delay(Match(), 0.5)
    started = time.monotonic()

    response = requests.get(f"{proxy.url}/k")

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.5


def test_corrupt_flips_one_byte_in_transit(
    proxy: FaultProxy, upstream: tuple[str, list[bytes]]
) -> None:
    proxy.corrupt(Match(method="PUT"), offset=2)

    requests.put(f"{proxy.url}/k", data=b"\x00\x00\x00\x00")

    assert upstream[1] == [b"\x00\x00\xff\x00"]
    assert proxy.requests[0].body_sha256 == hashlib.sha256(b"\x00" * 4).hexdigest()


def test_replace_response_keeps_forwarding(
    proxy: FaultProxy, upstream: tuple[str, list[bytes]]
) -> None:
    error = b"<Error><Code>InternalError</Code><Message>x</Message></Error>"
    proxy.replace_response(
        Match(method="POST", query={"uploadId": None}),
        status=200,
        body=error,
        headers={"Content-Type": "application/xml"},
    )

    response = requests.post(f"{proxy.url}/b/k?uploadId=u1", data=b"<Complete/>")

    assert (response.status_code, response.content) == (200, error)
    assert response.headers["Content-Type"] == "application/xml"
    assert upstream[1] == [b"<Complete/>"]


def test_rewrite_header_strips_etag_quotes(proxy: FaultProxy) -> None:
    proxy.rewrite_header(Match(), "ETag", lambda value: value.strip('"'), times=None)

    response = requests.put(f"{proxy.url}/k", data=b"1")

    assert response.headers["ETag"] == "abc123"


def test_head_keeps_the_upstream_content_length(proxy: FaultProxy) -> None:
    response = requests.head(f"{proxy.url}/k")

    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) > 0


def test_count_and_body_bytes_filter_by_match(proxy: FaultProxy) -> None:
    for number in ("1", "2", "2"):
        requests.put(f"{proxy.url}/k?partNumber={number}", data=b"12345")

    assert proxy.count(Match(query={"partNumber": "2"})) == 2
    assert proxy.body_bytes(Match(method="PUT")) == 15
    assert proxy.count(Match(headers={"Content-Length": "5"})) == 3


def test_proxy_in_front_of_each_emulator(backend: Backend) -> None:
    """Each SDK reaches its emulator through the proxy, and every request is seen."""
    data = bytes(range(256)) * 4096 * 6  # 6 MiB: multipart / resumable / blocks

    with FaultProxy(backend.endpoint) as proxy:
        _upload_through(backend, proxy.url, "via-proxy.bin", data)

        assert proxy.count() >= 2
        assert all(r.status is not None and r.status < 400 for r in proxy.requests)
        assert proxy.body_bytes(Match(method="PUT")) >= len(data)
    assert backend.read("via-proxy.bin") == data


def _upload_through(backend: Backend, proxy_url: str, key: str, data: bytes) -> None:
    env = backend.routed_through(proxy_url)
    if backend.name == "s3":
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
        config = TransferConfig(
            multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB
        )
        client.upload_fileobj(io.BytesIO(data), backend.bucket, key, Config=config)
    elif backend.name == "gcs":
        client = gcs_storage.Client(
            project="p",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": env["STORAGE_EMULATOR_HOST"]},
        )
        blob = client.bucket(backend.bucket).blob(key, chunk_size=2 * MIB)
        blob.upload_from_file(io.BytesIO(data))  # no size given: a resumable session
    else:
        service = BlobServiceClient.from_connection_string(
            env["AZURE_STORAGE_CONNECTION_STRING"],
            max_single_put_size=MIB,
            max_block_size=2 * MIB,
        )
        service.get_blob_client(backend.bucket, key).upload_blob(data)
