"""The refresher's pace at Alipay, held by the transport: a ``requests`` adapter mounted on the
refresher's own session bounds the calls in flight and the rate they start at.

Being the transport, it holds a slot exactly while Alipay has a request: signing, verification and
the pauses between the client's retries happen outside it, and each retry takes its turn again.
The protocol package knows nothing of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import requests
from requests.adapters import BaseAdapter, HTTPAdapter


class RateLimiter:
    """Spaces calls at most ``rate`` per second across threads."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            self._sleep(start - now)


class PacedAdapter(BaseAdapter):
    """At most ``concurrency`` requests in flight through ``inner``, started at most ``rate`` per second."""

    def __init__(self, concurrency: int, rate: float, inner: BaseAdapter | None = None) -> None:
        super().__init__()
        self.inner = inner or HTTPAdapter(pool_connections=4, pool_maxsize=concurrency, max_retries=0)
        self.slots = threading.BoundedSemaphore(concurrency)
        self.limiter = RateLimiter(rate)
        self._throttled = 0  # answers saying the pace is too fast for Alipay (HTTP 429)
        self._count_lock = threading.Lock()

    def take_throttled(self) -> int:
        """How many calls Alipay throttled since the last time this was asked."""
        with self._count_lock:
            taken, self._throttled = self._throttled, 0
        return taken

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.slots.acquire()
        try:
            self.limiter.acquire()
            response = self.inner.send(request, **kwargs)
            if response.status_code == 429:
                with self._count_lock:
                    self._throttled += 1
            if not kwargs.get("stream"):
                response.content  # noqa: B018 - the body is read while the slot is held: Alipay is still sending
            return response
        finally:
            self.slots.release()

    def close(self) -> None:
        self.inner.close()


def paced_session(adapter: PacedAdapter) -> requests.Session:
    session = requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
