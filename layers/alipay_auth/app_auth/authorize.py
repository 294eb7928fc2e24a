"""The merchant's authorization: links out, the callback back in.

The callback is the one place where a secret arrives that Alipay will not give twice: the
``app_auth_code`` is single-use. So the order below is the design:

1. validate everything (ours? well-formed? state genuine, unexpired, unused?) - no call to Alipay
   for input that fails;
2. claim the code's hash with a conditional write - a reload or a duplicate finds the claim and is
   answered from it, never exchanged twice;
3. exchange; 4. store the tokens (encrypted); 5. mark the claim done; only then say "success".
If step 4 fails after Alipay answered, the sealed result is parked on the replay queue.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from alipay_v3 import AlipayApiError, AlipayError, TokenApi
from alipay_v3.errors import CODE_SPENT_CODES

from .errors import AppAuthError, ConcurrentUpdate, InvalidRequest, NotFound, StateRejected, StorageError
from .flow_store import ClaimStatus, FlowStore, code_hash
from .grants import Grants, Route
from .links import CONSENT_PAGES, AuthorizationLink, StateSigner, check_isv_ref, consent_urls
from .outcomes import CallbackOutcome
from .replay import ReplayQueue
from .settings import Settings

logger = logging.getLogger(__name__)

_CODE = re.compile(r"[A-Za-z0-9]{16,64}")
SOURCE = "alipay_app_auth"
# How long a second request for the same code waits for the first one to finish before it is
# told to reload: long enough for a normal exchange, short enough for a browser.
_DUPLICATE_WAIT_SECONDS = 3.0
_STORE_SECONDS = 3.0  # kept back from the deadline for storing (or parking) and answering
_SCOPE_SECONDS = 10.0  # what a scope query after the grant may take at most (its timeouts), and the answer


@dataclass(frozen=True)
class CallbackResult:
    outcome: CallbackOutcome
    auth_app_ids: tuple[str, ...] = ()
    isv_ref: str | None = None
    repeated: bool = False  # answered from an earlier request's record
    fresh_link: str | None = None


class AuthorizationService:
    def __init__(
        self,
        *,
        settings: Settings,
        flow: FlowStore,
        grants: Grants,
        signer: Callable[[], StateSigner],
        token_api: Callable[[], TokenApi],
        isv_app_id: Callable[[], str],
        replay: ReplayQueue,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.flow = flow
        self.grants = grants
        self._signer = signer
        self._token_api = token_api
        self._isv_app_id = isv_app_id
        self.replay = replay
        self._clock = clock
        self._sleep = sleep

    # -- links -------------------------------------------------------------------------------------

    def create_link(
        self, isv_ref: str | None = None, *, callback_url: str | None = None
    ) -> AuthorizationLink:
        isv_ref = check_isv_ref(isv_ref)
        redirect_uri = callback_url or self.settings.callback_url
        if not redirect_uri:
            raise InvalidRequest("no callback URL is configured (CALLBACK_URL)", code="no-callback-url")
        issued = self._signer().issue(self.settings.state_ttl_seconds)
        self.flow.put_state(issued.state_id, isv_ref=isv_ref, expires_at=issued.expires_at)
        consent_page = self.settings.consent_page_url or CONSENT_PAGES[self.settings.alipay_environment]
        classic, b_alipay = consent_urls(
            isv_app_id=self._isv_app_id(),
            redirect_uri=redirect_uri,
            state=issued.value,
            consent_page=consent_page,
        )
        return AuthorizationLink(classic, b_alipay, issued.value, issued.expires_at, isv_ref)

    def consent_link_for_state(self, state: str, *, callback_url: str | None = None) -> str:
        """Where ``/authorize?state=…`` sends the merchant: Alipay's consent page for this state."""
        if not state:
            raise StateRejected("the link carries no state", code="state-missing")
        if not self.flow.state_usable(self._signer().verify(state)):
            raise StateRejected("this authorization link was already used or has expired", code="state-used")
        redirect_uri = callback_url or self.settings.callback_url
        if not redirect_uri:
            raise InvalidRequest("no callback URL is configured (CALLBACK_URL)", code="no-callback-url")
        consent_page = self.settings.consent_page_url or CONSENT_PAGES[self.settings.alipay_environment]
        classic, _ = consent_urls(
            isv_app_id=self._isv_app_id(), redirect_uri=redirect_uri, state=state, consent_page=consent_page
        )
        return classic

    def _fresh_link(self, isv_ref: str | None, callback_url: str | None) -> str | None:
        """A new link for a merchant whose attempt failed, when one can be made."""
        try:
            return self.create_link(isv_ref, callback_url=callback_url).url
        except AppAuthError:
            return None

    # -- the callback ------------------------------------------------------------------------------

    def handle_callback(
        self,
        params: Mapping[str, str],
        *,
        callback_url: str | None = None,
        remaining_seconds: Callable[[], float] | None = None,
    ) -> CallbackResult:
        """``callback_url``: the redirect URI for the fresh link of a failure page, when the settings
        name none (a default deploy: the API's own /callback). ``remaining_seconds``: the
        invocation's time left; the claim and Alipay's read timeout end inside it."""
        code, state_id = self._validate(params)
        digest = code_hash(code)
        # Before anything is spent: with the data key in hand, storing or parking the grant needs no
        # KMS after Alipay answered, and a KMS failure now leaves the link and the code unused.
        key = self.grants.reserve_seal()
        isv_ref = None
        if state_id is not None:
            try:
                isv_ref = self.flow.consume_state(state_id, digest)
            except NotFound as exc:
                raise StateRejected(
                    "this authorization link was already used or has expired", code="state-used"
                ) from exc

        deadline = self._clock() + remaining_seconds() if remaining_seconds else None
        existing = self.flow.claim_code(
            digest,
            isv_ref=isv_ref,
            ttl_seconds=self.settings.code_claim_ttl_seconds,
            exchanging_until=deadline,
        )
        if existing is not None:
            return self._answer_duplicate(digest, existing.isv_ref or isv_ref, callback_url)

        try:
            grant = self._token_api().exchange_code(code, timeout=self._timeout_before(deadline))
        except AlipayApiError as exc:
            self.flow.finish_claim(digest, ClaimStatus.FAILED, error_code=exc.code)
            logger.warning("code exchange refused by Alipay: %s (trace id %s)", exc.code, exc.trace_id)
            if exc.code_spent:
                return CallbackResult(
                    CallbackOutcome.CODE_SPENT,
                    isv_ref=isv_ref,
                    fresh_link=self._fresh_link(isv_ref, callback_url),
                )
            return CallbackResult(
                CallbackOutcome.UNCONFIRMED,
                isv_ref=isv_ref,
                fresh_link=self._fresh_link(isv_ref, callback_url),
            )
        except AlipayError as exc:
            # Sent but unanswered, or answered with something we cannot trust: the code may be
            # spent. Record that honestly; the merchant authorizes again.
            self.flow.finish_claim(digest, ClaimStatus.FAILED, error_code=exc.code)
            logger.warning("code exchange failed: %s", exc.code)
            return CallbackResult(
                CallbackOutcome.UNCONFIRMED,
                isv_ref=isv_ref,
                fresh_link=self._fresh_link(isv_ref, callback_url),
            )

        ids = tuple(t.auth_app_id for t in grant.tokens)
        try:
            for token in grant.tokens:
                self.grants.record(
                    token, via=Route.CALLBACK, isv_app_id=self._isv_app_id(), isv_ref=isv_ref, key=key
                )
            self.flow.finish_claim(digest, ClaimStatus.DONE, auth_app_ids=ids)
        except (StorageError, ConcurrentUpdate) as exc:
            parked = self.replay.park(grant.tokens, isv_ref=isv_ref, digest=digest, key=key)
            logger.error("storing an authorization failed (%s); parked for replay: %s", exc.code, parked)
            if not parked:
                raise
            try:
                self.flow.finish_claim(digest, ClaimStatus.PARKED, auth_app_ids=ids)
            except AppAuthError:
                logger.warning("the claim could not be marked parked; the queue holds the result")
            return CallbackResult(CallbackOutcome.PARKED, ids, isv_ref)
        # Stored and claimed: what the merchant granted is asked now, while time is left; a query
        # that fails or does not fit changes nothing (the next verification asks again).
        if deadline is None or deadline - self._clock() > _SCOPE_SECONDS:
            for token in grant.tokens:
                self.grants.check_scope(token)
        return CallbackResult(CallbackOutcome.AUTHORIZED, ids, isv_ref)

    def _timeout_before(self, deadline: float | None) -> tuple[float, float] | None:
        """The client's (connect, read) timeouts, cut so that the exchange ends in time to store its
        result before ``deadline``."""
        if deadline is None:
            return None
        connect, read = self._token_api().client.timeout
        left = deadline - self._clock() - _STORE_SECONDS
        return connect, max(1.0, min(read, left - connect))

    def _validate(self, params: Mapping[str, str]) -> tuple[str, str | None]:
        app_id = params.get("app_id")
        if not app_id:
            raise InvalidRequest(
                "the callback carries no app_id; open the authorization link again", code="missing-app-id"
            )
        if app_id != self._isv_app_id():
            raise InvalidRequest("this authorization was made for another application", code="wrong-app-id")
        source = params.get("source")
        if source is not None and source != SOURCE:
            raise InvalidRequest("the callback does not come from an app authorization", code="wrong-source")
        code = params.get("app_auth_code")
        if not code:
            raise InvalidRequest("the callback carries no app_auth_code", code="missing-code")
        if not _CODE.fullmatch(code):
            raise InvalidRequest("the app_auth_code is malformed", code="malformed-code")
        state = params.get("state")
        if state:
            return code, self._signer().verify(state)
        if not self.settings.allow_stateless_callbacks:
            raise StateRejected(
                "this link carries no state; use an authorization link issued by this service",
                code="state-missing",
            )
        return code, None

    def _answer_duplicate(self, digest: str, isv_ref: str | None, callback_url: str | None) -> CallbackResult:
        """A reload, a double click or a concurrent duplicate: answer from the first request's record."""
        deadline = self._clock() + _DUPLICATE_WAIT_SECONDS
        while True:
            claim = self.flow.get_claim(digest)
            if claim is None or claim.status != ClaimStatus.EXCHANGING or self._clock() >= deadline:
                break
            self._sleep(0.2)
        if claim is not None and claim.abandoned(self._clock()):
            # The request that claimed the code was killed mid-exchange: Alipay may have spent it.
            return CallbackResult(
                CallbackOutcome.UNCONFIRMED,
                isv_ref=claim.isv_ref,
                repeated=True,
                fresh_link=self._fresh_link(claim.isv_ref, callback_url),
            )
        if claim is None or claim.status == ClaimStatus.EXCHANGING:
            return CallbackResult(CallbackOutcome.IN_PROGRESS, isv_ref=isv_ref, repeated=True)
        if claim.status == ClaimStatus.DONE:
            return CallbackResult(
                CallbackOutcome.AUTHORIZED, claim.auth_app_ids, claim.isv_ref, repeated=True
            )
        if claim.status == ClaimStatus.PARKED:
            return CallbackResult(CallbackOutcome.PARKED, claim.auth_app_ids, claim.isv_ref, repeated=True)
        spent = claim.error_code in CODE_SPENT_CODES
        return CallbackResult(
            CallbackOutcome.CODE_SPENT if spent else CallbackOutcome.UNCONFIRMED,
            isv_ref=claim.isv_ref,
            repeated=True,
            fresh_link=self._fresh_link(claim.isv_ref, callback_url),
        )
