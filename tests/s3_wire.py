"""S3 requests as a FaultProxy sees them: matchers and the part numbers sent.

Shared by the S3 CLI and field-case tests, which count and fault requests at the wire.
"""

from __future__ import annotations

from tests.faultproxy import FaultProxy, Match, RecordedRequest

UPLOAD_PART = Match(method="PUT", query={"partNumber": None, "uploadId": None})
CREATE = Match(method="POST", query={"uploads": None})
COMPLETE = Match(method="POST", query={"uploadId": None})
LIST_PARTS = Match(method="GET", query={"uploadId": None})
PUT_OBJECT = Match(method="PUT", where=lambda head: "partNumber" not in head.query)


def part_match(number: int) -> Match:
    """UploadPart of part ``number``."""
    return Match(method="PUT", query={"partNumber": str(number), "uploadId": None})


def part_number(request: RecordedRequest) -> int:
    return int(request.query["partNumber"])


def numbers_sent(proxy: FaultProxy) -> list[int]:
    """The part numbers of every UploadPart the proxy saw, sorted (repeats kept)."""
    return sorted(part_number(r) for r in proxy.matching(UPLOAD_PART))
