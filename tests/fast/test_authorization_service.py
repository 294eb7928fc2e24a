"""AuthorizationService.handle_callback: validate, claim the code, exchange once, store, answer -
and every way it ends (outcomes.CallbackOutcome), against a scripted Alipay."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from alipay_v3 import AlipayConfig
from app_auth import events
from app_auth.authorize import CallbackResult
from app_auth.errors import AppAuthError, InvalidRequest, StateRejected
from app_auth.flow_store import ClaimStatus, code_hash
from app_auth.grants import Route
from app_auth.outcomes import CallbackOutcome
from app_auth.token_store import ACTIVE
from sandbox.credentials import DevCredentials
from tests.fast.fake_alipay import api_error, transport_error
from tests.fast.world import MERCHANT_APP, TokenWritesFailingDynamoDB, World, build_world


def consented(world: World, isv_ref: str | None = "shop-1") -> dict[str, str]:
    """The callback's parameters after the merchant consented through a fresh link."""
    link = world.authorization.create_link(isv_ref)
    return world.callback_params(world.new_code(), link.state)


def claim_status(world: World, params: dict[str, str]) -> ClaimStatus | None:
    claim = world.flow.get_claim(code_hash(params["app_auth_code"]))
    return None if claim is None else claim.status


def test_a_consented_callback_stores_the_token_and_announces_it(world: World) -> None:
    # Given a merchant who consented through shop-1's link
    params = consented(world)
    # When Alipay's redirect reaches the callback
    result = world.authorization.handle_callback(params)
    # Then the code was exchanged once, the token stored with the link's reference, the grant announced
    assert result == CallbackResult(CallbackOutcome.AUTHORIZED, (MERCHANT_APP,), "shop-1")
    assert world.alipay.exchanges == [params["app_auth_code"]]
    record = world.store.get_token(MERCHANT_APP)
    assert (record.status, record.isv_ref, record.version) == (ACTIVE, "shop-1", 1)
    assert world.store.open_current(record).app_auth_token.endswith("authtoken")
    [(kind, detail)] = world.events.published()
    assert kind == events.AUTHORIZED
    assert (detail["auth_app_id"], detail["isv_ref"], detail["via"]) == (MERCHANT_APP, "shop-1", "callback")
    assert claim_status(world, params) == ClaimStatus.DONE


def test_a_batch_authorization_stores_every_app(creds: DevCredentials, alipay_config: AlipayConfig) -> None:
    # Given a merchant who authorized two of its apps at once
    world = build_world(creds, alipay_config, merchant_apps=("2088000000000001", "2088000000000002"))
    # When the callback comes
    result = world.authorization.handle_callback(consented(world))
    # Then both are stored and announced
    assert result.outcome == CallbackOutcome.AUTHORIZED
    assert result.auth_app_ids == ("2088000000000001", "2088000000000002")
    assert {r.auth_app_id for r in world.store.list_tokens()} == set(result.auth_app_ids)
    assert [d["auth_app_id"] for _, d in world.events.published()] == list(result.auth_app_ids)


def test_a_reload_is_answered_from_the_claim_without_a_second_exchange(world: World) -> None:
    # Given a callback that was handled
    params = consented(world)
    first = world.authorization.handle_callback(params)
    # When the browser reloads it (same state, same code)
    again = world.authorization.handle_callback(params)
    # Then the answer is the same, marked repeated; Alipay saw the code once, nothing new announced
    assert (again.outcome, again.auth_app_ids, again.isv_ref) == (first.outcome, first.auth_app_ids, "shop-1")
    assert again.repeated and not first.repeated
    assert len(world.alipay.exchanges) == 1
    assert len(world.events.entries) == 1
    assert world.store.get_token(MERCHANT_APP).version == 1


def test_a_used_state_with_another_code_is_rejected_without_calling_alipay(world: World) -> None:
    # Given a state that already brought a code
    params = consented(world)
    world.authorization.handle_callback(params)
    # When it comes back with another code
    with pytest.raises(StateRejected) as rejected:
        world.authorization.handle_callback({**params, "app_auth_code": world.new_code()})
    # Then it is refused as used, and the second code never reached Alipay
    assert rejected.value.code == "state-used"
    assert world.alipay.exchanges == [params["app_auth_code"]]


def test_a_duplicate_while_the_first_is_exchanging_is_told_in_progress(world: World) -> None:
    # Given a code claimed by a request still at Alipay
    params = consented(world)
    world.flow.claim_code(code_hash(params["app_auth_code"]), isv_ref="shop-1", ttl_seconds=3600)
    # When a duplicate arrives and the first does not finish within the wait
    result = world.authorization.handle_callback(params)
    # Then it is told the exchange is in progress, without exchanging the code itself
    assert (result.outcome, result.repeated) == (CallbackOutcome.IN_PROGRESS, True)
    assert world.alipay.exchanges == []


def test_a_spent_code_is_told_spent_with_a_fresh_link_and_stores_nothing(world: World) -> None:
    # Given Alipay says the code is no longer valid
    world.alipay.answer_exchange(api_error("AUTH_CODE_NOT_VALID"))
    params = consented(world)
    # When the callback comes
    result = world.authorization.handle_callback(params)
    # Then the merchant is told to authorize again, with a new link for the same customer
    assert (result.outcome, result.isv_ref) == (CallbackOutcome.CODE_SPENT, "shop-1")
    assert result.fresh_link is not None and result.fresh_link != ""
    assert world.store.find_token(MERCHANT_APP) is None
    assert world.events.entries == []
    assert claim_status(world, params) == ClaimStatus.FAILED


@pytest.mark.parametrize(
    "code",
    [
        "AUTH_CODE_NOT_VALID",
        "AUTH_CODE_NOT_EXIST",
        "SYSTEM_ERROR",
        "APP_ID_NOT_CONSISTENT",
    ],
)
def test_a_reload_after_alipay_refused_the_code_gets_the_same_answer(world: World, code: str) -> None:
    # Given a callback whose exchange Alipay refused with ``code``
    world.alipay.answer_exchange(api_error(code, http_status=500 if code == "SYSTEM_ERROR" else 400))
    params = consented(world)
    first = world.authorization.handle_callback(params)
    # When the merchant reloads the page
    again = world.authorization.handle_callback(params)
    # Then the reload says what the first answer said, without asking Alipay again
    assert again.repeated
    assert again.outcome == first.outcome
    assert len(world.alipay.exchanges) == 1


def test_an_unanswered_exchange_is_not_retried_and_is_unconfirmed(world: World) -> None:
    # Given the exchange request went out and no answer came back (the code may be spent)
    world.alipay.answer_exchange(transport_error(request_sent=True, timed_out=True))
    params = consented(world)
    # When the callback comes, and the merchant reloads it
    result = world.authorization.handle_callback(params)
    reload = world.authorization.handle_callback(params)
    # Then Alipay was asked once; both answers are "unconfirmed" with a fresh link; nothing stored
    assert len(world.alipay.exchanges) == 1
    assert result.outcome == reload.outcome == CallbackOutcome.UNCONFIRMED
    assert result.fresh_link is not None and reload.fresh_link is not None
    assert world.store.find_token(MERCHANT_APP) is None and world.events.entries == []
    assert claim_status(world, params) == ClaimStatus.FAILED


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (lambda state: state[:-2] + ("AA" if not state.endswith("AA") else "BB"), "state-forged"),
        (lambda state: state.replace("v1.", "v2.", 1), "state-malformed"),
        (lambda state: "not-a-state", "state-malformed"),
    ],
)
def test_a_forged_state_is_rejected_before_anything_is_written_or_sent(
    world: World, tamper: Callable[[str], str], code: str
) -> None:
    # Given a callback whose state was tampered with
    params = consented(world)
    params["state"] = tamper(params["state"])
    # When it arrives
    with pytest.raises(StateRejected) as rejected:
        world.authorization.handle_callback(params)
    # Then it is refused, saying why; no claim written, Alipay not called
    assert rejected.value.code == code
    assert world.alipay.exchanges == [] and world.items("CODE#") == []


def test_an_expired_state_is_rejected_without_calling_alipay(world: World) -> None:
    # Given a link older than its lifetime
    params = consented(world)
    world.clock.advance(world.settings.state_ttl_seconds + 1)
    # When its callback finally arrives
    with pytest.raises(StateRejected) as rejected:
        world.authorization.handle_callback(params)
    # Then it is refused as expired, without a claim or an exchange
    assert rejected.value.code == "state-expired"
    assert world.alipay.exchanges == [] and world.items("CODE#") == []


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"app_id": "2021999999999999"}, "wrong-app-id"),
        ({"app_auth_code": "short"}, "malformed-code"),
        ({"app_auth_code": ""}, "missing-code"),
        ({"source": "somewhere_else"}, "wrong-source"),
        ({"state": ""}, "state-missing"),
    ],
)
def test_bad_input_is_refused_without_calling_alipay(world: World, change: dict[str, str], code: str) -> None:
    # Given a callback with one parameter wrong
    params = {**consented(world), **change}
    # When it arrives  Then it is refused with a code a person can act on, and Alipay is not called
    with pytest.raises(InvalidRequest) as refused:
        world.authorization.handle_callback(params)
    assert refused.value.code == code
    assert world.alipay.exchanges == []


def test_a_stateless_callback_is_accepted_only_when_allowed(
    creds: DevCredentials, alipay_config: AlipayConfig
) -> None:
    # Given a callback without state (a console invite link), in a deployment that allows them
    world = build_world(creds, alipay_config, allow_stateless_callbacks=True)
    # When it arrives
    result = world.authorization.handle_callback(world.callback_params(world.new_code(), None))
    # Then it is stored, without a reference
    assert (result.outcome, result.isv_ref) == (CallbackOutcome.AUTHORIZED, None)
    assert world.store.get_token(MERCHANT_APP).isv_ref is None


def refusing_table(
    creds: DevCredentials, alipay_config: AlipayConfig
) -> tuple[World, TokenWritesFailingDynamoDB, dict[str, str]]:
    """A world whose table refuses token writes, and a merchant's consent to handle in it."""
    dynamodb = TokenWritesFailingDynamoDB()
    world = build_world(creds, alipay_config, dynamodb=dynamodb)
    params = consented(world)
    dynamodb.failing = True
    return world, dynamodb, params


def test_a_result_that_cannot_be_stored_is_parked_sealed_and_replays(
    creds: DevCredentials, alipay_config: AlipayConfig
) -> None:
    # Given a table that refuses token writes
    world, dynamodb, params = refusing_table(creds, alipay_config)
    # When the callback's exchange succeeds
    result = world.authorization.handle_callback(params)
    # Then the result is parked on the queue, sealed; the claim says so, and a reload says so too
    assert (result.outcome, result.auth_app_ids) == (CallbackOutcome.PARKED, (MERCHANT_APP,))
    assert claim_status(world, params) == ClaimStatus.PARKED
    assert world.authorization.handle_callback(params).outcome == CallbackOutcome.PARKED
    assert len(world.alipay.exchanges) == 1
    [message] = world.sqs.sent
    assert "authtoken" not in message["MessageBody"] and "refreshtk" not in message["MessageBody"]
    assert json.loads(message["MessageBody"])["auth_app_ids"] == [MERCHANT_APP]
    # And once the table is back, the parked result replays into the store with its reference
    dynamodb.failing = False
    parked = world.replay.open(message["MessageBody"])
    for token in parked.tokens:
        world.grants.record(token, via=Route.REPLAY, isv_app_id=world.config.app_id, isv_ref=parked.isv_ref)
    assert world.store.get_token(MERCHANT_APP).isv_ref == "shop-1"


def test_a_result_that_can_be_neither_stored_nor_parked_raises(
    creds: DevCredentials, alipay_config: AlipayConfig
) -> None:
    # Given a table that refuses token writes and a queue that is down
    world, _, params = refusing_table(creds, alipay_config)
    world.sqs.down = True
    # When the callback's exchange succeeds  Then the failure is not hidden behind a success page
    with pytest.raises(AppAuthError) as failed:
        world.authorization.handle_callback(params)
    assert failed.value.code in ("storage-error", "concurrent-update")
    assert world.events.entries == []
