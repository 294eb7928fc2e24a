"""boto3 clients for the functions: one session, each client made once, when first used.

A cold start pays only for what its first request touches: the refresher's scheduled run with
nothing due never makes the KMS, Secrets Manager or EventBridge client, the merchant's link page
never makes DynamoDB's, and only a storage failure makes SQS's.

Endpoints come from the standard ``AWS_ENDPOINT_URL_*`` variables, so the local stack needs no
code path of its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.loaders import Loader

# The services the functions call; nothing else is ever asked of this session.
SERVICES = ("dynamodb", "kms", "secretsmanager", "events", "sqs")

# Short timeouts and adaptive retries: a Lambda behind API Gateway has 29 s in all. The refresher's
# workers (twice its concurrency) share each client: botocore's default pool of 10 connections
# would open and drop a connection for every call beyond the tenth in flight.
CLIENT_CONFIG = Config(
    connect_timeout=2,
    read_timeout=5,
    retries={"max_attempts": 3, "mode": "adaptive"},
    max_pool_connections=64,
)


class _NamedServicesLoader(Loader):  # type: ignore[misc]  # botocore ships no type hints
    """botocore checks every client's service name against all the services it ships, listing
    every model directory on disk: a cost paid on each cold start that grows with every service
    botocore adds (botocore PR #3687 removes it upstream). This session is only asked for
    ``SERVICES``, so that is the list."""

    def list_available_services(self, type_name: str) -> list[str]:
        return sorted(SERVICES)


def client_factory() -> Callable[[str], Any]:
    """``make(service)``: a boto3 client of one session with ``CLIENT_CONFIG``."""
    core = botocore.session.get_session()
    data_path = core.get_config_variable("data_path")  # AWS_DATA_PATH, as botocore's own loader honours it
    extra_paths = (
        [os.path.expanduser(os.path.expandvars(p)) for p in data_path.split(os.pathsep)]
        if data_path
        else None
    )
    core.register_component("data_loader", _NamedServicesLoader(extra_search_paths=extra_paths))
    session = boto3.session.Session(botocore_session=core)
    return lambda service: session.client(service, config=CLIENT_CONFIG)


class AwsClients:
    """The clients by service name: ``clients["kms"]`` makes it now, ``clients.deferred("kms")``
    when first used. Thread-safe (boto3 sessions are not, and the refresher's workers share these)."""

    def __init__(self, make: Callable[[str], Any] | None = None) -> None:
        self._make = make  # client_factory() by default, made with the first client
        self._made: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __getitem__(self, service: str) -> Any:
        client = self._made.get(service)
        if client is None:
            with self._lock:
                if self._make is None:
                    self._make = client_factory()
                if service not in self._made:
                    self._made[service] = self._make(service)
                client = self._made[service]
        return client

    def deferred(self, service: str) -> Any:
        return _DeferredClient(self, service)


class _DeferredClient:
    """Stands for a client until its first method call (or ``meta``, ``exceptions``) makes it."""

    __slots__ = ("_clients", "_service")

    def __init__(self, clients: AwsClients, service: str) -> None:
        self._clients = clients
        self._service = service

    def __getattr__(self, name: str) -> Any:
        return getattr(self._clients[self._service], name)
