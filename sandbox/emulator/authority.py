"""What Alipay knows about app authorizations, without any HTTP: codes, token pairs, rotation.

The HTTP layer (``gateway``) calls into an ``AuthorizationAuthority``; later parts of the
emulator (the merchant consent page, notifications) call into the same object, so every rule
about codes and tokens lives here once. All times come from the injected clock, which lets
tests move time forward by a year without waiting.
"""

from __future__ import annotations

import datetime as dt
import secrets
import string
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Alipay shows Chinese time in its token prefixes and auth_start/auth_end strings.
CHINA_TIME = dt.timezone(dt.timedelta(hours=8))
_CODE_ALPHABET = string.ascii_letters + string.digits
# What token/app/query reports as auth_methods ("当前app_auth_token的授权接口列表", the APIs the token may
# call: official v3 model AlipayOpenAuthTokenAppQueryResponseModel) unless a test sets others: the
# payment APIs an ISV is typically authorized for. Not copied from a real answer.
DEFAULT_AUTH_METHODS = (
    "alipay.trade.pay",
    "alipay.trade.create",
    "alipay.trade.precreate",
    "alipay.trade.query",
    "alipay.trade.refund",
    "alipay.trade.close",
)
# auth_end = auth_start + 365 days, as in the 2019 query output cited by the protocol notes section 8.1
# (which also says the token does not expire at auth_end: status is the truth).
AUTHORIZATION_PERIOD_SECONDS = 365 * 86400


class BusinessError(Exception):
    """A business rule refused the call (``AUTH_CODE_NOT_VALID``...); Alipay answers these signed.

    The message is shown to the client as is, so it never contains the code or token itself.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class AuthCode:
    """One ``app_auth_code``: what a merchant's consent produced, until the ISV exchanges it."""

    isv_app_id: str
    user_id: str
    merchant_app_ids: tuple[str, ...]
    issued_at: float
    spent_at: float | None = None
    # Set when the tokens were made at consent time (see ``consent``): the exchange hands these out.
    minted: tuple[IssuedToken, ...] | None = None


@dataclass
class TokenPair:
    """One ``app_auth_token`` with its ``app_refresh_token``.

    ``superseded_at`` is set when a newer pair replaces this one (refresh or re-authorization);
    the pair keeps working for the grace window after that, so that a client that lost the
    answer to a refresh can retry with the token it still holds.
    """

    app_auth_token: str
    app_refresh_token: str
    authorization: Authorization
    issued_at: float
    superseded_at: float | None = None


@dataclass
class Authorization:
    """A merchant app authorized to one ISV app."""

    isv_app_id: str
    merchant_app_id: str
    user_id: str
    auth_start: float
    current: TokenPair | None = None
    revoked_at: float | None = None
    refresh_count: int = 0
    auth_methods: tuple[str, ...] = DEFAULT_AUTH_METHODS


@dataclass(frozen=True)
class IssuedToken:
    """The fields of one token in a successful answer."""

    auth_app_id: str
    user_id: str
    app_auth_token: str
    app_refresh_token: str
    expires_in: int
    re_expires_in: int


@dataclass(frozen=True)
class TokenStatus:
    """The answer of ``token/app/query`` (official v3 model ``AlipayOpenAuthTokenAppQueryResponseModel``)."""

    auth_app_id: str
    user_id: str
    valid: bool
    expires_in: int
    auth_start: float
    auth_end: float
    auth_methods: tuple[str, ...]
    # "当商家选择全权委托授权时值为true" (same model): the emulator's merchants always delegate fully.
    is_by_app_auth: bool = True


def china_time_text(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, CHINA_TIME).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class AuthorizationAuthority:
    """Thread-safe store of codes and tokens, with Alipay's rules for them.

    Rules (see the protocol notes, section 5): a code is single-use, lives ``code_ttl_seconds``
    and belongs to the ISV app that it was issued for; a refresh rotates both tokens, and the
    replaced pair stays usable for ``grace_seconds``; a refresh token dies ``re_expires_in``
    seconds after it was issued, an app_auth_token ``expires_in`` seconds after.
    """

    grace_seconds: float = 3600.0
    code_ttl_seconds: float = 86400.0
    re_expires_in: int = 31536000
    expires_in: int = 31536000
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._codes: dict[str, AuthCode] = {}
        self._by_access_token: dict[str, TokenPair] = {}
        self._by_refresh_token: dict[str, TokenPair] = {}
        self._authorizations: dict[tuple[str, str], Authorization] = {}

    # --- what a merchant does on Alipay's side -------------------------------------------------

    def issue_code(
        self, isv_app_id: str, merchant_app_ids: Sequence[str] | None = None, user_id: str | None = None
    ) -> str:
        """A merchant consented: a fresh ``app_auth_code`` for one or several of its apps."""
        with self._lock:
            return self._new_code(isv_app_id, merchant_app_ids, user_id).code

    def consent(
        self, isv_app_id: str, merchant_app_ids: Sequence[str] | None = None, user_id: str | None = None
    ) -> tuple[str, list[IssuedToken]]:
        """A merchant consented on the consent page: a code, and the live tokens it stands for.

        Alipay's authorization notification carries a working token before the ISV has exchanged
        the code, so the pairs are made now and the exchange of this code hands out the same ones.
        """
        with self._lock:
            issued = self._new_code(isv_app_id, merchant_app_ids, user_id)
            now = self.clock()
            issued.grant.minted = tuple(
                self._authorize(issued.grant, merchant_app_id, now)
                for merchant_app_id in issued.grant.merchant_app_ids
            )
            return issued.code, list(issued.grant.minted)

    def revoke(self, isv_app_id: str, merchant_app_id: str) -> bool:
        """The merchant cancelled the authorization: every token of it stops working at once."""
        with self._lock:
            authorization = self._authorizations.get((isv_app_id, merchant_app_id))
            if authorization is None or authorization.revoked_at is not None:
                return False
            authorization.revoked_at = self.clock()
            return True

    def user_id_of(self, isv_app_id: str, merchant_app_id: str) -> str | None:
        """The Alipay user who authorized this merchant app, if it ever was."""
        with self._lock:
            authorization = self._authorizations.get((isv_app_id, merchant_app_id))
            return authorization.user_id if authorization is not None else None

    # --- what the ISV calls ---------------------------------------------------------------------

    def exchange_code(self, isv_app_id: str, code: str) -> list[IssuedToken]:
        with self._lock:
            now = self.clock()
            grant = self._codes.get(code)
            if grant is None:
                raise BusinessError("AUTH_CODE_NOT_EXIST", "授权码不存在 (app_auth_code does not exist)")
            if grant.isv_app_id != isv_app_id:
                raise BusinessError(
                    "APP_ID_NOT_CONSISTENT", "授权码不属于当前应用 (the code was issued to another app)"
                )
            if grant.spent_at is not None:
                raise BusinessError("AUTH_CODE_NOT_VALID", "授权码无效 (app_auth_code was already used)")
            if now - grant.issued_at > self.code_ttl_seconds:
                raise BusinessError("AUTH_CODE_NOT_VALID", "授权码无效 (app_auth_code has expired)")
            grant.spent_at = now
            if grant.minted is not None:
                return list(grant.minted)
            return [
                self._authorize(grant, merchant_app_id, now) for merchant_app_id in grant.merchant_app_ids
            ]

    def refresh(self, isv_app_id: str, refresh_token: str) -> IssuedToken:
        with self._lock:
            now = self.clock()
            pair = self._by_refresh_token.get(refresh_token)
            if pair is None:
                raise BusinessError(
                    "REFRESH_TOKEN_NOT_EXIST", "刷新令牌不存在 (app_refresh_token does not exist)"
                )
            authorization = pair.authorization
            if authorization.isv_app_id != isv_app_id:
                raise BusinessError(
                    "APP_ID_NOT_CONSISTENT", "刷新令牌不属于当前应用 (the token was issued to another app)"
                )
            if authorization.revoked_at is not None or not self._within_grace(pair, now):
                raise BusinessError(
                    "REFRESH_TOKEN_NOT_VALID", "刷新令牌无效 (app_refresh_token was replaced)"
                )
            if now - pair.issued_at > self.re_expires_in:
                raise BusinessError(
                    "REFRESH_TOKEN_TIME_OUT", "刷新令牌已过期 (app_refresh_token has expired)"
                )
            authorization.refresh_count += 1
            return self._rotate(authorization, now)

    def query(self, isv_app_id: str, app_auth_token: str) -> TokenStatus:
        """``token/app/query``: error codes from the official ``AlipayOpenAuthTokenAppQueryErrorResponseModel``
        (protocol notes section 8.6).

        ``valid`` while the token works: the current token of a live grant, or a replaced one (by a
        refresh or a re-authorization) within its grace window, since "原来的值会在一定时间内失效"
        (section 8.2); ``invalid`` after that or once the merchant cancelled. A token stays known
        after it died, so the answer is ``invalid``, not AUTH_TOKEN_NOT_EXISTED, which is for a token
        never issued.
        """
        with self._lock:
            now = self.clock()
            pair = self._by_access_token.get(app_auth_token)
            if pair is None:
                raise BusinessError(
                    "AUTH_TOKEN_NOT_EXISTED", "授权令牌不存在 (app_auth_token does not exist)"
                )
            authorization = pair.authorization
            if authorization.isv_app_id != isv_app_id:
                raise BusinessError(
                    "AUTH_TOKEN_NOT_CONSISTENT",
                    "授权令牌与当前应用不一致 (the token was issued to another app)",
                )
            return TokenStatus(
                auth_app_id=authorization.merchant_app_id,
                user_id=authorization.user_id,
                valid=self._access_token_valid(pair, now),
                # "应用授权令牌失效时间，单位到秒" (same model): this token's own lifetime left.
                expires_in=max(0, int(pair.issued_at + self.expires_in - now)),
                auth_start=authorization.auth_start,
                auth_end=authorization.auth_start + AUTHORIZATION_PERIOD_SECONDS,
                auth_methods=authorization.auth_methods,
            )

    # --- for tests and the local stack ----------------------------------------------------------

    def token_valid(self, app_auth_token: str) -> bool:
        with self._lock:
            pair = self._by_access_token.get(app_auth_token)
            return pair is not None and self._access_token_valid(pair, self.clock())

    def issued_secrets(self) -> set[str]:
        """Every code and token this authority ever handed out: what a leak test searches for."""
        with self._lock:
            return {*self._codes, *self._by_access_token, *self._by_refresh_token}

    def current_tokens(self, isv_app_id: str, merchant_app_id: str) -> tuple[str, str] | None:
        """The live ``(app_auth_token, app_refresh_token)`` of an authorization, if it has one."""
        with self._lock:
            authorization = self._authorizations.get((isv_app_id, merchant_app_id))
            pair = authorization.current if authorization is not None else None
            return (pair.app_auth_token, pair.app_refresh_token) if pair is not None else None

    def set_auth_methods(self, isv_app_id: str, merchant_app_id: str, methods: Sequence[str]) -> None:
        """The APIs the query reports for this authorization (and for its later tokens)."""
        with self._lock:
            authorization = self._authorizations.get((isv_app_id, merchant_app_id))
            if authorization is None:
                raise KeyError(f"{merchant_app_id} is not authorized to {isv_app_id}")
            authorization.auth_methods = tuple(methods)

    def refresh_count(self, merchant_app_id: str) -> int:
        with self._lock:
            return sum(
                a.refresh_count for a in self._authorizations.values() if a.merchant_app_id == merchant_app_id
            )

    # --- rules, called with the lock held -------------------------------------------------------

    def _within_grace(self, pair: TokenPair, now: float) -> bool:
        return pair.superseded_at is None or now - pair.superseded_at <= self.grace_seconds

    def _access_token_valid(self, pair: TokenPair, now: float) -> bool:
        return (
            pair.authorization.revoked_at is None
            and self._within_grace(pair, now)
            and now - pair.issued_at <= self.expires_in
        )

    def _new_code(
        self, isv_app_id: str, merchant_app_ids: Sequence[str] | None, user_id: str | None
    ) -> _NewCode:
        apps = tuple(merchant_app_ids) if merchant_app_ids else (_new_merchant_app_id(),)
        code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(32))
        grant = AuthCode(isv_app_id, user_id or _new_user_id(), apps, self.clock())
        self._codes[code] = grant
        return _NewCode(code, grant)

    def _authorize(self, grant: AuthCode, merchant_app_id: str, now: float) -> IssuedToken:
        key = (grant.isv_app_id, merchant_app_id)
        authorization = self._authorizations.get(key)
        if authorization is None or authorization.revoked_at is not None:
            authorization = Authorization(grant.isv_app_id, merchant_app_id, grant.user_id, auth_start=now)
            self._authorizations[key] = authorization
        # Consenting again replaces the pair the same way a refresh does (with its grace window).
        return self._rotate(authorization, now)

    def _rotate(self, authorization: Authorization, now: float) -> IssuedToken:
        previous = authorization.current
        if previous is not None and previous.superseded_at is None:
            previous.superseded_at = now
        pair = TokenPair(_new_token(now), _new_token(now), authorization, issued_at=now)
        authorization.current = pair
        self._by_access_token[pair.app_auth_token] = pair
        self._by_refresh_token[pair.app_refresh_token] = pair
        return IssuedToken(
            auth_app_id=authorization.merchant_app_id,
            user_id=authorization.user_id,
            app_auth_token=pair.app_auth_token,
            app_refresh_token=pair.app_refresh_token,
            expires_in=self.expires_in,
            re_expires_in=self.re_expires_in,
        )


@dataclass(frozen=True)
class _NewCode:
    code: str
    grant: AuthCode


def _new_token(now: float) -> str:
    """Shaped like Alipay's: issue month, ``BB``, 32 hex digits (e.g. ``202511BBeff9…``)."""
    return dt.datetime.fromtimestamp(now, CHINA_TIME).strftime("%Y%m") + "BB" + secrets.token_hex(16)


def _new_merchant_app_id() -> str:
    return "2021" + "".join(secrets.choice(string.digits) for _ in range(12))


def _new_user_id() -> str:
    return "2088" + "".join(secrets.choice(string.digits) for _ in range(12))
