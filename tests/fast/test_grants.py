"""Grants.record: whether a grant replaces what is stored, which ISV reference it carries, what is
announced - per route (callback, notification, replay), over the real stores and publisher."""

from __future__ import annotations

import json
from typing import Any

import pytest

from alipay_v3 import AppToken
from app_auth import events
from app_auth.grants import Route
from app_auth.token_store import ACTIVE, NEEDS_REAUTH, REVOKED, TokenStatus
from tests.fast.world import MERCHANT_APP, World

ISV = "2021000000000001"


def stored(world: World, token: AppToken, *, isv_ref: str | None = "shop-1") -> None:
    """A token already in the table (as a callback stores it; its announcement forgotten)."""
    assert world.grants.record(token, via=Route.CALLBACK, isv_app_id=ISV, isv_ref=isv_ref) is not None
    world.events.entries.clear()


def make_status(world: World, status: TokenStatus) -> float:
    """Move the stored token of MERCHANT_APP to ``status``; returns when that happened."""
    if status is REVOKED:
        world.store.mark_revoked(MERCHANT_APP, "authorization cancelled by the merchant")
    elif status is NEEDS_REAUTH:
        record = world.store.acquire_lease(MERCHANT_APP, "w", 60, force=True)
        world.store.record_refresh_failure(
            record, "w", error="REFRESH_TOKEN_NOT_VALID", retry_at=0, leave_as=NEEDS_REAUTH
        )
    return world.clock()


def current_token(world: World) -> str:
    return world.store.open_current(world.store.get_token(MERCHANT_APP)).app_auth_token


def authorized_events(world: World) -> list[dict[str, Any]]:
    return [detail for kind, detail in world.events.published() if kind == events.AUTHORIZED]


def assert_announced_once(world: World, token: AppToken, *, isv_ref: str | None, via: Route) -> None:
    [detail] = authorized_events(world)
    assert detail["auth_app_id"] == token.auth_app_id
    assert detail.get("isv_ref") == isv_ref
    assert detail["via"] == via.value
    raw = json.dumps(world.events.entries)
    assert token.app_auth_token not in raw and token.app_refresh_token not in raw


# -- the callback: always replaces, carries the reference of its link --------------------------------


def test_a_callback_stores_a_first_grant_with_its_reference_and_announces_it(world: World) -> None:
    # Given nothing stored for the merchant app
    token = world.alipay.issue(MERCHANT_APP)
    # When the callback records the grant
    record = world.grants.record(token, via=Route.CALLBACK, isv_app_id=ISV, isv_ref="shop-1")
    # Then it is stored, active, with the link's reference, and announced without a secret
    assert record is not None and (record.version, record.status, record.isv_ref) == (1, ACTIVE, "shop-1")
    assert current_token(world) == token.app_auth_token
    assert_announced_once(world, token, isv_ref="shop-1", via=Route.CALLBACK)


def test_a_callback_replaces_even_a_token_obtained_after_it(world: World) -> None:
    # Given a token from the callback, and a newer one stored meanwhile (say a refresh)
    from_callback = world.alipay.issue(MERCHANT_APP)
    world.clock.advance(30)
    stored(world, world.alipay.issue(MERCHANT_APP))
    # When the callback records its grant
    record = world.grants.record(from_callback, via=Route.CALLBACK, isv_app_id=ISV, isv_ref="shop-1")
    # Then the merchant's fresh consent wins: it is the current pair, the newer one kept as previous
    assert record is not None and record.version == 2
    assert current_token(world) == from_callback.app_auth_token
    assert_announced_once(world, from_callback, isv_ref="shop-1", via=Route.CALLBACK)


def test_a_callback_sets_the_reference_its_link_carried(world: World) -> None:
    # Given a token stored for shop-1
    stored(world, world.alipay.issue(MERCHANT_APP), isv_ref="shop-1")
    # When the merchant authorizes again through a link made for shop-2
    token = world.alipay.issue(MERCHANT_APP)
    world.grants.record(token, via=Route.CALLBACK, isv_app_id=ISV, isv_ref="shop-2")
    # Then the stored reference, and the announced one, are shop-2, and the change is announced
    assert world.store.get_token(MERCHANT_APP).isv_ref == "shop-2"
    assert_announced_once(world, token, isv_ref="shop-2", via=Route.CALLBACK)
    [change] = [detail for kind, detail in world.events.published() if kind == events.REFERENCE_CHANGED]
    assert (change["isv_ref"], change["previous_isv_ref"], change["via"]) == ("shop-2", "shop-1", "callback")


def test_a_reference_set_for_the_first_time_is_no_change(world: World) -> None:
    # Given a token stored without a reference (a notification came first)
    stored(world, world.alipay.issue(MERCHANT_APP), isv_ref=None)
    # When the merchant authorizes again through a link made for shop-1
    world.grants.record(
        world.alipay.issue(MERCHANT_APP), via=Route.CALLBACK, isv_app_id=ISV, isv_ref="shop-1"
    )
    # Then only the grant is announced
    assert [kind for kind, _ in world.events.published()] == [events.AUTHORIZED]


def test_a_callback_without_a_reference_keeps_the_stored_one(world: World) -> None:
    # Given a token stored for shop-1
    stored(world, world.alipay.issue(MERCHANT_APP), isv_ref="shop-1")
    # When the merchant authorizes again through a link that carries no state (no reference)
    world.grants.record(world.alipay.issue(MERCHANT_APP), via=Route.CALLBACK, isv_app_id=ISV, isv_ref=None)
    # Then the reference to the ISV's customer is still there
    assert world.store.get_token(MERCHANT_APP).isv_ref == "shop-1"


# -- a notification: fills in, never overwrites a live token, keeps the stored reference -------------


def test_a_notification_fills_in_a_missing_authorization_with_no_reference(world: World) -> None:
    # Given nothing stored (the merchant closed the tab before the callback)
    token = world.alipay.issue(MERCHANT_APP)
    # When the notification's grant is recorded (whatever reference a caller passes)
    record = world.grants.record(
        token, via=Route.NOTIFICATION, isv_app_id=ISV, isv_ref="made-up", granted_at=world.clock()
    )
    # Then it is stored without a reference: a notification does not know the ISV's customer
    assert record is not None and record.isv_ref is None and record.status == ACTIVE
    assert current_token(world) == token.app_auth_token
    assert_announced_once(world, token, isv_ref=None, via=Route.NOTIFICATION)


def test_a_notification_of_a_token_alipay_calls_replaced_never_overwrites_the_live_one(world: World) -> None:
    # Given a live token, and a notification of another pair granted about the same time (inside
    # the clocks' margin), whose token Alipay's query says no longer works
    live = world.alipay.issue(MERCHANT_APP)
    stored(world, live)
    world.clock.advance(60)
    late = world.alipay.issue(MERCHANT_APP)
    world.alipay.answer_query(world.alipay.authorization(MERCHANT_APP, valid=False))
    # When it is recorded
    record = world.grants.record(late, via=Route.NOTIFICATION, isv_app_id=ISV, granted_at=world.clock())
    # Then it is held back: the live token stays, nothing is announced
    assert record is None
    assert world.alipay.queries == [late.app_auth_token]
    assert current_token(world) == live.app_auth_token
    assert world.store.get_token(MERCHANT_APP).version == 1
    assert authorized_events(world) == []


@pytest.mark.parametrize("status", [NEEDS_REAUTH, REVOKED])
def test_a_notification_sent_after_the_last_change_revives_a_dead_grant_keeping_its_reference(
    world: World, status: TokenStatus
) -> None:
    # Given a token of shop-1 that is dead (needs re-authorization, or revoked)
    stored(world, world.alipay.issue(MERCHANT_APP), isv_ref="shop-1")
    changed_at = make_status(world, status)
    # When the merchant re-authorizes and only the notification arrives, sent after that change
    world.clock.advance(5)
    token = world.alipay.issue(MERCHANT_APP)
    record = world.grants.record(token, via=Route.NOTIFICATION, isv_app_id=ISV, granted_at=changed_at + 1)
    # Then the new pair is stored, active again, still shop-1's, and announced as such
    assert record is not None and (record.status, record.isv_ref) == (ACTIVE, "shop-1")
    assert current_token(world) == token.app_auth_token
    assert_announced_once(world, token, isv_ref="shop-1", via=Route.NOTIFICATION)


@pytest.mark.parametrize(
    ("status", "sent"),
    [(REVOKED, "before"), (REVOKED, "unknown"), (NEEDS_REAUTH, "before"), (NEEDS_REAUTH, "unknown")],
)
def test_a_notification_sent_before_the_last_change_or_at_an_unknown_time_is_held_back(
    world: World, status: TokenStatus, sent: str
) -> None:
    # Given a token that went dead ten minutes after the notification's grant (or we cannot tell
    # when that was, and Alipay's query says its token does not work)
    stored(world, world.alipay.issue(MERCHANT_APP))
    granted_at = world.clock()
    world.clock.advance(600)
    token = world.alipay.issue(MERCHANT_APP)
    make_status(world, status)
    version = world.store.get_token(MERCHANT_APP).version
    world.alipay.answer_query(world.alipay.authorization(MERCHANT_APP, valid=False))
    # When the notification's grant is recorded
    record = world.grants.record(
        token, via=Route.NOTIFICATION, isv_app_id=ISV, granted_at=granted_at if sent == "before" else None
    )
    # Then it does not undo the change
    assert record is None
    after = world.store.get_token(MERCHANT_APP)
    assert (after.status, after.version) == (status, version)
    assert authorized_events(world) == []


def test_a_notification_bringing_back_the_revoked_pair_announces_no_grant(world: World) -> None:
    # Given a token the merchant then cancelled
    token = world.alipay.issue(MERCHANT_APP)
    stored(world, token)
    revoked_at = make_status(world, REVOKED)
    # When Alipay's retry of the original authorization notification arrives, sent after the cancel
    record = world.grants.record(token, via=Route.NOTIFICATION, isv_app_id=ISV, granted_at=revoked_at + 10)
    # Then the app stays revoked, and no grant is announced or reported as recorded
    assert world.store.get_token(MERCHANT_APP).status == REVOKED
    assert authorized_events(world) == []
    assert record is None


# -- a replay: stores a parked result unless something newer happened since -------------------------


def test_a_replay_stores_a_parked_grant_with_the_reference_it_was_parked_with(world: World) -> None:
    # Given a parked result (obtained a while ago) and nothing stored
    token = world.alipay.issue(MERCHANT_APP)
    world.clock.advance(300)
    # When it is replayed
    record = world.grants.record(token, via=Route.REPLAY, isv_app_id=ISV, isv_ref="shop-1")
    # Then it is stored with its reference and announced
    assert record is not None and (record.status, record.isv_ref) == (ACTIVE, "shop-1")
    assert current_token(world) == token.app_auth_token
    assert_announced_once(world, token, isv_ref="shop-1", via=Route.REPLAY)


def test_a_replay_replaces_a_token_obtained_before_it(world: World) -> None:
    # Given an older token stored, and a parked result obtained after it
    stored(world, world.alipay.issue(MERCHANT_APP))
    world.clock.advance(10)
    token = world.alipay.issue(MERCHANT_APP)
    # When the parked result is replayed
    record = world.grants.record(token, via=Route.REPLAY, isv_app_id=ISV, isv_ref="shop-1")
    # Then it replaces the older one
    assert record is not None and record.version == 2
    assert current_token(world) == token.app_auth_token
    assert_announced_once(world, token, isv_ref="shop-1", via=Route.REPLAY)


@pytest.mark.parametrize("case", ["same pair", "newer pair stored"])
def test_a_replay_never_rolls_a_token_back(world: World, case: str) -> None:
    # Given the parked pair itself stored, or a pair obtained after it
    parked = world.alipay.issue(MERCHANT_APP)
    world.clock.advance(30)
    kept = parked if case == "same pair" else world.alipay.issue(MERCHANT_APP)
    stored(world, kept)
    # When the parked result is replayed
    record = world.grants.record(parked, via=Route.REPLAY, isv_app_id=ISV, isv_ref="shop-1")
    # Then it is held back: the stored pair stays, nothing announced
    assert record is None
    assert current_token(world) == kept.app_auth_token
    assert world.store.get_token(MERCHANT_APP).version == 1
    assert authorized_events(world) == []


@pytest.mark.parametrize(("revoked", "replaced"), [("after the pair was obtained", False), ("before", True)])
def test_a_replay_does_not_undo_a_later_revocation(world: World, revoked: str, replaced: bool) -> None:
    # Given a stored token, revoked either after or before the parked pair was obtained
    stored(world, world.alipay.issue(MERCHANT_APP))
    if replaced:
        make_status(world, REVOKED)
        world.clock.advance(10)
        parked = world.alipay.issue(MERCHANT_APP)
    else:
        parked = world.alipay.issue(MERCHANT_APP)
        world.clock.advance(10)
        make_status(world, REVOKED)
    # When the parked result is replayed
    record = world.grants.record(parked, via=Route.REPLAY, isv_app_id=ISV, isv_ref="shop-1")
    # Then only a pair obtained after the revocation brings the app back
    status = world.store.get_token(MERCHANT_APP).status
    if replaced:
        assert record is not None and status == ACTIVE and current_token(world) == parked.app_auth_token
        assert_announced_once(world, parked, isv_ref="shop-1", via=Route.REPLAY)
    else:
        assert record is None and status == REVOKED
        assert authorized_events(world) == []
