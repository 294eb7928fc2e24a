"""The official SDK's own client against OUR emulator (sandbox/emulator).

If the emulator accepts the SDK's requests and the SDK accepts the emulator's answers, in key mode,
certificate mode and with AES, then the emulator speaks Alipay's protocol and not merely ours.
The SDK must also get Alipay's business error codes: a spent code (AUTH_CODE_NOT_VALID) and a
rotated refresh token past its grace window (REFRESH_TOKEN_NOT_VALID).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from alipay_v3 import AlipayClient, AlipayConfig, TokenApi
from sandbox.credentials import DevCredentials
from tests.interop.emulator_run import GRACE_SECONDS, MODES, Mode, Running, running, sdk_curl
from tests.interop.nodesdk import Oracle, sdk_config

__all__ = ["running"]  # a fixture, used by name

pytestmark = pytest.mark.interop

TOKEN_PATH = "/v3/alipay/open/auth/token/app"
QUERY_PATH = "/v3/alipay/open/auth/token/app/query"


def _grant(
    oracle: Oracle, running: Running, creds: DevCredentials, mode: Mode, **body: str
) -> dict[str, Any]:
    """The token endpoint through the official SDK's own client."""
    return sdk_curl(oracle, running, creds, mode, "POST", TOKEN_PATH, body=body)


def _exchange(
    oracle: Oracle, running: Running, creds: DevCredentials, mode: Mode, code: str
) -> dict[str, Any]:
    return _grant(oracle, running, creds, mode, grant_type="authorization_code", code=code)


def _refresh(
    oracle: Oracle, running: Running, creds: DevCredentials, mode: Mode, token: str
) -> dict[str, Any]:
    return _grant(oracle, running, creds, mode, grant_type="refresh_token", refresh_token=token)


def _assert_tokens(outcome: dict[str, Any]) -> dict[str, Any]:
    assert outcome["ok"], f"the SDK failed: {outcome.get('code')} {outcome.get('message', '')[:200]}"
    data: dict[str, Any] = outcome["data"]
    for name in (
        "app_auth_token",
        "app_refresh_token",
        "auth_app_id",
        "user_id",
        "expires_in",
        "re_expires_in",
    ):
        assert data.get(name), f"{name} missing from the token response"
    return data


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_sdk_exchanges_queries_and_refreshes_against_the_emulator(
    oracle: Oracle, running: Running, credential_sets: list[DevCredentials], mode: Mode
) -> None:
    creds = credential_sets[MODES.index(mode) % 2]
    code = running.emulator.issue_code(creds.app_id)

    first = _assert_tokens(_exchange(oracle, running, creds, mode, code))
    assert running.emulator.token_valid(first["app_auth_token"])

    # Without AES: on a GET the SDK sends no alipay-encrypt-type (there is no body), so no server can
    # know it wants an encrypted answer, which it would then try to decrypt.
    plain = Mode(mode.name, mode.cert_mode, False, mode.pkcs8, mode.pem, mode.key_type_hint)
    status = sdk_curl(
        oracle, running, creds, plain, "GET", QUERY_PATH, query={"app_auth_token": first["app_auth_token"]}
    )
    assert status["ok"], status
    assert status["data"]["status"] == "valid"
    assert status["data"]["auth_app_id"] == first["auth_app_id"]

    # The code is single-use.
    spent = _exchange(oracle, running, creds, mode, code)
    assert not spent["ok"]
    assert spent["code"] == "AUTH_CODE_NOT_VALID"
    assert spent["status"] == 400

    # A refresh rotates both tokens.
    second = _assert_tokens(_refresh(oracle, running, creds, mode, first["app_refresh_token"]))
    assert second["auth_app_id"] == first["auth_app_id"]
    assert second["app_auth_token"] != first["app_auth_token"]
    assert second["app_refresh_token"] != first["app_refresh_token"]

    # Past the grace window the replaced refresh token is dead; the new one works.
    running.clock.advance(GRACE_SECONDS + 1)
    stale = _refresh(oracle, running, creds, mode, first["app_refresh_token"])
    assert not stale["ok"]
    assert stale["code"] == "REFRESH_TOKEN_NOT_VALID"
    assert stale["status"] == 400
    assert not running.emulator.token_valid(first["app_auth_token"])
    _assert_tokens(_refresh(oracle, running, creds, mode, second["app_refresh_token"]))


def test_sdk_and_our_client_share_one_authorization(
    oracle: Oracle, running: Running, credential_sets: list[DevCredentials]
) -> None:
    """Tokens the SDK obtained refresh with our TokenApi, and ours refresh with the SDK."""
    creds = credential_sets[0]
    mode = MODES[3]  # certificate mode with AES: the most moving parts
    first = _assert_tokens(_exchange(oracle, running, creds, mode, running.emulator.issue_code(creds.app_id)))

    config = AlipayConfig.from_mapping(creds.client_config(running.url, cert_mode=True, aes=True))
    ours = TokenApi(AlipayClient(config, clock=running.clock), clock=running.clock)
    grant = ours.refresh(first["app_refresh_token"], encrypt=True)
    assert grant.primary.auth_app_id == first["auth_app_id"]

    # Our client's GET with AES: no body, but alipay-encrypt-type asks for an encrypted answer.
    status = AlipayClient(config, clock=running.clock).call(
        "GET", QUERY_PATH, query={"app_auth_token": grant.primary.app_auth_token}, encrypt=True
    )
    assert status.data["status"] == "valid"

    third = _assert_tokens(_refresh(oracle, running, creds, mode, grant.primary.app_refresh_token))
    assert third["auth_app_id"] == first["auth_app_id"]
    assert running.emulator.refresh_count(first["auth_app_id"]) == 2


def test_sdk_in_key_mode_rejects_nothing_the_emulator_signs_for_another_app(
    oracle: Oracle, running: Running, credential_sets: list[DevCredentials]
) -> None:
    """App B's SDK configured with app A's Alipay key must refuse app B's answers: the keys differ."""
    a, b = credential_sets
    mode = MODES[0]
    config = sdk_config(b, cert_mode=False, aes=False, pkcs8=False, pem=True, endpoint=running.url)
    config["alipayPublicKey"] = sdk_config(a, cert_mode=False, aes=False, pkcs8=False, pem=True)[
        "alipayPublicKey"
    ]
    outcome = oracle.call(
        "curl",
        config=config,
        method="POST",
        path=TOKEN_PATH,
        body={"grant_type": "authorization_code", "code": running.emulator.issue_code(b.app_id)},
        nonce=str(uuid.uuid4()),
        timestamp=int(running.clock() * 1000),
    )
    assert not outcome["ok"]
    assert outcome["code"] == "response-signature-verify-error"
    assert mode.cert_mode is False
