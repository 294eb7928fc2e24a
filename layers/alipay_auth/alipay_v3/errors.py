"""Typed errors of the protocol package.

Every error carries a stable ``code`` (kebab-case, like Alipay's own platform codes) and says
whether a retry may help. Messages never contain keys, codes or tokens: they are meant to be
logged and shown to operators as they are.
"""

from __future__ import annotations

from typing import Any

# The authorization code is spent or never existed: only a new authorization by the merchant helps.
CODE_SPENT_CODES = frozenset({"AUTH_CODE_NOT_EXIST", "AUTH_CODE_NOT_VALID"})
# The query API's word that Alipay holds no such app_auth_token (…QueryErrorResponseModel,
# protocol notes section 8.6): with ``status: invalid``, the only ground for declaring a merchant
# dead (section 8.1: the query's answer is the truth about a token).
TOKEN_GONE_CODES = frozenset({"AUTH_TOKEN_NOT_EXISTED"})
# Business codes after which the grant itself is spent: retrying with the same code, refresh
# token or app_auth_token can never succeed, only a new authorization by the merchant can.
DEAD_GRANT_CODES = (
    CODE_SPENT_CODES
    | TOKEN_GONE_CODES
    | {
        "REFRESH_TOKEN_NOT_EXIST",
        "REFRESH_TOKEN_NOT_VALID",
        "REFRESH_TOKEN_TIME_OUT",
        "AUTH_TOKEN_NOT_FOUND",
        "invalid-app-auth-token",
        "app-auth-token-time-out",
    }
)
# Our own configuration is at fault (app id, keys, certificates, the app's role), not any merchant's
# grant: "授权令牌授予的应用AppId与当前应用AppId不一致 — 确认授权令牌和应用标识是否正确" for
# APP_ID_NOT_CONSISTENT (docs/alipay-v3-protocol.md section 8.5); the others are the gateway's
# refusals of the caller (section 8.6 for APP_NOT_ISV).
# The query API's two other refusals (section 8.6) count here too. AUTH_TOKEN_NOT_CONSISTENT is the
# query's APP_ID_NOT_CONSISTENT: the token belongs to another app than the one calling, so we asked
# with the wrong app (or mixed up two apps' tokens); the grant still works for its own app.
# ILLEGAL_PARAM could be read as a fact about one token, but the only parameter is a token Alipay
# issued, which we send verbatim after checking its shape: if Alipay calls it illegal, the request
# we build is at fault. And section 8.1 makes invalid/AUTH_TOKEN_NOT_EXISTED the only grounds for
# declaring a merchant dead, so a doubtful code must not count as a dead grant.
CONFIGURATION_CODES = frozenset(
    {
        "APP_ID_NOT_CONSISTENT",
        "APP_NOT_ISV",
        "AUTH_TOKEN_NOT_CONSISTENT",
        "ILLEGAL_PARAM",
        "invalid-app-id",
        "invalid-signature",
        "app-cert-not-exist",
        "invalid-alipay-root-cert-sn",
        "invalid-encrypt-type",
        "insufficient-isv-permissions",
    }
)
# Business codes that say Alipay failed, not the request: SYSTEM_ERROR (the query API's
# …QueryErrorResponseModel, section 8.6). The HTTP status of business errors is not documented
# (section 8.9), so the code decides, not only a 5xx.
RETRYABLE_CODES = frozenset({"SYSTEM_ERROR"})


class AlipayError(Exception):
    """Base of every error raised by ``alipay_v3``."""

    code: str = "alipay-error"
    retryable: bool = False

    def __init__(self, message: str, *, code: str | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class ConfigError(AlipayError):
    """The configuration (keys, certificates, gateway) cannot be used as given; ``field`` names the
    configuration field at fault, when one is."""

    code = "invalid-config"

    def __init__(self, message: str, *, field: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.field = field


class ResponseVerificationError(AlipayError):
    """A response failed verification; its content must not be used."""

    code = "response-signature-verify-error"


class UnknownAlipayCertError(ResponseVerificationError):
    """The response names an Alipay certificate (``alipay-sn``) we do not hold."""

    code = "response-alipay-sn-verify-error"

    def __init__(self, sn: str, known: list[str]) -> None:
        super().__init__(
            f"Alipay signed this response with certificate SN {sn!r}, which is not among the configured "
            f"Alipay certificates ({', '.join(known) or 'none'}). Download the current Alipay public "
            "certificate (alipayCertPublicKey_RSA2.crt) from the Alipay console and add it to alipay_cert."
        )
        self.sn = sn


class DecryptError(AlipayError):
    """AES content could not be decrypted with the configured encrypt_key."""

    code = "decrypt-error"


class MalformedResponseError(AlipayError):
    """A verified response does not have the documented shape."""

    code = "malformed-response"


class TransportError(AlipayError):
    """The HTTP exchange itself failed (connection, timeout, reset).

    ``request_sent`` tells whether Alipay may have received and processed the request: when it
    is true the outcome is unknown (a code may be spent, a refresh token rotated). ``timed_out``:
    no answer within the read timeout, so Alipay may still be processing it, after any retry.
    """

    code = "transport-error"
    retryable = True

    def __init__(self, message: str, *, request_sent: bool, timed_out: bool = False) -> None:
        super().__init__(message)
        self.request_sent = request_sent
        self.timed_out = timed_out


class AlipayApiError(AlipayError):
    """Alipay answered with an error envelope ``{"code", "message", "links"}``.

    ``verified`` is false for an unsigned error response: its content is a hint from the
    network, not a statement Alipay signed, and callers must not act on it irreversibly.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        http_status: int,
        trace_id: str | None = None,
        links: list[dict[str, Any]] | None = None,
        verified: bool = False,
    ) -> None:
        super().__init__(
            f"Alipay answered HTTP {http_status}: {message}"
            + (f" (trace id {trace_id})" if trace_id else ""),
            code=code,
            retryable=http_status >= 500 or http_status == 429 or code in RETRYABLE_CODES,
        )
        self.alipay_message = message
        self.http_status = http_status
        self.trace_id = trace_id
        self.links = links or []
        self.verified = verified

    @property
    def grant_dead(self) -> bool:
        """True when the code, refresh token or app_auth_token used is spent for good."""
        return self.code in DEAD_GRANT_CODES

    @property
    def token_gone(self) -> bool:
        """True when the query API says Alipay holds no such app_auth_token (never issued, or dropped)."""
        return self.code in TOKEN_GONE_CODES

    @property
    def code_spent(self) -> bool:
        """True when the authorization code used is spent or never existed."""
        return self.code in CODE_SPENT_CODES

    @property
    def configuration_error(self) -> bool:
        """True when Alipay refuses the caller itself: the ISV's configuration, never a merchant's grant."""
        return self.code in CONFIGURATION_CODES


class RequestVerificationError(AlipayError):
    """Server side: an incoming request fails authentication (used by the emulator)."""

    code = "invalid-signature"

    def __init__(self, message: str, *, code: str = "invalid-signature", http_status: int = 401) -> None:
        super().__init__(message, code=code)
        self.http_status = http_status
