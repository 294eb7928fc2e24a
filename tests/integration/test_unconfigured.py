"""A stack whose Alipay secret is not usable yet: the placeholder the stack creates, an empty secret,
or one that is not JSON. Every public route answers in its caller's form, with no stack trace,
nothing stored, and the configuration alarm's metric; the ISV's routes say what to do."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from app_auth.container import build_container, set_container
from sandbox.table import TEMPLATE, load_template
from tests.integration.stack_fixtures import Stack

pytestmark = pytest.mark.integration


def placeholder_secret() -> str:
    body = load_template(TEMPLATE)["Resources"]["AlipaySecret"]["Properties"]["SecretString"]["Fn::Sub"]
    return str(body.replace("${AlipayEnvironment}", "production"))


SECRETS = {"placeholder": placeholder_secret(), "empty": "{}", "malformed": '{"app_id": "2021'}


@pytest.fixture(params=sorted(SECRETS))
def unconfigured(request: pytest.FixtureRequest, stack: Stack) -> Iterator[Stack]:
    """The stack, its Alipay secret replaced, and a fresh container (a new execution environment)."""
    stack.aws.client("secretsmanager").put_secret_value(
        SecretId=stack.container.settings.alipay_secret_id, SecretString=SECRETS[request.param]
    )
    set_container(build_container(stack.container.settings, client=stack.aws.client, sleep=lambda _: None))
    yield stack


def test_the_merchant_gets_a_page_saying_the_service_is_not_set_up(unconfigured: Stack, capfd) -> None:
    params = {"app_id": unconfigured.creds.app_id, "source": "alipay_app_auth", "app_auth_code": "P" * 32}
    response = unconfigured.callback(params)
    assert response.status_code == 503 and 'data-outcome="not_configured"' in response.text
    assert "Traceback" not in response.text and "REPLACE_ME" not in response.text
    assert unconfigured.emulator.requests_received == 0 and unconfigured.table_items() == []
    logs = capfd.readouterr()
    assert '"ConfigurationErrors"' in logs.out and "Traceback" not in logs.out + logs.err


def test_alipay_is_told_to_send_its_notification_again(unconfigured: Stack) -> None:
    response = unconfigured.http.post(f"{unconfigured.url}/notify", data="notify_id=n1&sign=x", timeout=10)
    assert (response.status_code, response.text) == (503, "fail: not-configured")


def test_the_isv_is_told_what_to_fix(unconfigured: Stack) -> None:
    response = unconfigured.http.post(f"{unconfigured.url}/links", json={"ref": "shop-1"}, timeout=10)
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "not-configured" and "alipay-auth keys import" in body["message"]
    assert "Traceback" not in json.dumps(body)


def test_a_bug_is_answered_in_the_callers_form_not_as_a_bare_500(stack: Stack, monkeypatch) -> None:
    def broken(params):
        raise KeyError("an untranslated failure")

    monkeypatch.setattr(stack.container.authorization, "handle_callback", broken)
    response = stack.callback({"app_id": stack.creds.app_id, "app_auth_code": "P" * 32})
    assert response.status_code == 503 and 'data-outcome="unavailable"' in response.text
    assert "KeyError" not in response.text and "untranslated" not in response.text
