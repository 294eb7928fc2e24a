"""``TokenApi.query``: the typed answer of token/app/query, its error codes, and keeping the token secret."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
import traceback

import pytest
import requests
from requests.adapters import BaseAdapter

from alipay_v3 import (
    QUERY_PATH,
    AlipayApiError,
    AlipayClient,
    AlipayConfig,
    AlipayError,
    AppAuthorization,
    AuthorizationStatus,
    MalformedResponseError,
    TokenApi,
    TransportError,
)
from alipay_v3.server import sign_response, verify_request

TOKEN = "202511BBa0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
# The shape of the official v3 model AlipayOpenAuthTokenAppQueryResponseModel.
ANSWER = {
    "auth_app_id": "2021000000000201",
    "user_id": "2088000000000201",
    "status": "valid",
    "auth_methods": ["alipay.trade.pay", "alipay.trade.query"],
    "auth_start": "2019-06-06 15:03:30",
    "auth_end": "2020-06-05 15:03:30",
    "expires_in": 31536000,
    "is_by_app_auth": True,
}
# 2019-06-06 15:03:30 in Beijing is 07:03:30 UTC.
AUTH_START = int(dt.datetime(2019, 6, 6, 7, 3, 30, tzinfo=dt.UTC).timestamp())
NOW = 1_764_000_000.0


class Alipay(BaseAdapter):
    """An in-process Alipay: answers each request with the next (status, body) of a script, signed."""

    def __init__(self, creds, script):
        super().__init__()
        self.creds, self.script, self.sent = creds, list(script), []

    def send(self, request, **kwargs):
        self.sent.append(request)
        status, data = self.script.pop(0)
        body = json.dumps(data, ensure_ascii=False).encode()
        response = requests.Response()
        response.status_code, response._content, response.request = status, body, request
        response.headers.update(sign_response(self.creds.alipay_key, body, nonce="n", timestamp="1"))
        response.headers["alipay-trace-id"] = "trace-1"
        return response

    def close(self):
        pass


def api_for(creds, *script) -> tuple[TokenApi, Alipay]:
    alipay = Alipay(creds, script)
    session = requests.Session()
    session.mount("http://", alipay)
    config = AlipayConfig.from_mapping(creds.client_config("http://127.0.0.1:9"))
    client = AlipayClient(config, session=session, sleep=lambda _: None, clock=lambda: NOW)
    return TokenApi(client), alipay


# --- the typed answer ---------------------------------------------------------------------------


def test_every_field_of_the_model_is_typed():
    authorization = AppAuthorization.from_fields(ANSWER, trace_id="t")
    assert authorization == AppAuthorization(
        auth_app_id="2021000000000201",
        user_id="2088000000000201",
        status=AuthorizationStatus.VALID,
        auth_methods=("alipay.trade.pay", "alipay.trade.query"),
        auth_start=AUTH_START,
        auth_end=AUTH_START + 365 * 86400,
        expires_in=31536000,
        is_by_app_auth=True,
        trace_id="t",
    )
    assert authorization.valid


def test_invalid_status_and_optional_fields():
    answer = {"auth_app_id": "2021000000000201", "status": "invalid", "expires_in": "0"}
    authorization = AppAuthorization.from_fields(answer)
    assert authorization.status is AuthorizationStatus.INVALID and not authorization.valid
    assert (authorization.user_id, authorization.auth_methods, authorization.expires_in) == (None, (), 0)
    assert (authorization.auth_start, authorization.auth_end, authorization.is_by_app_auth) == (
        None,
        None,
        None,
    )


@pytest.fixture
def local_zone_los_angeles():
    before = os.environ.get("TZ")
    os.environ["TZ"] = "America/Los_Angeles"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.mark.usefixtures("local_zone_los_angeles")
def test_times_are_china_time_whatever_the_local_zone():
    parsed = AppAuthorization.from_fields({**ANSWER, "auth_start": "2024-01-01 00:00:00"})
    assert parsed.auth_start == int(dt.datetime(2023, 12, 31, 16, 0, tzinfo=dt.UTC).timestamp())


@pytest.mark.parametrize(
    "changes",
    [
        {"status": None},
        {"status": "VALID"},
        {"status": "expired"},
        {"status": ["valid"]},
        {"auth_app_id": None},
        {"auth_app_id": 2021000000000201},
        {"user_id": 2088000000000201},
        {"auth_methods": "alipay.trade.pay"},
        {"auth_methods": [1, 2]},
        {"auth_methods": {"a": 1}},
        {"auth_start": "2019/06/06 15:03:30"},
        {"auth_start": "2019-06-06T15:03:30"},
        {"auth_start": "2019-6-6 15:03:30"},
        {"auth_end": "2019-13-01 00:00:00"},
        {"auth_end": 1559804610},
        {"expires_in": "soon"},
        {"expires_in": True},
        {"expires_in": [1]},
        {"is_by_app_auth": "true"},
        {"is_by_app_auth": 1},
    ],
)
def test_malformed_answers_are_malformed_response_errors(changes):
    answer = {key: value for key, value in {**ANSWER, **changes}.items() if value is not None}
    with pytest.raises(MalformedResponseError):
        AppAuthorization.from_fields(answer)


def test_the_token_is_neither_kept_nor_shown(creds, caplog):
    api, _ = api_for(creds, (200, {**ANSWER, "status": TOKEN}))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(MalformedResponseError) as caught:
        api.query(TOKEN)
    assert TOKEN not in str(caught.value)  # not even when the answer quotes it where status belongs

    api, _ = api_for(creds, (200, ANSWER))
    authorization = api.query(TOKEN)
    assert TOKEN not in repr(authorization) and TOKEN not in str(vars(authorization))
    assert TOKEN not in caplog.text


def test_a_token_of_impossible_shape_is_refused_before_sending_without_quoting_it(creds):
    api, alipay = api_for(creds)
    for value in ("short", "202511BB a0a1a2a3a4a5a6a7a8a9aaab", "202511BB&x=1a2a3a4a5a6a7a8a9"):
        with pytest.raises(AlipayError) as caught:
            api.query(value)
        assert caught.value.code == "invalid-argument" and value not in str(caught.value)
    assert alipay.sent == []


def test_a_connection_failure_never_quotes_the_token_even_in_the_traceback(creds):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = AlipayConfig.from_mapping(creds.client_config(f"http://127.0.0.1:{port}"))
    api = TokenApi(AlipayClient(config, max_attempts=1))
    with pytest.raises(TransportError) as caught:
        api.query(TOKEN)
    assert not caught.value.request_sent
    assert TOKEN not in "".join(traceback.format_exception(caught.value))


# --- the request ----------------------------------------------------------------------------------


def test_the_request_is_a_signed_get_with_the_token_in_the_query_string(creds):
    api, alipay = api_for(creds, (200, ANSWER))
    assert api.query(TOKEN).trace_id == "trace-1"
    (request,) = alipay.sent
    assert request.method == "GET" and request.path_url == f"{QUERY_PATH}?app_auth_token={TOKEN}"
    assert request.body in (None, b"") and "alipay-app-auth-token" not in request.headers
    verify_request(
        method="GET",
        path_and_query=request.path_url,
        headers=request.headers,
        body=b"",
        key_for=lambda _parsed: creds.app_key.public_key(),
        now_ms=int(NOW * 1000),
    )


@pytest.mark.parametrize("status", [500, 400])
def test_a_system_error_is_retried_because_the_query_is_a_read(creds, status):
    system_error = {"code": "SYSTEM_ERROR", "message": "系统繁忙"}
    api, alipay = api_for(creds, (status, system_error), (200, ANSWER))
    assert api.query(TOKEN).valid
    assert len(alipay.sent) == 2


def test_a_gone_token_is_not_retried(creds):
    api, alipay = api_for(creds, (400, {"code": "AUTH_TOKEN_NOT_EXISTED", "message": "授权令牌不存在"}))
    with pytest.raises(AlipayApiError) as caught:
        api.query(TOKEN)
    assert caught.value.token_gone and caught.value.verified and len(alipay.sent) == 1


# --- error classification -----------------------------------------------------------------------


def api_error(code: str, http_status: int = 400) -> AlipayApiError:
    return AlipayApiError(code, "message", http_status=http_status, verified=True)


def test_a_token_alipay_does_not_hold_is_gone_and_the_grant_dead():
    error = api_error("AUTH_TOKEN_NOT_EXISTED")
    assert error.token_gone and error.grant_dead
    assert not error.configuration_error and not error.retryable


@pytest.mark.parametrize("code", ["ILLEGAL_PARAM", "AUTH_TOKEN_NOT_CONSISTENT", "APP_NOT_ISV"])
def test_refusals_of_the_caller_are_configuration_errors_never_dead_grants(code):
    error = api_error(code)
    assert error.configuration_error
    assert not (error.grant_dead or error.token_gone or error.retryable)


def test_system_error_is_retryable_whatever_the_http_status():
    assert api_error("SYSTEM_ERROR").retryable and api_error("SYSTEM_ERROR", 500).retryable
    assert not api_error("SYSTEM_ERROR").grant_dead
    assert not api_error("AUTH_TOKEN_NOT_FOUND").token_gone  # token/app's code, not the query's
