"""The v3 signature steps, held against vectors computed independently with `openssl dgst -sha256 -sign`."""

import pytest

from alipay_v3.errors import RequestVerificationError
from alipay_v3.keys import load_private_key
from alipay_v3.signing import (
    AuthParams,
    authorization_header,
    parse_authorization,
    request_sign_content,
    response_sign_content,
    sign,
    verify,
)

AUTH = AuthParams(
    app_id="2021000000000001", nonce="4f1d3a0e-6a2b-4c3d-8e9f-0123456789ab", timestamp="1717756911576"
)
BODY = b'{"grant_type":"authorization_code","code":"1cc19911172e4f8aaa509c8fb5d12f56"}'
TOKEN = "201509BBeff9351ad1874306903e96b91d248A36"
# openssl dgst -sha256 -sign tests/unit/data/golden_app_key.pem over the contents below
OPENSSL_SIGNATURE = (
    "mvR8QY2tQ34qiWkJOIWEd+1pN8lf9s8jZA8YGiXHMzjENM67Ql07FQV33sRyi26wF3+70LiXpeLq0DEHExIBqs0kZqgRKHhLYHvTbC1Ac9Hd0L"
    "iKp32Wh8+X1l+9U29YKOp96mBr1W1QWqp/bs46/q6JTSUk3Yd85Sr+B77OB2gxZbyvf1q3KN0eqYHqhREgCSgnAX5cjJB2FiF5y+HuQsScrAjx"
    "pgD3VYSymPmExpaYhUJpUb0eXvxOBFYMMvZYd5Ne6VgRQXfiHzJvXJNzGaXVqT3YUYG1vOXXf8+Nh2BzGGnEOsm5n/LxfoYzRovG1UofMWhV9koe"
    "cI00cm9afA=="
)
OPENSSL_SIGNATURE_WITH_TOKEN = (
    "ixiXjriXOaO7jntgE3Lk8wt88x7dDJER76UFH0EVx8XBBlExvt+Tz4UfRF3jg0lsvlCJvtKRsz2wBq1FSDWiBDHqKagZzO2O+kfw1Qq030oFqAl3"
    "jfG7UwO90JPcY1TrMftUnYto7My2qu+cwpGG4FMdBi4zpalYA3IO/aTzJ4/fEnPvBb2sAqwD0zhCWE6ST16j2co0XlXHVr3FlUsrS3i0fyK9jZ8E7q"
    "plCHPpjDQynnY2px7ay931fNoz8akJdZfWNE4kElI2/kb5PBjSHmAULmx88Pfa74Py448qmPmfFin/8z1tTB3U779brMLzdg7NTTtb07UOIzEPrFsH"
    "Aw=="
)


def test_auth_string_field_order_key_mode_and_cert_mode():
    assert (
        AUTH.auth_string()
        == "app_id=2021000000000001,nonce=4f1d3a0e-6a2b-4c3d-8e9f-0123456789ab,timestamp=1717756911576"
    )
    cert = AuthParams(app_id="1", nonce="n", timestamp="2", app_cert_sn="abc", extra="k=v")
    assert cert.auth_string() == "app_id=1,app_cert_sn=abc,nonce=n,timestamp=2,k=v"


def test_sign_content_has_five_lf_terminated_lines_only_with_token():
    without = request_sign_content(AUTH.auth_string(), "post", "/v3/alipay/open/auth/token/app", BODY)
    assert without == AUTH.auth_string().encode() + b"\nPOST\n/v3/alipay/open/auth/token/app\n" + BODY + b"\n"
    with_token = request_sign_content(
        AUTH.auth_string(), "POST", "/v3/alipay/open/auth/token/app", BODY, TOKEN
    )
    assert with_token == without + TOKEN.encode() + b"\n"
    assert request_sign_content("a", "GET", "/p?q=1", b"").endswith(b"GET\n/p?q=1\n\n")


@pytest.mark.parametrize(
    ("token", "expected"), [(None, OPENSSL_SIGNATURE), (TOKEN, OPENSSL_SIGNATURE_WITH_TOKEN)]
)
def test_signature_equals_openssl(golden_key_pem, token, expected):
    key = load_private_key(golden_key_pem).key
    content = request_sign_content(AUTH.auth_string(), "POST", "/v3/alipay/open/auth/token/app", BODY, token)
    assert sign(key, content) == expected
    assert verify(key.public_key(), content, expected)
    assert not verify(key.public_key(), content + b"x", expected)
    assert not verify(key.public_key(), content, "not base64!")


def test_response_content():
    assert response_sign_content("1700000000000", "abc", b'{"a":1}') == b'1700000000000\nabc\n{"a":1}\n'


def test_authorization_header_round_trips_through_parse():
    header = authorization_header(AUTH.auth_string(), OPENSSL_SIGNATURE)
    assert header.startswith("ALIPAY-SHA256withRSA app_id=")
    parsed = parse_authorization(header)
    assert parsed.auth_string == AUTH.auth_string()
    assert parsed.signature == OPENSSL_SIGNATURE
    assert parsed.fields == {"app_id": "2021000000000001", "nonce": AUTH.nonce, "timestamp": AUTH.timestamp}


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing-signature"),
        ("Bearer x", "invalid-auth-type"),
        ("ALIPAY-SHA256withRSA app_id=1,nonce=n,timestamp=1", "missing-signature"),
        ("ALIPAY-SHA256withRSA app_id=1,nonce=n,sign=abc", "missing-timestamp"),
        ("ALIPAY-SHA256withRSA app_id=1,garbage,timestamp=1,sign=abc", "invalid-auth-string"),
    ],
)
def test_parse_authorization_rejects_malformed_headers(header, code):
    with pytest.raises(RequestVerificationError) as info:
        parse_authorization(header)
    assert info.value.code == code
