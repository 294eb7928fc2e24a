"""Keys are read and parsed once per execution environment, through the production wiring.

The callback function's container is the one ``get_container()`` builds from the environment
template.yaml sets (here: moto server and DynamoDB Local behind the standard endpoint variables).
botocore's own event hooks count every GetSecretValue that leaves the process, and the protocol's
key loaders count every parse; several requests of every kind on one cold container may read each
secret once and parse the Alipay configuration once, never again per request.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import botocore.session
import pytest

import alipay_v3.config as alipay_config_module
from app_auth import aws as aws_module
from app_auth.container import set_container
from sandbox.emulator import Emulator
from sandbox.front import LambdaContext, http_api_event, load_function
from sandbox.stack import provision

pytestmark = pytest.mark.integration


def _request(module: Any, method: str, target: str, body: bytes = b"") -> dict[str, Any]:
    headers = {"host": "isv.example", "content-type": "application/x-www-form-urlencoded"}
    event = http_api_event(method, target, headers, body, "203.0.113.9")
    assert event["routeKey"] != "$default", target  # routed by routeKey, as API Gateway sends it
    result: dict[str, Any] = module.lambda_handler(event, LambdaContext(aws_request_id=target))
    return result


def test_one_cold_container_reads_each_secret_once_and_parses_the_keys_once(aws_env, creds, monkeypatch):
    # Given the callback function's environment as template.yaml sets it, and no container yet
    with Emulator() as emulator:
        emulator.register_app(creds)
        provisioned = provision(aws_env, creds.client_config(emulator.base_url), callback_url="")
        for name, value in provisioned.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("CALLBACK_URL")
        set_container(None)

        # botocore's event hooks on the session the production factory makes: every call counted
        reads: Counter[str] = Counter()
        make_session = botocore.session.get_session

        def counted_session() -> botocore.session.Session:
            session = make_session()
            session.register(
                "before-parameter-build.secrets-manager.GetSecretValue",
                lambda params, **kwargs: reads.update([params["SecretId"]]),
            )
            return session

        monkeypatch.setattr(aws_module.botocore.session, "get_session", counted_session)
        parses: Counter[str] = Counter()
        for loader in ("load_private_key", "load_public_key"):
            real = getattr(alipay_config_module, loader)

            def counting(*args: Any, _real: Any = real, _name: str = loader, **kwargs: Any) -> Any:
                parses[_name] += 1
                return _real(*args, **kwargs)

            monkeypatch.setattr(alipay_config_module, loader, counting)
        callback = load_function("callback")
        try:
            # When several requests of each kind reach the one container
            answers = []
            for n in range(3):
                link = _request(callback, "POST", "/links", json.dumps({"ref": f"shop-{n}"}).encode())
                assert link["statusCode"] == 201, link
                url = json.loads(link["body"])["url"]
                state = url.split("state=")[1].split("&")[0]
                answers.append(_request(callback, "GET", f"/authorize?state={state}")["statusCode"])
                code = emulator.issue_code(creds.app_id, merchant_app_ids=[f"20210000000093{n:02d}"])
                query = f"app_id={creds.app_id}&source=alipay_app_auth&app_auth_code={code}&state={state}"
                answers.append(_request(callback, "GET", f"/callback?{query}")["statusCode"])
                answers.append(_request(callback, "POST", "/notify", b"notify_id=x&sign=")["statusCode"])
                if n == 0:
                    after_first = (Counter(reads), Counter(parses))
            # Then every request was served, each secret was read once and the keys parsed once
            assert answers == [302, 200, 400] * 3, answers
            secret_arns = {provisioned.env["SECRET_ARN"], provisioned.env["STATE_SECRET_ARN"]}
            assert set(reads) == secret_arns and max(reads.values()) == 1, reads
            assert parses["load_private_key"] == 1, parses
            assert (reads, parses) == after_first
        finally:
            set_container(None)
