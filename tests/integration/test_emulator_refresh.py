"""Refresh-token rotation, the grace window and the lifetimes, with the emulator's clock moved by hand."""

from __future__ import annotations

import pytest

from alipay_v3 import TOKEN_PATH, AlipayApiError, TokenApi

GRACE = 3600.0
YEAR = 31536000


@pytest.fixture
def timed(make_emulator, make_client, fake_clock):
    """An emulator and a TokenApi that share the fake clock (requests carry timestamps too)."""
    emulator = make_emulator(clock=fake_clock, grace_seconds=GRACE)
    return emulator, TokenApi(make_client(emu=emulator, clock=fake_clock), clock=fake_clock)


def refresh_error(tokens: TokenApi, refresh_token: str) -> AlipayApiError:
    with pytest.raises(AlipayApiError) as caught:
        tokens.refresh(refresh_token)
    return caught.value


def test_refresh_rotates_both_tokens(timed, creds):
    emulator, tokens = timed
    first = tokens.exchange_code(emulator.issue_code(creds.app_id)).primary

    second = tokens.refresh(first.app_refresh_token).primary

    assert second.auth_app_id == first.auth_app_id and second.user_id == first.user_id
    assert second.app_auth_token != first.app_auth_token
    assert second.app_refresh_token != first.app_refresh_token
    assert emulator.refresh_count(first.auth_app_id) == 1
    assert emulator.token_valid(second.app_auth_token)


def test_previous_pair_stays_valid_through_the_grace_window_only(timed, creds, fake_clock):
    emulator, tokens = timed
    first = tokens.exchange_code(emulator.issue_code(creds.app_id)).primary
    second = tokens.refresh(first.app_refresh_token).primary

    fake_clock.advance(GRACE - 1)
    assert emulator.token_valid(first.app_auth_token)
    fake_clock.advance(2)
    assert not emulator.token_valid(first.app_auth_token)
    assert emulator.token_valid(second.app_auth_token)

    error = refresh_error(tokens, first.app_refresh_token)
    assert error.code == "REFRESH_TOKEN_NOT_VALID" and error.verified and error.grant_dead
    assert emulator.refresh_count(first.auth_app_id) == 1


def test_refresh_with_an_in_grace_token_rotates_again(timed, creds, fake_clock):
    emulator, tokens = timed
    first = tokens.exchange_code(emulator.issue_code(creds.app_id)).primary
    second = tokens.refresh(first.app_refresh_token).primary  # suppose its answer was lost

    fake_clock.advance(60)
    third = tokens.refresh(first.app_refresh_token).primary

    assert third.app_refresh_token not in (first.app_refresh_token, second.app_refresh_token)
    assert emulator.refresh_count(first.auth_app_id) == 2
    # The pair replaced by the second rotation gets its own grace window from then on.
    fake_clock.advance(GRACE - 30)
    assert emulator.token_valid(second.app_auth_token)
    assert not emulator.token_valid(first.app_auth_token)
    assert tokens.refresh(third.app_refresh_token).primary.app_auth_token


def test_grace_window_follows_the_emulator_setting(make_emulator, make_client, creds, fake_clock):
    emulator = make_emulator(clock=fake_clock, grace_seconds=0)
    tokens = TokenApi(make_client(emu=emulator, clock=fake_clock))
    first = tokens.exchange_code(emulator.issue_code(creds.app_id)).primary
    tokens.refresh(first.app_refresh_token)

    fake_clock.advance(1)
    assert refresh_error(tokens, first.app_refresh_token).code == "REFRESH_TOKEN_NOT_VALID"


def test_refresh_token_times_out_after_re_expires_in(timed, creds, fake_clock):
    emulator, tokens = timed
    token = tokens.exchange_code(emulator.issue_code(creds.app_id)).primary

    fake_clock.advance(YEAR + 1)
    error = refresh_error(tokens, token.app_refresh_token)

    assert error.code == "REFRESH_TOKEN_TIME_OUT" and error.verified and error.grant_dead
    assert not emulator.token_valid(token.app_auth_token)


def test_refresh_just_before_re_expires_in_works_and_restarts_the_lifetime(timed, creds, fake_clock):
    emulator, tokens = timed
    token = tokens.exchange_code(emulator.issue_code(creds.app_id)).primary

    fake_clock.advance(YEAR - 1)
    renewed = tokens.refresh(token.app_refresh_token).primary
    fake_clock.advance(YEAR - 1)

    assert tokens.refresh(renewed.app_refresh_token).primary.app_auth_token


def test_unknown_refresh_token(tokens):
    error = refresh_error(tokens, "202511BB" + "f" * 32)
    assert error.code == "REFRESH_TOKEN_NOT_EXIST" and error.verified


def test_revoked_authorization_cannot_be_refreshed(emulator, tokens, creds):
    token = tokens.exchange_code(emulator.issue_code(creds.app_id)).primary
    emulator.revoke(creds.app_id, token.auth_app_id)

    assert refresh_error(tokens, token.app_refresh_token).code == "REFRESH_TOKEN_NOT_VALID"


def test_reauthorization_replaces_the_pair_with_a_grace_window(timed, creds, fake_clock):
    emulator, tokens = timed
    first = tokens.exchange_code(emulator.issue_code(creds.app_id, ["2021000000000301"])).primary
    again = tokens.exchange_code(emulator.issue_code(creds.app_id, ["2021000000000301"])).primary

    assert again.app_auth_token != first.app_auth_token
    fake_clock.advance(GRACE + 1)
    assert not emulator.token_valid(first.app_auth_token)
    assert emulator.token_valid(again.app_auth_token)


def test_batch_tokens_refresh_independently(emulator, tokens, creds):
    grant = tokens.exchange_code(emulator.issue_code(creds.app_id, ["2021000000000401", "2021000000000402"]))

    refreshed = tokens.refresh(grant.tokens[1].app_refresh_token)

    assert [token.auth_app_id for token in refreshed.tokens] == ["2021000000000402"]
    assert emulator.refresh_count("2021000000000401") == 0
    assert emulator.refresh_count("2021000000000402") == 1


def test_refresh_with_aes_in_certificate_mode(emulator, make_client, creds):
    tokens = TokenApi(make_client(cert_mode=True, aes=True))
    token = tokens.exchange_code(emulator.issue_code(creds.app_id), encrypt=True).primary

    renewed = tokens.refresh(token.app_refresh_token, encrypt=True).primary

    assert renewed.auth_app_id == token.auth_app_id


def test_query_after_grace_says_invalid(timed, creds, fake_clock):
    emulator, tokens = timed
    first = tokens.exchange_code(emulator.issue_code(creds.app_id)).primary
    tokens.refresh(first.app_refresh_token)
    fake_clock.advance(GRACE + 1)

    data = tokens.client.call(
        "GET", TOKEN_PATH + "/query", query={"app_auth_token": first.app_auth_token}
    ).data

    assert data["status"] == "invalid"
