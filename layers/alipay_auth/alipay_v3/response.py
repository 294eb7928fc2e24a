"""Opening an Alipay response: verify the raw bytes first, then decrypt, then parse.

Kept apart from the HTTP client so that it can be driven with recorded responses and measured
without a network.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from requests.structures import CaseInsensitiveDict

from .config import AlipayConfig
from .errors import AlipayApiError, DecryptError, MalformedResponseError, ResponseVerificationError
from .signing import response_sign_content, verify


@dataclass(frozen=True)
class AlipayResponse:
    status: int
    data: dict[str, Any]
    trace_id: str | None


def _case_insensitive(headers: Mapping[str, str]) -> CaseInsensitiveDict[str]:
    # requests' headers already are; a plain dict from a test or a server may not be.
    return headers if isinstance(headers, CaseInsensitiveDict) else CaseInsensitiveDict(headers)


def _is_signed(headers: Mapping[str, str]) -> bool:
    signature = headers.get("alipay-signature")
    return bool(signature) and signature != "null"


def verify_response(config: AlipayConfig, headers: Mapping[str, str], body: bytes) -> None:
    """Check ``alipay-signature`` over ``timestamp \\n nonce \\n body \\n`` with the key ``alipay-sn`` names."""
    headers = _case_insensitive(headers)
    timestamp = headers.get("alipay-timestamp")
    nonce = headers.get("alipay-nonce")
    signature = headers.get("alipay-signature")
    if not (timestamp and nonce and signature):
        raise ResponseVerificationError(
            "the response is not signed (alipay-timestamp, alipay-nonce or alipay-signature missing); "
            "it may not come from Alipay"
        )
    key = config.alipay_key_for(headers.get("alipay-sn"))
    if not verify(key, response_sign_content(timestamp, nonce, body), signature):
        raise ResponseVerificationError(
            "the response signature does not verify with the configured Alipay "
            + ("certificate" if config.cert_mode else "public key (支付宝公钥)")
            + "; check that it is Alipay's current key for this app and environment"
        )


def _json_object(text: str | bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedResponseError(f"{what} is not JSON") from exc
    if not isinstance(data, dict):
        raise MalformedResponseError(f"{what} is not a JSON object")
    return data


def open_response(
    config: AlipayConfig, status: int, headers: Mapping[str, str], body: bytes, *, encrypted: bool
) -> AlipayResponse:
    """Turn a raw response into data, or raise the error it stands for.

    2xx responses must be signed. Error responses are verified when signed (a bad signature is a
    verification error, as in the PHP and Java SDKs); unsigned ones become an ``AlipayApiError``
    with ``verified=False``.
    """
    headers = _case_insensitive(headers)
    trace_id = headers.get("alipay-trace-id")
    if status < 400:
        verify_response(config, headers, body)
        plaintext: str | bytes = body
        if encrypted and body.strip():
            if config.aes is None:
                raise DecryptError("the response is encrypted but no encrypt_key is configured")
            plaintext = config.aes.decrypt(body)
        return AlipayResponse(
            status, _json_object(plaintext, "the response body") if plaintext else {}, trace_id
        )

    signed = _is_signed(headers)
    if signed:
        verify_response(config, headers, body)
    try:
        envelope = _json_object(body, "the error body")
    except MalformedResponseError:
        envelope = {}
    links = envelope.get("links")
    raise AlipayApiError(
        str(envelope.get("code") or f"http-{status}"),
        str(envelope.get("message") or "no error description in the response"),
        http_status=status,
        trace_id=trace_id,
        links=links if isinstance(links, list) else None,
        verified=signed,
    )
