"""The refresher's pace as a transport adapter: calls in flight bounded, starts spaced, body read inside."""

import threading

import requests
from requests.adapters import BaseAdapter

from app_auth.pacing import PacedAdapter, RateLimiter, paced_session


class SlowAdapter(BaseAdapter):
    """Holds each request until released; counts how many are inside at once."""

    def __init__(self):
        super().__init__()
        self.inside = self.most_inside = self.sent = 0
        self.lock = threading.Lock()
        self.gate = threading.Event()

    def send(self, request, **kwargs):
        with self.lock:
            self.inside += 1
            self.sent += 1
            self.most_inside = max(self.most_inside, self.inside)
        self.gate.wait(10)
        response = requests.Response()
        response.status_code, response._content, response.request = 200, b"{}", request
        with self.lock:
            self.inside -= 1
        return response

    def close(self):
        pass


def test_no_more_than_the_concurrency_is_ever_in_flight():
    inner = SlowAdapter()
    session = requests.Session()
    session.mount("http://", PacedAdapter(3, 0, inner=inner))
    threads = [
        threading.Thread(target=session.post, args=("http://127.0.0.1:9/v3",), daemon=True) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    while inner.sent < 3:
        threading.Event().wait(0.01)
    threading.Event().wait(0.1)  # the other five would have arrived by now, were they let in
    assert (inner.sent, inner.inside) == (3, 3)
    inner.gate.set()
    for thread in threads:
        thread.join(10)
    assert (inner.sent, inner.most_inside) == (8, 3)


def test_starts_are_spaced_by_the_rate():
    now, slept = [100.0], []

    def sleep(seconds):
        slept.append(round(seconds, 6))

    limiter = RateLimiter(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        limiter.acquire()
    assert slept == [0.25, 0.5]  # the second waits a quarter second, the third half a second
    now[0] += 10  # after a quiet spell, no waiting
    limiter.acquire()
    assert slept == [0.25, 0.5]


def test_a_zero_rate_does_not_limit():
    slept = []
    limiter = RateLimiter(0, sleep=slept.append)
    for _ in range(5):
        limiter.acquire()
    assert slept == []


def test_the_paced_session_mounts_the_pace_for_both_schemes():
    session = paced_session(PacedAdapter(2, 10))
    adapters = {session.get_adapter("https://openapi.alipay.com"), session.get_adapter("http://127.0.0.1")}
    [adapter] = adapters
    assert isinstance(adapter, PacedAdapter)
