"""``browser_stack``: the local stack whose links lead to the emulator's consent page.

Like ``stack`` (tests/integration/stack_fixtures.py), with ``CONSENT_PAGE_URL`` set to the
emulator's page, and the stack's callback URL registered as the app's 授权回调地址 there.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest
import requests

from app_auth.container import build_container, set_container
from sandbox.aws_standins import LocalAws
from sandbox.credentials import DevCredentials
from sandbox.emulator import Emulator
from sandbox.front import Front
from sandbox.stack import provision
from tests.integration.stack_fixtures import Stack


@pytest.fixture
def browser_stack(aws: LocalAws, creds: DevCredentials, callback_module: ModuleType) -> Iterator[Stack]:
    with Emulator() as emulator, Front() as front:
        callback_url = f"{front.url}/callback"
        emulator.register_app(creds, redirect_uri=callback_url)  # as registered in Alipay's console
        provisioned = provision(
            aws,
            creds.client_config(emulator.base_url),
            callback_url=callback_url,
            consent_page_url=emulator.consent_page_url,
        )
        container = build_container(provisioned.settings, client=aws.client, sleep=lambda _: None)
        set_container(container)
        try:
            # No events queue: these tests look at pages, not at published events.
            yield Stack(aws, emulator, creds, front, container, events_queue="", http=requests.Session())
        finally:
            set_container(None)
