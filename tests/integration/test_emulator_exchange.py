"""Exchanging app_auth_codes with our client against the emulator, over real HTTP."""

from __future__ import annotations

import json
import re
import threading

import pytest
import requests

from alipay_v3 import TOKEN_PATH, AlipayApiError, AlipayAuth, AlipayConfig, TokenApi
from alipay_v3.keys import cert_sn
from alipay_v3.response import verify_response
from sandbox.credentials import DevCredentials

TOKEN_SHAPE = r"^\d{6}BB[0-9a-f]{32}$"


@pytest.mark.parametrize(
    ("cert_mode", "aes"),
    [(False, False), (True, False), (False, True), (True, True)],
    ids=["key", "cert", "key-aes", "cert-aes"],
)
def test_exchange_returns_a_verified_token(emulator, make_client, creds, cert_mode, aes):
    tokens = TokenApi(make_client(cert_mode=cert_mode, aes=aes))
    code = emulator.issue_code(creds.app_id, ["2021000000000077"], user_id="2088000000000077")

    grant = tokens.exchange_code(code, encrypt=aes)

    token = grant.primary
    assert len(grant.tokens) == 1
    assert (token.auth_app_id, token.user_id) == ("2021000000000077", "2088000000000077")
    assert token.app_auth_token != token.app_refresh_token
    for value in (token.app_auth_token, token.app_refresh_token):
        assert re.match(TOKEN_SHAPE, value)
    assert (token.expires_in, token.re_expires_in) == (31536000, 31536000)
    assert grant.trace_id
    assert emulator.token_valid(token.app_auth_token)


def test_issued_codes_look_like_alipays(emulator, creds):
    codes = {emulator.issue_code(creds.app_id) for _ in range(20)}
    assert len(codes) == 20
    assert all(len(code) == 32 and code.isascii() and code.isalnum() for code in codes)


def test_issue_code_for_an_unregistered_app_fails_early(emulator):
    with pytest.raises(KeyError, match="not registered"):
        emulator.issue_code("2021999999999999")


def _raw_exchange(emulator, creds, *, cert_mode: bool, aes: bool) -> requests.Response:
    """One exchange with plain requests, to look at the wire rather than at the client's view of it."""
    config = AlipayConfig.from_mapping(creds.client_config(emulator.base_url, cert_mode=cert_mode, aes=aes))
    body = json.dumps({"grant_type": "authorization_code", "code": emulator.issue_code(creds.app_id)})
    headers = {"Content-Type": "application/json"}
    if aes:
        assert config.aes is not None
        body = config.aes.encrypt(body)
        headers = {"Content-Type": "text/plain", "alipay-encrypt-type": "AES"}
    return requests.post(
        emulator.base_url + TOKEN_PATH,
        data=body.encode(),
        headers=headers,
        auth=AlipayAuth(config),
        timeout=10,
    )


def test_wire_format_in_certificate_mode_with_aes(emulator, creds):
    response = _raw_exchange(emulator, creds, cert_mode=True, aes=True)

    assert response.status_code == 200
    names = list(response.raw.headers.keys())
    assert names == [name.lower() for name in names]  # PHP reads them case-sensitively
    assert response.headers["alipay-sn"] == cert_sn(creds.alipay_cert)
    assert response.headers["alipay-trace-id"]
    assert response.headers["content-type"].startswith("text/plain")
    # The body on the wire is the ciphertext, and the signature covers exactly it.
    config = AlipayConfig.from_mapping(creds.client_config(emulator.base_url, cert_mode=True, aes=True))
    verify_response(config, response.headers, response.content)
    assert config.aes is not None
    data = json.loads(config.aes.decrypt(response.content))
    assert set(data) == {
        "user_id",
        "auth_app_id",
        "app_auth_token",
        "app_refresh_token",
        "expires_in",
        "re_expires_in",
    }
    assert all(isinstance(value, str) for value in data.values())  # the v3 schema types them as strings


def test_public_key_mode_answers_without_alipay_sn(emulator, creds):
    response = _raw_exchange(emulator, creds, cert_mode=False, aes=False)

    assert response.status_code == 200
    assert "alipay-sn" not in response.headers
    assert response.headers["content-type"].startswith("application/json")
    assert json.loads(response.content)["app_auth_token"]


def test_batch_authorization_answers_with_tokens_list(emulator, tokens, creds):
    merchant_apps = ["2021000000000101", "2021000000000102", "2021000000000103"]
    code = emulator.issue_code(creds.app_id, merchant_apps)

    grant = tokens.exchange_code(code)

    assert [token.auth_app_id for token in grant.tokens] == merchant_apps
    assert len({token.app_auth_token for token in grant.tokens}) == 3
    assert len({token.user_id for token in grant.tokens}) == 1  # one merchant consented for all
    assert all(emulator.token_valid(token.app_auth_token) for token in grant.tokens)


def test_spent_code_is_a_signed_dead_grant(emulator, tokens, creds):
    code = emulator.issue_code(creds.app_id)
    tokens.exchange_code(code)

    with pytest.raises(AlipayApiError) as caught:
        tokens.exchange_code(code)

    error = caught.value
    assert error.code == "AUTH_CODE_NOT_VALID"
    assert error.grant_dead and error.verified
    assert error.http_status == 400
    assert error.trace_id and error.links and error.links[0]["link"].endswith(error.trace_id)


def test_unknown_code(tokens):
    with pytest.raises(AlipayApiError) as caught:
        tokens.exchange_code("P1798b23682e34d96859afa000000003")
    assert caught.value.code == "AUTH_CODE_NOT_EXIST" and caught.value.verified


def test_code_expires_after_its_ttl(make_emulator, make_client, creds, fake_clock):
    emulator = make_emulator(clock=fake_clock, code_ttl_seconds=600)
    tokens = TokenApi(make_client(emu=emulator, clock=fake_clock))
    fresh, stale = emulator.issue_code(creds.app_id), emulator.issue_code(creds.app_id)

    fake_clock.advance(599)
    tokens.exchange_code(fresh)
    fake_clock.advance(2)
    with pytest.raises(AlipayApiError) as caught:
        tokens.exchange_code(stale)

    assert caught.value.code == "AUTH_CODE_NOT_VALID" and caught.value.verified


def test_code_is_bound_to_the_isv_app_that_got_it(emulator, make_client, creds):
    other_isv = DevCredentials.generate("2021000000000002")
    emulator.register_app(other_isv)
    code = emulator.issue_code(creds.app_id)

    with pytest.raises(AlipayApiError) as caught:
        TokenApi(make_client(credentials=other_isv)).exchange_code(code)
    assert caught.value.code == "APP_ID_NOT_CONSISTENT" and caught.value.verified

    # The refusal did not spend the code for its rightful owner.
    assert TokenApi(make_client()).exchange_code(code).primary.app_auth_token


def test_wrong_grant_type(make_client):
    client = make_client()
    with pytest.raises(AlipayApiError) as caught:
        client.call("POST", TOKEN_PATH, data={"grant_type": "client_credentials"})
    assert caught.value.code == "GRANT_TYPE_INVALID" and caught.value.verified


def test_body_that_is_not_json_is_refused_unsigned(make_client):
    client = make_client()
    with pytest.raises(AlipayApiError) as caught:
        client.call("POST", TOKEN_PATH, data=None)
    assert caught.value.code == "invalid-parameter" and not caught.value.verified


def test_concurrent_exchanges_of_one_code_succeed_exactly_once(emulator, make_client, creds):
    code = emulator.issue_code(creds.app_id)
    tokens = TokenApi(make_client(max_attempts=1))
    outcomes: list[str] = []
    lock = threading.Lock()

    def exchange() -> None:
        try:
            tokens.exchange_code(code)
            outcome = "ok"
        except AlipayApiError as exc:
            outcome = exc.code
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=exchange) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes) == ["AUTH_CODE_NOT_VALID"] * 11 + ["ok"]


def test_query_reports_the_authorization(emulator, tokens, creds):
    token = tokens.exchange_code(
        emulator.issue_code(creds.app_id, ["2021000000000201"], "2088000000000201")
    ).primary

    data = tokens.client.call(
        "GET", TOKEN_PATH + "/query", query={"app_auth_token": token.app_auth_token}, idempotent=True
    ).data

    assert data["auth_app_id"] == "2021000000000201" and data["user_id"] == "2088000000000201"
    assert data["status"] == "valid"
    assert isinstance(data["expires_in"], int) and 0 < data["expires_in"] <= 31536000
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", data["auth_start"])
    assert data["auth_end"] > data["auth_start"]

    assert emulator.revoke(creds.app_id, "2021000000000201")
    revoked = tokens.client.call(
        "GET", TOKEN_PATH + "/query", query={"app_auth_token": token.app_auth_token}
    ).data
    assert revoked["status"] == "invalid"
    assert not emulator.token_valid(token.app_auth_token)


def test_query_of_an_unknown_token(tokens):
    with pytest.raises(AlipayApiError) as caught:
        tokens.client.call("GET", TOKEN_PATH + "/query", query={"app_auth_token": "202511BB" + "0" * 32})
    assert caught.value.code == "AUTH_TOKEN_NOT_EXISTED" and caught.value.verified  # section 8.6
