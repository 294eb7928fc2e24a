"""Verifier and the refresher's verification slices: stored tokens checked against Alipay's query,
what each may do kept, and those Alipay says no longer work found without any news reaching us."""

from __future__ import annotations

import pytest

from alipay_v3 import AlipayConfig
from app_auth import events
from app_auth.errors import ConfigurationRefused
from app_auth.grants import Route
from app_auth.refresh import RefreshPolicy
from app_auth.schedule import DAY
from app_auth.token_store import ACTIVE, NEEDS_REAUTH
from app_auth.verification import Verified
from sandbox.credentials import DevCredentials
from tests.fast.fake_alipay import api_error, transport_error
from tests.fast.world import MERCHANT_APP, World, build_world

ISV = "2021000000000001"
APPS = tuple(f"20880000000001{n:02d}" for n in range(12))


def seed(world: World, *apps: str) -> None:
    for app in apps or (MERCHANT_APP,):
        world.grants.record(world.alipay.issue(app), via=Route.CALLBACK, isv_app_id=ISV, isv_ref=f"ref-{app}")
    world.events.entries.clear()
    world.alipay.queries.clear()


def needs_reauth_events(world: World) -> list[str]:
    return [d["auth_app_id"] for kind, d in world.events.published() if kind == events.NEEDS_REAUTHORIZATION]


def test_a_working_token_keeps_what_alipay_says_it_may_do(world: World) -> None:
    seed(world)
    assert world.refresher.verifier.verify(MERCHANT_APP) is Verified.VALID
    record = world.store.get_token(MERCHANT_APP)
    assert (record.status, record.checked_status, record.auth_methods) == (
        ACTIVE,
        "valid",
        ("alipay.trade.pay",),
    )
    assert record.checked_at == world.clock() and world.events.entries == []


@pytest.mark.parametrize(
    "answer",
    [pytest.param("invalid", id="invalid"), pytest.param(api_error("AUTH_TOKEN_NOT_EXISTED"), id="gone")],
)
def test_a_token_alipay_says_no_longer_works_needs_reauthorization_once(world: World, answer: object) -> None:
    seed(world)
    world.alipay.answer_query(
        world.alipay.authorization(MERCHANT_APP, valid=False) if answer == "invalid" else answer  # type: ignore[arg-type]
    )
    assert world.refresher.verifier.verify(MERCHANT_APP) is Verified.INVALID
    record = world.store.get_token(MERCHANT_APP)
    assert (record.status, record.due_at) == (NEEDS_REAUTH, None)
    assert needs_reauth_events(world) == [MERCHANT_APP]
    assert world.refresher.verifier.verify(MERCHANT_APP) is Verified.NOT_SERVED  # not asked again
    assert len(world.alipay.queries) == 1


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(transport_error(), id="no answer"),
        pytest.param(api_error("SYSTEM_ERROR", http_status=500), id="system error"),
        pytest.param(api_error("AUTH_TOKEN_NOT_EXISTED", verified=False), id="unsigned"),
    ],
)
def test_a_query_that_fails_decides_nothing(world: World, failure: object) -> None:
    seed(world)
    world.alipay.answer_query(failure)  # type: ignore[arg-type]
    assert world.refresher.verifier.verify(MERCHANT_APP) is Verified.FAILED
    record = world.store.get_token(MERCHANT_APP)
    assert (record.status, record.checked_at) == (ACTIVE, None)
    assert world.events.entries == []


def test_an_answer_about_a_token_replaced_meanwhile_is_not_kept(world: World) -> None:
    seed(world)

    def reauthorized_meanwhile(token: str) -> object:
        world.grants.record(world.alipay.issue(MERCHANT_APP), via=Route.CALLBACK, isv_app_id=ISV)
        return world.alipay.authorization(MERCHANT_APP, valid=False)

    world.alipay.answer_query(reauthorized_meanwhile)
    assert world.refresher.verifier.verify(MERCHANT_APP) is Verified.REPLACED
    assert world.store.get_token(MERCHANT_APP).status == ACTIVE  # the new grant is not marked dead


def test_alipay_refusing_this_service_stops_verification_and_marks_nobody(world: World) -> None:
    seed(world)
    world.alipay.answer_query(api_error("AUTH_TOKEN_NOT_CONSISTENT"))
    with pytest.raises(ConfigurationRefused):
        world.refresher.verifier.verify(MERCHANT_APP)
    assert world.store.get_token(MERCHANT_APP).status == ACTIVE


def test_the_runs_of_one_period_verify_every_served_token_once(
    creds: DevCredentials, alipay_config: AlipayConfig
) -> None:
    # Given twelve tokens, one of them cancelled at Alipay with no message reaching us, and runs
    # every 15 minutes that verify everything once an hour (four slices)
    policy = RefreshPolicy(verify_every_days=3600 / DAY, run_interval_minutes=15)
    world = build_world(creds, alipay_config, policy=policy, merchant_apps=APPS)
    seed(world, *APPS)
    tokens = {app: world.store.open_current(world.store.get_token(app)).app_auth_token for app in APPS}
    world.alipay.cancelled.add(tokens[APPS[5]])
    # When four runs come, a run interval apart
    verified: dict[str, int] = {}
    for _ in range(4):
        summary = world.refresher.run(remaining_seconds=lambda: 300.0)
        for outcome, count in summary.verified.items():
            verified[outcome] = verified.get(outcome, 0) + count
        world.clock.advance(15 * 60)
    # Then each token was asked about once, and the cancelled one found
    assert sorted(world.alipay.queries) == sorted(tokens.values())
    assert verified == {"valid": len(APPS) - 1, "invalid": 1}
    assert world.store.get_token(APPS[5]).status == NEEDS_REAUTH
    assert needs_reauth_events(world) == [APPS[5]]
    assert {world.store.get_token(app).checked_status for app in APPS if app != APPS[5]} == {"valid"}


def test_no_verification_when_it_is_turned_off(creds: DevCredentials, alipay_config: AlipayConfig) -> None:
    world = build_world(creds, alipay_config, policy=RefreshPolicy(verify_every_days=0))
    seed(world)
    for _ in range(3):
        world.refresher.run(remaining_seconds=lambda: 300.0)
        world.clock.advance(DAY)
    assert world.alipay.queries == []
