"""The local stack for integration tests: LocalAws + emulator + HTTP front + the real callback handler.

``stack`` gives a fresh, provisioned stack per test (tables and moto state reset), with an
EventBridge rule copying every token event to an SQS queue so tests can read what was published.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from app_auth.container import Container, build_container, set_container
from sandbox.aws_standins import LocalAws
from sandbox.credentials import DevCredentials
from sandbox.emulator import Emulator
from sandbox.front import Front, load_function
from sandbox.stack import observe_events, provision

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    aws: LocalAws
    emulator: Emulator
    creds: DevCredentials
    front: Front
    container: Container
    events_queue: str
    http: requests.Session

    @property
    def url(self) -> str:
        return self.front.url

    def create_link(self, ref: str | None = None) -> str:
        response = self.http.post(f"{self.url}/links", json={"ref": ref} if ref else {}, timeout=10)
        assert response.status_code == 201, response.text
        return str(response.json()["url"])

    def consent(self, link: str, merchant_app_ids: list[str] | None = None) -> dict[str, str]:
        """What Alipay does when the merchant agrees: a code, and the callback query with the state."""
        state = parse_qs(urlsplit(link).query)["state"][0]
        code = self.emulator.issue_code(self.creds.app_id, merchant_app_ids=merchant_app_ids)
        return {
            "app_id": self.creds.app_id,
            "source": "alipay_app_auth",
            "app_auth_code": code,
            "state": state,
        }

    def callback(self, params: dict[str, str]) -> requests.Response:
        return self.http.get(f"{self.url}/callback", params=params, timeout=20)

    def published_events(self) -> list[dict[str, Any]]:
        sqs = self.aws.client("sqs")
        found: list[dict[str, Any]] = []
        while True:
            batch = sqs.receive_message(QueueUrl=self.events_queue, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = batch.get("Messages", [])
            if not messages:
                return found
            for message in messages:
                found.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.events_queue, ReceiptHandle=message["ReceiptHandle"])

    def table_items(self) -> list[dict[str, Any]]:
        dynamodb = self.aws.client("dynamodb")
        items: list[dict[str, Any]] = []
        for page in dynamodb.get_paginator("scan").paginate(TableName=self.container.settings.table_name):
            items.extend(page["Items"])
        return items


@pytest.fixture(scope="session")
def callback_module() -> ModuleType:
    return load_function("callback")


@pytest.fixture
def stack(aws: LocalAws, creds: DevCredentials, callback_module: ModuleType) -> Iterator[Stack]:
    with Emulator() as emulator, Front() as front:
        emulator.register_app(creds)
        provisioned = provision(
            aws, creds.client_config(emulator.base_url), callback_url=f"{front.url}/callback"
        )
        container = build_container(provisioned.settings, client=aws.client, sleep=lambda _: None)
        set_container(container)
        queue_url = observe_events(aws, provisioned.settings.event_bus_name)
        try:
            yield Stack(aws, emulator, creds, front, container, queue_url, requests.Session())
        finally:
            set_container(None)
