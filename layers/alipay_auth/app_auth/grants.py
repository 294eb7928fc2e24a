"""How a grant is recorded, from whichever route it arrives: the one place that decides whether a
token Alipay issued replaces what is stored, which ISV reference it carries, and what is announced.

Each route has its own reason to hold back (``_RouteRule``, asked again after a lost race):

* the callback brought the token the merchant just authorized: it always replaces;
* a notification is retried by Alipay for hours, so it never overwrites a live token, nor anything
  we changed after it was sent (a cancellation, say); it keeps the stored reference;
* a replayed (parked) result never rolls back a token obtained later, nor undoes a revocation
  made after it.

The due time and grace window come from the store's ``RotationSchedule``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from alipay_v3 import AppToken

from . import events
from .token_store import ACTIVE, REVOKED, TokenRecord, TokenStore, token_digest


class Route(StrEnum):
    CALLBACK = "callback"
    NOTIFICATION = "notification"
    REPLAY = "replay"


class Grants:
    def __init__(self, store: TokenStore, publisher: events.EventPublisher) -> None:
        self._store = store
        self._publisher = publisher

    def record(
        self,
        token: AppToken,
        *,
        via: Route,
        isv_app_id: str,
        isv_ref: str | None = None,
        sent_at: float | None = None,
    ) -> TokenRecord | None:
        """Store ``token`` unless what is stored supersedes it; None when it was held back.

        ``sent_at`` is when Alipay sent a notification (None: unknown, which holds it back)."""
        record = self._store.save_authorization(
            token, isv_app_id=isv_app_id, admission=_RouteRule(token, via, isv_ref, sent_at)
        )
        if record is None:
            return None
        self._publisher.publish(
            events.AUTHORIZED,
            auth_app_id=token.auth_app_id,
            isv_app_id=isv_app_id,
            user_id=token.user_id,
            isv_ref=record.isv_ref,
            via=via.value,
        )
        return record


@dataclass(frozen=True)
class _RouteRule:
    """The ``Admission`` of one route, for one token."""

    token: AppToken
    via: Route
    ref: str | None
    sent_at: float | None

    def supersedes(self, existing: TokenRecord) -> bool:
        if self.via is Route.CALLBACK:
            return True
        if self.via is Route.NOTIFICATION:
            return (
                existing.status != ACTIVE and self.sent_at is not None and self.sent_at > existing.updated_at
            )
        return not (
            existing.token_digest == token_digest(self.token.app_auth_token)
            or existing.obtained_at >= self.token.obtained_at
            or (existing.status == REVOKED and existing.updated_at >= self.token.obtained_at)
        )

    def isv_ref(self, existing: TokenRecord | None) -> str | None:
        if self.via is Route.NOTIFICATION:
            return existing.isv_ref if existing else None
        return self.ref
