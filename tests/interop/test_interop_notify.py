"""Notifications (v2 form posts): the SDK's checkNotifySign accepts what sign_notification signs.

``sign_notification`` is how the emulator plays Alipay posting ``open_app_auth_notify``; an ISV
using the official SDK must accept it, and reject it once anything is changed.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from alipay_v3 import sign_notification, verify_notification
from sandbox.credentials import DevCredentials, private_pem, public_pem
from tests.interop.nodesdk import Oracle

pytestmark = pytest.mark.interop

NOTIFY_COUNT = 24


def _notification(rng: random.Random, creds: DevCredentials) -> dict[str, str]:
    detail: dict[str, str | int] = {
        "app_auth_token": f"202506BB{rng.getrandbits(128):032x}",
        "app_refresh_token": f"202506BB{rng.getrandbits(128):032x}",
        "user_id": f"2088{rng.randint(10**11, 10**12 - 1)}",
        "auth_app_id": f"2021{rng.randint(10**11, 10**12 - 1)}",
        "app_id": creds.app_id,
        "expires_in": 31536000,
        "re_expires_in": 32140800,
        "auth_time": "2026-06-11 10:00:00",
        "app_auth_code": f"P{rng.getrandbits(124):031x}",
    }
    biz_content = {
        "notify_context": {
            "trigger": "user",
            "trigger_context": {"out_biz_no": rng.choice(["ISV-1", "商户-授权-7"])},
        },
        "detail": detail,
    }
    params = {
        "notify_id": f"2026061100222100000{rng.randint(10**9, 10**10 - 1)}",
        "notify_time": f"2026-06-11 10:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
        "notify_type": "open_app_auth_notify",
        "status": "execute_auth",
        "charset": "utf-8",
        "version": "1.0",
        "app_id": creds.app_id,
        "auth_app_id": str(detail["auth_app_id"]),
        "biz_content": json.dumps(biz_content, ensure_ascii=rng.random() < 0.5, separators=(",", ":")),
    }
    if rng.random() < 0.5:
        params["state"] = rng.choice(["b9d1f0c2", "ISV state with spaces", "状态+plus&amp=eq"])
    return params


def _tamper(rng: random.Random, params: dict[str, str]) -> dict[str, str]:
    changed = dict(params)
    how = rng.choice(["value", "drop", "add", "biz"])
    if how == "value":
        changed["status"] = "cancel_auth"
    elif how == "drop":
        del changed["notify_time"]
    elif how == "add":
        changed["extra_field"] = "x"
    else:
        changed["biz_content"] = changed["biz_content"].replace("2088", "2089", 1)
    return changed


def _sdk_config(creds: DevCredentials) -> dict[str, Any]:
    return {
        "appId": creds.app_id,
        "privateKey": private_pem(creds.app_key),
        "alipayPublicKey": public_pem(creds.alipay_key),
    }


@pytest.mark.parametrize("index", range(NOTIFY_COUNT))
def test_sdk_accepts_our_notification_and_rejects_tampered(
    oracle: Oracle, credential_sets: list[DevCredentials], index: int
) -> None:
    rng = random.Random(7000 + index)
    creds = credential_sets[index % 2]
    signed = sign_notification(_notification(rng, creds), creds.alipay_key)
    assert signed["sign_type"] == "RSA2"
    config = _sdk_config(creds)
    # checkNotifySign URI-decodes values first; none of these contain '%', so both variants apply.
    assert oracle.call("notify_check", config=config, params=signed, raw=False)
    assert oracle.call("notify_check", config=config, params=signed, raw=True)
    assert verify_notification(signed, creds.alipay_key.public_key())

    tampered = _tamper(rng, signed)
    assert not oracle.call("notify_check", config=config, params=tampered, raw=True)
    assert not verify_notification(tampered, creds.alipay_key.public_key())

    # Signed by someone else's key: both reject.
    foreign = sign_notification(_notification(rng, creds), credential_sets[(index + 1) % 2].alipay_key)
    assert not oracle.call("notify_check", config=config, params=foreign, raw=True)
    assert not verify_notification(foreign, creds.alipay_key.public_key())


def test_sdk_accepts_our_notification_without_sign_type_in_the_post(
    oracle: Oracle, credential_sets: list[DevCredentials]
) -> None:
    """Some integrations strip sign_type before verifying; the SDK then tries both rsaCheck variants."""
    creds = credential_sets[0]
    signed = sign_notification(_notification(random.Random(1), creds), creds.alipay_key)
    del signed["sign_type"]
    assert oracle.call("notify_check", config=_sdk_config(creds), params=signed, raw=True)
    assert verify_notification(signed, creds.alipay_key.public_key())


def test_values_with_percent_signs_verify_raw(oracle: Oracle, credential_sets: list[DevCredentials]) -> None:
    """Form values are already decoded; checkNotifySignV2 (raw) is the SDK's variant for them."""
    creds = credential_sets[0]
    params = {**_notification(random.Random(2), creds), "state": "100% done, a%20b"}
    signed = sign_notification(params, creds.alipay_key)
    assert oracle.call("notify_check", config=_sdk_config(creds), params=signed, raw=True)
    assert verify_notification(signed, creds.alipay_key.public_key())
