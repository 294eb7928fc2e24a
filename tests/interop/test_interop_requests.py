"""Requests and responses, byte for byte against the official Node SDK.

For each generated case the SDK's real ``sdk.curl`` and our real ``AlipayClient.call`` make the same
call, with the same nonce and timestamp, to the harness's capture server, which answers both with
the same response (signed by us or by the SDK, sometimes tampered with). Then:

* the requests must agree: Authorization header (hence the signature), request-target, body bytes,
  ``alipay-root-cert-sn``, ``alipay-app-auth-token``, ``alipay-encrypt-type``, Content-Type;
* the outcomes must agree, and match what the response deserves: data for a good response, a
  signature error for a tampered one, an SN error for a foreign ``alipay-sn``, the error code of an
  error response.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest

from sandbox.credentials import DevCredentials
from tests.interop.exchange import Case, build_response, compare_requests, run_ours, run_sdk
from tests.interop.nodesdk import ConfigCache, Oracle

pytestmark = pytest.mark.interop

SEED = 20260611
CASE_COUNT = 320
TAMPERS = ("body", "timestamp", "nonce", "signature", "signature-other-content")

# Text that makes serialisation and signing interesting: multi-byte UTF-8, astral characters
# (surrogate pairs in JavaScript), JSON escapes, and characters with meaning in URLs and in our
# own sign-string format (newlines, commas, "=").
ASCII_WORDS = ["app", "token", "a=b", "x,y", "sign=", "path/to", "q?r", "100%", "<tag>", "a&b", "'quoted'"]
UNICODE_WORDS = [
    "授权",
    "支付宝开放平台",
    "商户应用",
    "😀",
    "🇨🇳",
    "é",
    "ß",
    "\u2028",
    "日本語テキスト",
    "emoji🎉混合",
]
ESCAPES = ['"', "\\", "\n", "\t", "\r", "\x01", "\x7f", "/"]
# Safe in a query string for both serialisers (~ and * are not: see test_interop_edges.py).
QUERY_CHARS = "abcXYZ019-._ !'()&=+/:@,;$授权😀"


def _text(rng: random.Random) -> str:
    pieces = []
    for _ in range(rng.randint(1, 4)):
        pool = rng.choice([ASCII_WORDS, UNICODE_WORDS, ESCAPES])
        pieces.append(rng.choice(pool))
    return " ".join(pieces) if rng.random() < 0.5 else "".join(pieces)


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.choice(
        ["text", "text", "int", "bool", "null", "list", "dict"] if depth < 2 else ["text", "int"]
    )
    if kind == "text":
        return _text(rng)
    if kind == "int":
        return rng.randint(-(2**53) + 1, 2**53 - 1)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return _object(rng, depth + 1)


def _object(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    # Keys are never integer-like: JavaScript objects put those first, whatever the insertion order.
    return {
        f"{rng.choice(['k', 'field_', 'biz'])}{i}_{rng.choice(['', '名'])}": _value(rng, depth)
        for i in range(rng.randint(0, 4))
    }


def _body(rng: random.Random) -> dict[str, Any] | None:
    roll = rng.random()
    if roll < 0.4:
        body: dict[str, Any] = {
            "grant_type": "authorization_code",
            "code": uuid.UUID(int=rng.getrandbits(128)).hex,
        }
        if rng.random() < 0.5:
            body.update(_object(rng))
        return body
    if roll < 0.5:
        return {
            "grant_type": "refresh_token",
            "refresh_token": "2024" + uuid.UUID(int=rng.getrandbits(128)).hex,
        }
    if roll < 0.55:
        return {}
    return _object(rng)


def _query(rng: random.Random) -> dict[str, str]:
    return {
        f"q{i}": "".join(rng.choice(QUERY_CHARS) for _ in range(rng.randint(0, 12)))
        for i in range(rng.randint(1, 3))
    }


def _response_data(rng: random.Random, status: int) -> dict[str, Any]:
    if status >= 400:
        code = rng.choice(
            ["AUTH_CODE_NOT_VALID", "invalid-signature", "REFRESH_TOKEN_NOT_VALID", "invalid-app-id"]
        )
        return {
            "code": code,
            "message": rng.choice(
                ["授权码无效", "invalid code", "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配"]
            ),
            "links": [{"link": "https://open.alipay.com/api/errCheck?traceId=0b1", "desc": "解决方案"}],
        }
    data: dict[str, Any] = {
        "user_id": f"2088{rng.randint(10**11, 10**12 - 1)}",
        "auth_app_id": f"2021{rng.randint(10**11, 10**12 - 1)}",
        "app_auth_token": "202506BB" + uuid.UUID(int=rng.getrandbits(128)).hex,
        "app_refresh_token": "202506BB" + uuid.UUID(int=rng.getrandbits(128)).hex,
        "expires_in": rng.choice(["31536000", 31536000]),
        "re_expires_in": rng.choice(["32140800", 32140800]),
    }
    if rng.random() < 0.4:
        data["note"] = _text(rng)
    return data


def make_case(index: int) -> Case:
    rng = random.Random(SEED * 1000 + index)
    # The first 32 cases walk the whole matrix of POST options; the rest are drawn at random.
    walk = [bool(index >> bit & 1) for bit in range(5)] if index < 32 else None
    method = "POST" if walk or rng.random() >= 0.2 else "GET"
    cert_mode = walk[0] if walk else rng.random() < 0.5
    status = rng.choices([200, 400, 401, 500], weights=[80, 8, 7, 5])[0]
    signer = rng.choice(["ours", "sdk"])
    if status >= 400 and rng.random() < 0.5:
        signer = "none"  # Alipay's error answers are often unsigned
    tamper = rng.choice(TAMPERS) if status < 400 and rng.random() < 0.3 else None
    sn_header = rng.choices(["none", "right", "foreign"], weights=[4, 4, 2])[0]
    if status >= 400 and signer != "none" and sn_header == "foreign":
        # The SDK never checks error responses, we check signed ones (as the PHP and Java SDKs do):
        # a foreign alipay-sn there is a designed difference, covered in test_interop_edges.py.
        sn_header = "right"
    pkcs8 = walk[1] if walk else rng.random() < 0.5
    pem = walk[2] if walk else rng.random() < 0.5
    aes = walk[3] if walk else rng.random() < 0.4  # a GET with AES: no body, decrypted response
    with_token = walk[4] if walk else rng.random() < 0.3
    return Case(
        index=index,
        creds=rng.randrange(2),
        cert_mode=cert_mode,
        pkcs8=pkcs8,
        pem=pem,
        key_type_hint=rng.random() < 0.5,
        aes=aes,
        token=("202506BB" + uuid.UUID(int=rng.getrandbits(128)).hex) if with_token else None,
        method=method,
        path="/v3/alipay/open/auth/token/app/query" if method == "GET" else "/v3/alipay/open/auth/token/app",
        query=_query(rng) if method == "GET" or rng.random() < 0.1 else None,
        body=None if method == "GET" else _body(rng),
        nonce=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        timestamp=rng.randint(1_600_000_000_000, 1_900_000_000_000),
        status=status,
        data=_response_data(rng, status),
        ensure_ascii=rng.random() < 0.3,
        signer=signer,
        tamper=tamper,
        sn_header=sn_header,
    )


CASES = [make_case(i) for i in range(CASE_COUNT)]


@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: f"{c.index}-{c.method}-{'cert' if c.cert_mode else 'key'}"
)
def test_request_and_response_agree_with_sdk(
    oracle: Oracle, credential_sets: list[DevCredentials], configs: ConfigCache, case: Case
) -> None:
    creds = credential_sets[case.creds]
    config = configs.get(
        creds, oracle.capture_url, cert_mode=case.cert_mode, aes=case.aes, pkcs8=case.pkcs8, pem=case.pem
    )
    response = build_response(oracle, creds, case)

    sdk_request, sdk_outcome = run_sdk(oracle, creds, case, response)
    our_request, our_outcome = run_ours(oracle, config, case, response)

    compare_requests(case, our_request, sdk_request)
    where = case.describe()
    assert sdk_outcome["kind"] == case.expected, f"{where}: the SDK gave {sdk_outcome}"
    assert our_outcome == sdk_outcome, f"{where}: ours={our_outcome} sdk={sdk_outcome}"
    if case.expected == "ok":
        assert our_outcome["data"] == case.data, where
    if case.expected == "api-error":
        assert our_outcome["code"] == case.data["code"], where


def test_generated_cases_cover_the_matrix() -> None:
    """The seeded cases hit every combination the suite promises (guards against a generator edit)."""
    seen = {(c.cert_mode, c.pkcs8, c.pem, c.aes, bool(c.token)) for c in CASES if c.method == "POST"}
    assert len(seen) == 32
    assert {c.tamper for c in CASES if c.expected == "signature-error"} == set(TAMPERS)
    assert {c.expected for c in CASES} == {"ok", "signature-error", "sn-error", "api-error"}
    assert any(c.method == "GET" and c.cert_mode and c.token for c in CASES)
    assert any(c.method == "GET" and c.aes and c.expected == "ok" for c in CASES)
    assert any(c.query and c.method == "POST" for c in CASES)
    assert any(c.pkcs8 and not c.pem and not c.key_type_hint for c in CASES)
    assert {c.signer for c in CASES if c.expected == "ok"} == {"ours", "sdk"}
