"""Fixtures for browser tests: the local stack with the emulator's consent page, and headless Chromium.

``browser_stack``  like ``stack`` (tests/integration/stack_fixtures.py), but the links it makes lead
                   to the emulator's consent page, which only accepts the stack's own callback URL
``browser``        one headless Chromium per module, driven by Selenium through Debian's chromedriver
``screenshots``    where screenshots go: $E2E_SCREENSHOT_DIR, or a temporary directory
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from sandbox.credentials import DevCredentials
from tests.e2e.browser_fixtures import browser_stack  # noqa: F401 - fixtures
from tests.integration.aws_fixtures import aws, local_aws  # noqa: F401 - fixtures
from tests.integration.stack_fixtures import callback_module  # noqa: F401 - fixtures

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture(scope="session")
def creds() -> DevCredentials:
    return DevCredentials.generate()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: run scripts/setup.sh as root "
            "(it installs Debian's chromium and chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--lang=zh-CN",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=390,844",  # a phone; tests resize for desktop shots
    ):
        options.add_argument(argument)
    # The performance log carries the response headers the browser saw (CSP...).
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    # Both paths are given, so Selenium Manager has nothing to find; offline, it could not download.
    previous = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"
    try:
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    finally:
        if previous is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = previous
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("E2E_SCREENSHOT_DIR")
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screenshots")
