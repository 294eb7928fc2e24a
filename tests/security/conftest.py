"""Fixtures and checks for the security suite: hostile input, forged traffic, secret leaks.

The same local stack as the integration tests (DynamoDB Local, moto, the emulator, the HTTP front,
the real handler), plus ``make_stack(cert_mode=, aes=)`` for the ISV configurations the default
stack does not use, ``invoke`` to drive the handler with payload-2.0 events (no socket, fast enough
for property-based tests), and the checks every refusal must pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, settings

from app_auth.container import build_container, set_container
from sandbox.aws_standins import LocalAws
from sandbox.credentials import DevCredentials
from sandbox.emulator import Emulator
from sandbox.front import Front, LambdaContext, http_api_event
from sandbox.stack import provision
from tests.integration.aws_fixtures import aws, aws_env, local_aws  # noqa: F401 - fixtures
from tests.integration.stack_fixtures import Stack, callback_module, observe_events, stack  # noqa: F401 - fixtures

# CI replays the same examples every run (a failure there reproduces locally with CI=true);
# locally each run explores new ones. No example database: nothing is written to the work tree.
IN_CI = bool(os.environ.get("CI"))

# Item key prefixes that hostile or forged input must never create.
TRACE_PREFIXES = ("CODE#", "APP#", "NOTIFY#")
# What a Python traceback or an internal error page looks like in a response body.
_TRACE_MARKERS = ("Traceback (most recent call last)", 'File "/', '.py", line ', "Internal Server Error")


def bounded(max_examples: int) -> settings:
    """Hypothesis settings for tests that drive the stack: few examples, no deadline (I/O-bound)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=IN_CI,
        database=None,
        # The stack is built once per test and reused by every example: that is the point.
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@pytest.fixture(scope="session")
def creds() -> DevCredentials:
    return DevCredentials.generate()


@pytest.fixture
def make_stack(
    aws: LocalAws,  # noqa: F811 - the fixture imported above
    creds: DevCredentials,
    callback_module: ModuleType,  # noqa: F811
) -> Iterator[Callable[..., Stack]]:
    """``make_stack(cert_mode=False, aes=False)``: the ``stack`` fixture with another ISV configuration."""
    opened: list[tuple[Emulator, Front]] = []

    def make(*, cert_mode: bool = False, aes: bool = False) -> Stack:
        emulator, front = Emulator(), Front()
        emulator.start()
        front.start()
        opened.append((emulator, front))
        emulator.register_app(creds)
        provisioned = provision(
            aws,
            creds.client_config(emulator.base_url, cert_mode=cert_mode, aes=aes),
            callback_url=f"{front.url}/callback",
        )
        container = build_container(provisioned.settings, client=aws.client, sleep=lambda _: None)
        set_container(container)
        queue_url = observe_events(aws, provisioned.settings.event_bus_name)
        return Stack(aws, emulator, creds, front, container, queue_url, requests.Session())

    try:
        yield make
    finally:
        set_container(None)
        for emulator, front in opened:
            front.stop()
            emulator.stop()


def invoke(
    handler: Callable[[dict[str, Any], Any], dict[str, Any]],
    method: str,
    target: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One request straight into the handler, as API Gateway would deliver it."""
    all_headers = {"host": "127.0.0.1", "user-agent": "security-suite", **(headers or {})}
    event = http_api_event(method, target, all_headers, body, "127.0.0.1")
    result: dict[str, Any] = handler(event, LambdaContext(aws_request_id="security"))
    return result


def assert_refused(status: int, body: str, *, allowed: tuple[int, ...] = ()) -> None:
    """A refusal: a 4xx (or one of the documented answers in ``allowed``), and no internals shown."""
    assert status in allowed or 400 <= status < 500, (status, body[:300])
    for marker in _TRACE_MARKERS:
        assert marker not in body, body[:1000]


def traces(of: Stack) -> list[str]:
    """Keys of the items hostile input must never leave behind."""
    return sorted(i["pk"]["S"] for i in of.table_items() if i["pk"]["S"].startswith(TRACE_PREFIXES))
