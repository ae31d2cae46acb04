"""Client-side limits shared by every transfer of a run: bytes per second
(``--bwlimit``) and requests per second (``--max-requests-per-second``).

A token bucket; the clock and sleep are injectable so tests need not wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """Hands out ``rate`` tokens per second, with a burst of one second's worth."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = rate
        self._stamp = clock()

    def take(self, count: float) -> float:
        """Take ``count`` tokens, waiting as long as the rate requires; returns the wait.

        A request larger than the burst is allowed to go once the bucket is full, and
        leaves a debt the next takers pay off, so the long-run rate holds.
        """
        with self._lock:
            now = self._clock()
            self._tokens = min(
                self.rate, self._tokens + (now - self._stamp) * self.rate
            )
            self._stamp = now
            self._tokens -= count
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


class Unlimited:
    """No limit."""

    def take(self, count: float) -> float:
        return 0.0
