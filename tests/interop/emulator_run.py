"""The emulator run by the interop suites: its clock (shared with the SDK's pinned timestamps and
our client), and the official Node SDK's ``curl`` against it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from sandbox.credentials import DevCredentials
from sandbox.emulator import Emulator
from tests.interop.nodesdk import Oracle, sdk_config

GRACE_SECONDS = 60.0


class FakeClock:
    """Shared by the emulator, the SDK (its pinned timestamps) and our client."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Running:
    emulator: Emulator
    url: str
    clock: FakeClock


@pytest.fixture(scope="module")
def running(credential_sets: list[DevCredentials]) -> Iterator[Running]:
    clock = FakeClock()
    emulator = Emulator(grace_seconds=GRACE_SECONDS, clock=clock)
    for creds in credential_sets:
        emulator.register_app(creds)
    url = emulator.start()
    try:
        yield Running(emulator, url, clock)
    finally:
        emulator.stop()


@dataclass(frozen=True)
class Mode:
    name: str
    cert_mode: bool
    aes: bool
    pkcs8: bool
    pem: bool
    key_type_hint: bool = True


MODES = [
    Mode("key-PKCS1-PEM", cert_mode=False, aes=False, pkcs8=False, pem=True),
    Mode("key-AES-PKCS8-base64", cert_mode=False, aes=True, pkcs8=True, pem=False, key_type_hint=False),
    Mode("cert-PKCS8-PEM", cert_mode=True, aes=False, pkcs8=True, pem=True),
    Mode("cert-AES-PKCS1-base64", cert_mode=True, aes=True, pkcs8=False, pem=False),
]


def sdk_curl(
    oracle: Oracle,
    running: Running,
    creds: DevCredentials,
    mode: Mode,
    method: str,
    path: str,
    *,
    body: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    config = sdk_config(
        creds,
        cert_mode=mode.cert_mode,
        aes=mode.aes,
        pkcs8=mode.pkcs8,
        pem=mode.pem,
        key_type_hint=mode.key_type_hint,
        endpoint=running.url,
    )
    result: dict[str, Any] = oracle.call(
        "curl",
        config=config,
        method=method,
        path=path,
        body=body,
        query=query,
        needEncrypt=mode.aes,
        nonce=str(uuid.uuid4()),
        timestamp=int(running.clock() * 1000),  # the emulator checks timestamps against its own clock
    )
    return result
