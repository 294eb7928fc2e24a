"""One refresher process for the ``refresh`` benchmark: ``python -m benchmarks.refresh_child``.

Builds the refresher exactly as ``sandbox.run_refresher`` does (environment: the function's
variables, the local stack's endpoints, the policy overrides), fetches its Alipay configuration
once, then runs ``RefreshService.run`` once over everything due. Prints one JSON line: the run's
summary, how long the run took and the CPU time it used (start-up excluded), the wall time spent
in each step of a refresh (summed over the worker threads), the AWS calls the run made, and the
process's peak and current RSS after start-up and after the run. Peaks come from /proc/self/status
(VmHWM), reset after start-up through /proc/self/clear_refs, not from ``ru_maxrss``: Linux carries
a process's ``ru_maxrss`` across fork and exec, so it starts at the parent's size (the benchmark's,
which grows with the seeding).
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from sandbox.run_refresher import build_refresher

MAX_SECONDS = 600.0
EXCHANGE = "exchange on the wire, in a slot (100 ms injected)"


class StepTimes:
    """Wall time per step, summed over threads: where one refresh's time goes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, owner: Any, method: str, step: str) -> None:
        inner: Callable[..., Any] = getattr(owner, method)

        @functools.wraps(inner)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                with self._lock:
                    self.seconds[step] = self.seconds.get(step, 0.0) + elapsed
                    self.calls[step] = self.calls.get(step, 0) + 1

        setattr(owner, method, timed)  # on the instance: nothing else in the process sees it


class AwsCalls:
    """AWS calls by operation, counted through each client's own botocore events."""

    def __init__(self, clients: list[Any]) -> None:
        self._lock = threading.Lock()
        self.calls: dict[str, int] = {}
        for client in clients:
            client.meta.events.register("before-call", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        name = f"{model.service_model.service_name} {model.name}"
        with self._lock:
            self.calls[name] = self.calls.get(name, 0) + 1


def _status_kib(field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident) of this process, in KiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")  # 5: reset the peak RSS to the current RSS (Linux 4.0+)
    except OSError:
        return False
    return True


def main() -> int:
    service = build_refresher()
    token_api = service.token_api()  # the Alipay config and the client: start-up, not the run
    steps = StepTimes()
    steps.wrap(service.store, "due_app_ids", "due query (iterator creation only)")
    steps.wrap(service.store, "acquire_lease", "lease (DynamoDB)")
    steps.wrap(service.store, "open_current", "open pair (AES; KMS when a data key is new)")
    steps.wrap(token_api, "refresh", "Alipay call (waits for a slot, signs, verifies)")
    pace = service.session.get_adapter(token_api.client.config.gateway)
    steps.wrap(pace.slots, "acquire", "waiting for a slot (16 in flight)")
    steps.wrap(pace.limiter, "acquire", "rate limiter")
    steps.wrap(pace.inner, "send", EXCHANGE)
    steps.wrap(service.store, "commit_rotation", "commit (DynamoDB; AES)")
    steps.wrap(service.publisher, "send", "events (one PutEvents call, up to 10 entries)")
    steps.wrap(service, "refresh_one", "whole refresh_one")
    aws_calls = AwsCalls([service.store._table._db, service.store._cipher._kms, service.publisher._events])
    peak_startup_kib = _status_kib("VmHWM")
    rss_ready_kib = _status_kib("VmRSS")
    peak_was_reset = _reset_peak_rss()
    started, cpu_started = time.monotonic(), time.process_time()
    summary = service.run(remaining_seconds=lambda: MAX_SECONDS - (time.monotonic() - started))
    run_seconds, run_cpu_seconds = time.monotonic() - started, time.process_time() - cpu_started
    print(
        json.dumps(
            {
                "summary": asdict(summary),
                "run_seconds": run_seconds,
                "run_cpu_seconds": run_cpu_seconds,
                "peak_rss_startup_kib": peak_startup_kib,
                "peak_rss_kib": _status_kib("VmHWM"),
                "peak_reset_after_startup": peak_was_reset,
                "rss_after_startup_kib": rss_ready_kib,
                "rss_after_run_kib": _status_kib("VmRSS"),
                "step_seconds": steps.seconds,
                "step_calls": steps.calls,
                "aws_calls": aws_calls.calls,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
