"""Alipay OpenAPI v3 for Python: signing, verification, AES, certificates and the token API.

Knows nothing of AWS. Typical use::

    config = AlipayConfig.from_file("alipay.json")
    tokens = TokenApi(AlipayClient(config))
    grant = tokens.exchange_code(app_auth_code)
    if not tokens.query(grant.primary.app_auth_token).valid: ...
"""

from .aes import AesKey
from .client import AlipayAuth, AlipayClient
from .config import GATEWAYS, AlipayConfig
from .errors import (
    AlipayApiError,
    AlipayError,
    ConfigError,
    DecryptError,
    MalformedResponseError,
    RequestVerificationError,
    ResponseVerificationError,
    TransportError,
    UnknownAlipayCertError,
)
from .notify import sign_notification, verify_notification
from .response import AlipayResponse, open_response
from .token_api import (
    QUERY_PATH,
    TOKEN_PATH,
    AppAuthorization,
    AppToken,
    AuthorizationStatus,
    TokenApi,
    TokenGrant,
    mask,
)

__all__ = [
    "GATEWAYS",
    "QUERY_PATH",
    "TOKEN_PATH",
    "AesKey",
    "AlipayApiError",
    "AlipayAuth",
    "AlipayClient",
    "AlipayConfig",
    "AlipayError",
    "AlipayResponse",
    "AppAuthorization",
    "AppToken",
    "AuthorizationStatus",
    "ConfigError",
    "DecryptError",
    "MalformedResponseError",
    "RequestVerificationError",
    "ResponseVerificationError",
    "TokenApi",
    "TokenGrant",
    "TransportError",
    "UnknownAlipayCertError",
    "mask",
    "open_response",
    "sign_notification",
    "verify_notification",
]
