"""Fault injection: the ways a response from Alipay (or the network in between) can go wrong.

A test arms a fault with ``inject``; every request to the emulator then draws the faults that
fire for it, either a fixed number of times or with a probability from a seedable RNG.
"""

from __future__ import annotations

import enum
import random
import threading
from dataclasses import dataclass


class Fault(enum.Enum):
    TAMPER_BODY = "tamper-body"  # sign the body, then change a character of it
    TAMPER_SIGNATURE = "tamper-signature"  # alipay-signature no longer matches
    MISSING_SIGNATURE = "missing-signature"  # no alipay-signature header
    WRONG_SN = "wrong-sn"  # correct signature, but alipay-sn names a certificate nobody has
    OTHER_KEY = "other-key"  # signed with a key that is not the configured Alipay key
    LATENCY = "latency"  # sleep ``delay`` seconds before answering
    HTTP_500 = "http-500"  # unsigned 500, the request is not processed
    # Unsigned 429, not processed. No source says how Alipay answers a call over the app's QPS
    # (../shared/docs/alipay-v3-protocol.md §8.9); 429 is HTTP's reading, and what the client retries.
    HTTP_429 = "http-429"
    HTTP_502_AFTER_PROCESSING = "http-502-after-processing"  # processed (code spent...), then unsigned 502
    DROP_CONNECTION = "drop-connection"  # close the socket without an answer, request not processed
    DROP_AFTER_PROCESSING = "drop-after-processing"  # processed, then the socket closes without an answer


@dataclass
class _Armed:
    fault: Fault
    remaining: int | None  # None: no limit
    rate: float
    delay: float


@dataclass(frozen=True)
class Draw:
    """The faults that fire for one request."""

    faults: frozenset[Fault] = frozenset()
    delay: float = 0.0

    def __contains__(self, fault: object) -> bool:
        return fault in self.faults


class FaultPlan:
    """Thread-safe set of armed faults."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._armed: list[_Armed] = []
        self._random = random.Random(seed)

    def inject(
        self,
        fault: Fault,
        times: int | None = None,
        *,
        rate: float | None = None,
        delay: float = 0.0,
        after_processing: bool = False,
    ) -> None:
        """Arm ``fault``: for the next ``times`` requests (default 1), or with probability ``rate``
        (unlimited unless ``times`` is also given). ``delay`` is the sleep of ``Fault.LATENCY``."""
        if after_processing:
            if fault is not Fault.DROP_CONNECTION:
                raise ValueError("after_processing only applies to Fault.DROP_CONNECTION")
            fault = Fault.DROP_AFTER_PROCESSING
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise ValueError("rate is a probability between 0 and 1")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        if fault is Fault.LATENCY and delay <= 0:
            raise ValueError("Fault.LATENCY needs delay=<seconds>")
        remaining = times if times is not None or rate is not None else 1
        with self._lock:
            self._armed.append(_Armed(fault, remaining, 1.0 if rate is None else rate, delay))

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def draw(self) -> Draw:
        fired: set[Fault] = set()
        delay = 0.0
        with self._lock:
            for armed in self._armed:
                if armed.fault in fired:
                    continue  # the same fault armed twice hits two requests, not one request twice
                if armed.rate < 1.0 and self._random.random() >= armed.rate:
                    continue
                fired.add(armed.fault)
                delay = max(delay, armed.delay)
                if armed.remaining is not None:
                    armed.remaining -= 1
            self._armed = [armed for armed in self._armed if armed.remaining != 0]
        return Draw(frozenset(fired), delay)
