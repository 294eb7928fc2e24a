"""Fixtures for tests that use the local AWS stand-ins (sandbox/aws_standins.py): DynamoDB Local and moto.

``local_aws``  one ``LocalAws`` for the whole pytest session (starting it takes ~1.5 s)
``aws``        the same, emptied first (moto reset, every DynamoDB table deleted): use this one
``aws_env``    ``aws``, with this process's environment pointing boto3 at it (as a Lambda's would),
               so code that calls ``boto3.client(...)`` itself needs no change

Register with ``pytest_plugins = ["tests.integration.aws_fixtures"]`` in the root conftest.py, or
import the fixtures into a test module.
"""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest

from sandbox.aws_standins import OVERRIDDEN_VARIABLES, LocalAws


@pytest.fixture(scope="session")
def local_aws() -> Iterator[LocalAws]:
    with LocalAws() as started:
        yield started


@pytest.fixture
def aws(local_aws: LocalAws) -> LocalAws:
    local_aws.reset()
    return local_aws


@pytest.fixture
def aws_env(aws: LocalAws, monkeypatch: pytest.MonkeyPatch) -> LocalAws:
    for name in OVERRIDDEN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in aws.env().items():
        monkeypatch.setenv(name, value)
    # boto3's default session keeps the credentials it first found: make it read the ones above.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    return aws
