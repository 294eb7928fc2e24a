"""``alipay.open.auth.token.app``: exchange an app_auth_code, refresh an app_refresh_token, and
``alipay.open.auth.token.app.query``: ask whether an app_auth_token still works."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .client import AlipayClient
from .errors import AlipayError, MalformedResponseError

TOKEN_PATH = "/v3/alipay/open/auth/token/app"  # noqa: S105 - an API path, not a secret
QUERY_PATH = TOKEN_PATH + "/query"
# auth_start and auth_end are Beijing wall-clock time without a zone (protocol notes section 8.6).
CHINA_TIME = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")
_CHINA_TIME_TEXT = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
# Codes and tokens seen in the wild are 32-40 characters of [A-Za-z0-9]; allow some slack for the
# format to grow, but nothing that could smuggle a separator into a request or a log line.
_GRANT_VALUE = re.compile(r"[A-Za-z0-9_.\-]{8,128}")


def mask(secret: str | None) -> str:
    """Enough of a token to tell two apart in a log, not enough to use it."""
    if not secret:
        return "-"
    return f"{secret[:4]}…({len(secret)})"


def _optional_int(value: Any, name: str) -> int | None:
    """Lifetimes come as JSON strings in the v3 schema and as numbers in older examples."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise MalformedResponseError(f"{name} is not a number")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise MalformedResponseError(f"{name} is not a number") from exc


@dataclass(frozen=True, repr=False)
class AppToken:
    """One authorized merchant app. ``obtained_at`` is our clock when Alipay answered."""

    auth_app_id: str
    user_id: str
    app_auth_token: str
    app_refresh_token: str
    expires_in: int | None
    re_expires_in: int | None
    obtained_at: float

    def __repr__(self) -> str:
        return (
            f"AppToken(auth_app_id={self.auth_app_id!r}, user_id={self.user_id!r}, "
            f"app_auth_token={mask(self.app_auth_token)}, app_refresh_token={mask(self.app_refresh_token)}, "
            f"expires_in={self.expires_in}, re_expires_in={self.re_expires_in})"
        )

    @property
    def refresh_expires_at(self) -> float | None:
        return None if self.re_expires_in is None else self.obtained_at + self.re_expires_in

    @property
    def expires_at(self) -> float | None:
        return None if self.expires_in is None else self.obtained_at + self.expires_in

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any], obtained_at: float) -> AppToken:
        missing = [
            name for name in ("app_auth_token", "app_refresh_token", "auth_app_id") if not fields.get(name)
        ]
        if missing:
            raise MalformedResponseError(f"the token response lacks {', '.join(missing)}")
        return cls(
            auth_app_id=str(fields["auth_app_id"]),
            user_id=str(fields.get("user_id") or ""),
            app_auth_token=str(fields["app_auth_token"]),
            app_refresh_token=str(fields["app_refresh_token"]),
            expires_in=_optional_int(fields.get("expires_in"), "expires_in"),
            re_expires_in=_optional_int(fields.get("re_expires_in"), "re_expires_in"),
            obtained_at=obtained_at,
        )


@dataclass(frozen=True)
class TokenGrant:
    """What one call returned: one token per authorized app (several for a batch authorization)."""

    tokens: tuple[AppToken, ...]
    trace_id: str | None

    @property
    def primary(self) -> AppToken:
        return self.tokens[0]


def parse_token_response(data: Mapping[str, Any], obtained_at: float) -> tuple[AppToken, ...]:
    """Both shapes: the flat fields, and ``tokens[]`` for batch authorizations (or both at once)."""
    found: dict[str, AppToken] = {}
    if data.get("app_auth_token"):
        token = AppToken.from_fields(data, obtained_at)
        found[token.auth_app_id] = token
    batch = data.get("tokens") or []
    if not isinstance(batch, list):
        raise MalformedResponseError("tokens is not a list")
    for item in batch:
        if not isinstance(item, Mapping):
            raise MalformedResponseError("an element of tokens is not an object")
        token = AppToken.from_fields(item, obtained_at)
        found.setdefault(token.auth_app_id, token)
    if not found:
        raise MalformedResponseError("the token response holds no app_auth_token")
    return tuple(found.values())


class AuthorizationStatus(StrEnum):
    """``status`` of the query answer: "valid：有效状态；invalid：无效状态" (official v3 model
    ``AlipayOpenAuthTokenAppQueryResponseModel``)."""

    VALID = "valid"
    INVALID = "invalid"


def _china_time(value: Any, name: str) -> int | None:
    """``YYYY-MM-DD HH:MM:SS`` in China time, as Unix seconds (like ``AppToken.obtained_at``)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _CHINA_TIME_TEXT.fullmatch(value):
        raise MalformedResponseError(f"{name} is not a time of the form YYYY-MM-DD HH:MM:SS")
    try:
        moment = dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA_TIME)
    except ValueError as exc:  # e.g. month 13
        raise MalformedResponseError(f"{name} is not a valid date and time") from exc
    return int(moment.timestamp())


def _optional_bool(value: Any, name: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise MalformedResponseError(f"{name} is not true or false")
    return value


def _methods(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise MalformedResponseError("auth_methods is not a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class AppAuthorization:
    """What ``token/app/query`` says about one app_auth_token (which it does not repeat, nor do we).

    ``status`` is the truth about whether the token works: ``auth_end`` and ``expires_in`` may disagree
    with it, since a token does not expire on its own (protocol notes section 8.1).
    ``auth_start`` and ``auth_end`` are Unix seconds, read as China time. ``auth_methods`` are the
    APIs the token may call; ``is_by_app_auth`` is true when the merchant chose full delegation.
    """

    auth_app_id: str
    user_id: str | None
    status: AuthorizationStatus
    auth_methods: tuple[str, ...]
    auth_start: int | None
    auth_end: int | None
    expires_in: int | None
    is_by_app_auth: bool | None
    trace_id: str | None = None

    @property
    def valid(self) -> bool:
        return self.status is AuthorizationStatus.VALID

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any], trace_id: str | None = None) -> AppAuthorization:
        """Every field of the official model is optional there; ``status`` and ``auth_app_id`` are not
        here, because without them the answer cannot say whether, or for whom, the token works."""
        auth_app_id = fields.get("auth_app_id")
        if not auth_app_id or not isinstance(auth_app_id, str):
            raise MalformedResponseError("the query response lacks auth_app_id")
        status = fields.get("status")
        if status not in tuple(AuthorizationStatus):
            shown = status if isinstance(status, str) and status.isalpha() and len(status) <= 20 else "?"
            raise MalformedResponseError(f"the query response's status is {shown!r}, not valid or invalid")
        user_id = fields.get("user_id")
        if user_id is not None and not isinstance(user_id, str):
            raise MalformedResponseError("user_id is not a string")
        return cls(
            auth_app_id=auth_app_id,
            user_id=user_id or None,
            status=AuthorizationStatus(status),
            auth_methods=_methods(fields.get("auth_methods")),
            auth_start=_china_time(fields.get("auth_start"), "auth_start"),
            auth_end=_china_time(fields.get("auth_end"), "auth_end"),
            expires_in=_optional_int(fields.get("expires_in"), "expires_in"),
            is_by_app_auth=_optional_bool(fields.get("is_by_app_auth"), "is_by_app_auth"),
            trace_id=trace_id,
        )


def _check_grant_value(value: str, name: str) -> None:
    if not isinstance(value, str) or not _GRANT_VALUE.fullmatch(value):
        raise AlipayError(
            f"{name} has an impossible shape (8-128 letters and digits expected)", code="invalid-argument"
        )


class TokenApi:
    def __init__(self, client: AlipayClient, *, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.clock = clock

    def exchange_code(
        self, app_auth_code: str, *, encrypt: bool = False, timeout: tuple[float, float] | None = None
    ) -> TokenGrant:
        """grant_type=authorization_code. Not retried once sent: a code is single-use. ``timeout``
        as for ``AlipayClient.call``."""
        _check_grant_value(app_auth_code, "app_auth_code")
        return self._call(
            {"grant_type": "authorization_code", "code": app_auth_code},
            encrypt,
            idempotent=False,
            timeout=timeout,
        )

    def refresh(self, app_refresh_token: str, *, encrypt: bool = False) -> TokenGrant:
        """grant_type=refresh_token. Retried after lost answers (the old refresh token stays valid through
        its grace window), but not after a read timeout (see ``AlipayClient``)."""
        _check_grant_value(app_refresh_token, "app_refresh_token")
        return self._call(
            {"grant_type": "refresh_token", "refresh_token": app_refresh_token}, encrypt, idempotent=True
        )

    def query(
        self, app_auth_token: str, *, encrypt: bool = False, timeout: tuple[float, float] | None = None
    ) -> AppAuthorization:
        """``GET token/app/query?app_auth_token=…``: Alipay's word on whether the token works.

        A read, so retried like any idempotent call. The token travels in the query string (not in
        the ``alipay-app-auth-token`` header: the PHP SDK's ``AlipayOpenAuthTokenAppApi::query`` and a
        Node SDK ``curl`` with ``query`` send it that way), and is signed as part of the path.
        """
        _check_grant_value(app_auth_token, "app_auth_token")
        response = self.client.call(
            "GET",
            QUERY_PATH,
            query={"app_auth_token": app_auth_token},
            encrypt=encrypt,
            idempotent=True,
            timeout=timeout,
        )
        return AppAuthorization.from_fields(response.data, response.trace_id)

    def _call(
        self,
        body: dict[str, str],
        encrypt: bool,
        *,
        idempotent: bool,
        timeout: tuple[float, float] | None = None,
    ) -> TokenGrant:
        response = self.client.call(
            "POST", TOKEN_PATH, data=body, encrypt=encrypt, idempotent=idempotent, timeout=timeout
        )
        return TokenGrant(parse_token_response(response.data, self.clock()), response.trace_id)
