"""A clock that moves only when told to; starts at a fixed, realistic time."""

from __future__ import annotations


class Clock:
    def __init__(self, now: float = 1_764_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
