"""``token/app/query`` with the official Node SDK as the oracle.

* Requests: ``TokenApi.query(token)`` and the SDK's ``curl('GET', path, {query: {app_auth_token}})``
  (``options.query``: the SDK signs ``URL.pathname + URL.search``, protocol notes 1.2) send the same
  bytes to the capture server: request-target, Authorization (hence the signature), headers, no body.
  Both read the same signed answer the same way.
* The emulator: the SDK's own client queries it and accepts its signed answers (valid, invalid after
  a refresh or a re-authorization past the grace window, AUTH_TOKEN_NOT_EXISTED), and our typed
  reading of the SDK's data is what our own client gets from the same emulator.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from alipay_v3 import (
    QUERY_PATH,
    TOKEN_PATH,
    AlipayClient,
    AlipayConfig,
    AppAuthorization,
    AuthorizationStatus,
    TokenApi,
)
from sandbox.credentials import DevCredentials
from tests.interop.emulator_run import GRACE_SECONDS, Mode, Running, running, sdk_curl
from tests.interop.exchange import Case, build_response, compare_requests, run_sdk
from tests.interop.nodesdk import ConfigCache, Oracle

__all__ = ["running"]  # a fixture, used by name

pytestmark = pytest.mark.interop

TOKEN = "202506BBc0c1c2c3c4c5c6c7c8c9cacbcccdcecf"
ANSWER = {
    "auth_app_id": "2021000000000201",
    "user_id": "2088000000000201",
    "status": "valid",
    "auth_methods": ["alipay.trade.pay", "alipay.trade.query"],
    "auth_start": "2025-06-01 10:00:00",
    "auth_end": "2026-06-01 10:00:00",
    "expires_in": 31536000,
    "is_by_app_auth": True,
}


def query_case(index: int, *, cert_mode: bool, aes: bool, pkcs8: bool, pem: bool) -> Case:
    return Case(
        index=index,
        creds=index % 2,
        cert_mode=cert_mode,
        pkcs8=pkcs8,
        pem=pem,
        key_type_hint=True,
        aes=aes,
        token=None,  # the token goes in the query string, not in alipay-app-auth-token
        method="GET",
        path=QUERY_PATH,
        query={"app_auth_token": TOKEN},
        body=None,
        nonce=str(uuid.UUID(int=index + 1, version=4)),
        timestamp=1_780_000_000_000 + index,
        status=200,
        data=ANSWER,
        ensure_ascii=False,
        signer="sdk",
        tamper=None,
        sn_header="right" if cert_mode else "none",
    )


CASES = [
    query_case(i, cert_mode=cert_mode, aes=aes, pkcs8=pkcs8, pem=pem)
    for i, (cert_mode, aes, pkcs8, pem) in enumerate(
        [
            (False, False, False, True),
            (False, False, True, False),
            (True, False, True, True),
            (True, True, False, False),
        ]
    )
]


def run_our_query(oracle: Oracle, config: AlipayConfig, case: Case, response: dict[str, Any]):
    """``TokenApi.query`` against the capture server, nonce and clock pinned to the case's."""
    pinned_clock = (case.timestamp + 0.5) / 1000
    client = AlipayClient(config, clock=lambda: pinned_clock, nonce=lambda: case.nonce, max_attempts=1)
    oracle.call("arm", response=response)
    try:
        authorization = TokenApi(client).query(TOKEN, encrypt=case.aes)
    finally:
        client.session.close()
    (captured,) = oracle.call("take")
    return captured, authorization


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.describe().split(": ", 1)[1].replace(" ", ","))
def test_our_query_request_is_the_sdks_byte_for_byte(
    oracle: Oracle, credential_sets: list[DevCredentials], configs: ConfigCache, case: Case
) -> None:
    creds = credential_sets[case.creds]
    config = configs.get(
        creds, oracle.capture_url, cert_mode=case.cert_mode, aes=case.aes, pkcs8=case.pkcs8, pem=case.pem
    )
    response = build_response(oracle, creds, case)

    sdk_request, sdk_outcome = run_sdk(oracle, creds, case, response)
    our_request, ours = run_our_query(oracle, config, case, response)

    compare_requests(case, our_request, sdk_request)
    assert our_request["target"] == f"{QUERY_PATH}?app_auth_token={TOKEN}"
    assert sdk_outcome == {"kind": "ok", "data": ANSWER}, case.describe()
    assert dataclasses.replace(ours, trace_id=None) == AppAuthorization.from_fields(sdk_outcome["data"])


# --- the SDK's own client against the emulator ----------------------------------------------------


KEY_MODE = Mode("key", cert_mode=False, aes=False, pkcs8=False, pem=True)
CERT_MODE = Mode("cert", cert_mode=True, aes=False, pkcs8=False, pem=True)


def sdk_query(
    oracle: Oracle, running: Running, creds: DevCredentials, cert_mode: bool, token: str
) -> dict[str, Any]:
    mode = CERT_MODE if cert_mode else KEY_MODE
    return sdk_curl(oracle, running, creds, mode, "GET", QUERY_PATH, query={"app_auth_token": token})


def sdk_grant(
    oracle: Oracle, running: Running, creds: DevCredentials, cert_mode: bool, **body: str
) -> dict[str, Any]:
    outcome = sdk_curl(
        oracle, running, creds, CERT_MODE if cert_mode else KEY_MODE, "POST", TOKEN_PATH, body=body
    )
    assert outcome["ok"], outcome
    data: dict[str, Any] = outcome["data"]
    return data


@pytest.mark.parametrize("cert_mode", [False, True], ids=["key", "cert"])
def test_sdk_queries_the_emulator_through_a_tokens_life(
    oracle: Oracle, running: Running, credential_sets: list[DevCredentials], cert_mode: bool
) -> None:
    creds = credential_sets[int(cert_mode)]
    merchant_app = f"20210000000005{int(cert_mode):02d}"
    code = running.emulator.issue_code(creds.app_id, [merchant_app])
    first = sdk_grant(oracle, running, creds, cert_mode, grant_type="authorization_code", code=code)

    answer = sdk_query(oracle, running, creds, cert_mode, first["app_auth_token"])
    assert answer["ok"], answer
    assert set(answer["data"]) == set(ANSWER)  # every field of the official model, nothing else
    theirs = AppAuthorization.from_fields(answer["data"])
    assert theirs.valid and theirs.auth_app_id == merchant_app and theirs.user_id == first["user_id"]
    assert theirs.auth_end is not None and theirs.auth_start is not None
    assert theirs.auth_end - theirs.auth_start == 365 * 86400 and theirs.is_by_app_auth is True
    config = AlipayConfig.from_mapping(creds.client_config(running.url, cert_mode=cert_mode))
    ours = TokenApi(AlipayClient(config, clock=running.clock)).query(first["app_auth_token"])
    assert dataclasses.replace(ours, trace_id=None) == theirs

    # A refresh, then past the grace window: the replaced token is invalid, the new one valid.
    second = sdk_grant(
        oracle,
        running,
        creds,
        cert_mode,
        grant_type="refresh_token",
        refresh_token=first["app_refresh_token"],
    )
    running.clock.now += GRACE_SECONDS + 1
    old = sdk_query(oracle, running, creds, cert_mode, first["app_auth_token"])
    assert old["ok"] and old["data"]["status"] == AuthorizationStatus.INVALID, old
    assert sdk_query(oracle, running, creds, cert_mode, second["app_auth_token"])["data"]["status"] == "valid"

    # A re-authorization replaces the token the same way.
    again_code = running.emulator.issue_code(creds.app_id, [merchant_app])
    again = sdk_grant(oracle, running, creds, cert_mode, grant_type="authorization_code", code=again_code)
    running.clock.now += GRACE_SECONDS + 1
    assert (
        sdk_query(oracle, running, creds, cert_mode, second["app_auth_token"])["data"]["status"] == "invalid"
    )
    assert sdk_query(oracle, running, creds, cert_mode, again["app_auth_token"])["data"]["status"] == "valid"

    # A token never issued: the signed business error, as the SDK reports it.
    unknown = sdk_query(oracle, running, creds, cert_mode, "202506BB" + "0" * 32)
    assert not unknown["ok"]
    assert (unknown["code"], unknown["status"]) == ("AUTH_TOKEN_NOT_EXISTED", 400)
