"""Edges where the SDK and we differ by design, held in place so that a change is noticed.

* Query strings: the SDK serialises ``options.query`` with WHATWG URLSearchParams, we with
  ``urlencode`` (and ``requests`` re-quotes); ``~`` and ``*`` come out differently. Both sign the
  request-target they send, which is what a server verifies (protocol doc 1.2).
* Error responses: the SDK never verifies them; we verify signed ones, as the PHP and Java SDKs do
  (protocol doc 2.2).
* Failures both must report: an unsigned 2xx (the SDK throws a bare TypeError there, not its
  ``response-signature-verify-error``), AES with another key.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from alipay_v3 import AesKey
from alipay_v3.keys import cert_sn
from alipay_v3.server import verify_request
from sandbox.credentials import DevCredentials
from tests.interop.exchange import Case, alipay_sign, build_response, run_ours, run_sdk
from tests.interop.nodesdk import ConfigCache, Oracle

pytestmark = pytest.mark.interop

TOKEN_DATA = {
    "user_id": "2088000000000001",
    "auth_app_id": "2021000000000002",
    "app_auth_token": "202506BB0000000000000000000000000001",
    "app_refresh_token": "202506BB0000000000000000000000000002",
    "expires_in": "31536000",
    "re_expires_in": "32140800",
}
ERROR_DATA = {"code": "AUTH_CODE_NOT_VALID", "message": "授权码无效", "links": []}


def _case(**changes: Any) -> Case:
    base = Case(
        index=9000,
        creds=0,
        cert_mode=False,
        pkcs8=False,
        pem=True,
        key_type_hint=True,
        aes=False,
        token=None,
        method="POST",
        path="/v3/alipay/open/auth/token/app",
        query=None,
        body={"grant_type": "authorization_code", "code": "1cc19911172e4f8aaa509c8fb5d12f56"},
        nonce=str(uuid.UUID(int=9000, version=4)),
        timestamp=1_781_234_567_890,
        status=200,
        data=TOKEN_DATA,
        ensure_ascii=False,
        signer="ours",
        tamper=None,
        sn_header="none",
    )
    return dataclasses.replace(base, **changes)


def _exchange(
    oracle: Oracle, creds: DevCredentials, configs: ConfigCache, case: Case, response: dict[str, Any]
) -> tuple[tuple[dict[str, Any], dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]:
    config = configs.get(
        creds, oracle.capture_url, cert_mode=case.cert_mode, aes=case.aes, pkcs8=case.pkcs8, pem=case.pem
    )
    return run_sdk(oracle, creds, case, response), run_ours(oracle, config, case, response)


@pytest.mark.parametrize("value", ["x~y", "a*b", "~*~", "é ~ *"])
def test_query_with_tilde_or_star_is_encoded_differently_but_both_sign_what_they_send(
    oracle: Oracle, credential_sets: list[DevCredentials], configs: ConfigCache, value: str
) -> None:
    creds = credential_sets[0]
    case = _case(method="GET", path="/v3/alipay/open/auth/token/app/query", body=None, query={"q": value})
    (sdk_request, sdk_outcome), (our_request, our_outcome) = _exchange(
        oracle, creds, configs, case, build_response(oracle, creds, case)
    )
    assert sdk_outcome == our_outcome == {"kind": "ok", "data": TOKEN_DATA}
    sdk_query, our_query = urlsplit(sdk_request["target"]).query, urlsplit(our_request["target"]).query
    assert sdk_query != our_query  # WHATWG: %7E and *; urlencode/requests: ~ and %2A
    assert parse_qsl(sdk_query) == parse_qsl(our_query) == [("q", value)]
    for captured in (sdk_request, our_request):
        verify_request(
            method=captured["method"],
            path_and_query=captured["target"],
            headers=captured["headers"],
            body=base64.b64decode(captured["body_b64"]),
            key_for=lambda _parsed: creds.app_key.public_key(),
            now_ms=case.timestamp,
        )


def _signed_error(
    oracle: Oracle, creds: DevCredentials, *, sn: str | None, break_signature: bool
) -> dict[str, Any]:
    body = json.dumps(ERROR_DATA, ensure_ascii=False).encode()
    timestamp, nonce = "1781234567999", "e0f1"
    signature = alipay_sign(oracle, creds, "sdk", timestamp, nonce, body + (b"x" if break_signature else b""))
    headers = {"content-type": "application/json", "alipay-timestamp": timestamp, "alipay-nonce": nonce}
    headers["alipay-signature"] = signature
    if sn:
        headers["alipay-sn"] = sn
    return {"status": 400, "headers": headers, "body_b64": base64.b64encode(body).decode()}


def test_signed_error_with_a_foreign_alipay_sn(
    oracle: Oracle, credential_sets: list[DevCredentials], configs: ConfigCache
) -> None:
    """The SDK hands out the error code unchecked; we refuse to trust it (PHP/Java behaviour)."""
    creds = credential_sets[0]
    case = _case(cert_mode=True, status=400, data=ERROR_DATA)
    response = _signed_error(oracle, creds, sn="0" * 32, break_signature=False)
    (_, sdk_outcome), (_, our_outcome) = _exchange(oracle, creds, configs, case, response)
    assert sdk_outcome == {"kind": "api-error", "code": "AUTH_CODE_NOT_VALID", "status": 400}
    assert our_outcome == {"kind": "sn-error", "code": "response-alipay-sn-verify-error"}


def test_signed_error_with_a_bad_signature(
    oracle: Oracle, credential_sets: list[DevCredentials], configs: ConfigCache
) -> None:
    creds = credential_sets[0]
    case = _case(cert_mode=True, status=400, data=ERROR_DATA)
    response = _signed_error(oracle, creds, sn=cert_sn(creds.alipay_cert), break_signature=True)
    (_, sdk_outcome), (_, our_outcome) = _exchange(oracle, creds, configs, case, response)
    assert sdk_outcome == {"kind": "api-error", "code": "AUTH_CODE_NOT_VALID", "status": 400}
    assert our_outcome == {"kind": "signature-error", "code": "response-signature-verify-error"}


@pytest.mark.parametrize("cert_mode", [False, True])
def test_unsigned_success_is_rejected_by_both(
    oracle: Oracle, credential_sets: list[DevCredentials], configs: ConfigCache, cert_mode: bool
) -> None:
    creds = credential_sets[1]
    case = _case(cert_mode=cert_mode, signer="none")
    body = json.dumps(TOKEN_DATA).encode()
    response = {
        "status": 200,
        "headers": {"content-type": "application/json"},
        "body_b64": base64.b64encode(body).decode(),
    }
    (_, sdk_outcome), (_, our_outcome) = _exchange(oracle, creds, configs, case, response)
    # Without alipay-signature the SDK's verify() throws a bare TypeError, not an AlipayRequestError.
    assert sdk_outcome["kind"] == "other"
    assert sdk_outcome["code"] == "ERR_INVALID_ARG_TYPE"
    assert our_outcome == {"kind": "signature-error", "code": "response-signature-verify-error"}


def test_response_encrypted_with_another_aes_key_fails_on_both_sides(
    oracle: Oracle, credential_sets: list[DevCredentials], configs: ConfigCache
) -> None:
    creds = credential_sets[0]
    case = _case(aes=True)
    body = AesKey(base64.b64encode(bytes(range(16))).decode()).encrypt(json.dumps(TOKEN_DATA)).encode()
    timestamp, nonce = "1781234567999", "e0f2"
    headers = {
        "content-type": "text/plain",
        "alipay-timestamp": timestamp,
        "alipay-nonce": nonce,
        "alipay-signature": alipay_sign(oracle, creds, "ours", timestamp, nonce, body),
    }
    response = {"status": 200, "headers": headers, "body_b64": base64.b64encode(body).decode()}
    (_, sdk_outcome), (_, our_outcome) = _exchange(oracle, creds, configs, case, response)
    # crypto-js decrypts to garbage and fails turning it into UTF-8: a bare Error, or, when the
    # garbage happens to be valid UTF-8, the SDK's decrypt-error or a JSON error. Never data.
    assert sdk_outcome["kind"] == "other"
    assert our_outcome == {"kind": "other", "code": "decrypt-error"}
