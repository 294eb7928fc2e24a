"""``TokenApi.query`` against the emulator over real HTTP: valid, then invalid after a refresh, a
re-authorization or a cancellation (each past the grace window), and the query's error codes."""

from __future__ import annotations

import datetime as dt

import pytest

from alipay_v3 import QUERY_PATH, AlipayApiError, AuthorizationStatus, TokenApi
from sandbox.credentials import DevCredentials

GRACE = 600.0
MERCHANT_APP = "2021000000000401"
MERCHANT_USER = "2088000000000401"
CHINA = dt.timezone(dt.timedelta(hours=8))


@pytest.fixture
def timed(make_emulator, make_client, fake_clock):
    """An emulator and a TokenApi sharing a fake clock (requests carry timestamps too)."""
    emulator = make_emulator(clock=fake_clock, grace_seconds=GRACE)
    return emulator, TokenApi(make_client(emu=emulator, clock=fake_clock), clock=fake_clock)


def authorize(emulator, tokens: TokenApi, creds: DevCredentials):
    return tokens.exchange_code(emulator.issue_code(creds.app_id, [MERCHANT_APP], MERCHANT_USER)).primary


def query_error(tokens: TokenApi, app_auth_token: str) -> AlipayApiError:
    with pytest.raises(AlipayApiError) as caught:
        tokens.query(app_auth_token)
    return caught.value


def test_a_fresh_token_is_valid_with_the_whole_model(timed, creds, fake_clock):
    emulator, tokens = timed
    granted_at = int(fake_clock())
    token = authorize(emulator, tokens, creds)

    authorization = tokens.query(token.app_auth_token)

    assert authorization.status is AuthorizationStatus.VALID and authorization.valid
    assert (authorization.auth_app_id, authorization.user_id) == (MERCHANT_APP, MERCHANT_USER)
    assert authorization.auth_start == granted_at
    assert authorization.auth_end == granted_at + 365 * 86400
    assert authorization.is_by_app_auth is True
    assert "alipay.trade.pay" in authorization.auth_methods
    assert authorization.expires_in == 31536000 and authorization.trace_id
    assert token.app_auth_token not in repr(authorization)


def test_auth_start_is_china_wall_clock_time_on_the_wire(timed, creds, fake_clock):
    emulator, tokens = timed
    token = authorize(emulator, tokens, creds)
    raw = tokens.client.call("GET", QUERY_PATH, query={"app_auth_token": token.app_auth_token}).data
    expected = dt.datetime.fromtimestamp(int(fake_clock()), CHINA).strftime("%Y-%m-%d %H:%M:%S")
    assert raw["auth_start"] == expected
    assert isinstance(raw["expires_in"], int) and raw["is_by_app_auth"] is True


def test_set_auth_methods_is_what_the_query_reports(timed, creds):
    emulator, tokens = timed
    token = authorize(emulator, tokens, creds)
    emulator.set_auth_methods(creds.app_id, MERCHANT_APP, ["alipay.trade.query"])
    assert tokens.query(token.app_auth_token).auth_methods == ("alipay.trade.query",)


def test_a_refreshed_token_turns_invalid_after_the_grace_window(timed, creds, fake_clock):
    emulator, tokens = timed
    first = authorize(emulator, tokens, creds)
    second = tokens.refresh(first.app_refresh_token).primary

    fake_clock.advance(GRACE - 1)
    assert tokens.query(first.app_auth_token).valid  # a lost refresh answer must not strand the caller
    fake_clock.advance(2)
    assert tokens.query(first.app_auth_token).status is AuthorizationStatus.INVALID
    assert tokens.query(second.app_auth_token).valid


def test_a_re_authorization_turns_the_old_token_invalid(timed, creds, fake_clock):
    emulator, tokens = timed
    first = authorize(emulator, tokens, creds)
    again = authorize(emulator, tokens, creds)  # e.g. the merchant added a product

    fake_clock.advance(GRACE + 1)
    old, new = tokens.query(first.app_auth_token), tokens.query(again.app_auth_token)
    assert (old.status, new.status) == (AuthorizationStatus.INVALID, AuthorizationStatus.VALID)
    assert old.auth_app_id == new.auth_app_id == MERCHANT_APP


def test_a_cancelled_authorization_is_invalid_at_once(timed, creds):
    emulator, tokens = timed
    token = authorize(emulator, tokens, creds)
    assert emulator.revoke(creds.app_id, MERCHANT_APP)
    assert not tokens.query(token.app_auth_token).valid


def test_a_token_never_issued_is_gone(timed):
    _, tokens = timed
    error = query_error(tokens, "202511BB" + "0" * 32)
    assert error.code == "AUTH_TOKEN_NOT_EXISTED" and error.verified
    assert error.token_gone and error.grant_dead and not error.configuration_error


def test_another_apps_token_is_a_configuration_error(timed, creds, make_client, fake_clock):
    emulator, tokens = timed
    token = authorize(emulator, tokens, creds)
    other = DevCredentials.generate("2021004100000888")
    emulator.register_app(other)
    theirs = TokenApi(make_client(emu=emulator, credentials=other, clock=fake_clock))

    error = query_error(theirs, token.app_auth_token)

    assert error.code == "AUTH_TOKEN_NOT_CONSISTENT" and error.verified
    assert error.configuration_error and not error.grant_dead
    assert tokens.query(token.app_auth_token).valid  # the grant itself is fine


def test_a_query_without_a_token_is_illegal_param(timed):
    _, tokens = timed
    with pytest.raises(AlipayApiError) as caught:
        tokens.client.call("GET", QUERY_PATH)
    assert caught.value.code == "ILLEGAL_PARAM" and caught.value.verified
    assert caught.value.configuration_error
