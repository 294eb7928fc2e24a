"""Stored tokens checked against Alipay's word: ``token/app/query`` says whether a token works, and
what the merchant granted (``auth_methods``, the authorization period).

A token can die without news reaching us: a cancellation message lost, a re-authorization by a
route that never came. Verification finds them: a token Alipay calls ``invalid`` (or does not
know) is marked ``needs_reauth`` and announced; one that works gets its scope refreshed. Nothing is
decided on a guess: a query that fails leaves the token as it was. ``alipay-auth tokens verify``
runs it on demand; the refresher, on a slice of the table each run (``RefreshService``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum

from alipay_v3 import AlipayApiError, AlipayError, AppAuthorization, TokenApi

from . import events
from .errors import AppAuthError, ConfigurationRefused, NotFound
from .token_store import SERVED, TokenStore, token_digest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """Alipay's word on one token: it works (True), it does not (False: invalid, or unknown to
    Alipay, signed), or Alipay could not say (None, ``code`` says why)."""

    works: bool | None
    answer: AppAuthorization | None = None
    code: str = ""


def alipay_verdict(query: Callable[[str], AppAuthorization], token: str, auth_app_id: str) -> Verdict:
    """The one reading of token/app/query's answers, for every decision that waits on it;
    ``ConfigurationRefused`` when Alipay refuses this service itself (every answer would be alike)."""
    try:
        answer = query(token)
    except AlipayApiError as exc:
        if exc.configuration_error:
            raise ConfigurationRefused(exc.code) from exc
        return Verdict(False if exc.token_gone and exc.verified else None, code=exc.code)
    except AlipayError as exc:
        return Verdict(None, code=exc.code)
    if answer.auth_app_id != auth_app_id:  # not an answer about this merchant's token
        return Verdict(None, answer, "query-answered-for-another-app")
    return Verdict(answer.valid, answer, "" if answer.valid else "token-invalid")


class Verified(StrEnum):
    VALID = "valid"  # Alipay says it works; its scope is stored
    INVALID = "invalid"  # Alipay says it does not (or knows no such token): now needs_reauth
    REPLACED = "replaced"  # another token was stored while Alipay was asked: nothing to decide
    FAILED = "failed"  # Alipay (or the table, or KMS) could not say: left as it was
    NOT_SERVED = "not_served"  # revoked or needing re-authorization already: not asked


@dataclass
class VerifyReport:
    outcomes: dict[str, list[str]] = field(default_factory=dict)  # outcome -> merchant apps

    def add(self, outcome: Verified, auth_app_id: str) -> None:
        self.outcomes.setdefault(outcome.value, []).append(auth_app_id)

    def count(self, outcome: Verified) -> int:
        return len(self.outcomes.get(outcome.value, []))


class Verifier:
    def __init__(
        self, store: TokenStore, publisher: events.EventSink, token_api: Callable[[], TokenApi]
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._token_api = token_api

    def verify(self, auth_app_id: str, *, sink: events.EventSink | None = None) -> Verified:
        """Ask Alipay about the stored token of one merchant app; ``ConfigurationRefused`` when
        Alipay refuses this service itself (every other answer would be the same)."""
        try:
            record = self._store.get_token(auth_app_id)
            if record.status not in SERVED:
                return Verified.NOT_SERVED
            token = self._store.open_current(record).app_auth_token
        except NotFound:
            return Verified.NOT_SERVED
        except AppAuthError as exc:
            logger.warning("merchant app %s could not be read for verification: %s", auth_app_id, exc.code)
            return Verified.FAILED
        verdict = alipay_verdict(self._token_api().query, token, auth_app_id)
        if verdict.works is None:
            logger.warning("verification of %s failed: %s", auth_app_id, verdict.code)
            return Verified.FAILED
        if verdict.answer is not None:
            try:
                if not self._store.record_check(auth_app_id, token, verdict.answer):
                    return Verified.REPLACED
            except AppAuthError as exc:
                logger.warning("verification of %s could not be stored: %s", auth_app_id, exc.code)
                return Verified.FAILED
        return Verified.VALID if verdict.works else self._dead(auth_app_id, token, verdict.code, sink)

    def verify_all(
        self,
        auth_app_ids: Iterable[str],
        *,
        workers: int = 8,
        progress: Callable[[VerifyReport], None] | None = None,
    ) -> VerifyReport:
        """Many at once, each call paced by the token API's session (the refresher's pace)."""
        report = VerifyReport()
        ids = list(auth_app_ids)
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="verify") as pool:
            for auth_app_id, outcome in zip(ids, pool.map(self.verify, ids), strict=True):
                report.add(outcome, auth_app_id)
                if progress is not None:
                    progress(report)
        return report

    def _dead(self, auth_app_id: str, token: str, reason: str, sink: events.EventSink | None) -> Verified:
        record = self._store.mark_needs_reauth_if_current(auth_app_id, token_digest(token), reason)
        if record is None:
            return Verified.REPLACED
        logger.warning(
            "merchant app %s needs re-authorization: Alipay says its token does not work", auth_app_id
        )
        (sink or self._publisher).publish(
            events.NEEDS_REAUTHORIZATION, auth_app_id=auth_app_id, isv_ref=record.isv_ref, error_code=reason
        )
        return Verified.INVALID
