"""``FakeTokenApi``: Alipay's token API in memory, scripted per test, no network and no signing.

It has ``TokenApi``'s calls and answers them with the protocol package's own types. Unless a test
scripts a reply, it behaves like a plain Alipay: an exchange grants a fresh pair for each app in
``merchant_apps``; a refresh of a refresh token it issued grants a fresh pair for that token's app;
any other refresh token is answered with a verified ``REFRESH_TOKEN_NOT_VALID``; a query says
``valid`` for the last token issued for an app, ``invalid`` for one replaced since, and
``AUTH_TOKEN_NOT_EXISTED`` for a token it never issued (sandbox/emulator/authority.py is the model).

A scripted reply (``answer_exchange`` / ``answer_refresh`` / ``answer_query``, used in order, once
each) is what the call returns, an ``AlipayError`` to raise, or a callable given the code / token
that returns it or raises (it runs outside the fake's lock, so it may call the fake again).
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from alipay_v3 import AlipayApiError, AlipayError, AppAuthorization, AppToken, TokenGrant, TransportError
from alipay_v3.token_api import AuthorizationStatus

LIFE_SECONDS = 32_140_800  # re_expires_in seen in real answers
Reply = TokenGrant | AppAuthorization | AlipayError | Callable[[str], Any]


def api_error(code: str, *, verified: bool = True, http_status: int = 400) -> AlipayApiError:
    """An error envelope from Alipay; ``verified`` says whether it came signed."""
    return AlipayApiError(code, f"business error {code}", http_status=http_status, verified=verified)


def transport_error(*, request_sent: bool = True, timed_out: bool = False) -> TransportError:
    return TransportError("no answer from Alipay", request_sent=request_sent, timed_out=timed_out)


class FakeTokenApi:
    def __init__(self, clock: Callable[[], float], merchant_apps: Sequence[str] = ("2088000000000001",)):
        self.clock = clock
        self.merchant_apps = tuple(merchant_apps)
        self.exchanges: list[str] = []  # the codes sent, in order
        self.refreshes: list[str] = []  # the refresh tokens sent, in order
        self.queries: list[str] = []  # the app_auth_tokens asked about, in order
        self.issued: list[AppToken] = []  # every pair granted (or issued for seeding), in order
        self._replies: dict[str, deque[Reply]] = {"exchange": deque(), "refresh": deque(), "query": deque()}
        self._app_of_refresh_token: dict[str, str] = {}
        self._app_of_token: dict[str, str] = {}
        self._current_token: dict[str, str] = {}  # app -> the last token issued for it
        self.cancelled: set[str] = set()  # tokens whose grant the merchant cancelled: invalid
        self._serial = itertools.count(1)
        self._lock = threading.Lock()

    # -- scripting ---------------------------------------------------------------------------------

    def answer_exchange(self, *replies: Reply) -> None:
        self._replies["exchange"].extend(replies)

    def answer_refresh(self, *replies: Reply) -> None:
        self._replies["refresh"].extend(replies)

    def answer_query(self, *replies: Reply) -> None:
        self._replies["query"].extend(replies)

    def authorization(self, auth_app_id: str, *, valid: bool = True) -> AppAuthorization:
        """A query answer about a token of ``auth_app_id``."""
        status = AuthorizationStatus.VALID if valid else AuthorizationStatus.INVALID
        now = int(self.clock())
        return AppAuthorization(
            auth_app_id, "2088100000000001", status, ("alipay.trade.pay",), now, now, None, True
        )

    def issue(self, auth_app_id: str, *, user_id: str = "2088100000000001") -> AppToken:
        """A new pair for ``auth_app_id``, as Alipay would grant it now (also for seeding the store)."""
        with self._lock:
            n = next(self._serial)
            token = AppToken(
                auth_app_id=auth_app_id,
                user_id=user_id,
                app_auth_token=f"202511BB{n:06d}{auth_app_id}authtoken",
                app_refresh_token=f"202511BB{n:06d}{auth_app_id}refreshtk",
                expires_in=31_536_000,
                re_expires_in=LIFE_SECONDS,
                obtained_at=self.clock(),
            )
            self._app_of_refresh_token[token.app_refresh_token] = auth_app_id
            self._app_of_token[token.app_auth_token] = auth_app_id
            self._current_token[auth_app_id] = token.app_auth_token
            self.issued.append(token)
            return token

    def grant(self, *auth_app_ids: str) -> TokenGrant:
        return TokenGrant(tuple(self.issue(app) for app in auth_app_ids), trace_id="fake-trace")

    # -- the TokenApi surface ----------------------------------------------------------------------

    def exchange_code(self, app_auth_code: str, **kwargs: Any) -> TokenGrant:
        reply = self._take("exchange", app_auth_code)
        if reply is None:
            return self.grant(*self.merchant_apps)
        return _play(reply, app_auth_code)

    def refresh(self, app_refresh_token: str, **kwargs: Any) -> TokenGrant:
        reply = self._take("refresh", app_refresh_token)
        if reply is not None:
            return _play(reply, app_refresh_token)
        with self._lock:
            app = self._app_of_refresh_token.get(app_refresh_token)
        if app is None:
            raise api_error("REFRESH_TOKEN_NOT_VALID")
        return self.grant(app)

    def query(self, app_auth_token: str, **kwargs: Any) -> AppAuthorization:
        reply = self._take("query", app_auth_token)
        if reply is not None:
            answer: AppAuthorization = _play(reply, app_auth_token)
            return answer
        with self._lock:
            app = self._app_of_token.get(app_auth_token)
            current = (
                app is not None
                and self._current_token[app] == app_auth_token
                and app_auth_token not in self.cancelled
            )
        if app is None:
            raise api_error("AUTH_TOKEN_NOT_EXISTED")
        return self.authorization(app, valid=current)

    def _take(self, kind: str, argument: str) -> Reply | None:
        with self._lock:
            {"exchange": self.exchanges, "refresh": self.refreshes, "query": self.queries}[kind].append(
                argument
            )
            queue = self._replies[kind]
            return queue.popleft() if queue else None


def _play(reply: Reply, argument: str) -> Any:
    if isinstance(reply, AlipayError):
        raise reply
    if isinstance(reply, TokenGrant | AppAuthorization):
        return reply
    return reply(argument)
