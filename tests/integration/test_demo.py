"""The README's first command: the whole demo on the local stack, as a user runs it."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization

from sandbox import demo
from sandbox.credentials import DevCredentials
from tests.integration.stack_fixtures import observe_events

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_make_demo_walks_the_whole_lifecycle_and_exits_0():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [sys.executable, "-m", "sandbox.demo", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for step in (
        "1. The ISV creates",
        "2. The merchant opens",
        "3. Stored",
        "4. Rotation",
        "5. The merchant cancels",
        "6. The ISV brings two merchants",
        "1 imported after Alipay's query said valid; refused: line 2 2021000000000802",
        "- Authorization Granted: 2021000000000801, ref existing-shop-1, via import",
        "Done:",
        "make serve",
    ):
        assert step in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def _secret_forms(creds: DevCredentials) -> set[str]:
    """The throw-away keys as the console hands them out, and as a log line could show them."""
    forms = {creds.encrypt_key}
    for key in (creds.app_key, creds.alipay_key):
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        pkcs1 = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        for body in (base64.b64encode(der).decode(), base64.b64encode(pkcs1).decode()):
            forms |= {body[:64], body[200:264], body[-64:]}  # any PEM line or stretch of the base64
    return forms


def test_the_demo_at_debug_shows_no_key_code_or_token(capfd):
    # Given the demo run in this process as `make demo --debug` runs it, with logs at DEBUG
    saved_env, root = dict(os.environ), logging.getLogger()
    saved_root = (root.level, root.handlers[:])
    seen: list[str] = []  # every response body and header the demo received, every event published

    def record(response: requests.Response, *args: object, **kwargs: object) -> None:
        # Ours only: Alipay's redirect carries the code, and GET /tokens exists to hand out a token.
        if response.url.startswith(run.url) and "/tokens/" not in response.url:
            seen.append(response.text)
            seen.extend(f"{name}: {value}" for name, value in response.headers.items())

    try:
        demo.configure_logging(debug=True)
        with _as_in_a_fresh_process(), demo.running_stack(log_level="DEBUG") as run:
            assert run.emulator is not None and run.creds is not None
            queue = observe_events(run.aws, run.env["EVENT_BUS_NAME"])
            run.http.hooks["response"].append(record)
            # When the whole lifecycle runs
            demo.demo(run)
            secrets = run.emulator.authority.issued_secrets() | _secret_forms(run.creds)
            state_key = run.aws.client("secretsmanager").get_secret_value(
                SecretId=run.env["STATE_SECRET_ARN"]
            )
            secrets.add(state_key["SecretString"])
            seen.extend(_drain(run, queue))
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        root.setLevel(saved_root[0])
        root.handlers[:] = saved_root[1]
    out, err = capfd.readouterr()

    # Then the run really logged at DEBUG, through the layer, and published its events ...
    assert '"level":"DEBUG"' in out and "/v3/alipay/open/auth/token/app -> 200" in out
    assert sum('"detail-type"' in s for s in seen) >= 3, "authorized, refreshed and revoked events"
    # ... and no code, token, private key, AES key, state key or Authorization header is in any of it
    assert len(secrets) > 10
    everything = "\n".join([out, err, *seen])
    leaked = sorted(s for s in secrets if s in everything)
    assert not leaked, f"{len(leaked)} secrets leaked, e.g. one starting {leaked[0][:6]}"
    assert "ALIPAY-SHA256withRSA" not in everything


@contextlib.contextmanager
def _as_in_a_fresh_process() -> Iterator[None]:
    """Logging as in a new Lambda process: no Powertools logger configured by earlier tests (at
    INFO); everything the run configures is put back afterwards."""
    registry = logging.root.manager.loggerDict
    earlier = registry.pop("alipay-app-auth", None)
    layer = [logging.getLogger(name) for name in ("app_auth", "alipay_v3", "sandbox")]
    saved = [(logger.level, logger.handlers[:], logger.propagate) for logger in layer]
    try:
        yield
    finally:
        registry.pop("alipay-app-auth", None)  # its handler writes to this test's captured stdout
        if earlier is not None:
            registry["alipay-app-auth"] = earlier
        for logger, (level, handlers, propagate) in zip(layer, saved, strict=True):
            logger.setLevel(level)
            logger.handlers[:] = handlers
            logger.propagate = propagate


def _drain(run: demo.Running, queue_url: str) -> list[str]:
    sqs, bodies = run.aws.client("sqs"), []
    for _ in range(20):
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        bodies.extend(m["Body"] for m in messages)
    return bodies
