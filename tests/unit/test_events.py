"""Events: the whitelist, and a run's batch (ten to a PutEvents call, nothing held past its run)."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from app_auth.events import REFRESHED, EventBatch, EventPublisher


class FakeEventBridge:
    """Records PutEvents calls; rejects the entries whose detail names an app in ``reject``."""

    def __init__(self, *, reject: frozenset[str] = frozenset(), down: bool = False) -> None:
        self.calls: list[list[dict[str, str]]] = []
        self.reject = reject
        self.down = down

    def put_events(self, Entries: list[dict[str, str]]) -> dict[str, Any]:
        if self.down:
            raise EndpointConnectionError(endpoint_url="https://events.invalid")
        self.calls.append(Entries)
        outcomes = [
            {"ErrorCode": "InternalFailure"}
            if json.loads(e["Detail"])["auth_app_id"] in self.reject
            else {"EventId": "1"}
            for e in Entries
        ]
        return {"FailedEntryCount": sum("ErrorCode" in o for o in outcomes), "Entries": outcomes}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def apps(calls: list[list[dict[str, str]]]) -> list[list[str]]:
    return [[json.loads(e["Detail"])["auth_app_id"] for e in call] for call in calls]


def test_details_outside_the_whitelist_are_refused_before_anything_is_sent() -> None:
    bus = FakeEventBridge()
    with pytest.raises(ValueError, match="app_auth_token"):
        EventPublisher(bus, "b").publish(REFRESHED, auth_app_id="1", app_auth_token="secret")
    assert bus.calls == []


def test_a_batch_sends_ten_to_a_call_and_the_rest_when_the_run_ends() -> None:
    bus = FakeEventBridge()
    with EventBatch(EventPublisher(bus, "b"), max_hold_seconds=60, monotonic=Clock()) as batch:
        for n in range(23):
            batch.publish(REFRESHED, auth_app_id=str(n))
        assert apps(bus.calls) == [[str(n) for n in range(10)], [str(n) for n in range(10, 20)]]
    assert apps(bus.calls)[2:] == [["20", "21", "22"]]


def test_an_event_is_not_held_past_max_hold_seconds_while_others_arrive() -> None:
    bus, clock = FakeEventBridge(), Clock()
    batch = EventBatch(EventPublisher(bus, "b"), max_hold_seconds=1.0, monotonic=clock)
    batch.publish(REFRESHED, auth_app_id="first")
    clock.now += 0.5
    batch.publish(REFRESHED, auth_app_id="second")
    assert bus.calls == []
    clock.now += 0.6  # the first has now waited 1.1 s
    batch.publish(REFRESHED, auth_app_id="third")
    assert apps(bus.calls) == [["first", "second", "third"]]


def test_a_failed_run_still_sends_what_it_holds() -> None:
    bus = FakeEventBridge()
    with pytest.raises(RuntimeError), EventBatch(EventPublisher(bus, "b"), max_hold_seconds=60) as batch:
        batch.publish(REFRESHED, auth_app_id="stored")
        raise RuntimeError("the run broke after a rotation was stored")
    assert apps(bus.calls) == [["stored"]]


def test_concurrent_publishers_lose_no_event_and_no_call_exceeds_ten() -> None:
    bus = FakeEventBridge()
    with EventBatch(EventPublisher(bus, "b"), max_hold_seconds=60) as batch:
        threads = [
            threading.Thread(
                target=lambda t=t: [batch.publish(REFRESHED, auth_app_id=f"{t}-{n}") for n in range(50)]
            )
            for t in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    sent = [app for call in apps(bus.calls) for app in call]
    assert sorted(sent) == sorted(f"{t}-{n}" for t in range(8) for n in range(50))
    assert max(len(call) for call in bus.calls) == 10


def test_rejected_and_unsent_events_are_logged_by_app_without_their_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="app_auth.events")
    publisher = EventPublisher(FakeEventBridge(reject=frozenset({"2"})), "b")
    with EventBatch(publisher, max_hold_seconds=60) as batch:
        for n in range(3):
            batch.publish(REFRESHED, auth_app_id=str(n), isv_ref="ref-xyz")
    assert [r.getMessage() for r in caplog.records] == [
        "event Token Refreshed for 2 rejected by EventBridge: InternalFailure"
    ]
    caplog.clear()
    assert EventPublisher(FakeEventBridge(down=True), "b").publish(REFRESHED, auth_app_id="7") is False
    assert [r.getMessage() for r in caplog.records] == [
        "event Token Refreshed for 7 not published: EndpointConnectionError"
    ]
    assert "ref-xyz" not in caplog.text
