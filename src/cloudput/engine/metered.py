"""A provider wrapper that applies the run's client-side limits and writes the audit
log: every request takes a request token (``--max-requests-per-second``), every body
takes bandwidth tokens (``--bwlimit``), and each lifecycle step gets an audit line.

It wraps any ``Provider`` and changes nothing else, so no backend knows about it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from cloudput.audit import AuditLog
from cloudput.engine.throttle import TokenBucket, Unlimited
from cloudput.errors import CloudputError
from cloudput.keys import Target
from cloudput.providers.base import (
    Body,
    Digest,
    Expected,
    Incomplete,
    ObjectSpec,
    PartSpec,
    PresignedRequest,
    Provider,
    Receipt,
    RemoteObject,
    Verified,
)

T = TypeVar("T")


class MeteredProvider:
    """Delegates to ``inner``; limits and audits on the way."""

    def __init__(
        self,
        inner: Provider,
        audit: AuditLog | None = None,
        bandwidth: TokenBucket | Unlimited | None = None,
        requests: TokenBucket | Unlimited | None = None,
    ):
        self.inner = inner
        self.limits = inner.limits
        self._audit = audit
        self._bandwidth = bandwidth or Unlimited()
        self._requests = requests or Unlimited()

    def _call(
        self,
        step: str | None,
        spec: ObjectSpec | None,
        call: Callable[..., T],
        *args: Any,
        size_bytes: int = 0,
        part: int | None = None,
    ) -> T:
        self._requests.take(1)
        if size_bytes:
            self._bandwidth.take(size_bytes)
        if self._audit is None or step is None or spec is None:
            return call(*args)
        audited = self._audit.begin(step, spec.upload_id, spec.target, size_bytes, part)
        try:
            result = call(*args)
        except CloudputError as exc:
            audited.finish("error", exc.code)
            raise
        except BaseException:
            audited.finish("error", "internal")
            raise
        audited.finish()
        return result

    def check_bucket(self, target: Target) -> None:
        self._call(None, None, self.inner.check_bucket, target)

    def start(self, spec: ObjectSpec, part_size_bytes: int) -> str:
        return self._call("init", spec, self.inner.start, spec, part_size_bytes)

    def held_parts(
        self, spec: ObjectSpec, session: str, parts: Sequence[PartSpec]
    ) -> dict[int, Receipt]:
        return self._call(None, spec, self.inner.held_parts, spec, session, parts)

    def send_part(
        self,
        spec: ObjectSpec,
        session: str,
        part: PartSpec,
        body: Body,
        digest: Digest | None,
    ) -> Receipt:
        return self._call(
            "part",
            spec,
            self.inner.send_part,
            spec,
            session,
            part,
            body,
            digest,
            size_bytes=part.size_bytes,
            part=part.number,
        )

    def complete(
        self,
        spec: ObjectSpec,
        session: str,
        receipts: Sequence[Receipt],
        expected: Expected,
    ) -> Verified:
        return self._call(
            "complete",
            spec,
            self.inner.complete,
            spec,
            session,
            receipts,
            expected,
            size_bytes=0,
        )

    def abort(self, spec: ObjectSpec, session: str) -> None:
        self._call("abort", spec, self.inner.abort, spec, session)

    def put_single(
        self, spec: ObjectSpec, body: Body, digest: Digest | None
    ) -> Verified:
        return self._call(
            "complete",
            spec,
            self.inner.put_single,
            spec,
            body,
            digest,
            size_bytes=body.size_bytes,
            part=1,
        )

    def head(self, target: Target) -> RemoteObject | None:
        return self._call(None, None, self.inner.head, target)

    def storage_url(self, target: Target) -> str:
        return self.inner.storage_url(target)

    def presign_part(
        self,
        spec: ObjectSpec,
        session: str,
        part: PartSpec,
        ttl_s: float,
        content_md5: str | None = None,
    ) -> PresignedRequest:
        return self.inner.presign_part(spec, session, part, ttl_s, content_md5)

    def presign_single(
        self, spec: ObjectSpec, ttl_s: float, content_md5: str | None = None
    ) -> PresignedRequest:
        return self.inner.presign_single(spec, ttl_s, content_md5)

    def list_incomplete(self, target: Target, older_than_s: float) -> list[Incomplete]:
        return self._call(None, None, self.inner.list_incomplete, target, older_than_s)

    def endpoint(self) -> str:
        return self.inner.endpoint()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # Provider-specific extras (e.g. S3's reload_credentials) pass through.
        return getattr(self.inner, name)
