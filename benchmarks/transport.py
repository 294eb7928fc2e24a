"""A token endpoint without a network: a ``requests`` transport adapter that answers every call with
one response signed (and, with AES, encrypted) ahead of time, so a timed call pays for the client's
work only: building, signing, the ``requests`` machinery, verifying, decrypting and parsing.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from alipay_v3 import TOKEN_PATH, AlipayClient, AlipayConfig, TokenApi
from alipay_v3.server import sign_response, verify_request

APP_AUTH_CODE = "P3a9c1e5b7d2f4a6c8e0b1d3f5a7c9e1"  # shaped like a real one; throw-away
TOKEN_FIELDS = {  # the v3 schema types everything as strings
    "user_id": "2088000000000001",
    "auth_app_id": "2021000000000099",
    "app_auth_token": "202511BBa0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
    "app_refresh_token": "202511BBb0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
    "expires_in": "31536000",
    "re_expires_in": "32140800",
}


class CannedAlipay(BaseAdapter):
    """Answers every request with the same signed response. No socket is ever opened."""

    def __init__(self, body: bytes, headers: Mapping[str, str]) -> None:
        super().__init__()
        self._body = body
        self._headers = dict(headers)
        self.last_request: requests.PreparedRequest | None = None

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        self.last_request = request  # kept so that a check outside the timing can verify it
        response = requests.Response()
        response.status_code = 200
        response.reason = "OK"
        response.headers = CaseInsensitiveDict(self._headers)
        response._content = self._body
        response.encoding = "utf-8"
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def canned_token_endpoint(
    config: AlipayConfig, alipay_key: rsa.RSAPrivateKey, *, encrypted: bool
) -> CannedAlipay:
    """The success response Alipay would send for this config: signed with Alipay's key, naming
    Alipay's certificate SN in certificate mode, the body AES-encrypted when ``encrypted``."""
    body = json.dumps(TOKEN_FIELDS, separators=(",", ":")).encode()
    content_type = "application/json"
    if encrypted:
        assert config.aes is not None, "encrypted needs a config with encrypt_key"
        body = config.aes.encrypt(body.decode()).encode()
        content_type = "text/plain"
    headers = sign_response(
        alipay_key,
        body,
        nonce=str(uuid.uuid4()),
        timestamp=str(int(time.time() * 1000)),
        sn=config.alipay_cert_sns[0] if config.cert_mode else None,
    )
    headers.update({"Content-Type": content_type, "alipay-trace-id": uuid.uuid4().hex})
    return CannedAlipay(body, headers)


def offline_token_api(
    config: AlipayConfig,
    alipay_key: rsa.RSAPrivateKey,
    *,
    encrypted: bool,
    session: requests.Session | None = None,
) -> tuple[TokenApi, CannedAlipay]:
    """The shipped ``TokenApi`` over a real ``AlipayClient`` whose session never leaves the process."""
    adapter = canned_token_endpoint(config, alipay_key, encrypted=encrypted)
    session = session or requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return TokenApi(AlipayClient(config, session=session)), adapter


def check_exchange(
    api: TokenApi, adapter: CannedAlipay, app_public_key: rsa.RSAPublicKey, *, encrypted: bool
) -> None:
    """Outside the timing: one call returns the canned tokens, and its request verifies as Alipay
    would verify it. A benchmark of a call that does not work would measure nothing."""
    grant = api.exchange_code(APP_AUTH_CODE, encrypt=encrypted)
    if grant.primary.app_auth_token != TOKEN_FIELDS["app_auth_token"]:
        raise AssertionError("the offline exchange returned the wrong token")
    sent = adapter.last_request
    assert sent is not None and sent.path_url == TOKEN_PATH
    body = sent.body if isinstance(sent.body, bytes) else (sent.body or "").encode()
    verify_request(
        method=sent.method or "",
        path_and_query=sent.path_url,
        headers=sent.headers,
        body=body,
        key_for=lambda _parsed: app_public_key,
        now_ms=int(time.time() * 1000),
    )
    if encrypted and sent.headers.get("alipay-encrypt-type") != "AES":
        raise AssertionError("the request was not sent encrypted")
