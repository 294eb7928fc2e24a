"""The rotation commit is fenced (invariant 3): a worker whose lease ran out while it was at Alipay
cannot overwrite the pair of the worker that took over. Over the real wire: DynamoDB Local's
conditions, the emulator's rotating refresh tokens; afterwards the pair Alipay holds as current and
the pair in the table are the same."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from app_auth.refresh import RACED, REFRESHED, RefreshPolicy, RefreshService
from tests.integration.test_refresh_flow import authorized_and_due

pytestmark = pytest.mark.integration

LEASE_SECONDS = 0.3
APP = "2021000000000951"


class AtAlipay:
    """A worker's TokenApi whose ``refresh`` runs ``after_answer`` once Alipay has answered, before
    the answer reaches the worker: the worker is still "at Alipay" while that runs."""

    def __init__(self, inner: Any, after_answer: Callable[[], None]) -> None:
        self._inner = inner
        self._after_answer = after_answer

    def refresh(self, refresh_token: str, **kwargs: Any) -> Any:
        grant = self._inner.refresh(refresh_token, **kwargs)
        self._after_answer()
        return grant

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def worker(stack, owner: str, after_answer: Callable[[], None] = lambda: None) -> RefreshService:
    c = stack.container
    return RefreshService(
        settings=c.settings,
        store=c.store,
        token_api=lambda session: AtAlipay(c.new_token_api(session), after_answer),  # type: ignore[arg-type,return-value]
        publisher=c.publisher,
        policy=RefreshPolicy(lease_seconds=LEASE_SECONDS),
        owner=owner,
    )


def outlive_the_lease() -> None:
    time.sleep(LEASE_SECONDS + 0.2)


def assert_table_holds_alipays_pair(stack) -> None:
    c = stack.container
    stored = c.store.open_current(c.store.get_token(APP))
    at_alipay = stack.emulator.authority.current_tokens(stack.creds.app_id, APP)
    assert (stored.app_auth_token, stored.app_refresh_token) == at_alipay
    assert stack.emulator.token_valid(stored.app_auth_token)


def test_a_worker_whose_lease_ran_out_at_alipay_cannot_overwrite_the_one_that_took_over(stack):
    # Given a due token, and worker A so slow at Alipay that its lease runs out and B takes over
    authorized_and_due(stack, [APP])
    outcomes: dict[str, Any] = {}

    def b_takes_over_and_commits() -> None:
        outlive_the_lease()
        outcomes["B"] = worker(stack, "worker-b").refresh_one(APP)

    a = worker(stack, "worker-a", after_answer=b_takes_over_and_commits)
    # When A's answer finally comes back, after B rotated and committed
    outcomes["A"] = a.refresh_one(APP)
    # Then B's commit stands, A's stale commit was refused, and the table holds Alipay's current pair
    assert outcomes == {"B": REFRESHED, "A": RACED}
    assert stack.emulator.refresh_count(APP) == 2
    assert stack.container.store.get_token(APP).version == 2
    assert_table_holds_alipays_pair(stack)


def test_a_stale_commit_is_refused_while_the_worker_that_took_over_is_still_at_alipay(stack):
    # Given A's lease ran out at Alipay, and B leased the token and got Alipay's answer, not yet committed
    authorized_and_due(stack, [APP])
    b_answered, a_committed = threading.Event(), threading.Event()
    outcomes: dict[str, Any] = {}

    def b_waits_for_a() -> None:
        b_answered.set()
        assert a_committed.wait(30)

    def b_runs() -> None:
        outcomes["B"] = worker(stack, "worker-b", after_answer=b_waits_for_a).refresh_one(APP)

    b = threading.Thread(target=b_runs)

    def a_outlived_by_b() -> None:
        outlive_the_lease()
        b.start()
        assert b_answered.wait(30)

    # When A commits first, and then B
    try:
        outcomes["A"] = worker(stack, "worker-a", after_answer=a_outlived_by_b).refresh_one(APP)
    finally:
        a_committed.set()
        b.join(30)
    # Then A's commit was refused by the lease B holds, and B's pair (Alipay's current one) is stored
    assert outcomes == {"A": RACED, "B": REFRESHED}
    assert stack.container.store.get_token(APP).version == 2
    assert_table_holds_alipays_pair(stack)
