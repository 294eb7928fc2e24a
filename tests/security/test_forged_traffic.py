"""Forged traffic: states, notifications and gateway answers that someone other than us or Alipay made.

Each is refused and leaves no trace. What "no trace" means follows the callback's design
(app_auth/authorize.py): everything about the request is validated before anything is written,
so a refused state leaves no item at all and never reaches Alipay; a code is claimed (CODE# item)
*before* it is exchanged, so when Alipay's answer turns out to be forged the claim stays, marked
``failed`` with the reason - it is what answers a reload honestly - and no token item is written.
"""

from __future__ import annotations

import html
import json
import os
from urllib.parse import parse_qs, urlsplit

import pytest

from alipay_v3 import sign_notification
from app_auth.flow_store import code_hash
from app_auth.links import StateSigner
from app_auth.refresh import FAILED, RefreshService
from sandbox.credentials import DevCredentials, new_rsa_key
from sandbox.emulator import Fault
from tests.integration.test_notifications import authorized_notification, cancellation
from tests.security.conftest import traces

pytestmark = [pytest.mark.integration, pytest.mark.security]

OTHER_ISV_APP_ID = "2021999999999999"


def _state_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["state"][0]


def _signer(stack) -> StateSigner:
    return stack.container.authorization._signer()


def _items(stack, prefix: str) -> list[dict]:
    return [i for i in stack.table_items() if i["pk"]["S"].startswith(prefix)]


# The reason each refusal gives the merchant (the page shows the message, the log the code).
_REASONS = {
    "state-forged": "the state parameter's signature is wrong",
    "state-expired": "the authorization link has expired",
    "state-used": "this authorization link was already used or has expired",
    "state-missing": "this link carries no state",
    "wrong-app-id": "this authorization was made for another application",
    "wrong-source": "the callback does not come from an app authorization",
}


def _assert_refused_page(response, code: str) -> None:
    assert response.status_code == 400, response.text[:300]
    assert "Location" not in response.headers and "Traceback" not in response.text
    assert _REASONS[code] in html.unescape(response.text), (code, response.text[-400:])


# -- callbacks with forged, expired, replayed or cross-merchant state -------------------------------


def _forged_state(stack) -> str:
    """A well-formed state signed by another deployment's key."""
    return StateSigner(os.urandom(32)).issue(600).value


def _spliced_state(stack) -> str:
    """Link A's expiry and signature around link B's id: a state for one ref presented as another's."""
    a = _state_of(stack.create_link("merchant-a")).split(".")
    b = _state_of(stack.create_link("merchant-b")).split(".")
    return ".".join([a[0], b[1], a[2], a[3]])


def _extended_state(stack) -> str:
    """A genuine state whose expiry was pushed into the future by hand."""
    parts = _state_of(stack.create_link("merchant-a")).split(".")
    return ".".join([parts[0], parts[1], str(int(parts[2]) + 86400), parts[3]])


def _expired_state(stack) -> str:
    """Correctly signed by us, but its time is up."""
    return _signer(stack).issue(-60).value


def _unissued_state(stack) -> str:
    """Correctly signed by us (a leaked key, say) but never issued: no link stands behind it."""
    return _signer(stack).issue(600).value


FORGED_STATES = [
    (_forged_state, "state-forged"),
    (_spliced_state, "state-forged"),
    (_extended_state, "state-forged"),
    (_expired_state, "state-expired"),
    (_unissued_state, "state-used"),
]


def test_forged_or_expired_states_are_refused_without_a_call_or_a_trace(stack):
    codes = {}
    for number, (make_state, reason) in enumerate(FORGED_STATES):
        merchant_app_id = f"202100000000080{number}"
        code = stack.emulator.issue_code(stack.creds.app_id, merchant_app_ids=[merchant_app_id])
        params = {
            "app_id": stack.creds.app_id,
            "source": "alipay_app_auth",
            "app_auth_code": code,
            "state": make_state(stack),
        }

        _assert_refused_page(stack.callback(params), reason)

        assert stack.emulator.requests_received == 0, make_state.__name__
        assert traces(stack) == [], make_state.__name__  # no claim, no token, no notification record
        assert stack.published_events() == [], make_state.__name__
        codes[merchant_app_id] = params

    # The refusals burnt no merchant's code: with a genuine link each one still authorizes.
    for params in codes.values():
        genuine = {**params, "state": _state_of(stack.create_link("merchant-a"))}
        assert stack.callback(genuine).status_code == 200
    assert sorted(i["pk"]["S"] for i in _items(stack, "APP#")) == [f"APP#{m}" for m in sorted(codes)]


def test_a_used_state_cannot_carry_a_second_merchants_code(stack):
    link = stack.create_link("merchant-a")
    first = stack.consent(link, merchant_app_ids=["2021000000000811"])
    assert stack.callback(first).status_code == 200
    stack.published_events()

    # Another merchant's code presented with the state merchant A already used
    second = stack.emulator.issue_code(stack.creds.app_id, merchant_app_ids=["2021000000000812"])
    response = stack.callback({**first, "app_auth_code": second})

    _assert_refused_page(response, "state-used")
    assert stack.emulator.token_calls == 1  # only merchant A's exchange
    assert [i["pk"]["S"] for i in _items(stack, "APP#")] == ["APP#2021000000000811"]
    assert [i["pk"]["S"] for i in _items(stack, "CODE#")] == [f"CODE#{code_hash(first['app_auth_code'])}"]
    assert stack.published_events() == []
    # ... while merchant A's own reload is still answered from its record
    assert stack.callback(first).status_code == 200 and stack.emulator.token_calls == 1


def test_the_ref_follows_the_state_that_comes_back(stack):
    """Alipay does not bind a code to the state it was consented under: the ref is the one of the
    state the callback carries, and that state is then spent. So a link's state must stay with
    its merchant (links are single-use and expire; see the README's security model)."""
    link_a, link_b = stack.create_link("merchant-a"), stack.create_link("merchant-b")
    params = stack.consent(link_a, merchant_app_ids=["2021000000000821"])
    assert stack.callback({**params, "state": _state_of(link_b)}).status_code == 200
    [token] = _items(stack, "APP#")
    assert token["isv_ref"]["S"] == "merchant-b"
    # link B is spent (no second merchant can use it); link A was never presented and still works
    assert not stack.container.flow.state_usable(_signer(stack).verify(_state_of(link_b)))
    assert stack.container.flow.state_usable(_signer(stack).verify(_state_of(link_a)))
    other = stack.emulator.issue_code(stack.creds.app_id, merchant_app_ids=["2021000000000822"])
    assert stack.callback({**params, "app_auth_code": other, "state": _state_of(link_b)}).status_code == 400


def test_callbacks_for_another_app_or_without_state_are_refused(stack):
    for change, reason in [
        ({"app_id": OTHER_ISV_APP_ID}, "wrong-app-id"),
        ({"source": "alipay_other_auth"}, "wrong-source"),
        ({"state": None}, "state-missing"),
    ]:
        params = stack.consent(stack.create_link("merchant-a"))
        forged = {k: v for k, v in {**params, **change}.items() if v is not None}
        _assert_refused_page(stack.callback(forged), reason)
        assert stack.emulator.requests_received == 0, reason
        assert traces(stack) == [], reason
        assert stack.published_events() == [], reason


# -- a gateway that tampers with its answers ---------------------------------------------------------

# What a gateway in the middle can do to an answer; the SN only means something in certificate mode.
GATEWAY_FORGERIES = {
    False: [Fault.TAMPER_BODY, Fault.TAMPER_SIGNATURE, Fault.MISSING_SIGNATURE, Fault.OTHER_KEY],
    True: [Fault.WRONG_SN, Fault.OTHER_KEY, Fault.TAMPER_SIGNATURE],
}


@pytest.mark.parametrize("cert_mode", [False, True], ids=["public-key-mode", "certificate-mode"])
def test_forged_exchange_answers_are_never_stored(make_stack, cert_mode):
    stack = make_stack(cert_mode=cert_mode)
    claims = []
    for fault in GATEWAY_FORGERIES[cert_mode]:
        params = stack.consent(stack.create_link("merchant-a"), merchant_app_ids=["2021000000000831"])
        calls = stack.emulator.requests_received
        stack.emulator.inject(fault)

        response = stack.callback(params)

        # The merchant is told honestly that it is not confirmed, and offered a fresh link
        assert response.status_code == 502 and 'data-outcome="unconfirmed"' in response.text, fault
        assert "state=v1." in response.text and "Traceback" not in response.text
        assert stack.emulator.requests_received == calls + 1, fault  # never retried: the code may be spent
        # By design the claim was written before the exchange; it records the failure, nothing else does
        claims.append(f"CODE#{code_hash(params['app_auth_code'])}")
        found = {i["pk"]["S"]: i for i in _items(stack, "CODE#")}
        assert sorted(found) == sorted(claims), fault
        claim = found[claims[-1]]
        assert claim["status"]["S"] == "failed", fault
        assert claim["error_code"]["S"] in {
            "response-signature-verify-error",
            "response-alipay-sn-verify-error",
        }
        assert _items(stack, "APP#") == [] and _items(stack, "NOTIFY#") == [], fault
        assert stack.published_events() == [], fault
        # A reload is answered from the claim: no second exchange, still nothing stored
        assert stack.callback(params).status_code == 502
        assert stack.emulator.requests_received == calls + 1 and _items(stack, "APP#") == [], fault


def test_forged_refresh_answers_never_replace_the_stored_token(stack):
    c = stack.container
    service = RefreshService(
        settings=c.settings, store=c.store, token_api=c.new_token_api, publisher=c.publisher
    )
    for number, fault in enumerate([Fault.TAMPER_BODY, Fault.TAMPER_SIGNATURE, Fault.OTHER_KEY]):
        merchant_app_id = f"202100000000084{number}"
        params = stack.consent(stack.create_link("merchant-a"), merchant_app_ids=[merchant_app_id])
        assert stack.callback(params).status_code == 200
        stack.published_events()
        before = stack.http.get(f"{stack.url}/tokens/{merchant_app_id}", timeout=10).json()
        sealed_before = c.store.get_token(merchant_app_id).sealed
        stack.emulator.inject(fault)

        assert service.refresh_one(merchant_app_id, force=True) == FAILED, fault

        assert stack.http.get(f"{stack.url}/tokens/{merchant_app_id}", timeout=10).json() == before, fault
        assert c.store.get_token(merchant_app_id).sealed.current == sealed_before.current, fault
        assert [e["detail-type"] for e in stack.published_events()] == ["Token Refresh Failed"], fault


# -- notifications that Alipay did not send ----------------------------------------------------------


def _post(stack, params):
    return stack.http.post(f"{stack.url}/notify", data=params, timeout=10)


def _bad_signature_cases():
    def other_key(stack, p):
        return sign_notification(p, new_rsa_key())

    def other_isvs_alipay_key(stack, p):
        other = DevCredentials.generate()
        return sign_notification({**p, "app_id": other.app_id}, other.alipay_key)

    def for_another_isv_app(stack, p):  # Alipay's own signature, but addressed to another ISV app
        return sign_notification({**p, "app_id": OTHER_ISV_APP_ID}, stack.creds.alipay_key)

    def changed_after_signing(stack, p):  # the tokens swapped for the attacker's after signing
        signed = sign_notification(p, stack.creds.alipay_key)
        biz = json.loads(signed["biz_content"])
        biz["detail"]["app_auth_token"] = "202511BBattackerattackerattackerattacker"
        return {**signed, "biz_content": json.dumps(biz)}

    def notify_id_changed(stack, p):  # a replay dressed up as a new notification
        return {**sign_notification(p, stack.creds.alipay_key), "notify_id": "n-2"}

    def unsigned(stack, p):
        return dict(p)

    def garbage_sign(stack, p):
        return {**p, "sign_type": "RSA2", "sign": "AAAA" * 86}

    def downgraded_sign_type(stack, p):  # a valid RSA2 signature relabelled as SHA1 RSA
        return {**sign_notification(p, stack.creds.alipay_key), "sign_type": "RSA"}

    return [
        (other_key, "invalid-notification-signature"),
        (other_isvs_alipay_key, "invalid-notification-signature"),
        (for_another_isv_app, "wrong-app-id"),
        (changed_after_signing, "invalid-notification-signature"),
        (notify_id_changed, "invalid-notification-signature"),
        (unsigned, "unsigned-notification"),
        (garbage_sign, "invalid-notification-signature"),
        (downgraded_sign_type, "invalid-notification-signature"),
    ]


def test_forged_notifications_are_refused_and_leave_no_trace(stack):
    for forge, code in _bad_signature_cases():
        response = _post(stack, forge(stack, authorized_notification(stack, notify_id="n-1")))
        assert (response.status_code, response.text) == (400, f"fail: {code}"), forge.__name__
        assert traces(stack) == [], forge.__name__
        assert stack.published_events() == [], forge.__name__
    assert stack.emulator.requests_received == 0


def test_a_notification_with_an_unknown_certificate_sn_is_refused(make_stack):
    stack = make_stack(cert_mode=True)
    signed = sign_notification(
        {**authorized_notification(stack), "alipay_cert_sn": "0123456789abcdef0123456789abcdef"},
        stack.creds.alipay_key,
    )
    response = _post(stack, signed)
    assert (response.status_code, response.text) == (400, "fail: unknown-alipay-cert")
    assert traces(stack) == [] and stack.published_events() == []


def test_replayed_notifications_are_acknowledged_but_change_nothing(stack):
    # A genuine authorization, then the merchant cancels
    granted = sign_notification(authorized_notification(stack, notify_id="n-1"), stack.creds.alipay_key)
    assert _post(stack, granted).text == "success"
    cancelled = sign_notification(
        cancellation(stack, "2021000000000301", notify_id="c-1"), stack.creds.alipay_key
    )
    assert _post(stack, cancelled).text == "success"
    assert [e["detail-type"] for e in stack.published_events()] == [
        "Authorization Granted",
        "Authorization Revoked",
    ]
    before = stack.table_items()

    # Someone replays the old authorization (same bytes, same notify_id) and the cancellation
    for replay in (granted, cancelled, granted):
        assert (_post(stack, replay).status_code, _post(stack, replay).text) == (200, "success")

    # Acknowledged (so a genuine retry ends), but the revoked token is not brought back
    assert stack.table_items() == before
    assert stack.published_events() == []
    assert stack.http.get(f"{stack.url}/tokens/2021000000000301", timeout=10).status_code == 409
