"""Put many authorized merchant apps into the table quickly (chaos tests, benchmarks).

The token pairs are minted by the emulator's authority directly (a batch consent and its
exchange, without HTTP), so the emulator knows every one of them and rotates them on refresh
exactly as it would after a real callback. Each pair is then stored with ``save_authorization``
(sealed with KMS, like the callback does), from a thread pool: 10,000 take well under a minute.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from alipay_v3 import AppToken
from app_auth.token_store import TokenStore

from .emulator import AuthorizationAuthority

BATCH = 500  # merchant apps per minted consent: keeps each authority call short


def merchant_app_ids(count: int, *, start: int = 0, prefix: str = "2099") -> list[str]:
    """``count`` distinct, well-formed merchant app ids (16 digits)."""
    return [f"{prefix}{start + n:012d}" for n in range(count)]


def seed_tokens(
    authority: AuthorizationAuthority,
    store: TokenStore,
    isv_app_id: str,
    app_ids: Sequence[str],
    *,
    due_at: float = 1.0,
    workers: int = 8,  # botocore keeps 10 connections per host: more threads only churn sockets
) -> list[AppToken]:
    """Authorize every app in ``app_ids`` at the emulator and store its token, due at ``due_at``
    (the default, long past, makes every one due now). Returns the stored tokens, in order."""
    now = time.time()
    tokens: list[AppToken] = []
    for first in range(0, len(app_ids), BATCH):
        code = authority.issue_code(isv_app_id, app_ids[first : first + BATCH])
        for issued in authority.exchange_code(isv_app_id, code):
            tokens.append(
                AppToken(
                    auth_app_id=issued.auth_app_id,
                    user_id=issued.user_id,
                    app_auth_token=issued.app_auth_token,
                    app_refresh_token=issued.app_refresh_token,
                    expires_in=issued.expires_in,
                    re_expires_in=issued.re_expires_in,
                    obtained_at=now,
                )
            )

    def save(token: AppToken) -> None:
        store.save_authorization(token, isv_app_id=isv_app_id, due_at=due_at)

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="seed") as pool:
        for _ in pool.map(save, tokens):
            pass  # re-raises the first failure
    return tokens
