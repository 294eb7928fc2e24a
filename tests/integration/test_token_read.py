"""The ISV's services find their customers' merchant apps by their own reference (GET /tokens?ref=R,
routed by the route key API Gateway sends), then read the token by its app id."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_a_reference_finds_its_merchant_apps_and_no_token(stack):
    # Given a merchant who authorized through a link for customer-77
    stack.callback(stack.consent(stack.create_link("customer-77")))
    # When a service asks for the customer's merchant apps
    found = stack.http.get(f"{stack.url}/tokens", params={"ref": "customer-77"}, timeout=10)
    # Then it gets the one app, usable, and no token in that answer
    assert found.status_code == 200
    body = found.json()
    [app] = body["merchant_apps"]
    assert (body["isv_ref"], app["status"], app["usable"]) == ("customer-77", "active", True)
    assert "app_auth_token" not in found.text
    # And the app id it names reads the token
    read = stack.http.get(f"{stack.url}/tokens/{app['auth_app_id']}", timeout=10)
    assert read.status_code == 200 and read.json()["isv_ref"] == "customer-77"
    # And an unknown reference finds nothing; a missing or malformed one is the caller's mistake
    none = stack.http.get(f"{stack.url}/tokens", params={"ref": "customer-none"}, timeout=10)
    assert (none.status_code, none.json()["merchant_apps"]) == (200, [])
    for params in ({}, {"ref": "no spaces"}):
        bad = stack.http.get(f"{stack.url}/tokens", params=params, timeout=10)
        assert bad.status_code == 400 and bad.json()["code"] in {"missing-ref", "invalid-ref"}
