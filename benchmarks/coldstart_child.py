"""One fresh process of the ``coldstart`` benchmark: ``python -m benchmarks.coldstart_child VARIANT``.

Run with the function's directory as the working directory and ``layers/alipay_auth`` on
PYTHONPATH, as Lambda lays them out (``/var/task`` and ``/opt/python``). Prints one JSON line with
the time of each phase, measured inside the process (interpreter start-up is the parent's to time).

Variants:

- ``floor``: imports what no function can do without (boto3, requests, the cryptography primitives).
- ``floor_client``: the floor, then one boto3 client (DynamoDB's), which any function using AWS
  pays for: the first client also loads botocore's session data (endpoints, partitions, defaults).
- ``floor_client_named``: the same client from ``app_auth.aws.client_factory()``, whose loader
  does not list every service botocore ships.
- ``function``: imports the handler module (``app``) and builds its container from the environment,
  as the first ``get_container()`` does (it makes no boto3 client: each is made when first used).
- ``eager``: the same, then the work the container defers to first use, what the first request
  that needs all of it pays: the boto3 clients of a callback (timed each), the Alipay
  configuration from Secrets Manager (and its key parsing), the Alipay client, the state secret.

The module imports nothing outside the standard library at its top, so that it adds no import of
its own to what is measured.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

# What a merchant's callback uses (SQS only parks a result after a storage failure).
FIRST_REQUEST_CLIENTS = ("dynamodb", "kms", "secretsmanager", "events")


def _floor() -> dict[str, Any]:
    started = time.perf_counter()
    import boto3  # noqa: F401
    import requests  # noqa: F401
    from cryptography.hazmat.primitives import hashes  # noqa: F401
    from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: F401
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: F401

    return {"import_ms": (time.perf_counter() - started) * 1000}


def _function(eager: bool) -> dict[str, Any]:
    started = time.perf_counter()
    import app  # noqa: F401 - the handler module, as Lambda imports it

    from app_auth import container as wiring
    from app_auth.settings import Settings

    imported = time.perf_counter()
    container = wiring.build_container(Settings.from_env())
    wiring.set_container(container)
    built = time.perf_counter()
    result: dict[str, Any] = {"import_ms": (imported - started) * 1000, "build_ms": (built - imported) * 1000}
    if eager:
        from alipay_v3 import AlipayClient, TokenApi

        client_ms: dict[str, float] = {}
        for service in FIRST_REQUEST_CLIENTS:
            began = time.perf_counter()
            container.clients[service]
            client_ms[service] = round((time.perf_counter() - began) * 1000, 2)
        config = container.secrets.alipay_config()
        TokenApi(AlipayClient(config))
        container.secrets.state_key()
        result["client_ms"] = client_ms
        result["deferred_ms"] = (time.perf_counter() - built) * 1000
    return result


def _floor_client(named_services: bool) -> dict[str, Any]:
    result = _floor()
    import boto3
    from botocore.config import Config

    started = time.perf_counter()
    if named_services:
        from app_auth.aws import client_factory

        client_factory()("dynamodb")
    else:
        boto3.client("dynamodb", config=Config(connect_timeout=2, read_timeout=5))
    result["client_ms"] = (time.perf_counter() - started) * 1000
    return result


def main() -> int:
    variant = sys.argv[1]
    if variant.startswith("floor"):
        result = (
            _floor() if variant == "floor" else _floor_client(named_services=variant == "floor_client_named")
        )
    else:
        result = _function(eager=variant == "eager")
    result["modules"] = len(sys.modules)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
