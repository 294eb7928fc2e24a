"""The stores over FakeDynamoDB and over DynamoDB Local: the same scenarios, so the fake cannot drift.

The ``dynamodb_local`` half carries the ``integration`` marker; ``make test-fast`` deselects it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from alipay_v3 import AppAuthorization, AppToken
from alipay_v3.token_api import AuthorizationStatus
from app_auth.crypto import EnvelopeCipher
from app_auth.errors import ConcurrentUpdate, NotFound
from app_auth.flow_store import ClaimStatus, FlowStore
from app_auth.run_lease import RunLease
from app_auth.schedule import RotationSchedule
from app_auth.table import ConditionFailed, Table
from app_auth.token_store import (
    ACTIVE,
    NEEDS_REAUTH,
    QUARANTINED,
    REVOKED,
    Replace,
    TokenStore,
    token_digest,
    token_pk,
)
from sandbox.table import table_definition_from_template
from tests.fakes.clock import Clock
from tests.fakes.dynamodb import FakeDynamoDB
from tests.fakes.kms import FakeKMS
from tests.integration.aws_fixtures import aws, local_aws  # noqa: F401 - fixtures

SCHEDULE = RotationSchedule(lead_seconds=100, previous_grace_seconds=600, jitter_seconds=0)
_names = itertools.count()


@pytest.fixture(params=["fake", pytest.param("dynamodb_local", marks=pytest.mark.integration)])
def table(request: pytest.FixtureRequest) -> Iterator[Table]:
    name = f"contract-{next(_names)}"
    if request.param == "fake":
        yield Table(FakeDynamoDB(), name)
        return
    client = request.getfixturevalue("aws").client("dynamodb")
    client.create_table(TableName=name, **table_definition_from_template())
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50})
    yield Table(client, name)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(table: Table, clock: Clock) -> TokenStore:
    return TokenStore(table, EnvelopeCipher(FakeKMS(), "key", table.name), SCHEDULE, clock=clock)


@pytest.fixture
def flow(table: Table, clock: Clock) -> FlowStore:
    return FlowStore(table, clock=clock)


def token(app: str = "2088A", n: int = 1, *, at: float = 1_764_000_000.0, life: int = 1000) -> AppToken:
    return AppToken(app, "2088U", f"tok-{app}-{n}", f"ref-{app}-{n}", 500, life, at)


# -- token items ---------------------------------------------------------------------------------


def test_save_then_replace_keeps_previous_through_grace(store: TokenStore, clock: Clock) -> None:
    # Given a stored authorization
    first = store.save_authorization(token(n=1), isv_app_id="isv", admission=Replace("shop-1"))
    # When a new token replaces it
    clock.advance(10)
    second = store.save_authorization(token(n=2, at=clock.now), isv_app_id="isv", admission=Replace("shop-1"))
    # Then the version moved on, both pairs open, and the old one stops after the grace window
    record = store.get_token("2088A")
    assert (first.version, second.version, record.version) == (1, 2, 2)
    assert store.open_current(record).app_auth_token == "tok-2088A-2"
    assert (store.open_previous(record) or pytest.fail()).app_refresh_token == "ref-2088A-1"
    assert record.previous_valid_until == pytest.approx(clock.now + 600)
    assert record.due_at == pytest.approx(clock.now + 900)
    clock.advance(601)
    assert store.open_previous(store.get_token("2088A")) is None


def test_same_token_again_changes_nothing_but_adds_a_missing_ref(store: TokenStore) -> None:
    # Given a token stored without a reference (the notification came first)
    store.save_authorization(token(), isv_app_id="isv")
    # When the callback brings the same token with a reference, and then again with another one
    added = store.save_authorization(token(), isv_app_id="isv", admission=Replace("shop-1"))
    again = store.save_authorization(token(), isv_app_id="isv", admission=Replace("shop-2"))
    # Then the reference is added once, and the pair was not superseded
    assert added.isv_ref == again.isv_ref == store.get_token("2088A").isv_ref == "shop-1"
    assert store.get_token("2088A").version == 1
    assert store.get_token("2088A").sealed.previous is None


class RacedOnce:
    """Admits the first time, letting another writer store its token in between; then holds back."""

    def __init__(self, store: TokenStore) -> None:
        self.store, self.asked = store, []

    def supersedes(self, existing) -> bool:
        self.asked.append(existing.version)
        if len(self.asked) == 1:
            self.store.save_authorization(token(n=2), isv_app_id="isv")  # the other writer wins
            return True
        return False

    def isv_ref(self, existing) -> None:
        return None


def test_a_lost_race_is_decided_again_against_what_the_winner_left(store: TokenStore) -> None:
    # Given a stored token, and a writer whose rule would replace it
    store.save_authorization(token(n=1), isv_app_id="isv")
    rule = RacedOnce(store)
    # When another writer stores a newer token between its read and its write
    saved = store.save_authorization(token(n=3), isv_app_id="isv", admission=rule)
    # Then its rule is asked again about the winner's record, which it does not replace
    assert saved is None and rule.asked == [1, 2]
    assert store.open_current(store.get_token("2088A")).app_auth_token == "tok-2088A-2"


def test_a_lost_conditional_write_carries_the_existing_item(table: Table, store: TokenStore) -> None:
    # Given a stored token
    store.save_authorization(token(), isv_app_id="isv")
    # When a write conditioned on its absence, and one on a stale version, are tried
    key = {"pk": {"S": token_pk("2088A")}, "sk": {"S": "TOKEN"}}
    with pytest.raises(ConditionFailed) as absent:
        table.call("put_item", Item={**key, "x": {"S": "1"}}, ConditionExpression="attribute_not_exists(pk)")
    with pytest.raises(ConditionFailed) as stale:
        table.call(
            "update_item",
            Key=key,
            UpdateExpression="SET x = :x",
            ConditionExpression="#v = :v",
            ExpressionAttributeNames={"#v": "version"},
            ExpressionAttributeValues={":x": {"S": "1"}, ":v": {"N": "7"}},
        )
    # Then each carries the item as found, in wire format, and nothing was written
    for lost in (absent.value, stale.value):
        assert lost.existing is not None
        assert lost.existing["version"] == {"N": "1"}
        assert lost.existing["current"]["M"]["v"] == {"S": "3"}
    assert "x" not in (table.get(token_pk("2088A"), "TOKEN") or {})


def test_a_lost_condition_on_a_missing_item_carries_none(table: Table) -> None:
    # Given no item  When an update requires one  Then the loss carries no item
    with pytest.raises(ConditionFailed) as lost:
        table.call(
            "update_item",
            Key={"pk": {"S": "APP#none"}, "sk": {"S": "TOKEN"}},
            UpdateExpression="SET x = :x",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":x": {"S": "1"}},
        )
    assert lost.value.existing is None
    assert table.get("APP#none", "TOKEN") is None


def test_lease_and_commit_are_fenced(store: TokenStore, clock: Clock) -> None:
    # Given a due token
    store.save_authorization(token(), isv_app_id="isv", due_at=clock.now - 1)
    # When one worker leases it, a second is refused until the lease runs out
    leased = store.acquire_lease("2088A", "w1", 60)
    with pytest.raises(ConcurrentUpdate):
        store.acquire_lease("2088A", "w2", 60)
    clock.advance(61)
    taken_over = store.acquire_lease("2088A", "w2", 60)
    # Then the first worker's commit is refused (lease owner), the second's goes through once
    with pytest.raises(ConcurrentUpdate):
        store.commit_rotation(leased, "w1", token(n=2, at=clock.now))
    store.commit_rotation(taken_over, "w2", token(n=3, at=clock.now))
    with pytest.raises(ConcurrentUpdate):
        store.commit_rotation(taken_over, "w2", token(n=4, at=clock.now))  # stale version
    record = store.get_token("2088A")
    assert record.version == 2 and record.failures == 0 and record.refreshed_at == clock.now
    assert store.open_current(record).app_auth_token == "tok-2088A-3"
    assert (store.open_previous(record) or pytest.fail()).app_auth_token == "tok-2088A-1"
    assert record.due_at == pytest.approx(clock.now + 900)
    # And it is not due any more, so a new lease is refused
    with pytest.raises(ConcurrentUpdate):
        store.acquire_lease("2088A", "w3", 60)


def test_a_token_not_yet_due_is_leased_only_by_force(store: TokenStore) -> None:
    store.save_authorization(token(), isv_app_id="isv")
    with pytest.raises(ConcurrentUpdate):
        store.acquire_lease("2088A", "w1", 60)
    assert store.acquire_lease("2088A", "w1", 60, force=True).version == 1


def test_refresh_failure_backs_off_then_recovers_count(store: TokenStore, clock: Clock) -> None:
    # Given a leased token
    store.save_authorization(token(), isv_app_id="isv", due_at=clock.now - 1)
    leased = store.acquire_lease("2088A", "w1", 60)
    # When a retryable failure is recorded twice (leasing again in between)
    after = store.record_refresh_failure(leased, "w1", error="SYSTEM_ERROR", retry_at=clock.now + 50)
    clock.advance(51)
    again = store.record_refresh_failure(
        store.acquire_lease("2088A", "w1", 60), "w1", error="E2", retry_at=clock.now + 70
    )
    # Then failures count up, the due time moves, the version and status stay, the lease is gone
    assert (after.failures, again.failures) == (1, 2)
    assert again.due_at == pytest.approx(clock.now + 70) and again.last_error == "E2"
    assert again.version == 1 and again.status == ACTIVE
    assert store.acquire_lease("2088A", "w9", 60, force=True).version == 1  # no lease left behind
    # And a failure with a lease not held is refused
    with pytest.raises(ConcurrentUpdate):
        store.record_refresh_failure(leased, "other", error="E", retry_at=0)


def test_a_dead_grant_leaves_the_schedule(store: TokenStore, clock: Clock) -> None:
    store.save_authorization(token(), isv_app_id="isv", due_at=clock.now - 1)
    leased = store.acquire_lease("2088A", "w1", 60)
    dead = store.record_refresh_failure(
        leased, "w1", error="REFRESH_TOKEN_NOT_VALID", retry_at=0, leave_as=NEEDS_REAUTH
    )
    assert (dead.status, dead.version, dead.due_at) == (NEEDS_REAUTH, 2, None)
    assert list(store.due_app_ids(clock.now + 10**9)) == []
    with pytest.raises(ConcurrentUpdate):
        store.acquire_lease("2088A", "w1", 60, force=True)  # not active


def test_mark_revoked(store: TokenStore, clock: Clock) -> None:
    store.save_authorization(token(), isv_app_id="isv", admission=Replace("shop"), due_at=clock.now - 1)
    revoked = store.mark_revoked("2088A", "cancelled " * 40)
    assert revoked is not None
    assert store.mark_revoked("2088A", "again") is None  # revoked already: nothing changes
    assert (revoked.status, revoked.version, revoked.due_at, revoked.isv_ref) == (REVOKED, 2, None, "shop")
    assert revoked.last_error is not None and len(revoked.last_error) == 200
    assert list(store.due_app_ids(clock.now)) == []
    with pytest.raises(NotFound):
        store.mark_revoked("2088-none", "x")


def test_due_app_ids_oldest_first_per_shard_and_limited(store: TokenStore, clock: Clock) -> None:
    # Given tokens due at different times (some not yet due), across shards
    dues = {f"2088{i:02d}": clock.now - 100 + i * 10 for i in range(12)}
    for app, due in dues.items():
        store.save_authorization(token(app), isv_app_id="isv", due_at=due)
    # When the due ones are listed at now
    listed = list(store.due_app_ids(clock.now))
    # Then exactly those due (<= now, inclusive) come back, due time ascending within each shard
    assert sorted(app for app, _ in listed) == sorted(a for a, d in dues.items() if d <= clock.now)
    assert all(due == pytest.approx(dues[app]) for app, due in listed)
    from app_auth.token_store import due_shard

    for shard in {due_shard(a) for a, _ in listed}:
        times = [d for a, d in listed if due_shard(a) == shard]
        assert times == sorted(times)
    assert len(list(store.due_app_ids(clock.now, limit=3))) == 3


def test_list_tokens_filters_by_status_and_reads_no_secret(store: TokenStore, flow: FlowStore) -> None:
    for app in ("2088A", "2088B", "2088C"):
        store.save_authorization(token(app), isv_app_id="isv")
    store.mark_revoked("2088B", "gone")
    flow.put_state("s1", isv_ref=None, expires_at=2e9)  # another item type: never listed
    everything = {r.auth_app_id: r for r in store.list_tokens()}
    assert set(everything) == {"2088A", "2088B", "2088C"}
    assert all(r.sealed.current is None and r.sealed.previous is None for r in everything.values())
    assert [r.auth_app_id for r in store.list_tokens(status=REVOKED)] == ["2088B"]
    assert sorted(r.auth_app_id for r in store.list_tokens(status=ACTIVE)) == ["2088A", "2088C"]


# -- flow items ----------------------------------------------------------------------------------


def test_states_bind_to_one_code_and_expire(flow: FlowStore, clock: Clock) -> None:
    # Given a state
    flow.put_state("s1", isv_ref="shop-1", expires_at=clock.now + 100)
    with pytest.raises(ConcurrentUpdate):
        flow.put_state("s1", isv_ref=None, expires_at=clock.now + 100)  # ids never collide silently
    assert flow.state_usable("s1")
    # When a code consumes it, the same code may present it again, another code may not
    assert flow.consume_state("s1", "code-a") == "shop-1"
    assert flow.consume_state("s1", "code-a") == "shop-1"
    with pytest.raises(NotFound):
        flow.consume_state("s1", "code-b")
    assert not flow.state_usable("s1")
    # And an expired or unknown state is refused
    flow.put_state("s2", isv_ref=None, expires_at=clock.now + 100)
    clock.advance(100)
    assert not flow.state_usable("s2")
    with pytest.raises(NotFound):
        flow.consume_state("s2", "code-c")
    with pytest.raises(NotFound):
        flow.consume_state("nope", "code-c")


def test_code_claims(flow: FlowStore) -> None:
    # Given a claimed code
    assert flow.claim_code("d1", isv_ref="shop", ttl_seconds=100) is None
    # When it is claimed again, the claim found is returned
    existing = flow.claim_code("d1", isv_ref=None, ttl_seconds=100)
    assert existing is not None and (existing.status, existing.isv_ref) == (ClaimStatus.EXCHANGING, "shop")
    # Then it finishes once, only from exchanging
    flow.finish_claim("d1", ClaimStatus.DONE, auth_app_ids=("2088A", "2088B"))
    claim = flow.get_claim("d1")
    assert claim is not None and (claim.status, claim.auth_app_ids) == (ClaimStatus.DONE, ("2088A", "2088B"))
    with pytest.raises(ConcurrentUpdate):
        flow.finish_claim("d1", ClaimStatus.FAILED, error_code="X")
    assert flow.get_claim("nope") is None
    with pytest.raises(ConcurrentUpdate):
        flow.finish_claim("nope", ClaimStatus.DONE)


def test_notifications_seen_once_remembered(flow: FlowStore) -> None:
    assert not flow.notification_seen("n1")
    flow.remember_notification("n1", kind="open_app_auth_notify", ttl_seconds=60)
    assert flow.notification_seen("n1") and not flow.notification_seen("n2")


# -- the run lease ---------------------------------------------------------------------------------


def test_one_run_at_a_time(table: Table, clock: Clock, store: TokenStore) -> None:
    lease = RunLease(table, "refresh", clock=clock)
    # Given a run holding the lease for its invocation's time
    assert lease.acquire("run-1", 300)
    # When another starts meanwhile  Then it is refused; the holder may renew its own
    assert not lease.acquire("run-2", 300)
    assert lease.acquire("run-1", 300)
    # And once released (or expired), the next run takes it; a late release of the old one is a no-op
    lease.release("run-1")
    assert lease.acquire("run-2", 300)
    lease.release("run-1")
    assert not lease.acquire("run-3", 300)
    clock.advance(301)
    assert lease.acquire("run-3", 300)
    # The lease is no token: never listed, never due
    assert list(store.list_tokens()) == [] and list(store.due_app_ids(clock.now + 10**9)) == []


def test_due_tokens_come_oldest_first_across_the_shards(store: TokenStore, clock: Clock) -> None:
    # Given tokens in every shard, due at times that interleave across the shards
    apps = [f"2088{n:04d}" for n in range(24)]
    due = {app: clock.now - 1000 + 37 * ((n * 7) % 24) for n, app in enumerate(apps)}
    for app in apps:
        store.save_authorization(token(app), isv_app_id="isv", due_at=due[app])
    # When the refresher asks what is due  Then it gets all of them, the oldest first
    found = list(store.due_app_ids(clock.now))
    assert [app for app, _ in found] == sorted(apps, key=due.get)
    assert [at for _, at in found] == sorted(due.values())
    assert [app for app, _ in store.due_app_ids(clock.now, limit=5)] == sorted(apps, key=due.get)[:5]


def test_a_quarantined_token_is_served_off_the_schedule_until_a_forced_refresh(
    store: TokenStore, clock: Clock
) -> None:
    # Given a due token whose refresh failed for the last allowed time
    store.save_authorization(token(), isv_app_id="isv", due_at=clock.now - 1)
    leased = store.acquire_lease("2088A", "w", 60)
    store.record_refresh_failure(leased, "w", error="system-error", retry_at=0, leave_as=QUARANTINED)
    # Then it leaves the due index, and only a forced lease takes it
    quarantined = store.get_token("2088A")
    assert (quarantined.status, quarantined.due_at, quarantined.failures) == (QUARANTINED, None, 1)
    assert list(store.due_app_ids(clock.now + 10**9)) == []
    with pytest.raises(ConcurrentUpdate):
        store.acquire_lease("2088A", "w", 60)
    forced = store.acquire_lease("2088A", "w", 60, force=True)
    # And a committed rotation puts it back: active, due again, in the index
    store.commit_rotation(forced, "w", token(n=2, at=clock.now))
    back = store.get_token("2088A")
    assert (back.status, back.failures) == (ACTIVE, 0) and back.due_at is not None
    assert [app for app, _ in store.due_app_ids(back.due_at)] == ["2088A"]


def test_the_earliest_refresh_expiry_counts_every_served_token_and_no_other(
    store: TokenStore, clock: Clock
) -> None:
    # Given served tokens whose refresh tokens expire at different times, across the shards
    assert store.earliest_refresh_expiry() is None
    at = clock.now
    for n, life in enumerate((9000, 5000, 7000, 8000, 6000)):
        store.save_authorization(token(f"2088E{n}", at=at, life=life), isv_app_id="isv", due_at=at - 1)
    assert store.earliest_refresh_expiry() == pytest.approx(at + 5000)
    # When the earliest is quarantined it still counts: it is served, and nothing rotates it
    leased = store.acquire_lease("2088E1", "w", 60)
    store.record_refresh_failure(leased, "w", error="E", retry_at=0, leave_as=QUARANTINED)
    assert store.earliest_refresh_expiry() == pytest.approx(at + 5000)
    # When it is dead, and the next one revoked, neither counts any more
    forced = store.acquire_lease("2088E1", "w", 60, force=True)
    store.record_refresh_failure(
        forced, "w", error="REFRESH_TOKEN_NOT_VALID", retry_at=0, leave_as=NEEDS_REAUTH
    )
    store.mark_revoked("2088E4", "cancelled")
    assert store.earliest_refresh_expiry() == pytest.approx(at + 7000)
    # And a rotation moves a token's expiry along with its new refresh token
    rotating = store.acquire_lease("2088E2", "w", 60)
    store.commit_rotation(rotating, "w", token("2088E2", n=2, at=at + 100, life=9900))
    assert store.earliest_refresh_expiry() == pytest.approx(at + 8000)


def test_a_cancellation_revokes_only_a_token_obtained_before_it(store: TokenStore, clock: Clock) -> None:
    store.save_authorization(token(at=clock.now), isv_app_id="isv")
    assert store.revoke_if_obtained_before("2088A", "cancelled", clock.now - 1) is None
    assert store.get_token("2088A").status == ACTIVE
    revoked = store.revoke_if_obtained_before("2088A", "cancelled", clock.now + 1)
    assert revoked is not None and revoked.status == REVOKED
    with pytest.raises(NotFound):
        store.revoke_if_obtained_before("2088-none", "x", clock.now)


def test_verification_slices_cover_every_served_token_once(store: TokenStore) -> None:
    # Given served tokens, and others no longer served
    apps = [f"2088S{n:02d}" for n in range(20)]
    for app in apps:
        store.save_authorization(token(app), isv_app_id="isv")
    store.mark_revoked(apps[0], "cancelled")
    # When the table is read slice by slice  Then every served token comes once, no other
    slices = [list(store.served_app_ids(n, 3)) for n in range(3)]
    assert sorted(app for part in slices for app in part) == apps[1:]


def test_a_check_is_kept_only_for_the_token_it_was_about(store: TokenStore, clock: Clock) -> None:
    store.save_authorization(token(), isv_app_id="isv")
    answer = AppAuthorization(
        "2088A", "2088U", AuthorizationStatus.VALID, ("alipay.trade.pay",), 100, 200, None, True
    )
    assert store.record_check("2088A", "tok-2088A-1", answer)
    kept = store.get_token("2088A")
    assert (kept.auth_methods, kept.auth_start, kept.auth_end, kept.is_by_app_auth, kept.checked_status) == (
        ("alipay.trade.pay",),
        100,
        200,
        True,
        "valid",
    )
    assert not store.record_check("2088A", "tok-2088A-0", answer)  # an older token's answer
    assert store.mark_needs_reauth_if_current("2088A", "not-its-digest", "token-invalid") is None
    dead = store.mark_needs_reauth_if_current("2088A", token_digest("tok-2088A-1"), "token-invalid")
    assert dead is not None and (dead.status, dead.due_at) == (NEEDS_REAUTH, None)
    assert store.mark_needs_reauth_if_current("2088A", token_digest("tok-2088A-1"), "again") is None


def test_claims_references_and_invitation_numbers(store: TokenStore, clock: Clock) -> None:
    # Given an authorization that came with no reference, from an invitation numbered INV-7
    store.save_authorization(token(), isv_app_id="isv", out_biz_no="INV-7")
    store.save_authorization(token("2088B"), isv_app_id="isv", admission=Replace("shop-b"))
    assert [r.auth_app_id for r in store.list_tokens(unclaimed=True)] == ["2088A"]
    # When the operator ties it to a customer  Then it is claimed, once
    claimed = store.claim("2088A", "shop-a")
    assert claimed is not None and claimed.isv_ref == "shop-a"
    assert store.claim("2088A", "shop-z") is None
    assert list(store.list_tokens(unclaimed=True)) == []
    with pytest.raises(NotFound):
        store.claim("2088-none", "x")
    # And a later grant by a link of another customer keeps the invitation and the old reference
    clock.advance(10)
    again = store.save_authorization(token(n=2, at=clock.now), isv_app_id="isv", admission=Replace("shop-q"))
    assert again is not None
    assert (again.isv_ref, again.previous_isv_ref, again.out_biz_no) == ("shop-q", "shop-a", "INV-7")


def test_a_reference_finds_its_authorizations_through_the_index(
    store: TokenStore, flow: FlowStore, clock: Clock
) -> None:
    # Given two merchant apps of one customer, one of another, and a link state with the same ref
    store.save_authorization(token("2088A"), isv_app_id="isv", admission=Replace("shop-1"))
    store.save_authorization(token("2088B"), isv_app_id="isv", admission=Replace("shop-1"))
    store.save_authorization(token("2088C"), isv_app_id="isv", admission=Replace("shop-2"))
    flow.put_state("state-1", isv_ref="shop-1", expires_at=clock.now + 60)
    # Then the reference finds exactly its token items, in order, and an unknown one finds none
    assert [r.auth_app_id for r in store.tokens_for_ref("shop-1")] == ["2088A", "2088B"]
    assert store.tokens_for_ref("shop-none") == []
    # And an authorization tied to another customer since leaves the first one's answer
    clock.advance(10)
    store.save_authorization(token("2088B", 2, at=clock.now), isv_app_id="isv", admission=Replace("shop-2"))
    assert [r.auth_app_id for r in store.tokens_for_ref("shop-1")] == ["2088A"]
    assert [r.auth_app_id for r in store.tokens_for_ref("shop-2")] == ["2088B", "2088C"]
