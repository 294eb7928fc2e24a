"""The merchant's authorization end to end, over the real wire.

DynamoDB Local and moto for AWS, the emulator for Alipay, and the real callback handler behind an
HTTP front that speaks API Gateway's payload 2.0. Given/When/Then in each test's comments.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from botocore.exceptions import EndpointConnectionError

from app_auth.container import build_container, set_container
from sandbox.emulator import Fault
from tests.integration.wire_faults import error_response

pytestmark = pytest.mark.integration


def test_merchant_authorizes_and_the_token_is_stored_encrypted(stack):
    # Given a link the ISV created for its customer
    link = stack.create_link("customer-42")
    # When the merchant consents and Alipay redirects back
    response = stack.callback(stack.consent(link))
    # Then the merchant sees the success page
    assert response.status_code == 200
    assert 'data-outcome="authorized"' in response.text
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    # and the token can be read by the ISV's services, and is live at Alipay
    [token_item] = [i for i in stack.table_items() if i["sk"]["S"] == "TOKEN"]
    auth_app_id = token_item["auth_app_id"]["S"]
    read = stack.http.get(f"{stack.url}/tokens/{auth_app_id}", timeout=10)
    assert read.status_code == 200
    body = read.json()
    assert body["isv_ref"] == "customer-42" and "app_refresh_token" not in body
    assert stack.emulator.token_valid(body["app_auth_token"])
    # and at rest the tokens are ciphertext only
    assert body["app_auth_token"].encode() not in repr(stack.table_items()).encode()
    assert set(token_item["current"]["M"]) == {"v", "edk", "s", "n", "ct"}
    # and one event says so, without a secret in it
    [event] = stack.published_events()
    assert event["detail-type"] == "Authorization Granted"
    assert event["detail"]["auth_app_id"] == auth_app_id and event["detail"]["isv_ref"] == "customer-42"
    assert body["app_auth_token"] not in str(event)


def test_reload_shows_the_same_result_without_a_second_exchange(stack):
    params = stack.consent(stack.create_link())
    first = stack.callback(params)
    calls = stack.emulator.requests_received
    again = stack.callback(params)
    assert first.status_code == again.status_code == 200
    assert 'data-outcome="authorized"' in again.text
    assert stack.emulator.requests_received == calls


def test_concurrent_duplicates_exchange_once(stack):
    params = stack.consent(stack.create_link())
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: stack.callback(params), range(8)))
    assert {r.status_code for r in responses} <= {200, 202}
    assert any(r.status_code == 200 for r in responses)
    assert stack.emulator.token_calls == 1
    assert len([i for i in stack.table_items() if i["sk"]["S"] == "TOKEN"]) == 1


def test_batch_authorization_stores_every_app(stack):
    link = stack.create_link("group-7")
    response = stack.callback(stack.consent(link, merchant_app_ids=["2021000000000101", "2021000000000102"]))
    assert response.status_code == 200
    stored = {
        i["auth_app_id"]["S"]: i.get("isv_ref", {}).get("S")
        for i in stack.table_items()
        if i["sk"]["S"] == "TOKEN"
    }
    assert stored == {"2021000000000101": "group-7", "2021000000000102": "group-7"}


@pytest.mark.parametrize(
    ("change", "status", "outcome"),
    [
        ({"app_id": "2021999999999999"}, 400, "invalid"),
        ({"source": "somewhere_else"}, 400, "invalid"),
        ({"app_auth_code": "x" * 8}, 400, "invalid"),
        ({"app_auth_code": None}, 400, "invalid"),
        ({"state": "v1.forged.9999999999.AAAAAAAAAAAAAAAAAAAAAA"}, 400, "state_rejected"),
        ({"state": None}, 400, "state_rejected"),
    ],
)
def test_bad_callbacks_get_a_clear_page_and_never_reach_alipay(stack, change, status, outcome):
    params = {k: v for k, v in {**stack.consent(stack.create_link()), **change}.items() if v is not None}
    response = stack.callback(params)
    assert response.status_code == status
    assert f'data-outcome="{outcome}"' in response.text
    assert stack.emulator.requests_received == 0
    assert not [i for i in stack.table_items() if i["pk"]["S"].startswith("CODE#")]


def test_a_state_cannot_authorize_a_second_code(stack):
    link = stack.create_link()
    first = stack.consent(link)
    assert stack.callback(first).status_code == 200
    second = {**first, "app_auth_code": stack.emulator.issue_code(stack.creds.app_id)}
    response = stack.callback(second)
    assert response.status_code == 400 and 'data-outcome="state_rejected"' in response.text
    assert stack.emulator.token_calls == 1


def test_a_spent_code_gets_a_page_with_a_fresh_link(stack):
    params = stack.consent(stack.create_link("c-1"))
    # The code is spent elsewhere first (e.g. by hand with alipay-v3 call)
    stack.container.token_api().exchange_code(params["app_auth_code"])
    response = stack.callback(params)
    assert response.status_code == 410 and 'data-outcome="code_spent"' in response.text
    assert "重新授权" in response.text and "state=v1." in response.text


def test_alipay_failure_after_processing_is_reported_honestly(stack):
    params = stack.consent(stack.create_link())
    stack.emulator.inject(Fault.HTTP_502_AFTER_PROCESSING)
    response = stack.callback(params)
    assert response.status_code == 502 and 'data-outcome="unconfirmed"' in response.text
    again = stack.callback(params)  # a reload does not exchange the (spent) code again
    assert 'data-outcome="unconfirmed"' in again.text and stack.emulator.requests_received == 1


@pytest.mark.parametrize(
    ("fault", "delay"),
    [
        (Fault.HTTP_500, 0.0),
        (Fault.DROP_CONNECTION, 0.0),
        (Fault.DROP_AFTER_PROCESSING, 0.0),
        (Fault.LATENCY, 1.5),  # longer than the read timeout set below
    ],
)
def test_an_unanswered_exchange_is_never_retried_and_offers_a_fresh_link(stack, fault, delay):
    # Given Alipay fails the exchange in a way that may or may not have spent the code
    stack.container.token_api().client.timeout = (2.0, 0.5)
    params = stack.consent(stack.create_link("c-9"))
    stack.emulator.inject(fault, delay=delay)

    # When the merchant comes back
    response = stack.callback(params)

    # Then a 502 page for a person, with a fresh link; the code was sent once (a retry could
    # spend it twice); nothing stored
    assert response.status_code == 502 and 'data-outcome="unconfirmed"' in response.text
    assert "state=v1." in response.text and "Traceback" not in response.text
    assert stack.emulator.requests_received == 1
    assert not [i for i in stack.table_items() if i["sk"]["S"] == "TOKEN"]


def test_tampered_response_is_never_stored(stack):
    params = stack.consent(stack.create_link())
    stack.emulator.inject(Fault.TAMPER_BODY)
    response = stack.callback(params)
    assert response.status_code == 502
    assert not [i for i in stack.table_items() if i["sk"]["S"] == "TOKEN"]


def _fail_token_writes(dynamodb, how):
    """DynamoDB itself fails every write of a token item, at the HTTP layer of the real client.

    ``500``: the service answers InternalServerError (botocore retries, then gives up);
    ``drop``: the connection fails before an answer. Other items (claims, states) still go through.
    """
    failed = []

    def before_send(request, **_):
        if b'"sk": {"S": "TOKEN"}' not in request.body and b'"sk":{"S":"TOKEN"}' not in request.body:
            return None
        failed.append(request.headers["X-Amz-Target"].decode())
        if how == "drop":
            raise EndpointConnectionError(endpoint_url=request.url)
        return error_response(
            request, "dynamodb", 500, "com.amazonaws.dynamodb.v20120810#InternalServerError"
        )

    dynamodb.meta.events.register("before-send.dynamodb.PutItem", before_send)
    return failed


@pytest.mark.parametrize("how", ["500", "drop"])
def test_storage_failure_after_exchange_parks_the_result(stack, how):
    # Given DynamoDB fails every write of the token (the claim was written before the exchange)
    failed = _fail_token_writes(stack.container.clients["dynamodb"], how)
    params = stack.consent(stack.create_link("shop-7"))

    # When the merchant comes back from a successful consent
    response = stack.callback(params)

    # Then the merchant is told it is being completed, Alipay was called once,
    assert response.status_code == 202 and 'data-outcome="parked"' in response.text
    assert failed and stack.emulator.requests_received == 1
    # no token item exists, the claim says parked, and the sealed result waits on the replay queue
    items = stack.table_items()
    assert not [i for i in items if i["sk"]["S"] == "TOKEN"]
    [claim] = [i for i in items if i["pk"]["S"].startswith("CODE#")]
    assert claim["status"]["S"] == "parked"
    sqs = stack.aws.client("sqs")
    [message] = sqs.receive_message(
        QueueUrl=stack.container.settings.replay_queue_url, MaxNumberOfMessages=10
    )["Messages"]
    parked = json.loads(message["Body"])
    assert parked["kind"] == "authorization" and len(parked["auth_app_ids"]) == 1
    assert params["app_auth_code"] not in message["Body"]
    issued = stack.emulator.authority.current_tokens(stack.creds.app_id, parked["auth_app_ids"][0])
    assert issued and all(secret not in message["Body"] for secret in issued)

    # And a reload answers from the claim, without a second exchange
    again = stack.callback(params)
    assert again.status_code == 202 and stack.emulator.requests_received == 1


def test_unknown_routes_and_tokens(stack):
    assert stack.http.get(f"{stack.url}/nope", timeout=10).status_code == 404
    missing = stack.http.get(f"{stack.url}/tokens/2021000000000555", timeout=10)
    assert missing.status_code == 404 and missing.json()["code"] == "not-found"


def test_authorize_route_redirects_to_the_consent_page_once(stack):
    link = stack.create_link()
    state = link.split("state=")[1]
    response = stack.http.get(
        f"{stack.url}/authorize", params={"state": state}, allow_redirects=False, timeout=10
    )
    assert response.status_code == 302 and "appToAppAuth.htm" in response.headers["Location"]
    bad = stack.http.get(
        f"{stack.url}/authorize", params={"state": "nope"}, allow_redirects=False, timeout=10
    )
    assert bad.status_code == 400


def test_a_default_deploy_without_a_callback_url_serves_its_links(stack):
    # Given the template's default settings: CallbackUrl empty, so no CALLBACK_URL
    settings = dataclasses.replace(stack.container.settings, callback_url=None)
    set_container(build_container(settings, client=stack.aws.client, sleep=lambda _: None))
    own_callback = f"https://{urlsplit(stack.url).netloc}/callback"

    # When the ISV creates a link and the merchant opens its /authorize form
    link = stack.create_link("shop-1")
    state = parse_qs(urlsplit(link).query)["state"][0]
    opened = stack.http.get(
        f"{stack.url}/authorize", params={"state": state}, allow_redirects=False, timeout=10
    )

    # Then the merchant goes on to Alipay, to come back to this API's own /callback
    assert opened.status_code == 302
    assert parse_qs(urlsplit(opened.headers["Location"]).query)["redirect_uri"] == [own_callback]

    # And a failed callback's page offers a fresh link that comes back there too
    failed = stack.callback({**stack.consent(link), "app_auth_code": "P" * 32})
    assert failed.status_code == 410 and 'data-outcome="code_spent"' in failed.text
    assert quote(own_callback, safe="") in failed.text and "state=v1." in failed.text
