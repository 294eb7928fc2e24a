"""How a grant is recorded, from whichever route it arrives: the one place that decides whether a
token Alipay issued replaces what is stored, which ISV reference it carries, and what is announced.

Each route has its own reason to hold back (``_RouteRule``, asked again after a lost race):

* the callback brought the token the merchant just authorized: it always replaces;
* a notification replaces what is stored when Alipay's facts say its grant is newer: its
  ``auth_time`` against the time of what we hold (the pair's, or the change that ended it), and,
  inside the margin two clocks may disagree by or without a time, Alipay's query (does this token
  work?). Alipay retries a notification for hours: a late one never brings back the pair we hold,
  nor the one we replaced, nor undoes a cancellation made after its grant;
* a replayed (parked) result, or an imported one, never rolls back a token obtained later, nor
  undoes a revocation made after it.

A route that brings no reference (a notification, a stateless callback) keeps the stored one; one
that brings another announces the change (``Authorization Reference Changed``).

The due time and grace window come from the store's ``RotationSchedule``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from alipay_v3 import AppAuthorization, AppToken

from . import events
from .crypto import DataKey
from .errors import AlipayUnavailable, AppAuthError
from .token_store import REVOKED, SERVED, TokenRecord, TokenStore, token_digest
from .verification import alipay_verdict

logger = logging.getLogger(__name__)

# How far Alipay's clock (auth_time) and ours (when we stored a pair) may disagree before the times
# alone decide which grant is newer; inside it, Alipay's query does. No source pins the agreement.
CLOCK_MARGIN_SECONDS = 300.0

Query = Callable[[str], AppAuthorization]  # TokenApi.query: Alipay's word on one app_auth_token


class Route(StrEnum):
    CALLBACK = "callback"
    NOTIFICATION = "notification"
    REPLAY = "replay"
    IMPORT = "import"  # an authorization the ISV held before this stack, checked with Alipay


class Grants:
    def __init__(
        self, store: TokenStore, publisher: events.EventPublisher, query: Query | None = None
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._query = query  # without it, a notification whose facts are unclear is held back

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
        granted_at: float | None = None,
        key: DataKey | None = None,
        out_biz_no: str | None = None,
        due_at: float | None = None,
    ) -> TokenRecord | None:
        """Store ``token`` unless what is stored supersedes it; None when it was held back.

        ``granted_at`` is when Alipay says the merchant granted it (a notification's ``auth_time``;
        None: unknown, so Alipay's query decides); ``key``, a data key reserved before Alipay was
        asked (``TokenStore.reserve_seal``). ``AlipayUnavailable`` when the query was needed and
        failed: nothing is decided on a guess."""
        rule = _RouteRule(token, via, isv_ref, granted_at, self._query)
        record = self._store.save_authorization(
            token, isv_app_id=isv_app_id, admission=rule, key=key, out_biz_no=out_biz_no, due_at=due_at
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
            reauthorized=rule.decided_on is not None,
            out_biz_no=record.out_biz_no,
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

    def check_scope(self, token: AppToken) -> AppAuthorization | None:
        """Ask Alipay what a token just recorded may do, and keep the answer with it (the APIs the
        merchant granted, the period, full delegation). A failure is logged and changes nothing:
        the grant is recorded already, and the next verification asks again."""
        if self._query is None:
            return None
        try:
            verdict = alipay_verdict(self._query, token.app_auth_token, token.auth_app_id)
            if verdict.works is None or verdict.answer is None:
                logger.warning(
                    "the scope of merchant app %s could not be read: %s", token.auth_app_id, verdict.code
                )
                return None
            self._store.record_check(token.auth_app_id, token.app_auth_token, verdict.answer)
        except AppAuthError as exc:
            logger.warning("the scope of merchant app %s could not be read: %s", token.auth_app_id, exc.code)
            return None
        return verdict.answer


@dataclass
class _RouteRule:
    """The ``Admission`` of one route, for one token; remembers the record it last decided on."""

    token: AppToken
    via: Route
    ref: str | None
    granted_at: float | None
    query: Query | None
    decided_on: TokenRecord | None = None
    _works: bool | None = None  # Alipay's query answer, asked at most once

    def supersedes(self, existing: TokenRecord) -> bool:
        if self.via is Route.CALLBACK:
            return True
        digest = token_digest(self.token.app_auth_token)
        if digest in (existing.token_digest, existing.previous_token_digest):
            return False  # the pair we hold (perhaps revoked since), or the one it replaced
        if self.via is Route.NOTIFICATION:
            # What we hold dates from its pair; what ended it (a cancellation, a dead grant), from then
            since = existing.obtained_at if existing.status in SERVED else existing.updated_at
            return self._granted_after(since)
        return not (
            existing.obtained_at >= self.token.obtained_at
            or (existing.status == REVOKED and existing.updated_at >= self.token.obtained_at)
        )

    def _granted_after(self, since: float) -> bool:
        if self.granted_at is not None:
            if self.granted_at > since + CLOCK_MARGIN_SECONDS:
                return True
            if self.granted_at < since - CLOCK_MARGIN_SECONDS:
                return False
        return self._alipay_says_it_works()

    def _alipay_says_it_works(self) -> bool:
        """Alipay's query decides: the token a notification brings works only if it is the newest
        grant (a re-authorization replaces the token, docs/alipay-v3-protocol.md section 8.2)."""
        if self.query is None:
            return False
        if self._works is None:
            verdict = alipay_verdict(self.query, self.token.app_auth_token, self.token.auth_app_id)
            if verdict.works is None:
                raise AlipayUnavailable(f"Alipay could not say whether the token works ({verdict.code})")
            self._works = verdict.works
        return self._works

    def isv_ref(self, existing: TokenRecord | None) -> str | None:
        """The route's reference, or the stored one when the route brings none (a notification never
        knows the ISV's customer): a reference is never dropped."""
        self.decided_on = existing
        if self.ref is not None and self.via is not Route.NOTIFICATION:
            return self.ref
        return existing.isv_ref if existing else None
