"""NotificationService.handle: Alipay's signed notifications (authorized, cancelled), verified before
anything is read, recorded through Grants (route NOTIFICATION), each handled once."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from alipay_v3 import sign_notification
from app_auth import events
from app_auth.errors import AlipayUnavailable, InvalidRequest, StorageError
from app_auth.grants import Route
from app_auth.notifications import ACKNOWLEDGED
from app_auth.token_store import ACTIVE, NEEDS_REAUTH, REVOKED
from app_auth.tokens import TokenUnusable, read_current_token
from sandbox.credentials import new_rsa_key
from tests.fast.fake_alipay import transport_error
from tests.fast.world import MERCHANT_APP, World

ISV = "2021000000000001"
OTHER_APP = "2088000000000002"


def seed(world: World, app: str = MERCHANT_APP, *, isv_ref: str | None = "shop-1") -> None:
    world.grants.record(world.alipay.issue(app), via=Route.CALLBACK, isv_app_id=ISV, isv_ref=isv_ref)
    world.events.entries.clear()


def current_token(world: World, app: str = MERCHANT_APP) -> str:
    return world.store.open_current(world.store.get_token(app)).app_auth_token


def test_a_signed_authorization_fills_in_a_token_whose_callback_never_came(world: World) -> None:
    # Given nothing stored, and Alipay's signed authorization notification
    token = world.alipay.issue(MERCHANT_APP)
    params = world.signed(world.authorized_notification(token, notify_id="n-1"))
    # When it is handled
    answer = world.notifications.handle(params)
    # Then it is acknowledged, the token stored through the notification route, without a reference
    assert answer == ACKNOWLEDGED
    record = world.store.get_token(MERCHANT_APP)
    assert (record.status, record.isv_ref) == (ACTIVE, None)
    assert current_token(world) == token.app_auth_token
    [(kind, detail)] = world.events.published()
    assert (kind, detail["via"], detail["auth_app_id"]) == (events.AUTHORIZED, "notification", MERCHANT_APP)
    assert token.app_auth_token not in str(world.events.entries)
    assert world.flow.notification_seen("n-1")


def test_a_duplicate_notification_is_acknowledged_and_not_handled_again(world: World) -> None:
    # Given a notification handled once
    params = world.signed(world.authorized_notification(world.alipay.issue(MERCHANT_APP)))
    world.notifications.handle(params)
    writes, announced = list(world.dynamodb.calls), list(world.events.entries)
    # When Alipay delivers it again
    answer = world.notifications.handle(params)
    # Then it is acknowledged, and nothing is written or announced
    assert answer == ACKNOWLEDGED
    assert world.dynamodb.calls == writes
    assert world.events.entries == announced


def test_a_reauthorization_that_reaches_us_only_by_notification_replaces_the_live_token(
    world: World,
) -> None:
    # Given a live token of shop-1 from the callback
    seed(world)
    live = current_token(world)
    # When the merchant authorizes again from Alipay's console (no state, no callback): only the
    # notification arrives, its grant an hour after ours
    world.clock.advance(3600)
    again = world.alipay.issue(MERCHANT_APP)
    answer = world.notifications.handle(world.signed(world.authorized_notification(again)))
    # Then the new token is served, the reference kept, the old pair kept through the grace window
    assert answer == ACKNOWLEDGED
    assert current_token(world) == again.app_auth_token
    read = read_current_token(world.store, MERCHANT_APP)
    assert (read.isv_ref, read.previous_app_auth_token) == ("shop-1", live)
    [(kind, detail)] = world.events.published()
    assert (kind, detail["via"], detail["reauthorized"]) == (events.AUTHORIZED, "notification", True)
    # An hour apart, the times alone said which is newer; Alipay was asked only what it grants
    assert world.alipay.queries == [again.app_auth_token]
    stored = world.store.get_token(MERCHANT_APP)
    assert (stored.auth_methods, stored.checked_status, stored.is_by_app_auth) == (
        ("alipay.trade.pay",),
        "valid",
        True,
    )


def test_a_late_notification_of_an_older_grant_never_rolls_the_token_back(world: World) -> None:
    # Given a grant notified late: the merchant authorized twice, and the callback of the second
    # stored its token an hour after the first
    first = world.alipay.issue(MERCHANT_APP)
    world.clock.advance(3600)
    seed(world)
    live = current_token(world)
    # When the first grant's notification arrives now (Alipay retries for hours)
    answer = world.notifications.handle(world.signed(world.authorized_notification(first)))
    # Then nothing changes
    assert answer == ACKNOWLEDGED
    assert current_token(world) == live
    assert world.events.entries == []


def test_inside_the_clocks_margin_alipays_query_decides_which_grant_is_newer(world: World) -> None:
    # Given two grants a minute apart: the second stored by its callback
    first = world.alipay.issue(MERCHANT_APP)
    world.clock.advance(60)
    seed(world)
    live = current_token(world)
    # When the first one's notification arrives: Alipay says its token was replaced (invalid)
    world.notifications.handle(world.signed(world.authorized_notification(first)))
    # Then it is held back
    assert current_token(world) == live and world.alipay.queries == [first.app_auth_token]
    # And when a third grant, a minute later, is notified: Alipay says that token works
    world.clock.advance(60)
    third = world.alipay.issue(MERCHANT_APP)
    world.notifications.handle(world.signed(world.authorized_notification(third)))
    assert current_token(world) == third.app_auth_token


def test_a_notification_is_not_decided_on_a_guess_when_alipays_query_fails(world: World) -> None:
    seed(world)
    live = current_token(world)
    world.clock.advance(60)
    again = world.alipay.issue(MERCHANT_APP)
    world.alipay.answer_query(transport_error())
    params = world.signed(world.authorized_notification(again, notify_id="n-9"))
    # When Alipay cannot say  Then the notification is refused (Alipay sends it again), nothing changed
    with pytest.raises(AlipayUnavailable):
        world.notifications.handle(params)
    assert current_token(world) == live and not world.flow.notification_seen("n-9")
    # And its next delivery is decided
    assert world.notifications.handle(params) == ACKNOWLEDGED
    assert current_token(world) == again.app_auth_token


def test_a_notification_bringing_back_the_pair_we_rotated_away_changes_nothing(world: World) -> None:
    # Given a token rotated by the refresher a moment after its grant was notified
    seed(world)
    granted = world.store.open_current(world.store.get_token(MERCHANT_APP))
    notified = world.authorized_notification(world.alipay.issued[-1], notify_id="n-old")
    world.clock.advance(30)
    leased = world.store.acquire_lease(MERCHANT_APP, "w", 60, force=True)
    world.store.commit_rotation(leased, "w", world.alipay.issue(MERCHANT_APP))
    rotated = current_token(world)
    # When the notification of the grant arrives now, its token still inside Alipay's grace
    assert world.notifications.handle(world.signed(notified)) == ACKNOWLEDGED
    # Then the rotated token stays, without asking Alipay: the old pair is known as the one replaced
    assert current_token(world) == rotated != granted.app_auth_token
    assert world.alipay.queries == []


def test_a_reauthorization_notified_after_a_dead_grant_revives_it_with_its_reference(world: World) -> None:
    # Given a token of shop-1 Alipay declared dead
    seed(world)
    leased = world.store.acquire_lease(MERCHANT_APP, "w", 60, force=True)
    world.store.record_refresh_failure(
        leased, "w", error="REFRESH_TOKEN_NOT_VALID", retry_at=0, leave_as=NEEDS_REAUTH
    )
    # When the merchant re-authorizes and only the notification arrives
    world.clock.advance(30)
    token = world.alipay.issue(MERCHANT_APP)
    world.notifications.handle(world.signed(world.authorized_notification(token)))
    # Then the new pair is stored, active, still shop-1's
    record = world.store.get_token(MERCHANT_APP)
    assert (record.status, record.isv_ref) == (ACTIVE, "shop-1")
    assert current_token(world) == token.app_auth_token
    [(kind, detail)] = world.events.published()
    assert (kind, detail["isv_ref"]) == (events.AUTHORIZED, "shop-1")


@pytest.mark.parametrize("apart", [600, 120])
def test_a_notification_of_a_grant_before_it_died_does_not_revive_it(world: World, apart: int) -> None:
    # Given a grant notified, declared dead later: ten minutes later (the times decide), or two
    # (inside the clocks' margin: Alipay's query, which calls the dead token invalid, decides)
    seed(world)
    params = world.authorized_notification(world.alipay.issued[-1])
    world.clock.advance(apart)
    leased = world.store.acquire_lease(MERCHANT_APP, "w", 60, force=True)
    world.store.record_refresh_failure(
        leased, "w", error="REFRESH_TOKEN_NOT_VALID", retry_at=0, leave_as=NEEDS_REAUTH
    )
    world.alipay.answer_query(world.alipay.authorization(MERCHANT_APP, valid=False))
    # When the notification is (re)delivered
    assert world.notifications.handle(world.signed(params)) == ACKNOWLEDGED
    # Then the grant stays dead
    assert world.store.get_token(MERCHANT_APP).status == NEEDS_REAUTH
    assert world.events.entries == []


def test_a_cancellation_revokes_and_is_announced(world: World) -> None:
    # Given a live token of shop-1
    seed(world)
    world.clock.advance(1)
    # When the merchant cancels the authorization
    answer = world.notifications.handle(world.signed(world.cancellation(MERCHANT_APP)))
    # Then it is revoked, out of the schedule, no longer handed out, and announced once
    assert answer == ACKNOWLEDGED
    record = world.store.get_token(MERCHANT_APP)
    assert (record.status, record.due_at) == (REVOKED, None)
    with pytest.raises(TokenUnusable):
        read_current_token(world.store, MERCHANT_APP)
    [(kind, detail)] = world.events.published()
    assert kind == events.REVOKED
    assert (detail["auth_app_id"], detail["isv_ref"], detail["reason"]) == (
        MERCHANT_APP,
        "shop-1",
        "cancelled",
    )


def test_a_duplicate_cancellation_does_not_revoke_a_later_authorization(world: World) -> None:
    # Given a cancellation handled, and then the merchant authorizing again
    seed(world)
    cancellation = world.signed(world.cancellation(MERCHANT_APP, notify_id="c-1"))
    world.notifications.handle(cancellation)
    world.clock.advance(60)
    seed(world)
    # When Alipay delivers the same cancellation again
    assert world.notifications.handle(cancellation) == ACKNOWLEDGED
    # Then the new authorization is untouched
    assert world.store.get_token(MERCHANT_APP).status == ACTIVE
    assert world.events.entries == []


def test_a_cancellation_of_an_unknown_app_is_acknowledged_quietly(world: World) -> None:
    # Given nothing stored  When a cancellation comes  Then it is acknowledged; nothing stored or sent
    assert world.notifications.handle(world.signed(world.cancellation(MERCHANT_APP))) == ACKNOWLEDGED
    assert world.store.find_token(MERCHANT_APP) is None
    assert world.events.entries == []


def test_cancellations_without_notify_id_of_two_apps_of_one_merchant_both_count(world: World) -> None:
    # Given two apps of the same merchant, authorized
    seed(world, MERCHANT_APP)
    seed(world, OTHER_APP)
    # When the merchant cancels both, in messages that carry no notify_id
    refused = set()
    for app in (MERCHANT_APP, OTHER_APP):
        try:
            world.notifications.handle(world.signed(world.cancellation(app, with_notify_id=False)))
        except InvalidRequest:
            refused.add(app)  # refusing what it cannot de-duplicate is fine: Alipay sends it again
    # Then neither is silently dropped: each cancellation acknowledged was applied
    for app in (MERCHANT_APP, OTHER_APP):
        assert app in refused or world.store.get_token(app).status == REVOKED, app


def _trade_message(world: World, notify_id: str = "x-1") -> dict[str, str]:
    return world.signed(
        {
            "notify_id": notify_id,
            "notify_type": "trade_status_sync",
            "app_id": ISV,
            "notify_time": "2025-11-25 00:00:00",
            "biz_content": json.dumps({"out_trade_no": "T-1", "trade_status": "TRADE_SUCCESS"}),
        }
    )


def test_other_messages_are_passed_on_to_the_bus_as_they_came(world: World) -> None:
    # Given a signed notification of another of the ISV's subscriptions
    params = _trade_message(world)
    # When it is handled  Then it is acknowledged, remembered, and on the bus, nothing stored
    assert world.notifications.handle(params) == ACKNOWLEDGED
    assert world.flow.notification_seen("x-1")
    assert world.items("APP#") == []
    [(kind, detail)] = world.events.published()
    assert kind == events.MESSAGE_RECEIVED
    assert (detail["method"], detail["isv_app_id"], detail["notify_id"]) == ("trade_status_sync", ISV, "x-1")
    assert detail["biz_content"] == {"out_trade_no": "T-1", "trade_status": "TRADE_SUCCESS"}
    # And Alipay's retry of it is not passed on twice
    assert world.notifications.handle(params) == ACKNOWLEDGED
    assert len(world.events.entries) == 1


def test_a_message_the_bus_refuses_is_not_acknowledged_so_alipay_sends_it_again(world: World) -> None:
    world.events.down = True
    with pytest.raises(StorageError):
        world.notifications.handle(_trade_message(world))
    assert not world.flow.notification_seen("x-1")
    world.events.down = False
    assert world.notifications.handle(_trade_message(world)) == ACKNOWLEDGED
    assert world.events.types() == [events.MESSAGE_RECEIVED]


def test_a_cancellation_older_than_the_stored_authorization_changes_nothing(world: World) -> None:
    # Given a cancellation written a minute ago, and the merchant authorizing again since
    seed(world)
    late = world.cancellation(MERCHANT_APP, notify_id="c-late")
    world.clock.advance(60)
    seed(world)
    token = current_token(world)
    # When it arrives now (a late delivery, or one replayed under another notify_id)
    assert world.notifications.handle(world.signed(late)) == ACKNOWLEDGED
    # Then the newer authorization stays live and nothing is announced
    assert world.store.get_token(MERCHANT_APP).status == ACTIVE
    assert read_current_token(world.store, MERCHANT_APP).app_auth_token == token
    assert world.events.entries == []


def test_a_cancellation_without_its_time_is_refused_and_revokes_nothing(world: World) -> None:
    seed(world)
    untimed = {k: v for k, v in world.cancellation(MERCHANT_APP).items() if k != "utc_timestamp"}
    with pytest.raises(InvalidRequest) as refused:
        world.notifications.handle(world.signed(untimed))
    assert refused.value.code == "malformed-notification"
    assert world.store.get_token(MERCHANT_APP).status == ACTIVE


Forgery = Callable[[World, dict[str, str]], dict[str, str]]
FORGERIES: dict[str, tuple[Forgery, str]] = {
    "signed by another key": (
        lambda w, p: sign_notification(p, new_rsa_key()),
        "invalid-notification-signature",
    ),
    "changed after signing": (
        lambda w, p: {**w.signed(p), "biz_content": p["biz_content"].replace(MERCHANT_APP, OTHER_APP)},
        "invalid-notification-signature",
    ),
    "not RSA2": (lambda w, p: {**w.signed(p), "sign_type": "RSA"}, "invalid-notification-signature"),
    "unsigned": (lambda w, p: p, "unsigned-notification"),
    "for another ISV app": (lambda w, p: w.signed({**p, "app_id": "2021999999999999"}), "wrong-app-id"),
    "without notify_id": (
        lambda w, p: w.signed({k: v for k, v in p.items() if k != "notify_id"}),
        "missing-notify-id",
    ),
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_notification_that_fails_verification_is_refused_and_leaves_no_trace(
    world: World, forgery: str
) -> None:
    # Given an authorization notification tampered with in one way
    forge, code = FORGERIES[forgery]
    params = forge(world, world.authorized_notification(world.alipay.issue(MERCHANT_APP), notify_id="n-9"))
    # When it is handled  Then it is refused with a clear code, and nothing is stored, remembered or sent
    with pytest.raises(InvalidRequest) as refused:
        world.notifications.handle(params)
    assert refused.value.code == code
    assert world.items("APP#") == [] and world.items("NOTIFY#") == []
    assert world.events.entries == []
