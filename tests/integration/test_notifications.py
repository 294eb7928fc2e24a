"""POST /notify: Alipay's authorization and cancellation notifications, signed with the v2 rule."""

from __future__ import annotations

import json
import time

import pytest

from alipay_v3 import sign_notification
from sandbox.credentials import new_rsa_key

pytestmark = pytest.mark.integration


def authorized_notification(
    stack,
    *,
    notify_id="n-1",
    auth_app_id="2021000000000301",
    token="202511BBfeedfacefeedfacefeedfacefeedface",
):
    detail = {
        "app_auth_token": token,
        "app_refresh_token": "202511BBb0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
        "user_id": "2088000000000301",
        "auth_app_id": auth_app_id,
        "app_id": stack.creds.app_id,
        "expires_in": "31536000",
        "re_expires_in": "32140800",
        "auth_time": "2026-11-25 10:00:00",
    }
    return {
        "notify_id": notify_id,
        "notify_type": "open_app_auth_notify",
        "notify_time": "2099-11-25 10:00:01",
        "charset": "utf-8",
        "version": "1.0",
        "app_id": stack.creds.app_id,
        "status": "execute_auth",
        "biz_content": json.dumps({"notify_context": {"trigger": "AUTH"}, "detail": detail}),
    }


def cancellation(stack, auth_app_id, notify_id="c-1", utc_timestamp="4102444800000"):
    return {
        "notify_id": notify_id,
        "utc_timestamp": utc_timestamp,
        "msg_method": "alipay.open.auth.appauth.cancelled",
        "app_id": stack.creds.app_id,
        "msg_type": "sys",
        "version": "1.1",
        "charset": "utf-8",
        "biz_content": json.dumps({"auth_app_id": auth_app_id, "user_id": "2088000000000301"}),
    }


def post(stack, params, key=None):
    signed = sign_notification(params, key or stack.creds.alipay_key)
    return stack.http.post(f"{stack.url}/notify", data=signed, timeout=10)


def test_notification_fills_in_an_authorization_whose_callback_never_came(stack):
    response = post(stack, authorized_notification(stack))
    assert (response.status_code, response.text) == (200, "success")
    read = stack.http.get(f"{stack.url}/tokens/2021000000000301", timeout=10).json()
    assert read["app_auth_token"] == "202511BBfeedfacefeedfacefeedfacefeedface"
    [event] = stack.published_events()
    assert event["detail"]["via"] == "notification" and "202511BB" not in json.dumps(event)


def test_duplicates_are_answered_success_and_handled_once(stack):
    params = authorized_notification(stack)
    assert post(stack, params).text == "success"
    assert post(stack, params).text == "success"
    assert len(stack.published_events()) == 1


def test_a_notification_never_overwrites_a_live_token(stack):
    link = stack.create_link("c-9")
    assert stack.callback(stack.consent(link, merchant_app_ids=["2021000000000301"])).status_code == 200
    live = stack.http.get(f"{stack.url}/tokens/2021000000000301", timeout=10).json()["app_auth_token"]
    assert post(stack, authorized_notification(stack, notify_id="late")).text == "success"
    after = stack.http.get(f"{stack.url}/tokens/2021000000000301", timeout=10).json()
    assert after["app_auth_token"] == live and after["isv_ref"] == "c-9"


def test_cancellation_revokes_and_emits_once(stack):
    assert post(stack, authorized_notification(stack)).text == "success"
    stack.published_events()
    assert post(stack, cancellation(stack, "2021000000000301")).text == "success"
    read = stack.http.get(f"{stack.url}/tokens/2021000000000301", timeout=10)
    assert read.status_code == 409 and read.json()["code"] == "token-unusable"
    [event] = stack.published_events()
    assert event["detail-type"] == "Authorization Revoked"
    # a late retry of the original authorization notification does not bring the token back
    assert post(stack, authorized_notification(stack, notify_id="retry-of-old")).text == "success"
    assert stack.http.get(f"{stack.url}/tokens/2021000000000301", timeout=10).status_code == 409


def test_a_cancellation_older_than_a_reauthorization_leaves_the_new_token_served(stack):
    # Given a merchant who cancelled a minute ago and has authorized again since, by link
    cancelled_at = str(int((time.time() - 60) * 1000))
    link = stack.create_link("c-10")
    assert stack.callback(stack.consent(link, merchant_app_ids=["2021000000000301"])).status_code == 200
    live = stack.http.get(f"{stack.url}/tokens/2021000000000301", timeout=10).json()["app_auth_token"]
    stack.published_events()
    # When the cancellation reaches us only now
    late = cancellation(stack, "2021000000000301", notify_id="late-c", utc_timestamp=cancelled_at)
    assert post(stack, late).text == "success"
    # Then the new authorization is still served, and nothing was announced
    read = stack.http.get(f"{stack.url}/tokens/2021000000000301", timeout=10)
    assert read.status_code == 200 and read.json()["app_auth_token"] == live
    assert stack.published_events() == []


def test_other_subscriptions_reach_the_isv_on_the_bus(stack):
    message = {
        "notify_id": "trade-1",
        "notify_type": "trade_status_sync",
        "notify_time": "2026-11-25 10:00:01",
        "app_id": stack.creds.app_id,
        "charset": "utf-8",
        "version": "1.0",
        "biz_content": json.dumps({"out_trade_no": "T-42", "trade_status": "TRADE_SUCCESS"}),
    }
    assert post(stack, message).text == "success"
    [event] = stack.published_events()
    assert event["detail-type"] == "Alipay Message Received"
    assert event["detail"]["method"] == "trade_status_sync"
    assert event["detail"]["biz_content"] == {"out_trade_no": "T-42", "trade_status": "TRADE_SUCCESS"}


@pytest.mark.parametrize(
    "forge",
    [
        lambda stack, p: post(stack, p, key=new_rsa_key()),  # signed by someone else
        lambda stack, p: stack.http.post(
            f"{stack.url}/notify",
            data={**sign_notification(p, stack.creds.alipay_key), "notify_id": "other"},
            timeout=10,
        ),
        lambda stack, p: stack.http.post(f"{stack.url}/notify", data=p, timeout=10),  # unsigned
        lambda stack, p: post(stack, {**p, "app_id": "2021999999999999"}),  # for another ISV app
        lambda stack, p: stack.http.post(f"{stack.url}/notify", data=b"%%%&&&==", timeout=10),
    ],
)
def test_forged_notifications_are_refused_and_leave_no_trace(stack, forge):
    response = forge(stack, authorized_notification(stack))
    assert response.status_code == 400 and response.text.startswith("fail")
    assert stack.table_items() == [] or all(
        not i["pk"]["S"].startswith(("APP#", "NOTIFY#")) for i in stack.table_items()
    )
    assert stack.published_events() == []


def test_an_invitations_number_is_kept_with_the_grant_and_announced(stack):
    params = authorized_notification(stack)
    biz = json.loads(params["biz_content"])
    biz["notify_context"] = {"trigger_context": {"out_biz_no": "INV-2026-42"}}
    assert post(stack, {**params, "biz_content": json.dumps(biz)}).text == "success"
    assert stack.container.store.get_token("2021000000000301").out_biz_no == "INV-2026-42"
    [event] = stack.published_events()
    assert event["detail"]["out_biz_no"] == "INV-2026-42" and event["detail"]["reauthorized"] is False


def _granted_at_alipay(stack, auth_app_id):
    """A grant made at Alipay (the emulator) and not reported to us: what a console invitation is."""
    code = stack.emulator.authority.issue_code(stack.creds.app_id, [auth_app_id])
    [issued] = stack.emulator.authority.exchange_code(stack.creds.app_id, code)
    return issued


def _notification_of(stack, issued, notify_id, auth_time):
    params = authorized_notification(stack, notify_id=notify_id, auth_app_id=issued.auth_app_id)
    biz = json.loads(params["biz_content"])
    biz["detail"].update(
        app_auth_token=issued.app_auth_token, app_refresh_token=issued.app_refresh_token, auth_time=auth_time
    )
    return {**params, "biz_content": json.dumps(biz)}


def _china_now():
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 8 * 3600))


def test_a_reauthorization_that_reaches_us_only_by_notification_is_served(stack):
    # Given a merchant authorized by link, then again from Alipay's console: only the notice comes
    link = stack.create_link("c-11")
    assert stack.callback(stack.consent(link, merchant_app_ids=["2021000000000311"])).status_code == 200
    stack.published_events()
    again = _granted_at_alipay(stack, "2021000000000311")
    # When the notification arrives (a moment later: inside the clocks' margin, Alipay's query decides)
    assert post(stack, _notification_of(stack, again, "re-1", _china_now())).text == "success"
    # Then GET /tokens serves the new token, for the same customer, announced as a re-authorization
    read = stack.http.get(f"{stack.url}/tokens/2021000000000311", timeout=10).json()
    assert read["app_auth_token"] == again.app_auth_token and read["isv_ref"] == "c-11"
    [event] = stack.published_events()
    assert (event["detail"]["via"], event["detail"]["reauthorized"]) == ("notification", True)


def test_an_old_notification_retried_after_a_rotation_changes_nothing(stack):
    # Given a grant known by its notification, then rotated by the refresher
    first = _granted_at_alipay(stack, "2021000000000312")
    notice = _notification_of(stack, first, "old-1", _china_now())
    assert post(stack, notice).text == "success"
    stack.container.refresher.refresh_one("2021000000000312", force=True)
    rotated = stack.http.get(f"{stack.url}/tokens/2021000000000312", timeout=10).json()["app_auth_token"]
    assert rotated != first.app_auth_token
    stack.published_events()
    # When Alipay retries that notification (another delivery of the same grant)
    assert post(stack, {**notice, "notify_id": "old-1-retry"}).text == "success"
    # Then the rotated token is still the one served, nothing announced
    assert (
        stack.http.get(f"{stack.url}/tokens/2021000000000312", timeout=10).json()["app_auth_token"] == rotated
    )
    assert stack.published_events() == []
