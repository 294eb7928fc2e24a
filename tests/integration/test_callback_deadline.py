"""The callback inside its Lambda deadline: Alipay's read timeout is cut to the time left, a request
killed mid-exchange leaves a claim the next reload answers honestly, and KMS failing before the
exchange spends nothing. Over the local stack: the real handler, DynamoDB Local, moto, the emulator."""

from __future__ import annotations

import time

import pytest

from app_auth.flow_store import ClaimStatus, code_hash
from sandbox.emulator import Fault
from sandbox.front import LambdaContext
from tests.integration.stack_fixtures import Stack
from tests.integration.wire_faults import error_response

pytestmark = pytest.mark.integration


def test_alipays_read_timeout_is_cut_to_the_time_the_invocation_has_left(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an invocation with 8 s left, and Alipay answering after 4 s (the client's read timeout is 10 s)
    monkeypatch.setattr(LambdaContext, "get_remaining_time_in_millis", lambda self: 8_000)
    params = stack.consent(stack.create_link("shop-1"))
    stack.emulator.inject(Fault.LATENCY, delay=4.0)
    # When the merchant comes back
    response = stack.callback(params)
    # Then the exchange gave up inside the deadline and says so honestly, rather than being killed
    assert response.status_code == 502 and 'data-outcome="unconfirmed"' in response.text
    claim = stack.container.flow.get_claim(code_hash(params["app_auth_code"]))
    assert claim is not None and claim.status == ClaimStatus.FAILED


def test_a_claim_left_by_a_killed_request_is_answered_honestly_on_reload(stack: Stack) -> None:
    # Given a request that claimed the code and was killed mid-exchange (its deadline is past)
    params = stack.consent(stack.create_link("shop-2"))
    stack.container.flow.claim_code(
        code_hash(params["app_auth_code"]),
        isv_ref="shop-2",
        ttl_seconds=3600,
        exchanging_until=time.time() - 1,
    )
    calls = stack.emulator.requests_received
    # When the merchant reloads the page
    response = stack.callback(params)
    # Then they are told the outcome is unknown and given a fresh link; the code is not exchanged again
    assert response.status_code == 502 and 'data-outcome="unconfirmed"' in response.text
    assert "state=v1." in response.text and stack.emulator.requests_received == calls


def test_kms_failing_before_the_exchange_spends_neither_link_nor_code(stack: Stack) -> None:
    # Given KMS refusing data keys (before this container ever got one)
    kms = stack.container.clients["kms"]
    refused: list[str] = []

    def refuse(request, **_):
        refused.append("GenerateDataKey")
        return error_response(request, "kms", 500, "KMSInternalException")

    kms.meta.events.register("before-send.kms.GenerateDataKey", refuse)
    params = stack.consent(stack.create_link("shop-3"))
    # When the merchant comes back  Then the page says to retry, and Alipay was not called
    first = stack.callback(params)
    assert first.status_code == 503 and refused and stack.emulator.requests_received == 0
    # And once KMS is back, the same link and code authorize
    kms.meta.events.unregister("before-send.kms.GenerateDataKey", refuse)
    again = stack.callback(params)
    assert again.status_code == 200 and 'data-outcome="authorized"' in again.text
