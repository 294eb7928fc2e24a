"""How a grant is recorded, from whichever route it arrives: the one place that decides whether a
token Alipay issued replaces what is stored, which ISV reference it carries, and what is announced.

Each route has its own reason to hold back (``_RouteRule``, asked again after a lost race):

* the callback brought the token the merchant just authorized: it always replaces;
* a notification is retried by Alipay for hours, so it never overwrites a live token, nor anything
  we changed after it was sent (a cancellation, say), nor brings back the pair we hold;
* a replayed (parked) result never rolls back a token obtained later, nor undoes a revocation
  made after it.

A route that brings no reference (a notification, a stateless callback) keeps the stored one; one
that brings another announces the change (``Authorization Reference Changed``).

The due time and grace window come from the store's ``RotationSchedule``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from alipay_v3 import AppToken

from . import events
from .crypto import DataKey
from .token_store import ACTIVE, REVOKED, TokenRecord, TokenStore, token_digest


class Route(StrEnum):
    CALLBACK = "callback"
    NOTIFICATION = "notification"
    REPLAY = "replay"


class Grants:
    def __init__(self, store: TokenStore, publisher: events.EventPublisher) -> None:
        self._store = store
        self._publisher = publisher

    def reserve_seal(self) -> DataKey:
        """A data key for the tokens to come (see ``record``)."""
        return self._store.reserve_seal()

    def record(
        self,
        token: AppToken,
        *,
        via: Route,
        isv_app_id: str,
        isv_ref: str | None = None,
        sent_at: float | None = None,
        key: DataKey | None = None,
    ) -> TokenRecord | None:
        """Store ``token`` unless what is stored supersedes it; None when it was held back.

        ``sent_at`` is when Alipay sent a notification (None: unknown, which holds it back);
        ``key``, a data key reserved before Alipay was asked (``TokenStore.reserve_seal``)."""
        rule = _RouteRule(token, via, isv_ref, sent_at)
        record = self._store.save_authorization(token, isv_app_id=isv_app_id, admission=rule, key=key)
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
        previous_ref = rule.decided_on.isv_ref if rule.decided_on else None
        if previous_ref is not None and record.isv_ref != previous_ref:
            self._publisher.publish(
                events.REFERENCE_CHANGED,
                auth_app_id=token.auth_app_id,
                isv_ref=record.isv_ref,
                previous_isv_ref=previous_ref,
                via=via.value,
            )
        return record


@dataclass
class _RouteRule:
    """The ``Admission`` of one route, for one token; remembers the record it last decided on."""

    token: AppToken
    via: Route
    ref: str | None
    sent_at: float | None
    decided_on: TokenRecord | None = None

    def supersedes(self, existing: TokenRecord) -> bool:
        if self.via is Route.CALLBACK:
            return True
        if existing.token_digest == token_digest(self.token.app_auth_token):
            return False  # the pair we hold (perhaps revoked since): nothing new to record or announce
        if self.via is Route.NOTIFICATION:
            return (
                existing.status != ACTIVE and self.sent_at is not None and self.sent_at > existing.updated_at
            )
        return not (
            existing.obtained_at >= self.token.obtained_at
            or (existing.status == REVOKED and existing.updated_at >= self.token.obtained_at)
        )

    def isv_ref(self, existing: TokenRecord | None) -> str | None:
        """The route's reference, or the stored one when the route brings none (a notification never
        knows the ISV's customer): a reference is never dropped."""
        self.decided_on = existing
        if self.ref is not None and self.via is not Route.NOTIFICATION:
            return self.ref
        return existing.isv_ref if existing else None
