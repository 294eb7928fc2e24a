"""One exchange, made twice: by the official SDK's ``sdk.curl`` and by our ``AlipayClient.call``.

Both go to the harness's capture server with the same nonce and timestamp and get the same
canned response; the captured requests and the outcomes are then compared.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import uuid
from dataclasses import dataclass
from typing import Any

from alipay_v3 import (
    AesKey,
    AlipayApiError,
    AlipayClient,
    AlipayConfig,
    AlipayError,
    ResponseVerificationError,
    UnknownAlipayCertError,
)
from alipay_v3.keys import cert_sn
from alipay_v3.server import sign_response
from alipay_v3.signing import response_sign_content
from sandbox.credentials import DevCredentials, private_pem
from tests.interop.nodesdk import Oracle, sdk_config


@dataclass
class Case:
    index: int
    creds: int
    cert_mode: bool
    pkcs8: bool
    pem: bool
    key_type_hint: bool
    aes: bool
    token: str | None
    method: str
    path: str
    query: dict[str, str] | None
    body: dict[str, Any] | None
    nonce: str
    timestamp: int
    # the response
    status: int
    data: dict[str, Any]
    ensure_ascii: bool
    signer: str  # "ours" | "sdk" | "none"
    tamper: str | None
    sn_header: str  # "none" | "right" | "foreign"

    @property
    def expected(self) -> str:
        if self.status >= 400:
            return "api-error"
        if self.cert_mode and self.sn_header == "foreign":
            return "sn-error"
        if self.tamper:
            return "signature-error"
        return "ok"

    def describe(self) -> str:
        return (
            f"case {self.index}: {self.method} {self.path}"
            f"{' query' if self.query else ''} mode={'cert' if self.cert_mode else 'key'}"
            f" key={'PKCS8' if self.pkcs8 else 'PKCS1'}/{'PEM' if self.pem else 'base64'}"
            f" aes={self.aes} token={bool(self.token)} status={self.status} signer={self.signer}"
            f" tamper={self.tamper} alipay-sn={self.sn_header}"
        )


def alipay_sign(
    oracle: Oracle, creds: DevCredentials, signer: str, timestamp: str, nonce: str, body: bytes
) -> str:
    if signer == "ours":
        return sign_response(creds.alipay_key, body, nonce=nonce, timestamp=timestamp)["alipay-signature"]
    content = response_sign_content(timestamp, nonce, body).decode()
    return str(oracle.call("sign", content=content, privateKey=private_pem(creds.alipay_key)))


def encrypt(oracle: Oracle, creds: DevCredentials, signer: str, text: str) -> str:
    if signer == "sdk":
        return str(oracle.call("aes_encrypt", text=text, key=creds.encrypt_key))
    return AesKey(creds.encrypt_key).encrypt(text)


def build_response(oracle: Oracle, creds: DevCredentials, case: Case) -> dict[str, Any]:
    """The HTTP response both clients get, as the capture server's spec."""
    rng = random.Random(f"response-{case.index}-{case.nonce}")
    text = json.dumps(case.data, ensure_ascii=case.ensure_ascii)
    encrypted = case.aes and case.status < 400  # error bodies are plain JSON, never encrypted
    body = (encrypt(oracle, creds, case.signer, text) if encrypted else text).encode()
    timestamp = str(case.timestamp + rng.randint(5, 900))
    nonce = uuid.UUID(int=rng.getrandbits(128)).hex
    headers = {
        "content-type": "text/plain;charset=UTF-8" if encrypted else "application/json;charset=UTF-8",
        "alipay-trace-id": f"0b{rng.getrandbits(64):016x}",
    }
    if case.signer != "none":
        signature = alipay_sign(oracle, creds, case.signer, timestamp, nonce, body)
        if case.tamper == "body":
            changed = text.replace('"user_id": "2088', '"user_id": "2089', 1)
            body = (encrypt(oracle, creds, case.signer, changed) if encrypted else changed).encode()
        elif case.tamper == "timestamp":
            timestamp = str(int(timestamp) + 1)
        elif case.tamper == "nonce":
            nonce = nonce[:-1] + ("0" if nonce[-1] != "0" else "1")
        elif case.tamper == "signature":
            raw = bytearray(base64.b64decode(signature))
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            signature = base64.b64encode(bytes(raw)).decode()
        elif case.tamper == "signature-other-content":
            signature = alipay_sign(oracle, creds, case.signer, timestamp, nonce, body + b" ")
        headers.update({"alipay-timestamp": timestamp, "alipay-nonce": nonce, "alipay-signature": signature})
    if case.sn_header == "right":
        headers["alipay-sn"] = cert_sn(creds.alipay_cert)
    elif case.sn_header == "foreign":
        headers["alipay-sn"] = hashlib.md5(
            f"foreign-{case.index}".encode(), usedforsecurity=False
        ).hexdigest()
    return {"status": case.status, "headers": headers, "body_b64": base64.b64encode(body).decode()}


def run_ours(
    oracle: Oracle, config: AlipayConfig, case: Case, response: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Our client makes the call against the capture server; returns (captured request, outcome)."""
    # int(clock() * 1000) must give exactly the case's timestamp: aim at the middle of the millisecond.
    pinned_clock = (case.timestamp + 0.5) / 1000
    client = AlipayClient(
        config, clock=lambda: pinned_clock, nonce=lambda: case.nonce, max_attempts=1, sleep=lambda _: None
    )
    oracle.call("arm", response=response)
    try:
        result = client.call(
            case.method,
            case.path,
            data=case.body,
            query=case.query,
            app_auth_token=case.token,
            encrypt=case.aes,
        )
        outcome: dict[str, Any] = {"kind": "ok", "data": result.data}
    except UnknownAlipayCertError as exc:
        outcome = {"kind": "sn-error", "code": exc.code}
    except ResponseVerificationError as exc:
        outcome = {"kind": "signature-error", "code": exc.code}
    except AlipayApiError as exc:
        outcome = {"kind": "api-error", "code": exc.code, "status": exc.http_status}
    except AlipayError as exc:
        outcome = {"kind": "other", "code": exc.code}
    captured = oracle.call("take")
    assert len(captured) == 1, f"our client made {len(captured)} requests"
    return captured[0], outcome


def run_sdk(
    oracle: Oracle, creds: DevCredentials, case: Case, response: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    config = sdk_config(
        creds,
        cert_mode=case.cert_mode,
        aes=case.aes,
        pkcs8=case.pkcs8,
        pem=case.pem,
        key_type_hint=case.key_type_hint,
    )
    answer = oracle.call(
        "request",
        config=config,
        method=case.method,
        path=case.path,
        query=case.query,
        body=case.body,
        appAuthToken=case.token,
        needEncrypt=case.aes,
        nonce=case.nonce,
        timestamp=case.timestamp,
        response=response,
    )
    assert len(answer["requests"]) == 1, (
        f"the SDK made {len(answer['requests'])} requests: {answer['outcome']}"
    )
    sdk = answer["outcome"]
    if sdk["ok"]:
        outcome: dict[str, Any] = {"kind": "ok", "data": sdk["data"]}
    elif sdk["code"] == "response-alipay-sn-verify-error":
        outcome = {"kind": "sn-error", "code": sdk["code"]}
    elif sdk["code"] == "response-signature-verify-error":
        outcome = {"kind": "signature-error", "code": sdk["code"]}
    elif sdk["status"] and sdk["status"] >= 400:
        outcome = {"kind": "api-error", "code": sdk["code"], "status": sdk["status"]}
    else:
        outcome = {"kind": "other", "code": sdk["code"], "message": sdk["message"][:200]}
    return answer["requests"][0], outcome


def _auth_parts(header: str) -> tuple[str, str]:
    """(auth string, short fingerprint of the signature): enough to report a mismatch without the signature."""
    auth, _, signature = header.rpartition(",sign=")
    return auth, hashlib.sha256(signature.encode()).hexdigest()[:12]


def compare_requests(case: Case, ours: dict[str, Any], sdk: dict[str, Any]) -> None:
    where = case.describe()
    assert ours["method"] == sdk["method"] == case.method, where
    assert ours["target"] == sdk["target"], (
        f"{where}: request-target ours={ours['target']!r} sdk={sdk['target']!r}"
    )
    ours_body, sdk_body = base64.b64decode(ours["body_b64"]), base64.b64decode(sdk["body_b64"])
    assert ours_body == sdk_body, f"{where}: body ours={ours_body[:300]!r} sdk={sdk_body[:300]!r}"
    ours_auth, sdk_auth = ours["headers"]["authorization"], sdk["headers"]["authorization"]
    assert ours_auth == sdk_auth, (
        f"{where}: Authorization ours={_auth_parts(ours_auth)} sdk={_auth_parts(sdk_auth)}"
    )
    if case.aes and case.method == "GET":
        # No body to encrypt: the SDK then sends no encryption header, we send alipay-encrypt-type
        # (as the PHP SDK does) so that the server knows to encrypt its answer.
        assert (ours["headers"].get("alipay-encrypt-type"), sdk["headers"].get("alipay-encrypt-type")) == (
            "AES",
            None,
        ), where
    else:
        assert ours["headers"].get("alipay-encrypt-type") == sdk["headers"].get("alipay-encrypt-type"), where
    for name in ("alipay-root-cert-sn", "alipay-app-auth-token"):
        assert ours["headers"].get(name) == sdk["headers"].get(name), (
            f"{where}: header {name} ours={ours['headers'].get(name)!r} sdk={sdk['headers'].get(name)!r}"
        )
    if case.method == "POST":
        assert ours["headers"]["content-type"] == sdk["headers"]["content-type"], where
    # Sanity: the case really exercised what it claims.
    assert ("alipay-root-cert-sn" in sdk["headers"]) == case.cert_mode, where
    assert (",app_cert_sn=" in sdk_auth) == case.cert_mode, where
    assert f"nonce={case.nonce},timestamp={case.timestamp}," in sdk_auth, where
