"""Fixtures for tests that talk HTTP to the Alipay emulator on 127.0.0.1.

``creds``        one ISV app's generated credentials (session-scoped: generation takes ~0.25 s)
``emulator``     a started emulator that knows ``creds``, stopped after the test
``make_emulator`` more emulators (e.g. with a fake clock), started, registered and stopped
``make_client``  an ``AlipayClient`` configured for an emulator: make_client(cert_mode=, aes=, **kw)
``fake_clock``   a clock that only moves when told to
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from alipay_v3 import AlipayClient, AlipayConfig, TokenApi
from sandbox.credentials import DevCredentials
from sandbox.emulator import Emulator
from tests.integration.aws_fixtures import aws, aws_env, local_aws  # noqa: F401 - fixtures
from tests.integration.stack_fixtures import callback_module, stack  # noqa: F401 - fixtures


class FakeClock:
    """Starts at the real time (so certificates and token prefixes look current) and moves on demand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def creds() -> DevCredentials:
    return DevCredentials.generate()


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_emulator(creds: DevCredentials) -> Iterator[Callable[..., Emulator]]:
    started: list[Emulator] = []

    def make(*, credentials: DevCredentials | None = None, **kwargs: Any) -> Emulator:
        kwargs.setdefault("seed", 20251125)
        emulator = Emulator(**kwargs)
        emulator.register_app(credentials or creds)
        emulator.start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(make_emulator: Callable[..., Emulator]) -> Emulator:
    return make_emulator()


@pytest.fixture
def make_client(emulator: Emulator, creds: DevCredentials) -> Iterator[Callable[..., AlipayClient]]:
    """``make_client(cert_mode=False, aes=False, *, emu=None, credentials=None, config=None, **client_kwargs)``.

    Retries do not sleep unless the test passes its own ``sleep``.
    """
    clients: list[AlipayClient] = []

    def make(
        cert_mode: bool = False,
        aes: bool = False,
        *,
        emu: Emulator | None = None,
        credentials: DevCredentials | None = None,
        config: AlipayConfig | None = None,
        **client_kwargs: Any,
    ) -> AlipayClient:
        if config is None:
            gateway = (emu or emulator).base_url
            config = AlipayConfig.from_mapping(
                (credentials or creds).client_config(gateway, cert_mode=cert_mode, aes=aes)
            )
        client_kwargs.setdefault("sleep", lambda seconds: None)
        client = AlipayClient(config, **client_kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.session.close()


@pytest.fixture
def tokens(make_client: Callable[..., AlipayClient]) -> TokenApi:
    """A TokenApi in public-key mode against ``emulator``."""
    return TokenApi(make_client())
