"""Run cloudput with every S3 PutObject answered inside the process (benchmarks only).

`python benchmarks/answer_puts.py upload DIR s3://bucket/prefix/ ...` runs cloudput's
CLI with a botocore ``before-send`` handler on each S3 client it makes: a PutObject is
answered at once with what S3 would say of a body that matches its headers (the ETag
from its Content-MD5, its CRC32C echoed), so nothing is sent for it. Everything else
(the preflight, ListObjects) still goes to the endpoint. What is left of the client's
CPU is cloudput's own per-file work plus botocore building, signing and parsing each
request: the server's share and the socket are gone. Used by ``per_file.py --answer``.
Patches botocore, not cloudput, so it runs any checkout's ``src/`` (``PYTHONPATH``).
"""

from __future__ import annotations

import base64
import sys
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.client import ClientCreator


class _EmptyBody:
    """The raw response botocore reads a PutObject answer's (empty) body from."""

    def stream(self, **_: Any) -> Any:
        yield b""

    def read(self, *_: Any) -> bytes:
        return b""


def answer_put(request: Any, **_: Any) -> AWSResponse:
    """A 200 answer to a PutObject whose body is taken to match its checksum headers."""
    headers = {"Content-Length": "0"}
    md5 = request.headers.get("Content-MD5")
    if md5:
        headers["ETag"] = '"' + base64.b64decode(md5).hex() + '"'
    else:
        headers["ETag"] = '"' + "0" * 31 + '1"'  # not the body's MD5: HEAD follows
    crc = request.headers.get("x-amz-checksum-crc32c")
    if crc:
        headers["x-amz-checksum-crc32c"] = crc
    return AWSResponse(request.url, 200, headers, _EmptyBody())


def _install() -> None:
    create = ClientCreator.create_client

    def create_client(self: Any, service_name: str, *args: Any, **kwargs: Any) -> Any:
        client = create(self, service_name, *args, **kwargs)
        if service_name == "s3":
            client.meta.events.register("before-send.s3.PutObject", answer_put)
        return client

    ClientCreator.create_client = create_client  # type: ignore[method-assign]


if __name__ == "__main__":
    _install()
    from cloudput.cli import main

    sys.argv = ["cloudput", *sys.argv[1:]]
    main()
