"""The read path: the current app_auth_token of a merchant app, for the ISV's other services.

Never the refresh token: readers call Alipay on the merchant's behalf; only the refresher rotates.
Lambdas in the same account call ``get_app_auth_token``; others use the IAM-protected route.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import AppAuthError
from .token_store import SERVED, TokenStore


class TokenUnusable(AppAuthError):
    """The merchant app is known but its token must not be used (revoked, needs re-authorization)."""

    code = "token-unusable"


@dataclass(frozen=True)
class CurrentToken:
    auth_app_id: str
    app_auth_token: str
    user_id: str
    isv_ref: str | None
    version: int
    obtained_at: float
    # The pair this one replaced, still served while Alipay keeps it valid: a service that read it
    # a moment ago can tell it is not stale yet.
    previous_app_auth_token: str | None = None
    previous_valid_until: float | None = None

    def __repr__(self) -> str:
        return f"CurrentToken(auth_app_id={self.auth_app_id!r}, version={self.version}, app_auth_token=<redacted>)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "auth_app_id": self.auth_app_id,
            "app_auth_token": self.app_auth_token,
            "user_id": self.user_id,
            "isv_ref": self.isv_ref,
            "version": self.version,
            "obtained_at": int(self.obtained_at),
            "previous_app_auth_token": self.previous_app_auth_token,
            "previous_valid_until": None
            if self.previous_valid_until is None
            else int(self.previous_valid_until),
        }


def read_current_token(store: TokenStore, auth_app_id: str) -> CurrentToken:
    record = store.get_token(auth_app_id)
    if record.status not in SERVED:
        raise TokenUnusable(f"merchant app {auth_app_id} is {record.status}; it must authorize again")
    pair = store.open_current(record)
    previous = store.open_previous(record)
    return CurrentToken(
        record.auth_app_id,
        pair.app_auth_token,
        record.user_id,
        record.isv_ref,
        record.version,
        record.obtained_at,
        previous.app_auth_token if previous else None,
        record.previous_valid_until if previous else None,
    )


def get_app_auth_token(auth_app_id: str) -> str:
    """For Lambdas of the same account with this layer: the token to send as alipay-app-auth-token."""
    from .container import get_container  # built on first use, from the function's environment

    return read_current_token(get_container().store, auth_app_id).app_auth_token
