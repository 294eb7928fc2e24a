"""The scheduled refresher as a process of its own: ``python -m sandbox.run_refresher [--until-done]``.

Builds the container from the environment (the function's variables, as ``sandbox.stack.provision``
returns them, plus the AWS endpoint variables of ``LocalAws.process_env()``) and runs
``RefreshService.run`` once, or again and again until nothing is due (``--until-done``, bounded
by ``--max-seconds``). Prints one JSON line per run and a last line with the totals.

Tuning for tests, all optional (``RefreshPolicy.from_env``)::

    REFRESH_LEASE_SECONDS, REFRESH_CONCURRENCY, REFRESH_MAX_CALLS_PER_SECOND,
    REFRESH_BACKOFF_BASE_SECONDS, REFRESH_BACKOFF_CAP_SECONDS, REFRESH_STOP_MARGIN_SECONDS
    ALIPAY_CONNECT_TIMEOUT_SECONDS, ALIPAY_READ_TIMEOUT_SECONDS, ALIPAY_MAX_ATTEMPTS

Chaos hooks (tests/chaos): ``REFRESHER_TRACE_FILE`` appends ``<pid> <step> <merchant app> [outcome]``
lines (steps: start, answer, done; never a token), and ``REFRESHER_PAUSE_AFTER_CALL_SECONDS``
sleeps between Alipay's answer and our write, so that a kill lands in that window on purpose.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from alipay_v3 import TokenApi, TokenGrant
from app_auth.container import build_container
from app_auth.refresh import RefreshOutcome, RefreshPolicy, RefreshService
from app_auth.settings import Settings

_IDLE_SECONDS = 0.2  # between runs while leased items wait for their lease to expire


def client_options_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if env.get("ALIPAY_CONNECT_TIMEOUT_SECONDS") or env.get("ALIPAY_READ_TIMEOUT_SECONDS"):
        options["timeout"] = (
            float(env.get("ALIPAY_CONNECT_TIMEOUT_SECONDS") or 3.05),
            float(env.get("ALIPAY_READ_TIMEOUT_SECONDS") or 10.0),
        )
    if env.get("ALIPAY_MAX_ATTEMPTS"):
        options["max_attempts"] = int(env["ALIPAY_MAX_ATTEMPTS"])
    return options


class Trace:
    """Appends short lines to a file shared by several processes (O_APPEND: each write lands whole)."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._pid = os.getpid()

    def write(self, *words: str) -> None:
        os.write(self._fd, (" ".join((str(self._pid), *words)) + "\n").encode())


class _TracedTokenApi(TokenApi):
    """The real TokenApi, noting each answer and optionally pausing before the caller writes it."""

    def __init__(self, inner: TokenApi, trace: Trace | None, pause: float, current: threading.local) -> None:
        super().__init__(inner.client, clock=inner.clock)
        self._trace = trace
        self._pause = pause
        self._current = current

    def refresh(self, app_refresh_token: str, **options: Any) -> TokenGrant:
        grant = super().refresh(app_refresh_token, **options)
        if self._trace is not None:
            self._trace.write("answer", getattr(self._current, "app", "-"))
        if self._pause > 0:
            time.sleep(self._pause)
        return grant


class _TracedRefreshService(RefreshService):
    def __init__(self, *, trace: Trace | None, current: threading.local, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._trace = trace
        self._current = current

    def refresh_one(self, auth_app_id: str, **options: Any) -> RefreshOutcome:
        self._current.app = auth_app_id
        if self._trace is not None:
            self._trace.write("start", auth_app_id)
        outcome = super().refresh_one(auth_app_id, **options)
        if self._trace is not None:
            self._trace.write("done", auth_app_id, outcome)
        return outcome


def build_refresher(env: Mapping[str, str] | None = None) -> RefreshService:
    """The refresher the Lambda would run, with the policy and client options the environment sets."""
    env = os.environ if env is None else env
    trace = Trace(env["REFRESHER_TRACE_FILE"]) if env.get("REFRESHER_TRACE_FILE") else None
    pause = float(env.get("REFRESHER_PAUSE_AFTER_CALL_SECONDS") or 0)
    current = threading.local()
    container = build_container(
        Settings.from_env(env),
        alipay_client_options=client_options_from_env(env),
        wrap_token_api=(lambda api: _TracedTokenApi(api, trace, pause, current)) if trace or pause else None,
    )
    return _TracedRefreshService(
        trace=trace,
        current=current,
        settings=container.settings,
        store=container.store,
        token_api=container.new_token_api,
        publisher=container.publisher,
        policy=RefreshPolicy.from_env(env),
    )


def run(
    service: RefreshService,
    *,
    until_done: bool,
    max_seconds: float,
    emit: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    deadline = time.monotonic() + max_seconds
    totals: dict[str, Any] = {"runs": 0, "due": 0, "outcomes": {}, "left_retryable": False, "done": False}
    while True:
        summary = service.run(remaining_seconds=lambda: deadline - time.monotonic())
        emit(asdict(summary))
        totals["runs"] += 1
        totals["due"] += summary.due
        for outcome, count in summary.outcomes.items():
            totals["outcomes"][outcome] = totals["outcomes"].get(outcome, 0) + count
        totals["left_retryable"] = summary.left_retryable
        if summary.due == 0:
            totals["done"] = True
            return totals
        if not until_done or time.monotonic() + _IDLE_SECONDS >= deadline:
            return totals
        time.sleep(_IDLE_SECONDS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.run_refresher", description="Run the scheduled token refresher once."
    )
    parser.add_argument("--until-done", action="store_true", help="run again until nothing is due")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="time budget for all runs")
    args = parser.parse_args(argv)

    def emit(line: dict[str, Any]) -> None:
        print(json.dumps(line), flush=True)

    totals = run(build_refresher(), until_done=args.until_done, max_seconds=args.max_seconds, emit=emit)
    emit({"totals": totals})
    return 1 if totals["left_retryable"] else 0


if __name__ == "__main__":
    sys.exit(main())
