"""Opening responses (verify before parse) and the token response shapes."""

import json

import pytest

from alipay_v3 import (
    AlipayApiError,
    AlipayConfig,
    DecryptError,
    MalformedResponseError,
    ResponseVerificationError,
    open_response,
)
from alipay_v3.keys import cert_sn
from alipay_v3.server import sign_response
from alipay_v3.token_api import mask, parse_token_response

TOKEN_FIELDS = {
    "user_id": "2088000000000001",
    "auth_app_id": "2021000000000099",
    "app_auth_token": "202511BBa0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
    "app_refresh_token": "202511BBb0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
    "expires_in": "31536000",
    "re_expires_in": "32140800",
}


def signed(creds, body: bytes, sn=None):
    return sign_response(creds.alipay_key, body, nonce="nonce-1", timestamp="1764000000000", sn=sn)


def test_signed_plain_response_is_opened(creds):
    config = AlipayConfig.from_mapping(creds.client_config("sandbox"))
    body = json.dumps(TOKEN_FIELDS).encode()
    response = open_response(
        config, 200, {**signed(creds, body), "alipay-trace-id": "t1"}, body, encrypted=False
    )
    assert response.data == TOKEN_FIELDS and response.trace_id == "t1"


@pytest.mark.parametrize("part", ["body", "timestamp", "nonce", "signature"])
def test_any_tampering_is_refused(creds, part):
    config = AlipayConfig.from_mapping(creds.client_config("sandbox"))
    body = json.dumps(TOKEN_FIELDS).encode()
    headers = signed(creds, body)
    if part == "body":
        body = body.replace(b"2088000000000001", b"2088000000000002")
    else:
        key = {"timestamp": "alipay-timestamp", "nonce": "alipay-nonce", "signature": "alipay-signature"}[
            part
        ]
        headers[key] = headers[key][:-4] + ("AAA=" if part == "signature" else "9999")
    with pytest.raises(ResponseVerificationError):
        open_response(config, 200, headers, body, encrypted=False)


def test_unsigned_success_is_refused(creds):
    config = AlipayConfig.from_mapping(creds.client_config("sandbox"))
    with pytest.raises(ResponseVerificationError, match="not signed"):
        open_response(config, 200, {}, b"{}", encrypted=False)


def test_encrypted_response_is_verified_on_ciphertext_then_decrypted(creds):
    config = AlipayConfig.from_mapping(creds.client_config("sandbox", cert_mode=True, aes=True))
    ciphertext = config.aes.encrypt(json.dumps(TOKEN_FIELDS)).encode()
    headers = signed(creds, ciphertext, sn=cert_sn(creds.alipay_cert))
    assert open_response(config, 200, headers, ciphertext, encrypted=True).data == TOKEN_FIELDS
    # signed but undecryptable (wrong key on the other side): a decrypt error, not garbage
    junk = b"QUJDREVGR0hJSktMTU5PUA=="
    with pytest.raises(DecryptError):
        open_response(config, 200, signed(creds, junk, sn=cert_sn(creds.alipay_cert)), junk, encrypted=True)


def test_signed_business_error_is_verified(creds):
    config = AlipayConfig.from_mapping(creds.client_config("sandbox"))
    body = json.dumps(
        {"code": "AUTH_CODE_NOT_VALID", "message": "授权码无效", "links": [{"link": "x", "desc": "y"}]}
    )
    raw = body.encode()
    with pytest.raises(AlipayApiError) as info:
        open_response(config, 400, {**signed(creds, raw), "alipay-trace-id": "tr"}, raw, encrypted=False)
    error = info.value
    assert (error.code, error.http_status, error.verified, error.grant_dead, error.retryable) == (
        "AUTH_CODE_NOT_VALID",
        400,
        True,
        True,
        False,
    )
    assert error.links == [{"link": "x", "desc": "y"}] and "tr" in str(error)
    with pytest.raises(ResponseVerificationError):
        open_response(
            config, 400, signed(creds, raw), raw.replace(b"NOT_VALID", b"NOT_EXIST"), encrypted=False
        )


def test_unsigned_errors_are_hints(creds):
    config = AlipayConfig.from_mapping(creds.client_config("sandbox"))
    with pytest.raises(AlipayApiError) as info:
        open_response(config, 502, {"alipay-signature": "null"}, b"<html>bad gateway</html>", encrypted=False)
    assert (info.value.code, info.value.verified, info.value.retryable) == ("http-502", False, True)


def test_flat_and_batch_shapes_with_string_or_integer_numbers():
    flat = parse_token_response(TOKEN_FIELDS, obtained_at=1000.0)
    assert len(flat) == 1 and flat[0].re_expires_in == 32140800
    assert flat[0].refresh_expires_at == 1000.0 + 32140800
    other = {**TOKEN_FIELDS, "auth_app_id": "2021000000000100", "expires_in": 10, "re_expires_in": 20}
    batch = parse_token_response({"tokens": [TOKEN_FIELDS, other]}, obtained_at=0)
    assert [t.auth_app_id for t in batch] == ["2021000000000099", "2021000000000100"]
    assert batch[1].expires_in == 10
    both = parse_token_response({**TOKEN_FIELDS, "tokens": [TOKEN_FIELDS, other]}, obtained_at=0)
    assert len(both) == 2  # the flat copy of the first app is not counted twice
    assert parse_token_response({**TOKEN_FIELDS, "expires_in": ""}, 0)[0].expires_in is None


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"tokens": "x"},
        {"tokens": ["x"]},
        {**TOKEN_FIELDS, "re_expires_in": "soon"},
        {**TOKEN_FIELDS, "app_refresh_token": ""},
        {**TOKEN_FIELDS, "expires_in": True},
    ],
)
def test_malformed_token_responses(data):
    with pytest.raises(MalformedResponseError):
        parse_token_response(data, 0)


def test_token_repr_and_mask_hide_secrets():
    token = parse_token_response(TOKEN_FIELDS, 0)[0]
    text = repr(token)
    assert TOKEN_FIELDS["app_auth_token"] not in text and TOKEN_FIELDS["app_refresh_token"] not in text
    assert mask(TOKEN_FIELDS["app_auth_token"]) == "2025…(40)" and mask(None) == "-"
