"""Rotation: refresh what is due, without ever losing the only valid refresh token.

One token's refresh, step by step (``refresh_one``):

1. lease the item (a conditional write: active, due, not leased by a live holder);
2. call Alipay with the current refresh token;
3. commit the new pair in one write fenced by the leased version and the lease owner, keeping the
   old pair as ``previous`` for its grace window.

Killed between 2 and 3, nothing is lost: the stored refresh token is the one we sent, which Alipay
keeps valid through its grace window, and the lease expires so the next run tries again. A
``REFRESH_TOKEN_NOT_VALID`` is first suspected to be a lost race: the item is re-read, and if
another worker rotated it, that is success. Only a verified dead grant marks the app as needing
re-authorization; anything else backs off (growing, capped, jittered) and is tried again later.
When Alipay refuses the caller itself (``AlipayApiError.configuration_error``: a wrong app id, key
or certificate), every token would fail alike: the run stops, one ``Configuration Error`` is
announced, and no token is changed.

A scheduled run first drains the replay queue (``replay.Replayer``, bounded by
``RefreshPolicy.replay_max_messages`` and the run's time): a rotation parked by an earlier run is
stored before anything is rotated, so no rotation Alipay made waits for an operator.

A scheduled run sends its events through an ``events.EventBatch`` (ten to a PutEvents call); an
on-demand ``refresh_one`` sends its own at once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import requests

from alipay_v3 import AlipayApiError, AlipayError, AppToken, TokenApi

from . import events
from .crypto import DataKey
from .errors import AppAuthError, ConcurrentUpdate, ConfigurationRefused, NotFound, StorageError
from .pacing import PacedAdapter, paced_session
from .replay import Replayer, ReplayQueue
from .run_lease import RunLease
from .schedule import DAY
from .settings import Settings
from .table import ConditionFailed
from .token_store import TokenPair, TokenRecord, TokenStatus, TokenStore, token_digest
from .verification import Verified, Verifier, alipay_verdict

logger = logging.getLogger(__name__)


class RefreshOutcome(StrEnum):
    REFRESHED = "refreshed"
    RACED = "raced"  # someone else rotated it (or re-authorized): their pair is stored
    SKIPPED = "skipped"  # not due any more, leased by a live worker, or not active
    FAILED = "failed"  # backs off and is tried again
    NEEDS_REAUTH = "needs_reauth"  # Alipay says the grant is dead
    DEFERRED = "deferred"  # not started for lack of time: its lease given back, the next run takes it
    PARKED = "parked"  # Alipay rotated it, storing failed: the new pair waits sealed on the replay queue
    QUARANTINED = "quarantined"  # failed ``quarantine_after`` times: served while valid, not retried
    # The refresh token is dead, and Alipay's query says the token still works: served, not rotated
    ROTATION_UNAVAILABLE = "rotation_unavailable"


REFRESHED, RACED, SKIPPED, FAILED, NEEDS_REAUTH, DEFERRED, PARKED, QUARANTINED, ROTATION_UNAVAILABLE = (
    RefreshOutcome
)
# A token that leaves the rotation schedule: its event (sent once: it leaves once), outcome, log text.
_LEFT_SCHEDULE = {
    TokenStatus.NEEDS_REAUTH: (events.NEEDS_REAUTHORIZATION, NEEDS_REAUTH, "needs re-authorization"),
    TokenStatus.QUARANTINED: (
        events.QUARANTINED,
        QUARANTINED,
        "is quarantined after repeated failed refreshes",
    ),
    TokenStatus.ROTATION_UNAVAILABLE: (
        events.ROTATION_UNAVAILABLE,
        ROTATION_UNAVAILABLE,
        "can no longer be rotated (its refresh token is dead); Alipay says its token still works",
    ),
}
_COMMIT_ATTEMPTS = 3  # the fenced write after Alipay rotated: Alipay's side is done, ours must follow


_POLICY_VARIABLES = {
    "concurrency": "REFRESH_CONCURRENCY",
    "max_calls_per_second": "REFRESH_MAX_CALLS_PER_SECOND",
    "lease_seconds": "REFRESH_LEASE_SECONDS",
    "backoff_base_seconds": "REFRESH_BACKOFF_BASE_SECONDS",
    "backoff_cap_seconds": "REFRESH_BACKOFF_CAP_SECONDS",
    "stop_margin_seconds": "REFRESH_STOP_MARGIN_SECONDS",
    "quarantine_after": "REFRESH_QUARANTINE_AFTER",
    "replay_max_messages": "REFRESH_REPLAY_MAX_MESSAGES",
    "verify_every_days": "REFRESH_VERIFY_EVERY_DAYS",
    "run_interval_minutes": "REFRESH_INTERVAL_MINUTES",
}


_WHOLE_NUMBERS = frozenset({"concurrency", "quarantine_after", "replay_max_messages"})


@dataclass(frozen=True)
class RefreshPolicy:
    lease_seconds: float = 120.0  # well above one call's worst case (timeouts x attempts + backoff)
    backoff_base_seconds: float = 60.0
    backoff_cap_seconds: float = 6 * 3600.0
    concurrency: int = 16
    max_calls_per_second: float = 20.0  # stay under Alipay's QPS for the app
    # After this many failures in a row (backing off, about two days at the defaults) a token is
    # quarantined: still served, no longer retried, until an operator's refresh succeeds.
    quarantine_after: int = 10
    # No Alipay call starts with less time left than this: a wait for a slot and one call at their
    # worst (the client's timeouts times its attempts, each), then the commit, inside the deadline.
    stop_margin_seconds: float = 100.0
    # Parked results a run stores from the replay queue before rotating (0: none, the operator's
    # ``alipay-auth replay`` only). Each is a write or two; a hundred fit in a run's first seconds.
    replay_max_messages: int = 100
    # Every served token is checked against Alipay's query once in this many days (0: never),
    # a slice of the table each run: runs come every ``run_interval_minutes`` (the schedule's).
    verify_every_days: float = 7.0
    run_interval_minutes: float = 15.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RefreshPolicy:
        """The template sets the pace (REFRESH_CONCURRENCY, REFRESH_MAX_CALLS_PER_SECOND) and may set
        REFRESH_REPLAY_MAX_MESSAGES; the other variables are for tests."""
        values: dict[str, Any] = {}
        for name, variable in _POLICY_VARIABLES.items():
            if env.get(variable):
                values[name] = int(env[variable]) if name in _WHOLE_NUMBERS else float(env[variable])
        return cls(**values)

    def backoff(self, failures: int) -> float:
        """Full jitter over an exponential, capped: failures 1, 2, 3... wait up to base, 2 base, 4 base..."""
        ceiling = min(self.backoff_cap_seconds, self.backoff_base_seconds * 2 ** max(0, failures - 1))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security


@dataclass
class RunSummary:
    due: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    max_lag_seconds: float = 0.0
    stopped_early: bool = False
    left_retryable: bool = False
    overlapped: bool = False  # another run held the run lease: this one did nothing
    configuration_error: str | None = None  # Alipay's code, when it refused our configuration
    replayed: int = 0  # parked tokens stored from the replay queue
    replay_superseded: int = 0  # parked tokens older than the stored ones: their messages deleted
    replay_failed: int = 0  # messages left on the queue, and failed SQS calls
    verified: dict[str, int] = field(default_factory=dict)  # this run's slice: Verified -> count
    alipay_throttled: int = 0  # Alipay's answers that the calls came too fast (HTTP 429)
    refresh_token_days_left: float | None = None  # before the first served refresh token expires

    def count(self, outcome: str) -> int:
        return self.outcomes.get(outcome, 0)


class RefreshService:
    def __init__(
        self,
        *,
        settings: Settings,
        store: TokenStore,
        token_api: Callable[[requests.Session], TokenApi],
        publisher: events.EventPublisher,
        policy: RefreshPolicy | None = None,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
        run_lease: RunLease | None = None,
        replay: ReplayQueue | None = None,
        replayer: Replayer | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.store = store
        self._new_token_api = token_api
        self.publisher = publisher
        self.policy = policy or RefreshPolicy()
        self.run_lease = run_lease
        self.replay = replay  # where a rotation the table refused is parked
        self.replayer = replayer  # what stores the parked ones back, at the start of a run
        self._clock = clock
        self._sleep = sleep
        self.owner = owner or uuid.uuid4().hex  # one per execution environment: leases name it
        # ``concurrency`` bounds the calls in flight at Alipay; the table work of other tokens
        # overlaps them (run() has twice as many workers), so the slots stay busy.
        self.pace = PacedAdapter(self.policy.concurrency, self.policy.max_calls_per_second)
        self.session = paced_session(self.pace)
        self._token_api: TokenApi | None = None
        self._token_api_lock = threading.Lock()
        self.verifier = Verifier(store, publisher, self.token_api)  # at the refresher's pace

    def token_api(self) -> TokenApi:
        """The Alipay client over the paced session: built on first use, then shared by all workers."""
        with self._token_api_lock:
            if self._token_api is None:
                self._token_api = self._new_token_api(self.session)
            return self._token_api

    # -- one token ---------------------------------------------------------------------------------

    def refresh_one(
        self,
        auth_app_id: str,
        *,
        force: bool = False,
        sink: events.EventSink | None = None,
        remaining_seconds: Callable[[], float] | None = None,
    ) -> RefreshOutcome:
        """One rotation; its events go to ``sink`` (a run's batch), or straight out. With
        ``remaining_seconds`` (a run's), Alipay is not called without the time a call may take."""
        sink = sink or self.publisher
        try:
            record = self.store.acquire_lease(auth_app_id, self.owner, self.policy.lease_seconds, force=force)
        except ConcurrentUpdate:
            return SKIPPED  # not due any more, leased by a live worker, or not active
        if remaining_seconds is not None and self._time_is_short(remaining_seconds):
            self.store.release_lease(record, self.owner)
            return DEFERRED
        try:
            pair = self.store.open_current(record)
            key = self.store.reserve_seal()  # now: after Alipay rotates, sealing must not need KMS
        except AppAuthError as exc:  # KMS or a sealed value that does not open: this token backs off
            return self._failed(record, exc.code, sink)
        try:
            grant = self.token_api().refresh(pair.app_refresh_token)
        except AlipayApiError as exc:
            if exc.configuration_error:
                # Every token would fail alike: the run stops, this one's lease lapses, none is marked.
                raise ConfigurationRefused(exc.code) from exc
            if not (exc.grant_dead and exc.verified):
                return self._failed(record, exc.code, sink)
            if self._rotated_by_someone_else(record):
                return RACED
            if remaining_seconds is not None and self._time_is_short(remaining_seconds):
                self.store.release_lease(record, self.owner)  # the query waits for the next run
                return DEFERRED
            return self._refresh_token_dead(record, pair, exc.code, sink)
        except AlipayError as exc:
            return self._failed(record, exc.code, sink)
        token = next((t for t in grant.tokens if t.auth_app_id == auth_app_id), grant.primary)
        try:
            self._commit(record, token, key)
        except StorageError as exc:
            return self._park(record, token, key, exc)
        except ConcurrentUpdate:
            # Our lease ran out and another worker (or a re-authorization) wrote first. Its pair is
            # the stored one; ours was never handed out. Nothing is lost.
            logger.warning("rotation of %s lost its lease before the commit", auth_app_id)
            return RACED
        sink.publish(
            events.REFRESHED, auth_app_id=auth_app_id, isv_ref=record.isv_ref, version=record.version + 1
        )
        if record.failures:
            sink.publish(events.RECOVERED, auth_app_id=auth_app_id, isv_ref=record.isv_ref)
        return REFRESHED

    def _commit(self, record: TokenRecord, token: AppToken, key: DataKey) -> None:
        """The fenced write, tried again after a storage failure; a retry that finds our own pair
        stored (the earlier attempt landed, its answer was lost) is a success."""
        for attempt in range(_COMMIT_ATTEMPTS):
            try:
                self.store.commit_rotation(record, self.owner, token, key=key)
                return
            except ConditionFailed as exc:
                if (
                    attempt
                    and exc.existing
                    and exc.existing.get("token_digest", {}).get("S") == token_digest(token.app_auth_token)
                ):
                    return
                raise
            except StorageError:
                if attempt == _COMMIT_ATTEMPTS - 1:
                    raise
                self._sleep(0.2 * 2**attempt)

    def _park(self, record: TokenRecord, token: AppToken, key: DataKey, exc: StorageError) -> RefreshOutcome:
        """Alipay rotated, the table refused: the new pair goes sealed to the replay queue, where the
        next run (or ``alipay-auth replay``) stores it; the old pair works on through Alipay's grace
        meanwhile."""
        digest = f"rotation.{record.auth_app_id}.{record.version}"
        if self.replay is not None and self.replay.park(
            (token,), isv_ref=record.isv_ref, digest=digest, key=key
        ):
            logger.error(
                "rotation of %s could not be stored (%s); parked for replay", record.auth_app_id, exc.code
            )
            return PARKED
        logger.error(
            "rotation of %s could not be stored (%s) nor parked; its lease lapses and a later run rotates again",
            record.auth_app_id,
            exc.code,
        )
        return FAILED

    def _rotated_by_someone_else(self, leased: TokenRecord) -> bool:
        """A REFRESH_TOKEN_NOT_VALID right after someone else rotated is a lost race, not a dead grant."""
        try:
            now = self.store.get_token(leased.auth_app_id)
        except NotFound:
            return False
        return now.version > leased.version or now.token_digest != leased.token_digest

    def _refresh_token_dead(
        self, record: TokenRecord, pair: TokenPair, error_code: str, sink: events.EventSink
    ) -> RefreshOutcome:
        """A dead refresh token is not a dead grant: the token works until the merchant re-authorizes
        or cancels (docs/alipay-v3-protocol.md section 8.1), and Alipay's query says which it is.
        Only its word that the token is invalid, or gone, makes the merchant ``needs_reauth``; when
        the query itself fails, the token backs off and is asked about again: never a guess."""
        verdict = alipay_verdict(self.token_api().query, pair.app_auth_token, record.auth_app_id)
        if verdict.works is None:
            return self._failed(record, verdict.code, sink)
        leave_as = TokenStatus.ROTATION_UNAVAILABLE if verdict.works else TokenStatus.NEEDS_REAUTH
        return self._failed(record, error_code, sink, leave_as=leave_as)

    def _failed(
        self,
        record: TokenRecord,
        error_code: str,
        sink: events.EventSink,
        *,
        leave_as: TokenStatus | None = None,
    ) -> RefreshOutcome:
        """Back off, or (``leave_as``, or after ``quarantine_after`` failures) leave the schedule."""
        retry_at = self._clock() + self.policy.backoff(record.failures + 1)
        if leave_as is None and record.failures + 1 >= self.policy.quarantine_after:
            leave_as = TokenStatus.QUARANTINED
        try:
            self.store.record_refresh_failure(
                record, self.owner, error=error_code, retry_at=retry_at, leave_as=leave_as
            )
        except ConcurrentUpdate:
            return RACED
        if leave_as is not None:
            kind, outcome, why = _LEFT_SCHEDULE[leave_as]
            logger.warning("merchant app %s %s (%s)", record.auth_app_id, why, error_code)
            sink.publish(kind, auth_app_id=record.auth_app_id, isv_ref=record.isv_ref, error_code=error_code)
            return outcome
        logger.info(
            "refresh of %s failed (%s), retry in %.0fs",
            record.auth_app_id,
            error_code,
            retry_at - self._clock(),
        )
        if record.failures == 0:
            sink.publish(
                events.REFRESH_FAILED,
                auth_app_id=record.auth_app_id,
                isv_ref=record.isv_ref,
                error_code=error_code,
            )
        return FAILED

    # -- a scheduled run ---------------------------------------------------------------------------

    def run(self, *, remaining_seconds: Callable[[], float], limit: int | None = None) -> RunSummary:
        """Refresh what is due with bounded concurrency; stop taking work before time runs out.
        With a ``run_lease``, a run that overlaps another ends at once."""
        if self.run_lease is None:
            return self._run(remaining_seconds, limit)
        if not self.run_lease.acquire(self.owner, remaining_seconds()):
            logger.warning("another refresh run is still going; this one ends without work")
            return RunSummary(overlapped=True)
        try:
            return self._run(remaining_seconds, limit)
        finally:
            self.run_lease.release(self.owner)

    def _time_is_short(self, remaining_seconds: Callable[[], float]) -> bool:
        """No work starts with less than the stop margin left."""
        return remaining_seconds() < self.policy.stop_margin_seconds

    def _drain_replay_queue(self, summary: RunSummary, remaining_seconds: Callable[[], float]) -> None:
        """Parked rotations are newer than the pairs stored: store them before rotating, so a parked
        token is not rotated again from its old pair. The grant rules keep a newer stored token (the
        message is deleted as superseded); whatever fails stays on the queue for the next run."""
        if self.replayer is None or self.policy.replay_max_messages <= 0:
            return
        drained = self.replayer.drain(
            max_messages=self.policy.replay_max_messages,
            wait_seconds=0,  # an empty queue costs one short call
            has_time=lambda: not self._time_is_short(remaining_seconds),
            progress=lambda line: logger.info("replay queue: %s", line),
        )
        summary.replayed = len(drained.replayed)
        summary.replay_superseded = len(drained.skipped)
        summary.replay_failed = drained.failed + drained.undeleted + (drained.queue_error is not None)
        summary.stopped_early = drained.out_of_time
        if summary.replay_failed:
            logger.warning(
                "replay queue: %d message(s) not stored, left on it; %d stored but not deleted%s",
                drained.failed,
                drained.undeleted,
                f"; {drained.queue_error.message}" if drained.queue_error else "",
            )

    def _run(self, remaining_seconds: Callable[[], float], limit: int | None) -> RunSummary:
        summary = RunSummary()
        self._drain_replay_queue(summary, remaining_seconds)
        now = self._clock()
        due: Iterator[tuple[str, float]] = self.store.due_app_ids(now, limit=limit)
        lock = threading.Lock()
        batch = self.publisher.batch()
        refused = threading.Event()

        def one(auth_app_id: str) -> None:
            if refused.is_set():
                return
            try:
                outcome = self.refresh_one(auth_app_id, sink=batch, remaining_seconds=remaining_seconds)
            except ConfigurationRefused as exc:
                with lock:
                    if summary.configuration_error is None:
                        summary.configuration_error = exc.alipay_code
                        logger.error("refresh run stopped: %s", exc.message)
                        batch.publish(events.CONFIGURATION_ERROR, error_code=exc.alipay_code)
                refused.set()
                return
            except AppAuthError as exc:  # storage trouble for this one item: the next run retries it
                logger.warning("refresh of %s could not be completed: %s", auth_app_id, exc.code)
                outcome = FAILED
            with lock:
                summary.outcomes[outcome] = summary.outcomes.get(outcome, 0) + 1

        # The batch is left last: every worker has published before it flushes.
        with batch, ThreadPoolExecutor(2 * self.policy.concurrency, thread_name_prefix="refresh") as pool:
            running: set[Future[None]] = set()
            for auth_app_id, due_at in due:
                summary.due += 1
                summary.max_lag_seconds = max(summary.max_lag_seconds, now - due_at)
                if refused.is_set() or self._time_is_short(remaining_seconds):
                    summary.stopped_early = True
                    break
                if len(running) >= self.policy.concurrency * 4:
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        future.result()
                running.add(pool.submit(one, auth_app_id))
            for future in running:
                future.result()
            if not refused.is_set() and not summary.stopped_early:
                self._verify_slice(summary, remaining_seconds, now, batch, pool)
        summary.stopped_early = summary.stopped_early or summary.count(DEFERRED) > 0
        summary.left_retryable = summary.count(FAILED) > 0 or summary.stopped_early
        summary.alipay_throttled = self.pace.take_throttled()
        summary.refresh_token_days_left = self._refresh_token_days_left()
        return summary

    def _verify_slice(
        self,
        summary: RunSummary,
        remaining_seconds: Callable[[], float],
        now: float,
        sink: events.EventSink,
        pool: ThreadPoolExecutor,
    ) -> None:
        """This run's part of the verification: the table split into as many slices as runs come
        in ``verify_every_days``, one slice a run, in turn, so every token is asked about once in
        that time and the calls spread over it. Finds tokens that died with no news reaching us."""
        if self.policy.verify_every_days <= 0:
            return
        interval = self.policy.run_interval_minutes * 60
        slices = max(1, round(self.policy.verify_every_days * DAY / interval))
        asked: list[Future[Verified]] = []
        try:
            for auth_app_id in self.store.served_app_ids(int(now // interval) % slices, slices):
                if self._time_is_short(remaining_seconds):
                    summary.stopped_early = True
                    break
                asked.append(pool.submit(self.verifier.verify, auth_app_id, sink=sink))
        except StorageError as exc:
            logger.warning("this run's verification slice could not be read: %s", exc.code)
        for future in asked:
            try:
                outcome = future.result()
            except ConfigurationRefused as exc:
                if summary.configuration_error is None:
                    summary.configuration_error = exc.alipay_code
                    logger.error("verification stopped: %s", exc.message)
                    sink.publish(events.CONFIGURATION_ERROR, error_code=exc.alipay_code)
                continue
            summary.verified[outcome.value] = summary.verified.get(outcome.value, 0) + 1

    def _refresh_token_days_left(self) -> float | None:
        """The least time, in days, before a served refresh token expires (quarantined ones too:
        nothing rotates them); None when none is known or the table cannot say right now."""
        try:
            earliest = self.store.earliest_refresh_expiry()
        except StorageError as exc:
            logger.warning("the earliest refresh token expiry could not be read: %s", exc.code)
            return None
        return None if earliest is None else (earliest - self._clock()) / DAY
