"""RefreshService: one token's rotation (refresh_one) and a scheduled run (run), against a scripted
Alipay - committed, skipped, backed off, declared dead only on Alipay's verified word, races seen
as races."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable

import pytest

from alipay_v3 import AlipayError, AppToken, TokenGrant
from app_auth import events
from app_auth.errors import ConfigurationRefused
from app_auth.grants import Route
from app_auth.refresh import (
    DEFERRED,
    FAILED,
    NEEDS_REAUTH,
    PARKED,
    QUARANTINED,
    RACED,
    REFRESHED,
    ROTATION_UNAVAILABLE,
    SKIPPED,
    RefreshPolicy,
)
from app_auth.token_store import ACTIVE, TokenRecord, TokenStatus
from app_auth.tokens import read_current_token
from tests.fast.fake_alipay import api_error, transport_error
from tests.fast.world import MERCHANT_APP, QUEUE_URL, TokenWritesFailingDynamoDB, World, build_world

ISV = "2021000000000001"


def seed(world: World, *apps: str, isv_ref: str | None = "shop-1") -> dict[str, AppToken]:
    """Authorized apps (as a callback stores them), their announcements forgotten."""
    tokens = {}
    for app in apps or (MERCHANT_APP,):
        tokens[app] = world.alipay.issue(app)
        world.grants.record(tokens[app], via=Route.CALLBACK, isv_app_id=ISV, isv_ref=isv_ref)
    world.events.entries.clear()
    return tokens


def come_due(world: World, *apps: str) -> None:
    """The clock moved on until every one of ``apps`` (MERCHANT_APP by default) is due."""
    for app in apps or (MERCHANT_APP,):
        due_at = world.store.get_token(app).due_at
        assert due_at is not None
        world.clock.now = max(world.clock.now, due_at)


def record(world: World, app: str = MERCHANT_APP) -> TokenRecord:
    return world.store.get_token(app)


def refresh_token(world: World, app: str = MERCHANT_APP) -> str:
    return world.store.open_current(record(world, app)).app_refresh_token


def current_token(world: World, app: str = MERCHANT_APP) -> str:
    return world.store.open_current(record(world, app)).app_auth_token


def published(world: World, kind: str) -> list[dict[str, object]]:
    return [detail for k, detail in world.events.published() if k == kind]


# -- one token -------------------------------------------------------------------------------------


def test_a_due_token_is_refreshed_and_the_new_pair_committed(world: World) -> None:
    # Given an authorized app whose rotation is due
    old = seed(world)[MERCHANT_APP]
    come_due(world)
    # When it is refreshed
    outcome = world.refresher.refresh_one(MERCHANT_APP)
    # Then Alipay got the stored refresh token, and the pair it granted is committed as version 2
    assert outcome == REFRESHED
    assert world.alipay.refreshes == [old.app_refresh_token]
    after = record(world)
    current = world.store.open_current(after)
    assert after.version == 2 and after.status == ACTIVE and after.failures == 0
    assert current.app_auth_token != old.app_auth_token and current.app_refresh_token != old.app_refresh_token
    # And the old pair is still served through its grace window, and the next rotation is scheduled
    previous = world.store.open_previous(after)
    assert previous is not None and previous.app_auth_token == old.app_auth_token
    assert after.due_at is not None and after.due_at > world.clock()
    # And the rotation is announced, without a secret
    [detail] = published(world, events.REFRESHED)
    assert (detail["auth_app_id"], detail["version"], detail["isv_ref"]) == (MERCHANT_APP, 2, "shop-1")
    raw = json.dumps(world.events.entries)
    assert current.app_auth_token not in raw and old.app_refresh_token not in raw


def test_a_token_not_due_is_skipped_without_calling_alipay(world: World) -> None:
    # Given a freshly authorized app
    seed(world)
    # When a refresh of it is asked for
    outcome = world.refresher.refresh_one(MERCHANT_APP)
    # Then nothing happens
    assert outcome == SKIPPED
    assert world.alipay.refreshes == [] and world.events.entries == []
    assert record(world).version == 1


def test_a_verified_dead_grant_needs_reauthorization_announced_once(world: World) -> None:
    # Given a due token whose refresh token Alipay says, signed, is no longer valid, and whose
    # token Alipay's query says is invalid too
    seed(world)
    come_due(world)
    world.alipay.answer_refresh(api_error("REFRESH_TOKEN_NOT_VALID", verified=True))
    world.alipay.answer_query(world.alipay.authorization(MERCHANT_APP, valid=False))
    # When it is refreshed, and refreshed again (even forced)
    first = world.refresher.refresh_one(MERCHANT_APP)
    second = world.refresher.refresh_one(MERCHANT_APP, force=True)
    # Then it needs re-authorization, leaves the schedule, and that is announced once
    assert (first, second) == (NEEDS_REAUTH, SKIPPED)
    after = record(world)
    assert (after.status, after.due_at) == (TokenStatus.NEEDS_REAUTH, None)
    assert len(world.alipay.refreshes) == 1
    [detail] = published(world, events.NEEDS_REAUTHORIZATION)
    assert (detail["auth_app_id"], detail["error_code"]) == (MERCHANT_APP, "REFRESH_TOKEN_NOT_VALID")
    assert list(world.store.due_app_ids(world.clock() + 10**9)) == []


def test_an_unsigned_dead_grant_answer_only_backs_off(world: World) -> None:
    # Given a due token, and an error claiming the grant is dead that Alipay did not sign
    seed(world)
    come_due(world)
    world.alipay.answer_refresh(api_error("REFRESH_TOKEN_NOT_VALID", verified=False))
    # When it is refreshed
    outcome = world.refresher.refresh_one(MERCHANT_APP)
    # Then it is a failure to retry, not a dead merchant
    assert outcome == FAILED
    assert record(world).status == ACTIVE
    assert published(world, events.NEEDS_REAUTHORIZATION) == []


def test_a_configuration_error_never_declares_the_merchant_dead(world: World) -> None:
    # Given a due token, and Alipay saying (signed) the grant belongs to another app: our config
    seed(world)
    come_due(world)
    before = record(world)
    world.alipay.answer_refresh(api_error("APP_ID_NOT_CONSISTENT", verified=True))
    # When it is refreshed  Then the refusal names our configuration, and the token is as it was
    with pytest.raises(ConfigurationRefused) as refused:
        world.refresher.refresh_one(MERCHANT_APP)
    assert refused.value.alipay_code == "APP_ID_NOT_CONSISTENT" and "keys check" in refused.value.message
    after = record(world)
    assert (after.status, after.failures, after.due_at, after.version) == (
        ACTIVE,
        0,
        before.due_at,
        before.version,
    )
    assert world.events.entries == []


def test_a_run_meeting_a_configuration_error_stops_and_says_so_once(world: World) -> None:
    # Given many due tokens, and a secret Alipay refuses for every one of them
    apps = [f"20880000000002{n:02d}" for n in range(40)]
    seed(world, *apps)
    come_due(world, *apps)
    world.alipay.answer_refresh(*[api_error("APP_ID_NOT_CONSISTENT", verified=True)] * len(apps))
    # When the run goes
    summary = world.refresher.run(remaining_seconds=lambda: 900.0)
    # Then it stops taking work, no token changed, and one Configuration Error is announced
    assert summary.configuration_error == "APP_ID_NOT_CONSISTENT" and summary.stopped_early
    assert summary.count(REFRESHED) == summary.count(NEEDS_REAUTH) == summary.count(FAILED) == 0
    assert len(world.alipay.refreshes) < len(apps)  # the run stopped: not every token was tried
    assert {(record(world, app).status, record(world, app).failures) for app in apps} == {(ACTIVE, 0)}
    assert [kind for kind, _ in world.events.published()] == [events.CONFIGURATION_ERROR]
    [detail] = published(world, events.CONFIGURATION_ERROR)
    assert detail["error_code"] == "APP_ID_NOT_CONSISTENT" and set(detail) == {"error_code", "at"}


@pytest.mark.parametrize(
    "error",
    [
        api_error("SYSTEM_ERROR", http_status=500),
        api_error("aop.ACQ.SYSTEM_ERROR", http_status=429, verified=False),
        transport_error(request_sent=True, timed_out=True),
        transport_error(request_sent=False),
    ],
    ids=["system-error", "throttled", "timed-out", "not-sent"],
)
def test_a_transient_failure_backs_off_and_keeps_the_stored_pair(world: World, error: AlipayError) -> None:
    # Given a due token, and Alipay failing this once
    old = seed(world)[MERCHANT_APP]
    come_due(world)
    world.alipay.answer_refresh(error)
    now = world.clock()
    # When it is refreshed
    outcome = world.refresher.refresh_one(MERCHANT_APP)
    # Then it failed, will be retried within the first backoff step, and the stored pair is untouched
    assert outcome == FAILED
    after = record(world)
    base = world.refresher.policy.backoff_base_seconds
    assert after.due_at is not None and now + base / 2 <= after.due_at <= now + base
    assert (after.status, after.version, after.failures) == (ACTIVE, 1, 1)
    assert after.last_error == error.code
    assert refresh_token(world) == old.app_refresh_token
    assert [d["auth_app_id"] for d in published(world, events.REFRESH_FAILED)] == [MERCHANT_APP]
    # And it is not taken again before then
    assert world.refresher.refresh_one(MERCHANT_APP) == SKIPPED
    assert len(world.alipay.refreshes) == 1


def test_backoff_grows_with_each_failure_and_a_success_recovers(world: World) -> None:
    # Given a due token that fails twice, then succeeds
    seed(world)
    come_due(world)
    world.alipay.answer_refresh(api_error("SYSTEM_ERROR", http_status=500), transport_error())
    base = world.refresher.policy.backoff_base_seconds
    waits = []
    for _ in range(2):
        now = world.clock()
        assert world.refresher.refresh_one(MERCHANT_APP) == FAILED
        waits.append((record(world).due_at or 0) - now)
        come_due(world)
    recovered = world.refresher.refresh_one(MERCHANT_APP)
    # Then the second wait is drawn from twice the first's range; one failure event per spell,
    # a recovery event at the end, and the failure count reset
    assert base / 2 <= waits[0] <= base and base <= waits[1] <= 2 * base
    assert recovered == REFRESHED
    assert world.events.types() == [events.REFRESH_FAILED, events.REFRESHED, events.RECOVERED]
    assert (record(world).failures, record(world).version) == (0, 2)


def reauthorized_while_at_alipay(world: World, answer: Callable[[], TokenGrant]) -> AppToken:
    """A due token whose merchant authorizes again while our refresh is at Alipay, which then gives
    ``answer()``; returns the re-authorized pair."""
    seed(world)
    come_due(world)
    fresh = world.alipay.issue(MERCHANT_APP)

    def reply(sent: str) -> TokenGrant:
        world.grants.record(fresh, via=Route.CALLBACK, isv_app_id=ISV, isv_ref="shop-1")
        return answer()

    world.alipay.answer_refresh(reply)
    return fresh


def test_not_valid_after_a_reauthorization_meanwhile_is_a_race_not_a_dead_grant(world: World) -> None:
    # Given a due token, and the merchant re-authorizing while our refresh is at Alipay
    def not_valid() -> TokenGrant:
        raise api_error("REFRESH_TOKEN_NOT_VALID", verified=True)

    fresh = reauthorized_while_at_alipay(world, not_valid)
    # When Alipay answers that our (now superseded) refresh token is not valid
    outcome = world.refresher.refresh_one(MERCHANT_APP)
    # Then it is a lost race: the re-authorized pair stays, active, and no one is told to re-authorize
    assert outcome == RACED
    assert record(world).status == ACTIVE
    assert world.store.open_current(record(world)).app_auth_token == fresh.app_auth_token
    assert published(world, events.NEEDS_REAUTHORIZATION) == []


def test_not_valid_after_another_refresher_rotated_is_a_race(world: World) -> None:
    # Given a due token, and our call so slow that our lease ran out and another refresher rotated it
    old = seed(world)[MERCHANT_APP]
    come_due(world)
    other = world.another_refresher("refresher-2")

    def overtaken(sent: str) -> TokenGrant:
        world.clock.advance(world.refresher.policy.lease_seconds + 1)
        assert other.refresh_one(MERCHANT_APP) == REFRESHED
        raise api_error("REFRESH_TOKEN_NOT_VALID", verified=True)

    world.alipay.answer_refresh(overtaken)
    # When Alipay answers ours with REFRESH_TOKEN_NOT_VALID
    outcome = world.refresher.refresh_one(MERCHANT_APP)
    # Then it is a race: the other refresher's pair is stored and the merchant stays active
    assert outcome == RACED
    after = record(world)
    assert (after.status, after.version, after.failures) == (ACTIVE, 2, 0)
    assert world.alipay.refreshes == [old.app_refresh_token, old.app_refresh_token]
    assert world.store.open_current(after).app_auth_token == world.alipay.issued[-1].app_auth_token
    assert published(world, events.NEEDS_REAUTHORIZATION) == []


def test_a_commit_that_lost_to_a_reauthorization_is_a_race_and_keeps_the_new_grant(world: World) -> None:
    # Given a due token, re-authorized while Alipay rotated it for us
    fresh = reauthorized_while_at_alipay(world, lambda: world.alipay.grant(MERCHANT_APP))
    # When our refresh comes back with a new pair
    outcome = world.refresher.refresh_one(MERCHANT_APP)
    # Then our commit is refused (fenced by the version): the re-authorization is what is stored
    assert outcome == RACED
    assert world.store.open_current(record(world)).app_auth_token == fresh.app_auth_token
    assert published(world, events.REFRESHED) == []


# -- a scheduled run -------------------------------------------------------------------------------

APPS = ("2088000000000011", "2088000000000012", "2088000000000013", "2088000000000014")


def test_a_run_refreshes_every_due_token_and_leaves_the_rest(world: World) -> None:
    # Given four due tokens, and one authorized later that is not due yet
    seed(world, *APPS)
    come_due(world, *APPS)
    seed(world, "2088000000000099")
    # When the scheduled run goes
    summary = world.refresher.run(remaining_seconds=lambda: 900.0)
    # Then each due token was rotated once, the other not; each rotation announced
    assert (summary.due, summary.count(REFRESHED), summary.stopped_early) == (4, 4, False)
    assert not summary.left_retryable
    assert {app: record(world, app).version for app in (*APPS, "2088000000000099")} == {
        **dict.fromkeys(APPS, 2),
        "2088000000000099": 1,
    }
    assert len(world.alipay.refreshes) == 4
    assert sorted(str(d["auth_app_id"]) for d in published(world, events.REFRESHED)) == sorted(APPS)


def test_a_run_that_meets_a_failure_says_it_left_work_to_retry(world: World) -> None:
    # Given two due tokens, one of which Alipay fails
    seed(world, *APPS[:2])
    come_due(world, *APPS[:2])
    world.alipay.answer_refresh(api_error("SYSTEM_ERROR", http_status=500))
    # When the run goes
    summary = world.refresher.run(remaining_seconds=lambda: 900.0)
    # Then one is refreshed, one failed, and the run reports retryable work
    assert (summary.count(REFRESHED), summary.count(FAILED)) == (1, 1)
    assert summary.left_retryable


def test_a_run_stops_taking_work_when_time_runs_short(world: World) -> None:
    # Given four due tokens, and an invocation that took the run lease with little time left
    seed(world, *APPS)
    come_due(world, *APPS)
    margin = world.refresher.policy.stop_margin_seconds
    remaining = itertools.chain([margin + 60], itertools.repeat(margin - 1))
    # When the run goes
    summary = world.refresher.run(remaining_seconds=lambda: next(remaining))
    # Then it took no work, and says work is left
    assert summary.stopped_early and summary.left_retryable
    assert summary.outcomes == {} and world.alipay.refreshes == []
    # And every one is still due for the next run, unleased
    assert len(list(world.store.due_app_ids(world.clock()))) == 4
    assert world.refresher.run(remaining_seconds=lambda: 900.0).count(REFRESHED) == 4


# -- a run under Lambda's rules -----------------------------------------------------------------------


def test_a_run_that_overlaps_another_ends_without_work(world: World) -> None:
    # Given due tokens, and another execution environment's run still going (it holds the run lease)
    seed(world, *APPS)
    come_due(world, *APPS)
    other = world.another_refresher("refresher-2")
    assert other.run_lease is not None and other.run_lease.acquire(other.owner, 300)
    # When the next scheduled run starts
    summary = world.refresher.run(remaining_seconds=lambda: 900.0)
    # Then it ends at once: no lease taken, no call at Alipay, nothing to retry
    assert summary.overlapped and summary.due == 0 and not summary.left_retryable
    assert world.alipay.refreshes == [] and {record(world, app).version for app in APPS} == {1}
    # And once the other run is over, a run does the work
    other.run_lease.release(other.owner)
    assert world.refresher.run(remaining_seconds=lambda: 900.0).count(REFRESHED) == len(APPS)


def test_no_alipay_call_starts_without_the_time_it_may_take(world: World) -> None:
    # Given a due token, and a run whose time runs short between taking the work and calling Alipay
    seed(world)
    come_due(world)
    # (asked by the run lease, the replay drain, the loop taking the work, then before the call)
    left = iter([900.0, 900.0, 900.0, world.refresher.policy.stop_margin_seconds - 1])
    # When the run goes
    summary = world.refresher.run(remaining_seconds=lambda: next(left, 0.0))
    # Then Alipay is not called; the token's lease is given back, so the next run takes it at once
    assert summary.count(DEFERRED) == 1 and summary.stopped_early and summary.left_retryable
    assert world.alipay.refreshes == []
    after = record(world)
    assert (after.status, after.failures, after.version) == (ACTIVE, 0, 1)
    assert world.refresher.run(remaining_seconds=lambda: 900.0).count(REFRESHED) == 1


# -- failures that are not Alipay's, and a rotation the table refuses ---------------------------------


def test_a_token_that_does_not_open_backs_off_like_any_failure(world: World) -> None:
    # Given a due token whose sealed pair no longer opens (tampered, or sealed under another table)
    seed(world)
    come_due(world)
    item = next(i for i in world.items("APP#") if i["sk"]["S"] == "TOKEN")
    item["current"]["M"]["ct"]["B"] = bytes(len(item["current"]["M"]["ct"]["B"]))
    # When runs meet it
    outcome = world.refresher.refresh_one(MERCHANT_APP)
    # Then it backs off with a count, like an Alipay failure: it is not retried every run
    after = record(world)
    assert outcome == FAILED and world.alipay.refreshes == []
    assert (after.status, after.failures, after.last_error) == (ACTIVE, 1, "encryption-error")
    assert after.due_at is not None and after.due_at > world.clock()
    assert world.refresher.run(remaining_seconds=lambda: 900.0).due == 0
    assert [d["error_code"] for d in published(world, events.REFRESH_FAILED)] == ["encryption-error"]


def test_a_rotation_the_table_refuses_is_parked_sealed_and_replays(creds, alipay_config) -> None:
    # Given a due token, and a table that refuses the commit after Alipay rotated (every attempt)
    dynamodb = TokenWritesFailingDynamoDB()
    world = build_world(creds, alipay_config, dynamodb=dynamodb)
    old = seed(world)[MERCHANT_APP]
    come_due(world)
    dynamodb.failing_commits = True
    # When it is refreshed
    outcome = world.refresher.refresh_one(MERCHANT_APP)
    # Then the pair Alipay issued is not lost: it waits sealed on the replay queue
    assert outcome == PARKED and len(world.alipay.refreshes) == 1
    [message] = world.sqs.sent
    issued = world.alipay.issued[-1]
    assert issued.app_auth_token not in message["MessageBody"]
    assert record(world).version == 1
    # And the replay stores it, with the ISV's reference, as version 2
    dynamodb.failing_commits = False
    parked = world.replay.open(message["MessageBody"])
    assert [t.app_auth_token for t in parked.tokens] == [issued.app_auth_token]
    for token in parked.tokens:
        world.grants.record(token, via=Route.REPLAY, isv_app_id=ISV, isv_ref=parked.isv_ref)
    after = record(world)
    assert (after.version, after.isv_ref, after.status) == (2, "shop-1", ACTIVE)
    assert world.store.open_current(after).app_auth_token == issued.app_auth_token != old.app_auth_token


def test_a_token_failing_again_and_again_is_quarantined_still_served_and_recoverable(world: World) -> None:
    # Given a token whose every refresh fails, run after run
    seed(world)
    served = world.store.open_current(record(world)).app_auth_token
    times = world.refresher.policy.quarantine_after
    world.alipay.answer_refresh(*[api_error("SYSTEM_ERROR", http_status=500)] * times)
    outcomes = []
    for _ in range(times):
        come_due(world)
        outcomes.append(world.refresher.refresh_one(MERCHANT_APP))
    # Then after the last allowed failure it is quarantined, announced once, and retried no more
    assert outcomes == [FAILED] * (times - 1) + [QUARANTINED]
    after = record(world)
    assert (after.status, after.failures, after.due_at) == (TokenStatus.QUARANTINED, times, None)
    assert world.refresher.run(remaining_seconds=lambda: 900.0).due == 0
    assert [kind for kind, _ in world.events.published()] == [events.REFRESH_FAILED, events.QUARANTINED]
    # While the merchant's token is still handed out
    assert read_current_token(world.store, MERCHANT_APP).app_auth_token == served
    # And an operator's refresh, once the cause is fixed, brings it back onto the schedule
    assert world.refresher.refresh_one(MERCHANT_APP, force=True) == REFRESHED
    back = record(world)
    assert (back.status, back.failures) == (ACTIVE, 0) and back.due_at is not None
    come_due(world)
    assert [app for app, _ in world.store.due_app_ids(world.clock())] == [MERCHANT_APP]


# -- the replay queue, drained at the start of every run ----------------------------------------------


def faulty_world(creds, alipay_config, **options) -> tuple[World, TokenWritesFailingDynamoDB]:
    dynamodb = TokenWritesFailingDynamoDB()
    return build_world(creds, alipay_config, dynamodb=dynamodb, **options), dynamodb


def park(world: World, app: str) -> AppToken:
    """A newer pair for ``app`` waiting on the replay queue, as a run parks a refused rotation."""
    world.clock.advance(60)  # Alipay rotated after the stored pair was obtained
    token = world.alipay.issue(app)
    version = record(world, app).version
    assert world.replay.park((token,), isv_ref="shop-1", digest=f"rotation.{app}.{version}")
    return token


def test_a_rotation_parked_by_one_run_is_stored_by_the_next_run(creds, alipay_config, caplog) -> None:
    # Given a run whose every commit the table refused after Alipay rotated: each new pair parked
    world, dynamodb = faulty_world(creds, alipay_config)
    seed(world, *APPS)
    come_due(world, *APPS)
    dynamodb.failing_commits = True
    assert world.refresher.run(remaining_seconds=lambda: 900.0).count(PARKED) == len(APPS)
    issued = {token.auth_app_id: token for token in world.alipay.issued[-len(APPS) :]}
    dynamodb.failing_commits = False
    # When the next run goes
    with caplog.at_level(logging.DEBUG):
        summary = world.refresher.run(remaining_seconds=lambda: 900.0)
    # Then it stores every parked pair before rotating, deletes its message, and asks Alipay nothing
    assert (summary.replayed, summary.replay_superseded, summary.replay_failed) == (len(APPS), 0, 0)
    assert summary.due == 0 and len(world.alipay.refreshes) == len(APPS)
    assert world.sqs.waiting == {}
    for app in APPS:
        after = record(world, app)
        assert (after.version, after.status, after.isv_ref, after.failures) == (2, ACTIVE, "shop-1", 0)
        assert world.store.open_current(after).app_auth_token == issued[app].app_auth_token
        assert after.due_at is not None and after.due_at > world.clock()
    # And no secret was logged on the way
    assert caplog.text and all(
        secret not in caplog.text
        for t in issued.values()
        for secret in (t.app_auth_token, t.app_refresh_token)
    )


def test_a_parked_rotation_older_than_the_stored_token_is_deleted_without_overwriting(world: World) -> None:
    # Given a parked rotation, and the merchant authorizing again after it was parked
    seed(world)
    park(world, MERCHANT_APP)
    world.clock.advance(60)
    fresh = world.alipay.issue(MERCHANT_APP)
    world.grants.record(fresh, via=Route.CALLBACK, isv_app_id=ISV, isv_ref="shop-2")
    # When the next run goes
    summary = world.refresher.run(remaining_seconds=lambda: 900.0)
    # Then the newer authorization stays, and the message is deleted as superseded
    assert (summary.replayed, summary.replay_superseded, summary.replay_failed) == (0, 1, 0)
    assert world.sqs.waiting == {}
    after = record(world)
    assert (after.version, after.isv_ref) == (2, "shop-2")
    assert world.store.open_current(after).app_auth_token == fresh.app_auth_token


def test_a_message_that_does_not_open_stays_on_the_queue_and_the_run_goes_on(world: World) -> None:
    # Given a message on the replay queue that is not a parked result, and a due token
    seed(world)
    come_due(world)
    world.sqs.send_message(QueueUrl=QUEUE_URL, MessageBody="not a parked result")
    # When the run goes
    summary = world.refresher.run(remaining_seconds=lambda: 900.0)
    # Then the message is counted and left for its visibility timeout; the rotation goes ahead
    assert (summary.replayed, summary.replay_failed, summary.count(REFRESHED)) == (0, 1, 1)
    assert len(world.sqs.waiting) == 1 and not summary.left_retryable


def test_a_parked_result_the_table_refuses_is_stored_by_a_later_run(creds, alipay_config) -> None:
    # Given a parked rotation, and a table refusing token writes
    world, dynamodb = faulty_world(creds, alipay_config)
    seed(world)
    parked = park(world, MERCHANT_APP)
    dynamodb.failing = True
    # When a run goes, it counts the message and leaves it on the queue
    summary = world.refresher.run(remaining_seconds=lambda: 900.0)
    assert (summary.replayed, summary.replay_failed) == (0, 1)
    assert len(world.sqs.waiting) == 1 and record(world).version == 1
    # And a run after the message's visibility timeout, the table well again, stores it
    dynamodb.failing = False
    world.clock.advance(121)
    assert world.refresher.run(remaining_seconds=lambda: 900.0).replayed == 1
    assert world.sqs.waiting == {}
    assert world.store.open_current(record(world)).app_auth_token == parked.app_auth_token


def test_a_failing_replay_queue_is_counted_and_never_fails_the_run(world: World) -> None:
    # Given a due token, and SQS failing every call
    seed(world)
    come_due(world)
    world.sqs.down = True
    # When the run goes  Then the failure is counted and the rotation goes ahead
    summary = world.refresher.run(remaining_seconds=lambda: 900.0)
    assert (summary.replay_failed, summary.count(REFRESHED)) == (1, 1)


def test_a_run_drains_no_more_than_its_bound_and_the_next_run_the_rest(creds, alipay_config) -> None:
    # Given five parked results, and runs that take three each
    world = build_world(creds, alipay_config, policy=RefreshPolicy(replay_max_messages=3))
    apps = [f"20880000000003{n:02d}" for n in range(5)]
    seed(world, *apps)
    for app in apps:
        park(world, app)
    # When two runs go  Then the first stores three, the second the other two
    assert world.refresher.run(remaining_seconds=lambda: 900.0).replayed == 3
    assert len(world.sqs.waiting) == 2
    assert world.refresher.run(remaining_seconds=lambda: 900.0).replayed == 2
    assert world.sqs.waiting == {} and {record(world, app).version for app in apps} == {2}


def test_a_run_stores_no_parked_result_past_its_stop_margin(world: World) -> None:
    # Given three parked results, and a run whose time runs short after the first one
    apps = [f"20880000000004{n:02d}" for n in range(3)]
    seed(world, *apps)
    for app in apps:
        park(world, app)
    margin = world.refresher.policy.stop_margin_seconds
    # (asked by the run lease, then before each message)
    remaining = itertools.chain([900.0, 900.0], itertools.repeat(margin - 1))
    # When the run goes
    summary = world.refresher.run(remaining_seconds=lambda: next(remaining))
    # Then it stored one; the others wait for the next run
    assert summary.replayed == 1 and summary.stopped_early
    assert len(world.sqs.waiting) == 2


@pytest.mark.parametrize("why", ["disabled", "out-of-time", "no-queue"])
def test_a_run_takes_nothing_from_the_queue_when_disabled_out_of_time_or_unconfigured(
    creds, alipay_config, why: str
) -> None:
    # Given a parked result, and a run that may not drain: bound 0, no time, or no queue
    policy = RefreshPolicy(replay_max_messages=0) if why == "disabled" else None
    world = build_world(
        creds, alipay_config, policy=policy, replay_queue_url=None if why == "no-queue" else QUEUE_URL
    )
    seed(world)
    if why == "no-queue":
        world.sqs.send_message(QueueUrl=QUEUE_URL, MessageBody="a message of another stack")
    else:
        park(world, MERCHANT_APP)
    margin = world.refresher.policy.stop_margin_seconds
    remaining = itertools.chain([900.0], itertools.repeat(margin - 1 if why == "out-of-time" else 900.0))
    # When the run goes
    summary = world.refresher.run(remaining_seconds=lambda: next(remaining))
    # Then SQS is not asked, and the message waits
    assert world.sqs.receives == 0 and len(world.sqs.waiting) == 1
    assert (summary.replayed, summary.replay_failed, record(world).version) == (0, 0, 1)


def test_the_replay_bound_is_a_hundred_unless_the_environment_says_otherwise() -> None:
    assert RefreshPolicy.from_env({}).replay_max_messages == 100
    assert RefreshPolicy.from_env({"REFRESH_REPLAY_MAX_MESSAGES": "0"}).replay_max_messages == 0


def test_a_dead_refresh_token_with_a_working_token_is_served_and_no_longer_rotated(world: World) -> None:
    # Given a due token whose refresh token has timed out, while Alipay's query says the token works
    seed(world)
    come_due(world)
    token = current_token(world)
    world.alipay.answer_refresh(api_error("REFRESH_TOKEN_TIME_OUT", verified=True))
    # When it is refreshed
    outcome = world.refresher.refresh_one(MERCHANT_APP)
    # Then Alipay was asked about the token itself, which is still served, off the schedule
    assert outcome == ROTATION_UNAVAILABLE
    assert world.alipay.queries == [token]
    after = record(world)
    assert (after.status, after.due_at, after.last_error) == (
        TokenStatus.ROTATION_UNAVAILABLE,
        None,
        "REFRESH_TOKEN_TIME_OUT",
    )
    assert read_current_token(world.store, MERCHANT_APP).app_auth_token == token
    assert list(world.store.due_app_ids(world.clock() + 10**9)) == []
    assert world.store.earliest_refresh_expiry() is None  # its refresh token no longer counts
    # And that is announced once, and not as a merchant to re-authorize
    [detail] = published(world, events.ROTATION_UNAVAILABLE)
    assert detail["error_code"] == "REFRESH_TOKEN_TIME_OUT"
    assert published(world, events.NEEDS_REAUTHORIZATION) == []
    # And a new authorization by the merchant puts it back on the schedule
    world.grants.record(world.alipay.issue(MERCHANT_APP), via=Route.CALLBACK, isv_app_id="2021000000000001")
    assert record(world).status == ACTIVE and record(world).due_at is not None


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(api_error("AUTH_TOKEN_NOT_EXISTED", verified=True), id="gone"),
        pytest.param("invalid", id="invalid"),
    ],
)
def test_a_dead_refresh_token_whose_token_alipay_calls_dead_needs_reauthorization(
    world: World, answer: object
) -> None:
    seed(world)
    come_due(world)
    world.alipay.answer_refresh(api_error("REFRESH_TOKEN_NOT_VALID", verified=True))
    world.alipay.answer_query(
        world.alipay.authorization(MERCHANT_APP, valid=False) if answer == "invalid" else answer  # type: ignore[arg-type]
    )
    assert world.refresher.refresh_one(MERCHANT_APP) == NEEDS_REAUTH
    assert record(world).status == TokenStatus.NEEDS_REAUTH


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(transport_error(), id="no answer"),
        pytest.param(api_error("SYSTEM_ERROR", verified=True, http_status=500), id="system error"),
        pytest.param(api_error("AUTH_TOKEN_NOT_EXISTED", verified=False), id="unsigned gone"),
    ],
)
def test_a_dead_refresh_token_whose_query_fails_backs_off_and_asks_again(
    world: World, failure: object
) -> None:
    # Given a dead refresh token, and Alipay's query failing (or answering unsigned)
    seed(world)
    come_due(world)
    world.alipay.answer_refresh(api_error("REFRESH_TOKEN_NOT_VALID", verified=True))
    world.alipay.answer_query(failure)  # type: ignore[arg-type]
    # When it is refreshed  Then nothing is decided on a guess: it backs off, still active
    assert world.refresher.refresh_one(MERCHANT_APP) == FAILED
    after = record(world)
    assert (after.status, after.failures) == (ACTIVE, 1)
    assert (
        published(world, events.NEEDS_REAUTHORIZATION) == published(world, events.ROTATION_UNAVAILABLE) == []
    )
