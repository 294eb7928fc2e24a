"""v2 notification signatures (rsaCheckV1, with the rsaCheckV2 fallback)."""

from alipay_v3.notify import notify_sign_content, sign_notification, verify_notification

PARAMS = {
    "notify_id": "2025112500222000000000000001",
    "notify_type": "open_app_auth_notify",
    "notify_time": "2025-11-25 10:00:00",
    "app_id": "2021000000000001",
    "charset": "utf-8",
    "version": "1.0",
    "biz_content": '{"detail":{"auth_app_id":"2021000000000099","user_id":"2088000000000001"}}',
    "empty": "",
}


def test_sign_content_sorts_and_drops_sign_fields_and_empty_values():
    content = notify_sign_content({**PARAMS, "sign": "x", "sign_type": "RSA2"}).decode()
    assert content.startswith("app_id=2021000000000001&biz_content=")
    assert "sign" not in content.replace("notify", "") and "empty=" not in content
    assert (
        notify_sign_content({**PARAMS, "sign_type": "RSA2"}, keep_sign_type=True)
        .decode()
        .endswith("&sign_type=RSA2&version=1.0")
    )


def test_round_trip_and_tampering(creds):
    signed = sign_notification(PARAMS, creds.alipay_key)
    public = creds.alipay_key.public_key()
    assert verify_notification(signed, public)
    assert not verify_notification({**signed, "notify_id": "other"}, public)
    assert not verify_notification({**signed, "sign_type": "RSA"}, public)
    assert not verify_notification({k: v for k, v in signed.items() if k != "sign"}, public)
    assert not verify_notification(signed, creds.app_key.public_key())


def test_v2_rule_with_sign_type_in_content_is_accepted(creds):
    from alipay_v3.signing import sign

    with_type = {**PARAMS, "sign_type": "RSA2"}
    with_type["sign"] = sign(creds.alipay_key, notify_sign_content(with_type, keep_sign_type=True))
    assert verify_notification(with_type, creds.alipay_key.public_key())
