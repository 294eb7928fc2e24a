"""How the emulator authenticates requests: signatures, certificate SNs, timestamps, AES bodies."""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import os
import time
from urllib.parse import urlsplit

import pytest
import requests

from alipay_v3 import TOKEN_PATH, AlipayApiError, AlipayAuth, AlipayConfig, TokenApi
from sandbox.credentials import DevCredentials


def config_for(emulator, creds, **kwargs) -> AlipayConfig:
    return AlipayConfig.from_mapping(creds.client_config(emulator.base_url, **kwargs))


def api_error(client, code: str = "x" * 32) -> AlipayApiError:
    with pytest.raises(AlipayApiError) as caught:
        TokenApi(client).exchange_code(code)
    return caught.value


class TamperAfterSigning(requests.auth.AuthBase):
    """Signs like the client, then changes the body: what a man in the middle would do."""

    def __init__(self, config: AlipayConfig) -> None:
        self.inner = AlipayAuth(config)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request = self.inner(request)
        assert isinstance(request.body, bytes)
        request.body = request.body.replace(b"authorization_code", b"refresh_token")
        request.headers["Content-Length"] = str(len(request.body))
        return request


def test_tampered_request_is_refused_with_401_unsigned(emulator, creds):
    body = json.dumps(
        {"grant_type": "authorization_code", "code": emulator.issue_code(creds.app_id)}
    ).encode()

    response = requests.post(
        emulator.base_url + TOKEN_PATH,
        data=body,
        headers={"Content-Type": "application/json"},
        auth=TamperAfterSigning(config_for(emulator, creds)),
        timeout=10,
    )

    assert response.status_code == 401
    assert response.json()["code"] == "invalid-signature"
    assert response.json()["links"][0]["desc"]
    assert response.headers["alipay-trace-id"]
    assert "alipay-signature" not in response.headers


def test_request_without_authorization(emulator):
    response = requests.post(emulator.base_url + TOKEN_PATH, data=b"{}", timeout=10)

    assert response.status_code == 401
    assert response.json()["code"] == "missing-signature"
    assert "alipay-signature" not in response.headers


def test_unknown_app_id_is_400_unsigned(emulator, make_client, creds):
    stranger = DevCredentials.generate("2021000000009999")

    error = api_error(make_client(credentials=stranger))

    assert (error.code, error.http_status, error.verified) == ("invalid-app-id", 400, False)
    assert error.trace_id


def test_signature_by_another_key_is_invalid(emulator, make_client, creds):
    impostor = dataclasses.replace(creds, app_key=DevCredentials.generate().app_key)
    config = AlipayConfig.from_mapping(impostor.client_config(emulator.base_url))

    error = api_error(make_client(config=config))

    assert (error.code, error.http_status, error.verified) == ("invalid-signature", 401, False)


def test_wrong_app_cert_sn(emulator, make_client, creds):
    config = dataclasses.replace(config_for(emulator, creds, cert_mode=True), app_cert_sn="0" * 32)

    error = api_error(make_client(config=config))

    assert (error.code, error.verified) == ("app-cert-not-exist", False)


def test_wrong_root_cert_sn(emulator, make_client, creds):
    config = dataclasses.replace(config_for(emulator, creds, cert_mode=True), alipay_root_cert_sn="1" * 32)

    error = api_error(make_client(config=config))

    assert (error.code, error.verified) == ("invalid-alipay-root-cert-sn", False)


def test_absent_root_cert_sn_is_accepted_like_php_sends_it(emulator, make_client, creds):
    config = dataclasses.replace(config_for(emulator, creds, cert_mode=True), alipay_root_cert_sn=None)

    grant = TokenApi(make_client(config=config)).exchange_code(emulator.issue_code(creds.app_id))

    assert grant.primary.app_auth_token


def test_timestamp_far_from_the_server_clock(emulator, make_client):
    error = api_error(make_client(clock=lambda: time.time() - 3600))

    assert (error.code, error.verified) == ("illegal-timestamp", False)


def test_aes_body_under_another_key_cannot_be_decrypted(emulator, make_client, creds):
    mapping = creds.client_config(emulator.base_url, aes=True)
    mapping["encrypt_key"] = base64.b64encode(os.urandom(16)).decode()
    tokens = TokenApi(make_client(config=AlipayConfig.from_mapping(mapping)))

    with pytest.raises(AlipayApiError) as caught:
        tokens.exchange_code(emulator.issue_code(creds.app_id), encrypt=True)

    assert (caught.value.code, caught.value.http_status, caught.value.verified) == (
        "decryption-error",
        400,
        False,
    )


def test_business_error_to_an_encrypted_request_stays_plain_json(emulator, make_client):
    tokens = TokenApi(make_client(aes=True))

    with pytest.raises(AlipayApiError) as caught:
        tokens.exchange_code("y" * 32, encrypt=True)

    assert caught.value.code == "AUTH_CODE_NOT_EXIST" and caught.value.verified


def test_unknown_path_and_wrong_method(emulator, make_client):
    client = make_client()
    with pytest.raises(AlipayApiError) as caught:
        client.call("POST", "/v3/alipay/trade/pay", data={})
    assert caught.value.http_status == 404
    with pytest.raises(AlipayApiError) as caught:
        client.call("GET", TOKEN_PATH)
    assert caught.value.http_status == 405


def test_connection_is_kept_alive(emulator):
    url = urlsplit(emulator.base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        connection.request("POST", TOKEN_PATH, body=b"{}")
        first = connection.getresponse()
        first.read()
        socket_before = connection.sock
        connection.request("POST", TOKEN_PATH, body=b"{}")
        second = connection.getresponse()
        second.read()
        socket_after = connection.sock
    finally:
        connection.close()

    assert (first.status, second.status) == (401, 401)
    assert first.version == 11 and first.getheader("connection") != "close"
    # http.client reconnects silently when the server closed: the same socket proves keep-alive.
    assert socket_before is not None and socket_after is socket_before
    assert first.getheader("alipay-trace-id") != second.getheader("alipay-trace-id")


def test_no_line_per_request_on_stderr(emulator, tokens, creds, capfd):
    code = emulator.issue_code(creds.app_id)
    tokens.exchange_code(code)
    requests.post(emulator.base_url + TOKEN_PATH, data=b"{}", timeout=10)

    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_chunked_request_body_is_read_whole(emulator, creds):
    body = json.dumps(
        {"grant_type": "authorization_code", "code": emulator.issue_code(creds.app_id)}
    ).encode()
    prepared = requests.Request("POST", emulator.base_url + TOKEN_PATH, data=body).prepare()
    AlipayAuth(config_for(emulator, creds))(prepared)
    headers = {name: value for name, value in prepared.headers.items() if name.lower() != "content-length"}
    url = urlsplit(emulator.base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        connection.request(
            "POST", TOKEN_PATH, body=iter([body[:10], body[10:]]), headers=headers, encode_chunked=True
        )
        response = connection.getresponse()
        data = json.loads(response.read())
    finally:
        connection.close()

    assert response.status == 200 and data["app_auth_token"]
