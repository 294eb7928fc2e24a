"""State signing, link building, the due policy, and the merchant pages."""

import base64
import hashlib
import json
import re
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from app_auth import pages
from app_auth.errors import InvalidRequest, StateRejected
from app_auth.links import StateSigner, check_isv_ref, consent_urls
from app_auth.schedule import RotationSchedule
from app_auth.settings import DAY, Settings

KEY = b"k" * 32


class Clock:
    def __init__(self, now: float = 1_764_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_issued_state_verifies_until_it_expires():
    clock = Clock()
    signer = StateSigner(KEY, clock=clock)
    issued = signer.issue(600)
    assert signer.verify(issued.value) == issued.state_id
    clock.now += 601
    with pytest.raises(StateRejected) as info:
        signer.verify(issued.value)
    assert info.value.code == "state-expired"


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda v: v[:-2] + ("AA" if not v.endswith("AA") else "BB"), "state-forged"),
        (lambda v: v.replace("v1.", "v2.", 1), "state-malformed"),
        (lambda v: "garbage", "state-malformed"),
        (
            lambda v: ".".join([*v.split(".")[:2], str(int(v.split(".")[2]) + 9999), v.split(".")[3]]),
            "state-forged",
        ),
    ],
)
def test_tampered_states_are_rejected_with_a_reason(mutate, code):
    signer = StateSigner(KEY, clock=Clock())
    with pytest.raises(StateRejected) as info:
        signer.verify(mutate(signer.issue(600).value))
    assert info.value.code == code


def test_state_from_another_deployment_key_is_forged():
    value = StateSigner(b"a" * 32, clock=Clock()).issue(600).value
    with pytest.raises(StateRejected, match="signature"):
        StateSigner(b"b" * 32, clock=Clock()).verify(value)


def test_short_keys_are_refused():
    with pytest.raises(ValueError):
        StateSigner(b"short")


def test_isv_ref_rules():
    assert check_isv_ref("customer-42:shop@cn") == "customer-42:shop@cn"
    assert check_isv_ref("") is None and check_isv_ref(None) is None
    for bad in ("a b", "<script>", "x" * 129, "a&b"):
        with pytest.raises(InvalidRequest):
            check_isv_ref(bad)


def test_consent_urls_carry_app_redirect_and_state():
    classic, b_alipay = consent_urls(
        isv_app_id="2021000000000001",
        redirect_uri="https://api.example.com/callback",
        state="v1.abc.1.mac",
        consent_page="https://openauth.alipay.com/oauth2/appToAppAuth.htm",
    )
    query = parse_qs(urlsplit(classic).query)
    assert query == {
        "app_id": ["2021000000000001"],
        "redirect_uri": ["https://api.example.com/callback"],
        "state": ["v1.abc.1.mac"],
    }
    biz = json.loads(unquote(b_alipay.split("bizData=", 1)[1]))
    assert biz["platformCode"] == "O" and biz["taskType"] == "INTERFACE_AUTH"
    assert (
        biz["agentOpParam"]["isvAppId"] == "2021000000000001"
        and biz["agentOpParam"]["state"] == "v1.abc.1.mac"
    )


def _settings(**kw):
    return Settings(
        table_name="t", alipay_secret_id="s", state_secret_id="s2", kms_key_id="k", event_bus_name="b", **kw
    )


def test_due_policy_keeps_refresh_inside_the_refresh_tokens_life():
    schedule = RotationSchedule(lead_seconds=30 * DAY, jitter_seconds=0)
    assert schedule.next_due(0, 365 * DAY) == 335 * DAY
    assert schedule.next_due(0, 10 * DAY) == 5 * DAY  # short lives: at half, never after the end
    assert schedule.next_due(0, None) == schedule.default_life_seconds - 30 * DAY
    assert RotationSchedule(max_age_seconds=7 * DAY, jitter_seconds=0).next_due(0, 365 * DAY) == 7 * DAY


def test_tokens_authorized_together_come_due_apart_each_at_a_fixed_time():
    schedule = RotationSchedule(lead_seconds=30 * DAY)  # jitter: up to a day earlier
    apps = [f"20210000000{n:05d}" for n in range(1000)]
    due = [schedule.next_due(0, 365 * DAY, app) for app in apps]
    assert all(334 * DAY <= d <= 335 * DAY for d in due)  # earlier, never later than the policy
    hours = {int(d // 3600) for d in due}
    assert len(hours) == 24  # spread over the whole day, not bunched at one instant
    assert due == [schedule.next_due(0, 365 * DAY, app) for app in apps]  # the same app, the same time
    short = schedule.next_due(0, 10 * DAY, apps[0])
    assert 4.5 * DAY <= short <= 5 * DAY  # a short wait moves by a tenth of itself at most


def test_settings_from_env_names_what_is_missing():
    with pytest.raises(RuntimeError, match="TABLE_NAME"):
        Settings.from_env({})
    env = {
        "TABLE_NAME": "t",
        "SECRET_ARN": "s",
        "STATE_SECRET_ARN": "s2",
        "TOKEN_KMS_KEY_ID": "k",
        "ALLOW_STATELESS_CALLBACKS": "true",
        "REFRESH_LEAD_DAYS": "10",
    }
    settings = Settings.from_env(env)
    assert settings.allow_stateless_callbacks and settings.schedule.lead_seconds == 10 * DAY


def test_pages_are_escaped_bilingual_and_allowed_by_their_own_csp():
    html = pages.render(
        "invalid",
        detail="<script>alert(1)</script>",
        facts={"ref": '"><img src=x>'},
        link='https://x.example/?a="b"',
    )
    assert "<script>" not in html and "<img" not in html
    assert "授权链接无效" in html and "This link is not valid" in html
    style = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in pages.CONTENT_SECURITY_POLICY
    assert (
        "script-src" not in pages.CONTENT_SECURITY_POLICY
        and "default-src 'none'" in pages.CONTENT_SECURITY_POLICY
    )
    assert 'name="viewport"' in html and "http" not in html.replace("https://x.example/?a=&quot;b&quot;", "")


@pytest.mark.parametrize("kind", sorted(pages.PAGES))
def test_every_page_renders(kind):
    assert f'data-outcome="{kind}"' in pages.render(kind)
