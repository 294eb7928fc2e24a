"""The emulator's merchant consent page and its notifications to the ISV's app gateway, over HTTP.

A tiny receiver on 127.0.0.1 plays the ISV's app gateway: it records every form it is sent and
answers from a script (``success`` by default), so retries and duplicates can be watched.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
import requests

from alipay_v3 import TOKEN_PATH, AlipayApiError
from alipay_v3.notify import verify_notification
from sandbox.emulator.consent import CONSENT_ACTION_PATH, CONSENT_PAGE_PATH

pytestmark = pytest.mark.integration

CALLBACK = "https://isv.example/alipay/callback"
MERCHANT = "2021004200000042"


@dataclass
class Receiver:
    """The ISV's app gateway: records (headers, form) per POST, answers (status, body) from ``script``."""

    url: str
    received: list[tuple[dict[str, str], dict[str, str]]] = field(default_factory=list)
    script: deque[tuple[int, str]] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, headers: dict[str, str], form: dict[str, str]) -> tuple[int, str]:
        with self.lock:
            self.received.append((headers, form))
            return self.script.popleft() if self.script else (200, "success")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, text = holder[0].answer(headers, form)
            data = text.encode()
            self.send_response(status)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder.append(Receiver(f"http://127.0.0.1:{server.server_address[1]}/notify"))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def consent_page(http, emulator, **params: str) -> requests.Response:
    return http.get(emulator.base_url + CONSENT_PAGE_PATH, params=params, timeout=10)


def submit(http, emulator, method: str = "POST", **fields: str) -> requests.Response:
    url = emulator.base_url + CONSENT_ACTION_PATH
    if method == "GET":
        return http.get(url, params=fields, allow_redirects=False, timeout=10)
    return http.post(url, data=fields, allow_redirects=False, timeout=10)


def authorize(http, emulator, creds, **extra: str) -> dict[str, str]:
    """Consent as a merchant would; returns the callback query Alipay redirects to."""
    fields = {"app_id": creds.app_id, "redirect_uri": CALLBACK, "decision": "authorize", **extra}
    response = submit(http, emulator, **fields)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(CALLBACK + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def query_status(tokens, app_auth_token: str) -> str:
    data = tokens.client.call("GET", TOKEN_PATH + "/query", query={"app_auth_token": app_auth_token}).data
    return str(data["status"])


# --- the page ---------------------------------------------------------------------------------


def test_consent_page_names_the_app_and_offers_both_choices(http, emulator, creds):
    response = consent_page(http, emulator, app_id=creds.app_id, redirect_uri=CALLBACK, state='v1.a"<b>')

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    page = response.text
    assert 'data-outcome="consent"' in page and creds.app_id in page
    assert "同意授权 · Authorize" in page and "拒绝 · Decline" in page
    assert f'action="{CONSENT_ACTION_PATH}"' in page and 'id="merchant_app_id"' in page
    # the state goes back as given, escaped on the page
    assert 'value="v1.a&quot;&lt;b&gt;"' in page and '"<b>' not in page
    assert "src=" not in page and "<script" not in page  # no external assets, no script
    assert emulator.requests_received == 0  # a page for a person is not an API call


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"app_id": "2021999999999999", "redirect_uri": CALLBACK}, 400),
        ({"redirect_uri": CALLBACK}, 400),
        ({"app_id": "APP", "redirect_uri": "javascript:alert(1)"}, 400),
        ({"app_id": "APP"}, 400),
    ],
    ids=["unknown-app", "no-app-id", "script-redirect", "no-redirect"],
)
def test_bad_consent_links_get_an_error_page(http, emulator, creds, params, status):
    params = {k: (creds.app_id if v == "APP" else v) for k, v in params.items()}
    response = consent_page(http, emulator, **params)
    assert response.status_code == status
    assert 'data-outcome="error"' in response.text and "无法完成授权" in response.text
    submitted = submit(http, emulator, **params, decision="authorize")
    assert submitted.status_code == status and "location" not in submitted.headers


def test_authorize_redirects_with_an_exchangeable_code(http, emulator, creds, tokens):
    query = authorize(http, emulator, creds, state="s-123", merchant_app_id=MERCHANT)

    assert set(query) == {"app_id", "source", "app_auth_code", "state"}
    assert (query["app_id"], query["source"], query["state"]) == (creds.app_id, "alipay_app_auth", "s-123")
    grant = tokens.exchange_code(query["app_auth_code"])
    assert grant.primary.auth_app_id == MERCHANT
    assert emulator.token_valid(grant.primary.app_auth_token)
    with pytest.raises(AlipayApiError) as spent:
        tokens.exchange_code(query["app_auth_code"])
    assert spent.value.code == "AUTH_CODE_NOT_VALID"


def test_get_submission_without_state_keeps_the_redirect_query(http, emulator, creds, tokens):
    redirect = CALLBACK + "?tenant=7"
    response = submit(http, emulator, "GET", app_id=creds.app_id, redirect_uri=redirect)

    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(redirect + "&app_id=")
    query = parse_qs(urlsplit(location).query)
    assert query["tenant"] == ["7"] and "state" not in query
    assert len(tokens.exchange_code(query["app_auth_code"][0]).tokens) == 1


def test_several_merchant_apps_make_a_batch_authorization(http, emulator, creds, tokens):
    ids = ["2021000000000101", "2021000000000102"]
    query = authorize(http, emulator, creds, merchant_app_id=" , ".join(ids))
    grant = tokens.exchange_code(query["app_auth_code"])
    assert [t.auth_app_id for t in grant.tokens] == ids


def test_a_malformed_merchant_app_id_is_refused(http, emulator, creds):
    response = submit(
        http,
        emulator,
        app_id=creds.app_id,
        redirect_uri=CALLBACK,
        merchant_app_id="12345",
        decision="authorize",
    )
    assert response.status_code == 400 and "16" in response.text and "location" not in response.headers


def test_decline_shows_a_page_and_issues_nothing(http, emulator, creds, receiver):
    emulator.set_notify_url(creds.app_id, receiver.url)
    response = submit(http, emulator, app_id=creds.app_id, redirect_uri=CALLBACK, decision="decline")

    assert response.status_code == 200 and "location" not in response.headers
    assert 'data-outcome="declined"' in response.text and "您已拒绝授权" in response.text
    assert emulator.wait_for_notifications(5)
    assert emulator.notifications == [] and receiver.received == []


def test_a_registered_redirect_uri_must_match(http, emulator, creds):
    emulator.set_redirect_uri(creds.app_id, CALLBACK)

    other = consent_page(http, emulator, app_id=creds.app_id, redirect_uri="https://evil.example/cb")
    assert other.status_code == 400 and "授权回调地址" in other.text
    assert (
        submit(http, emulator, app_id=creds.app_id, redirect_uri="https://evil.example/cb").status_code == 400
    )
    # the query is not part of the comparison (the ISV may add its own parameters)
    assert (
        consent_page(http, emulator, app_id=creds.app_id, redirect_uri=CALLBACK + "?x=1").status_code == 200
    )
    assert "app_auth_code" in authorize(http, emulator, creds)

    emulator.set_redirect_uri(creds.app_id, None)
    assert consent_page(http, emulator, app_id=creds.app_id, redirect_uri="https://evil.example/cb").ok


def test_the_consent_page_takes_no_faults(http, emulator, creds):
    from sandbox.emulator import Fault

    emulator.inject(Fault.HTTP_500)
    assert consent_page(http, emulator, app_id=creds.app_id, redirect_uri=CALLBACK).status_code == 200
    assert emulator.requests_received == 0


# --- notifications ----------------------------------------------------------------------------


def test_consent_notification_is_signed_and_carries_the_exchanged_pair(
    http, emulator, creds, tokens, receiver
):
    emulator.set_notify_url(creds.app_id, receiver.url)
    query = authorize(http, emulator, creds, merchant_app_id=MERCHANT)
    assert emulator.wait_for_notifications(10)

    [(headers, form)] = receiver.received
    assert headers["content-type"] == "application/x-www-form-urlencoded; charset=utf-8"
    assert verify_notification(form, creds.alipay_key.public_key())
    assert not verify_notification({**form, "status": "cancel_auth"}, creds.alipay_key.public_key())
    assert {k: form[k] for k in ("notify_type", "status", "charset", "version", "sign_type", "app_id")} == {
        "notify_type": "open_app_auth_notify",
        "status": "execute_auth",
        "charset": "utf-8",
        "version": "1.0",
        "sign_type": "RSA2",
        "app_id": creds.app_id,
    }
    assert len(form["notify_time"]) == 19 and form["notify_time"][10] == " "
    biz = json.loads(form["biz_content"])
    assert set(biz["notify_context"]) == {"trigger", "trigger_context"}
    assert biz["notify_context"]["trigger_context"]["out_biz_no"]
    detail = biz["detail"]
    assert (detail["auth_app_id"], detail["app_id"], detail["app_auth_code"]) == (
        MERCHANT,
        creds.app_id,
        query["app_auth_code"],
    )
    # the tokens in the notification work now, and the exchange hands out the very same pair
    assert query_status(tokens, detail["app_auth_token"]) == "valid"
    token = tokens.exchange_code(query["app_auth_code"]).primary
    assert (token.app_auth_token, token.app_refresh_token, token.user_id) == (
        detail["app_auth_token"],
        detail["app_refresh_token"],
        detail["user_id"],
    )
    assert (token.expires_in, token.re_expires_in) == (detail["expires_in"], detail["re_expires_in"])
    [delivery] = emulator.notifications
    params, status, body = delivery
    assert (params, status, body) == (form, 200, "success")


def test_batch_consent_sends_one_notification_per_merchant_app(http, emulator, creds, receiver):
    emulator.set_notify_url(creds.app_id, receiver.url)
    ids = ["2021000000000201", "2021000000000202"]
    authorize(http, emulator, creds, merchant_app_id=",".join(ids))
    assert emulator.wait_for_notifications(10)
    details = [json.loads(form["biz_content"])["detail"] for _, form in receiver.received]
    assert [d["auth_app_id"] for d in details] == ids
    assert len({form["notify_id"] for _, form in receiver.received}) == 2


def test_notifications_are_retried_until_success(make_emulator, creds, receiver):
    emulator = make_emulator(notify_backoff_seconds=0.01)
    emulator.set_notify_url(creds.app_id, receiver.url)
    receiver.script.extend([(500, "error"), (200, "fail")])
    with requests.Session() as http:
        authorize(http, emulator, creds)
    assert emulator.wait_for_notifications(10)

    answers = [(status, body) for _, status, body in emulator.notifications]
    assert answers == [(500, "error"), (200, "fail"), (200, "success")]
    assert len({params["notify_id"] for params, _, _ in emulator.notifications}) == 1
    assert len(receiver.received) == 3


def test_retries_are_bounded(make_emulator, creds, receiver):
    emulator = make_emulator(notify_attempts=3, notify_backoff_seconds=0.01)
    emulator.set_notify_url(creds.app_id, receiver.url)
    receiver.script.extend([(503, "busy")] * 10)
    with requests.Session() as http:
        authorize(http, emulator, creds)
    assert emulator.wait_for_notifications(10)
    assert [status for _, status, _ in emulator.notifications] == [503, 503, 503]
    assert len(receiver.received) == 3


def test_an_unreachable_gateway_is_recorded_without_a_status(make_emulator, creds, caplog):
    emulator = make_emulator(notify_attempts=2, notify_backoff_seconds=0.01)
    emulator.set_notify_url(creds.app_id, "http://127.0.0.1:9/notify")  # discard port: nothing listens
    caplog.set_level(logging.DEBUG)
    with requests.Session() as http:
        authorize(http, emulator, creds)
    assert emulator.wait_for_notifications(20)

    deliveries = emulator.notifications
    assert [status for _, status, _ in deliveries] == [None, None]
    token = json.loads(deliveries[0].params["biz_content"])["detail"]["app_auth_token"]
    assert token not in caplog.text and "notification" in caplog.text  # said, without the token


def test_duplicates_repeat_the_same_notify_id(http, emulator, creds, receiver):
    emulator.set_notify_url(creds.app_id, receiver.url)
    emulator.notify_duplicates = 2
    authorize(http, emulator, creds)
    assert emulator.wait_for_notifications(10)
    forms = [form for _, form in receiver.received]
    assert len(forms) == 3 and all(form == forms[0] for form in forms)


def test_notify_on_consent_can_be_switched_off(http, emulator, creds, receiver):
    emulator.set_notify_url(creds.app_id, receiver.url)
    emulator.notify_on_consent = False
    authorize(http, emulator, creds)
    assert emulator.wait_for_notifications(5)
    assert receiver.received == [] and emulator.notifications == []


def test_codes_issued_directly_are_not_announced(emulator, creds, receiver, tokens):
    emulator.set_notify_url(creds.app_id, receiver.url)
    tokens.exchange_code(emulator.issue_code(creds.app_id))
    assert emulator.wait_for_notifications(5)
    assert receiver.received == []


def test_revoke_sends_a_signed_cancellation(http, emulator, creds, tokens, receiver):
    emulator.set_notify_url(creds.app_id, receiver.url)
    query = authorize(http, emulator, creds, merchant_app_id=MERCHANT)
    token = tokens.exchange_code(query["app_auth_code"]).primary
    assert emulator.wait_for_notifications(10)

    assert emulator.revoke(creds.app_id, MERCHANT)
    assert emulator.wait_for_notifications(10)

    assert len(receiver.received) == 2
    _, form = receiver.received[1]
    assert verify_notification(form, creds.alipay_key.public_key())
    assert {k: form[k] for k in ("msg_method", "msg_type", "version", "charset", "app_id", "msg_app_id")} == {
        "msg_method": "alipay.open.auth.appauth.cancelled",
        "msg_type": "sys",
        "version": "1.1",
        "charset": "utf-8",
        "app_id": creds.app_id,
        "msg_app_id": MERCHANT,
    }
    assert form["utc_timestamp"].isdigit() and len(form["utc_timestamp"]) == 13
    biz = json.loads(form["biz_content"])
    assert (biz["auth_app_id"], biz["user_id"], biz["app_id"]) == (MERCHANT, token.user_id, creds.app_id)
    assert form["msg_uid"] == token.user_id and len(biz["cancel_time"]) == 19
    assert token.app_auth_token not in form["biz_content"]
    assert query_status(tokens, token.app_auth_token) == "invalid"
    # revoking again changes nothing and says nothing
    assert not emulator.revoke(creds.app_id, MERCHANT)
    assert emulator.wait_for_notifications(5) and len(receiver.received) == 2
