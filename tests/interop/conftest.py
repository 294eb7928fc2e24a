"""Session fixtures of the interop suite: one node process running the official SDK, shared credentials."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from sandbox.credentials import DevCredentials
from tests.interop.nodesdk import SDK_DIR, SDK_VERSION, ConfigCache, Oracle


@pytest.fixture(scope="session")
def oracle() -> Iterator[Oracle]:
    if not (SDK_DIR / "dist" / "commonjs" / "alipay.js").is_file():
        pytest.fail(f"the official Node SDK is not installed ({SDK_DIR} is missing): run make setup")
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH; install Node.js 20+ and run make setup")
    harness = Oracle()
    try:
        if harness.sdk_version != SDK_VERSION:
            pytest.fail(
                f"node_modules has alipay-sdk {harness.sdk_version}, the suite pins {SDK_VERSION}: run make setup"
            )
        yield harness
    finally:
        harness.close()


@pytest.fixture(scope="session")
def credential_sets() -> list[DevCredentials]:
    """Two independent ISV apps (keys, CA chains, AES keys), shared by the whole interop session."""
    return [DevCredentials.generate("2021000000000001"), DevCredentials.generate("2021004100000777")]


@pytest.fixture(scope="session")
def configs() -> ConfigCache:
    return ConfigCache()
