"""The functions' boto3 clients: one session, each client made once and only when used."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import UnknownServiceError

from app_auth.aws import SERVICES, AwsClients, client_factory

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "cn-north-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def test_the_factory_makes_every_service_the_functions_call(region: None) -> None:
    make = client_factory()
    for service in SERVICES:
        client = make(service)
        assert client.meta.service_model.service_name == service
        assert client.meta.region_name == "cn-north-1"
        assert client.meta.config.read_timeout == 5  # CLIENT_CONFIG, not botocore's 60 s


def test_the_factory_knows_no_other_service(region: None) -> None:
    """The loader lists only SERVICES: a service nobody declared fails loudly, naming what is known."""
    with pytest.raises(UnknownServiceError, match="dynamodb"):
        client_factory()("s3")


class _Counting:
    def __init__(self) -> None:
        self.made: list[str] = []

    def __call__(self, service: str) -> Any:
        time.sleep(0.01)  # widen the window in which a second thread could make it again
        self.made.append(service)
        return _FakeClient(service)


class _FakeClient:
    def __init__(self, service: str) -> None:
        self.service = service

    def ping(self) -> str:
        return f"pong from {self.service}"


def test_a_deferred_client_is_made_on_first_use_and_only_once() -> None:
    make = _Counting()
    clients = AwsClients(make)
    kms = clients.deferred("kms")
    clients.deferred("sqs")
    assert make.made == []  # nothing at wiring time

    assert kms.ping() == "pong from kms"
    assert kms.ping() == "pong from kms"
    assert clients["kms"] is clients["kms"]
    assert make.made == ["kms"]  # sqs never used, never made


def test_concurrent_first_uses_make_one_client() -> None:
    make = _Counting()
    clients = AwsClients(make)
    deferred = clients.deferred("dynamodb")
    barrier = threading.Barrier(8)
    seen: list[Any] = []

    def use() -> None:
        barrier.wait()
        seen.append(deferred.ping())
        seen.append(clients["dynamodb"])

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert make.made == ["dynamodb"]
    assert len({id(c) for c in seen if isinstance(c, _FakeClient)}) == 1


def test_public_key_mode_never_loads_x509(creds: Any) -> None:
    """cryptography.x509 is imported for certificates only: a public-key-mode function's cold start
    does not pay for it (about 15 ms), while certificate mode still gets it when the config loads."""
    probe = """
import json, sys
from alipay_v3 import AlipayClient, AlipayConfig
import app_auth.container
config = AlipayConfig.from_json(sys.stdin.read())
AlipayClient(config)
print(json.dumps({"x509": "cryptography.x509" in sys.modules, "cert_mode": config.cert_mode}))
"""
    for cert_mode in (False, True):
        secret = json.dumps(creds.client_config("sandbox", cert_mode=cert_mode, aes=True))
        done = subprocess.run(
            [sys.executable, "-c", probe],
            input=secret,
            capture_output=True,
            text=True,
            cwd=REPO,
            env={"PYTHONPATH": str(REPO / "layers" / "alipay_auth"), "PATH": "/usr/bin:/bin"},
            timeout=60,
            check=True,
        )
        assert json.loads(done.stdout) == {"x509": cert_mode, "cert_mode": cert_mode}
