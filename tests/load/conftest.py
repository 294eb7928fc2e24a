"""Fixtures for the load test: the local AWS stand-ins and one ISV app's credentials."""

from __future__ import annotations

import pytest

from sandbox.credentials import DevCredentials
from tests.integration.aws_fixtures import aws, local_aws  # noqa: F401 - fixtures


@pytest.fixture(scope="session")
def creds() -> DevCredentials:
    return DevCredentials.generate()
