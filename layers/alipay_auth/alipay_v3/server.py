"""The other side of the protocol: verify a signed request, sign a response.

Used by the emulator in ``sandbox/`` and by tests; the same pure steps as the client, so a
disagreement between the two can only come from the steps themselves, which the interop tests
hold against the official SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from cryptography.hazmat.primitives.asymmetric import rsa

from .errors import RequestVerificationError
from .signing import (
    ParsedAuthorization,
    parse_authorization,
    request_sign_content,
    response_sign_content,
    sign,
    verify,
)

DEFAULT_MAX_SKEW_MS = 10 * 60 * 1000


def _get(headers: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name), None)


def verify_request(
    *,
    method: str,
    path_and_query: str,
    headers: Mapping[str, str],
    body: bytes,
    key_for: Callable[[ParsedAuthorization], rsa.RSAPublicKey],
    now_ms: int,
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
) -> ParsedAuthorization:
    """Authenticate a v3 request; ``key_for`` picks the app's public key from the parsed header
    (by ``app_id`` and, in certificate mode, ``app_cert_sn``) and raises for an unknown one."""
    parsed = parse_authorization(_get(headers, "authorization"))
    try:
        timestamp = int(parsed.fields["timestamp"])
    except ValueError:
        raise RequestVerificationError(
            "timestamp is not a number", code="invalid-timestamp", http_status=400
        ) from None
    if abs(now_ms - timestamp) > max_skew_ms:
        raise RequestVerificationError(
            "timestamp is too far from the server's clock", code="illegal-timestamp"
        )
    key = key_for(parsed)
    content = request_sign_content(
        parsed.auth_string, method, path_and_query, body, _get(headers, "alipay-app-auth-token")
    )
    if not verify(key, content, parsed.signature):
        raise RequestVerificationError("the request signature does not verify", code="invalid-signature")
    return parsed


def sign_response(
    private_key: rsa.RSAPrivateKey, body: bytes, *, nonce: str, timestamp: str, sn: str | None = None
) -> dict[str, str]:
    """The headers that sign ``body`` (lowercase names: the PHP SDK looks them up that way)."""
    headers = {
        "alipay-timestamp": timestamp,
        "alipay-nonce": nonce,
        "alipay-signature": sign(private_key, response_sign_content(timestamp, nonce, body)),
    }
    if sn:
        headers["alipay-sn"] = sn
    return headers
