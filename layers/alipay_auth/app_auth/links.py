"""Authorization links and their ``state``: signed, expiring, good for one authorization.

The state travels through Alipay and comes back on the callback unchanged. Its HMAC lets the
callback refuse forged or expired states without touching the table; the state item in the
table makes it single-use (bound to the first code that presents it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from .errors import InvalidRequest, StateRejected

CONSENT_PAGES = {
    "production": "https://openauth.alipay.com/oauth2/appToAppAuth.htm",
    "sandbox": "https://openauth-sandbox.dl.alipaydev.com/oauth2/appToAppAuth.htm",
}
# The newer "指定应用授权" form: a merchant-platform page that takes a JSON bizData.
B_ALIPAY_TASK_PAGE = "https://b.alipay.com/page/message/tasksDetail"
APP_TYPES = ["TINYAPP", "WEBAPP", "PUBLICAPP", "MOBILEAPP", "BASEAPP"]

_STATE_VERSION = "v1"
_ISV_REF = re.compile(r"[A-Za-z0-9_.:@\-]{1,128}")


def check_isv_ref(isv_ref: str | None) -> str | None:
    if isv_ref is None or isv_ref == "":
        return None
    if not _ISV_REF.fullmatch(isv_ref):
        raise InvalidRequest(
            "ref must be 1-128 characters of letters, digits and _ . : @ -", code="invalid-ref"
        )
    return isv_ref


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class IssuedState:
    state_id: str
    value: str  # what goes into the URL
    expires_at: int


class StateSigner:
    """``v1.<id>.<expiry>.<mac>``: 96 random bits of id, HMAC-SHA256 truncated to 128 bits."""

    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if len(key) < 32:
            raise ValueError("the state signing key must be at least 32 bytes")
        self._key = key
        self._clock = clock

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest()[:16])

    def issue(self, ttl_seconds: float) -> IssuedState:
        state_id = _b64(secrets.token_bytes(12))
        expires_at = int(self._clock() + ttl_seconds)
        payload = f"{_STATE_VERSION}.{state_id}.{expires_at}"
        return IssuedState(state_id, f"{payload}.{self._mac(payload)}", expires_at)

    def verify(self, value: str) -> str:
        """Return the state id, or raise ``StateRejected`` saying what is wrong with it."""
        parts = value.split(".")
        # isascii(): a state is ASCII, and compare_digest() raises on non-ASCII str ("²".isdigit() too)
        if len(parts) != 4 or parts[0] != _STATE_VERSION or not value.isascii() or not parts[2].isdigit():
            raise StateRejected("the state parameter is not one this service issued", code="state-malformed")
        payload = ".".join(parts[:3])
        if not hmac.compare_digest(self._mac(payload), parts[3]):
            raise StateRejected("the state parameter's signature is wrong", code="state-forged")
        if int(parts[2]) < self._clock():
            raise StateRejected("the authorization link has expired", code="state-expired")
        return parts[1]


@dataclass(frozen=True)
class AuthorizationLink:
    url: str  # Alipay's consent page, classic form
    b_alipay_url: str  # the newer merchant-platform form (PC); the mobile form carries the same bizData
    state: str
    expires_at: int
    isv_ref: str | None


def consent_urls(*, isv_app_id: str, redirect_uri: str, state: str, consent_page: str) -> tuple[str, str]:
    classic = (
        f"{consent_page}?{urlencode({'app_id': isv_app_id, 'redirect_uri': redirect_uri, 'state': state})}"
    )
    biz_data = {
        "platformCode": "O",
        "taskType": "INTERFACE_AUTH",
        "agentOpParam": {
            "redirectUri": redirect_uri,
            "appTypes": APP_TYPES,
            "isvAppId": isv_app_id,
            "state": state,
        },
    }
    b_alipay = f"{B_ALIPAY_TASK_PAGE}?bizData={quote(json.dumps(biz_data, separators=(',', ':')), safe='')}"
    return classic, b_alipay
