"""The client's request signing and retry rules, over an in-process transport.

The same rules are exercised over real sockets against the emulator in tests/integration.
"""

import json

import pytest
import requests
from cryptography import x509
from cryptography.x509.oid import NameOID
from requests.adapters import BaseAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from alipay_v3 import (
    AlipayApiError,
    AlipayClient,
    AlipayConfig,
    TokenApi,
    TransportError,
    UnknownAlipayCertError,
)
from alipay_v3 import client as client_module
from alipay_v3.keys import cert_sn
from alipay_v3.server import sign_response, verify_request
from app_auth.pacing import PacedAdapter
from sandbox.credentials import DevCredentials, cert_pem, make_cert, new_rsa_key

TOKEN = {
    "auth_app_id": "2021000000000099",
    "user_id": "2088000000000001",
    "app_auth_token": "202511BBa0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
    "app_refresh_token": "202511BBb0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
    "re_expires_in": "32140800",
}


class ScriptedAdapter(BaseAdapter):
    """Plays a script of outcomes: an exception to raise, or (status, body dict, signed?)."""

    def __init__(self, creds: DevCredentials, script: list, sn: str | None = None):
        super().__init__()
        self.script, self.sn, self.sent = list(script), sn, []
        self.signing_key = creds.alipay_key

    def send(self, request, **kwargs):
        self.sent.append(request)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        status, data, is_signed = step
        body = json.dumps(data).encode()
        response = requests.Response()
        response.status_code, response._content, response.request, response.url = (
            status,
            body,
            request,
            request.url,
        )
        if is_signed:
            response.headers.update(
                sign_response(self.signing_key, body, nonce="n", timestamp="1", sn=self.sn)
            )
        return response

    def close(self):
        pass


def client_for(creds, script, *, sn=None, cert_mode=False, sleep=lambda _: None, mount=None, **kwargs):
    """``mount(adapter)``, when given, is what the session mounts over the scripted transport."""
    adapter = ScriptedAdapter(creds, script, sn=sn)
    session = requests.Session()
    session.mount("http://", mount(adapter) if mount else adapter)
    config = AlipayConfig.from_mapping(creds.client_config("http://127.0.0.1:9", cert_mode=cert_mode))
    client = AlipayClient(
        config,
        session=session,
        sleep=sleep,
        nonce=lambda: "fixed-nonce",
        clock=lambda: 1764000000.123,
        **kwargs,
    )
    return client, adapter


def refused():
    return requests.ConnectionError(MaxRetryError(None, "/", NewConnectionError(None, "refused")))


def dropped():
    return requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError()))


def test_request_is_signed_over_what_is_sent(creds):
    client, adapter = client_for(creds, [(200, TOKEN, True)])
    TokenApi(client).exchange_code("ca34ea491e7146cc87d25fca24c4cD11")
    request = adapter.sent[0]
    assert request.path_url == "/v3/alipay/open/auth/token/app"
    assert request.body == b'{"grant_type":"authorization_code","code":"ca34ea491e7146cc87d25fca24c4cD11"}'
    assert "nonce=fixed-nonce,timestamp=1764000000123,sign=" in request.headers["Authorization"]
    parsed = verify_request(
        method="POST",
        path_and_query=request.path_url,
        headers=request.headers,
        body=request.body,
        key_for=lambda _: creds.app_key.public_key(),
        now_ms=1764000000123,
    )
    assert parsed.app_id == creds.app_id


def test_exchange_is_not_retried_once_the_request_may_have_arrived(creds):
    for failure in (dropped(), requests.ReadTimeout("read timed out"), (502, {}, False)):
        client, adapter = client_for(creds, [failure, (200, TOKEN, True)])
        with pytest.raises((TransportError, AlipayApiError)) as info:
            TokenApi(client).exchange_code("ca34ea491e7146cc87d25fca24c4cD11")
        assert len(adapter.sent) == 1
        if isinstance(info.value, TransportError):
            assert info.value.request_sent


def test_exchange_is_retried_when_the_request_never_left_or_was_throttled(creds):
    client, adapter = client_for(
        creds, [refused(), (429, {"code": "rate-limited"}, False), (200, TOKEN, True)]
    )
    grant = TokenApi(client).exchange_code("ca34ea491e7146cc87d25fca24c4cD11")
    assert grant.primary.auth_app_id == TOKEN["auth_app_id"] and len(adapter.sent) == 3


def test_refresh_is_retried_after_ambiguous_failures(creds):
    client, adapter = client_for(creds, [dropped(), (503, {}, False), (200, TOKEN, True)])
    TokenApi(client).refresh(TOKEN["app_refresh_token"])
    assert len(adapter.sent) == 3


def test_retries_stop_at_max_attempts_and_say_request_not_sent(creds):
    client, adapter = client_for(creds, [refused(), refused()], max_attempts=2)
    with pytest.raises(TransportError) as info:
        TokenApi(client).refresh(TOKEN["app_refresh_token"])
    assert not info.value.request_sent and len(adapter.sent) == 2


def test_signed_business_errors_are_never_retried(creds):
    client, adapter = client_for(creds, [(400, {"code": "REFRESH_TOKEN_NOT_VALID", "message": "x"}, True)])
    with pytest.raises(AlipayApiError) as info:
        TokenApi(client).refresh(TOKEN["app_refresh_token"])
    assert info.value.grant_dead and info.value.verified and len(adapter.sent) == 1


def test_unknown_alipay_cert_reloads_config_once_and_reverifies_same_bytes(creds):
    # Alipay rotated its certificate: it now signs with a new key the client does not hold yet.
    new_key = new_rsa_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Alipay rotated")])
    new_cert = make_cert(name, new_key.public_key(), name, new_key)
    rotated = creds.client_config("http://127.0.0.1:9", cert_mode=True)
    rotated["alipay_cert"] += cert_pem(new_cert)
    reloads = []

    def reload():
        reloads.append(1)
        return AlipayConfig.from_mapping(rotated)

    client, adapter = client_for(
        creds, [(200, TOKEN, True)], sn=cert_sn(new_cert), cert_mode=True, reload_config=reload
    )
    adapter.signing_key = new_key
    TokenApi(client).refresh(TOKEN["app_refresh_token"])
    assert reloads == [1] and len(adapter.sent) == 1  # verified again, not sent again

    client, adapter = client_for(creds, [(200, TOKEN, True)], sn=cert_sn(new_cert), cert_mode=True)
    adapter.signing_key = new_key
    with pytest.raises(UnknownAlipayCertError):
        TokenApi(client).refresh(TOKEN["app_refresh_token"])


@pytest.mark.parametrize("bad", ["", "short", "has space in it!", "x" * 200, "a&b=c1234"])
def test_impossible_codes_never_reach_the_network(creds, bad):
    client, adapter = client_for(creds, [])
    with pytest.raises(Exception, match="impossible shape"):
        TokenApi(client).exchange_code(bad)
    assert adapter.sent == []


def test_refresh_is_not_retried_after_a_read_timeout(creds):
    # Alipay may still process the timed-out request after a retry, rotating away the retry's pair.
    client, adapter = client_for(creds, [requests.ReadTimeout("read timed out"), (200, TOKEN, True)])
    with pytest.raises(TransportError) as info:
        TokenApi(client).refresh(TOKEN["app_refresh_token"])
    assert info.value.request_sent and info.value.timed_out and len(adapter.sent) == 1


class RecordingSlots:
    """The pace's slots, noting when one is held."""

    def __init__(self):
        self.held, self.entries = False, 0

    def acquire(self):
        assert not self.held
        self.held, self.entries = True, self.entries + 1

    def release(self):
        self.held = False


def test_the_refreshers_pace_is_held_around_each_exchange_only(creds, monkeypatch):
    # The pace is the transport of the refresher's session: the client knows nothing of it.
    slots, seen = RecordingSlots(), []

    def paced(adapter):
        pace = PacedAdapter(1, 1000.0, inner=adapter)
        pace.slots = slots
        return pace

    client, adapter = client_for(
        creds,
        [dropped(), (503, {}, False), (200, TOKEN, True)],
        sleep=lambda _: seen.append(("pause between attempts", slots.held)),
        mount=paced,
    )
    send, sign = adapter.send, client_module.AlipayAuth.__call__
    monkeypatch.setattr(
        adapter, "send", lambda request, **kw: seen.append(("send", slots.held)) or send(request, **kw)
    )
    monkeypatch.setattr(
        client_module.AlipayAuth,
        "__call__",
        lambda auth, r: seen.append(("sign", slots.held)) or sign(auth, r),
    )
    grant = TokenApi(client).refresh(TOKEN["app_refresh_token"])
    assert grant.primary.auth_app_id == TOKEN["auth_app_id"]
    assert slots.entries == 3 and not slots.held  # once per attempt, released after the last
    assert seen == [("sign", False), ("send", True), ("pause between attempts", False)] * 2 + [
        ("sign", False),
        ("send", True),
    ]
