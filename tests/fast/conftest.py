"""Fixtures of the fast tier: generated credentials (once per session) and a fresh world per test."""

from __future__ import annotations

import pytest

from alipay_v3 import AlipayConfig
from sandbox.credentials import DevCredentials
from tests.fast.world import World, build_world


@pytest.fixture(scope="session")
def creds() -> DevCredentials:
    return DevCredentials.generate()


@pytest.fixture(scope="session")
def alipay_config(creds: DevCredentials) -> AlipayConfig:
    return AlipayConfig.from_mapping(creds.client_config("production"))


@pytest.fixture
def world(creds: DevCredentials, alipay_config: AlipayConfig) -> World:
    return build_world(creds, alipay_config)
