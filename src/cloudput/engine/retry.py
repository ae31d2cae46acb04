"""The engine's retry policy: which errors are retried, how long to wait between
attempts, what giving up raises, and which of several part failures wins.

It sends nothing and keeps no logger of its own: the caller passes its logger and its
sleep (a stop signal's wait, so a stop cuts a backoff short; a no-op in tests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from cloudput.errors import (
    CloudputError,
    IntegrityError,
    InterruptedRunError,
    PresignExpiredError,
    RetriesExhaustedError,
    SourceChangedError,
    TransientError,
    UploadGoneError,
)

T = TypeVar("T")

#: When parts of one upload fail together, the first kind here that is among the
#: errors is the one raised: a stop, then what a retry can never fix.
SEVERITY = (InterruptedRunError, IntegrityError, SourceChangedError, UploadGoneError)


class Stop(Protocol):
    """What a retry asks of the run's stop signal (``runner.StopSignal``)."""

    error: CloudputError | None

    def is_set(self) -> bool: ...


def is_retryable(exc: BaseException) -> bool:
    """A transient failure, except a session the provider no longer knows (retrying
    a part of it cannot succeed; the engine starts the upload over instead)."""
    return isinstance(exc, TransientError) and not isinstance(exc, UploadGoneError)


def most_severe(errors: list[BaseException]) -> BaseException:
    """The error to raise when several parts failed: by ``SEVERITY``, then the first
    that is not a ``CloudputError`` (a bug must not hide behind a timeout), then the
    first."""
    for kind in SEVERITY:
        for exc in errors:
            if isinstance(exc, kind):
                return exc
    for exc in errors:
        if not isinstance(exc, CloudputError):
            return exc
    return errors[0]


@dataclass(frozen=True)
class Backoff:
    """Exponential waits between attempts: ``base_delay_s`` doubling up to
    ``max_delay_s``, plus up to ``base_delay_s`` of random jitter (so the jitter
    scales with the base delay, and a test's tiny base waits next to nothing)."""

    base_delay_s: float
    max_delay_s: float

    def wait(self) -> wait_base:
        """The tenacity wait strategy."""
        return wait_exponential_jitter(
            multiplier=self.base_delay_s,
            max=self.max_delay_s,
            jitter=self.base_delay_s,
        )


@dataclass(frozen=True)
class RetryPolicy:
    """Up to ``attempts`` calls (the first and its retries) of a retryable failure,
    waiting by ``backoff`` with ``sleep``; none once ``stop`` is set.

    Giving up raises ``RetriesExhaustedError`` naming the attempts made and the last
    cause, or the stop's own error when a stop ended the retries. A session gone
    (``UploadGoneError``), an expired presigned URL and every non-transient error go
    through unchanged.
    """

    attempts: int
    backoff: Backoff
    stop: Stop
    sleep: Callable[[float], Any]
    log: logging.Logger

    def call(self, what: str, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` under this policy; ``what`` names it in logs and errors.

        The first attempt is made without a tenacity controller (most calls succeed
        at once, and one costs more to build than a small file's journal work); a
        failure is handed to one as its first attempt, so waits, logs and attempt
        counts are the controller's alone.
        """
        try:
            return call(*args)
        except Exception as exc:
            first: Exception | None = exc

        def attempt() -> T:
            nonlocal first
            if first is not None:
                failed, first = first, None
                raise failed
            return call(*args)

        retrying = self._retrying(what)
        try:
            return retrying(attempt)
        except (UploadGoneError, PresignExpiredError):
            raise
        except TransientError as exc:
            count = retrying.statistics.get("attempt_number", self.attempts)
            raise self._given_up(what, exc, count) from exc

    def _retrying(self, what: str) -> Retrying:
        """A fresh tenacity controller: its statistics belong to this one call."""

        def note_failure(state: RetryCallState) -> None:
            self.log.debug(
                "%s: attempt %d failed (%s); retrying",
                what,
                state.attempt_number,
                state.outcome.exception() if state.outcome else "?",
            )

        return Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=self.backoff.wait(),
            retry=retry_if_exception(
                lambda exc: is_retryable(exc) and not self.stop.is_set()
            ),
            sleep=self.sleep,
            before_sleep=note_failure,
            reraise=True,
        )

    def _given_up(
        self, what: str, exc: TransientError, attempt_count: int
    ) -> CloudputError:
        if self.stop.is_set() and self.stop.error is not None:
            return self.stop.error
        return RetriesExhaustedError(
            f"{what} failed after {attempt_count} attempts: {exc.message}",
            hint="the upload is kept; run `cloudput resume --all` later",
            code=exc.code if exc.code != "transient" else "retries_exhausted",
        )
