"""Rotation over the real wire: lease, refresh at the emulator, fenced commit, dead grants, races."""

from __future__ import annotations

import json
import threading
import time

import pytest

from alipay_v3 import AppToken
from app_auth.container import build_container
from app_auth.events import EventPublisher
from app_auth.refresh import NEEDS_REAUTH, REFRESHED, SKIPPED, RefreshPolicy, RefreshService
from app_auth.token_store import ACTIVE
from sandbox.emulator import Fault
from sandbox.front import LambdaContext, load_function
from sandbox.seed import seed_tokens

pytestmark = pytest.mark.integration


def authorize(stack, merchant_app_ids):
    link = stack.create_link("r-1")
    assert stack.callback(stack.consent(link, merchant_app_ids=merchant_app_ids)).status_code == 200
    stack.published_events()


def make_due(stack, auth_app_id):
    stack.aws.client("dynamodb").update_item(
        TableName=stack.container.settings.table_name,
        Key={"pk": {"S": f"APP#{auth_app_id}"}, "sk": {"S": "TOKEN"}},
        UpdateExpression="SET due_at = :past",
        ExpressionAttributeValues={":past": {"N": "1"}},
    )


def authorized_and_due(stack, apps):
    authorize(stack, apps)
    for app in apps:
        make_due(stack, app)
    return apps


def refresher(stack, **policy):
    c = stack.container
    return RefreshService(
        settings=c.settings,
        store=c.store,
        token_api=c.new_token_api,
        publisher=c.publisher,
        policy=RefreshPolicy(**policy),
    )


def read(stack, app_id):
    return stack.http.get(f"{stack.url}/tokens/{app_id}", timeout=10)


def test_forced_refresh_rotates_and_readers_get_the_new_token(stack):
    authorize(stack, ["2021000000000401"])
    before = read(stack, "2021000000000401").json()
    assert refresher(stack).refresh_one("2021000000000401", force=True) == REFRESHED
    after = read(stack, "2021000000000401").json()
    assert after["version"] == before["version"] + 1 and after["app_auth_token"] != before["app_auth_token"]
    assert stack.emulator.token_valid(after["app_auth_token"])
    assert stack.emulator.refresh_count("2021000000000401") == 1
    [event] = stack.published_events()
    assert event["detail-type"] == "Token Refreshed" and after["app_auth_token"] not in str(event)


def test_the_replaced_token_is_served_beside_the_new_one_through_its_grace_window(stack):
    # Given a merchant app whose token was just rotated
    authorize(stack, ["2021000000000403"])
    before = read(stack, "2021000000000403").json()
    assert before["previous_app_auth_token"] is None and before["previous_valid_until"] is None
    assert refresher(stack).refresh_one("2021000000000403", force=True) == REFRESHED

    # When a service reads it within the grace window, it is told the old token still counts
    after = read(stack, "2021000000000403").json()
    grace = stack.container.settings.schedule.previous_grace_seconds
    assert after["previous_app_auth_token"] == before["app_auth_token"] != after["app_auth_token"]
    assert 0 < after["previous_valid_until"] - after["obtained_at"] <= grace + 1

    # Then, once the window has passed, only the new token is served
    stack.aws.client("dynamodb").update_item(
        TableName=stack.container.settings.table_name,
        Key={"pk": {"S": "APP#2021000000000403"}, "sk": {"S": "TOKEN"}},
        UpdateExpression="SET previous_valid_until = :past",
        ExpressionAttributeValues={":past": {"N": "1"}},
    )
    late = read(stack, "2021000000000403").json()
    assert late["app_auth_token"] == after["app_auth_token"] and late["previous_app_auth_token"] is None


def test_nothing_is_refreshed_before_it_is_due(stack):
    authorize(stack, ["2021000000000402"])
    assert refresher(stack).refresh_one("2021000000000402") == SKIPPED
    summary = refresher(stack).run(remaining_seconds=lambda: 300)
    assert summary.due == 0 and stack.emulator.refresh_count("2021000000000402") == 0


def test_a_run_refreshes_what_is_due_through_the_index(stack):
    authorize(stack, ["2021000000000411", "2021000000000412", "2021000000000413"])
    make_due(stack, "2021000000000411")
    make_due(stack, "2021000000000413")
    summary = refresher(stack).run(remaining_seconds=lambda: 300)
    assert (summary.due, summary.count(REFRESHED), summary.left_retryable) == (2, 2, False)
    assert [stack.emulator.refresh_count(f"20210000000004{n}") for n in (11, 12, 13)] == [1, 0, 1]
    # rotated items are due again only much later
    assert refresher(stack).run(remaining_seconds=lambda: 300).due == 0


def test_revoked_grant_needs_reauthorization_once_and_is_not_hammered(stack):
    authorize(stack, ["2021000000000421"])
    stack.emulator.revoke(stack.creds.app_id, "2021000000000421")
    make_due(stack, "2021000000000421")
    assert refresher(stack).refresh_one("2021000000000421") == NEEDS_REAUTH
    assert read(stack, "2021000000000421").status_code == 409
    events = [e["detail-type"] for e in stack.published_events()]
    assert events == ["Reauthorization Needed"]
    calls = stack.emulator.requests_received
    assert refresher(stack).run(remaining_seconds=lambda: 300).due == 0
    assert stack.emulator.requests_received == calls


def test_two_refreshers_over_the_same_due_tokens_rotate_each_once(stack):
    apps = authorized_and_due(stack, [f"20210000000005{n:02d}" for n in range(12)])
    results = []
    workers = [refresher(stack, concurrency=4) for _ in range(2)]
    threads = [
        threading.Thread(target=lambda w=w: results.append(w.run(remaining_seconds=lambda: 300)))
        for w in workers
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(r.count(REFRESHED) for r in results) == len(apps)
    assert sum(r.count(NEEDS_REAUTH) for r in results) == 0
    assert all(stack.emulator.refresh_count(app) == 1 for app in apps)


def test_a_run_sends_its_events_ten_to_a_put_events_call(stack):
    apps = authorized_and_due(stack, [f"20210000000006{n:02d}" for n in range(23)])
    client = stack.aws.client("events")
    calls = []
    client.meta.events.register(
        "before-parameter-build.events.PutEvents", lambda params, **_: calls.append(len(params["Entries"]))
    )
    c = stack.container
    service = RefreshService(
        settings=c.settings,
        store=c.store,
        token_api=c.new_token_api,
        publisher=EventPublisher(client, c.settings.event_bus_name),
    )
    summary = service.run(remaining_seconds=lambda: 300)

    assert summary.count(REFRESHED) == len(apps)
    published = stack.published_events()
    assert sorted(e["detail"]["auth_app_id"] for e in published) == apps
    assert {e["detail-type"] for e in published} == {"Token Refreshed"}
    # Ten to a call, the rest at the end of the run (or earlier, if one waited a second).
    assert sum(calls) == len(apps) and max(calls) == 10 and len(calls) <= len(apps) // 10 + 3, calls


def test_a_run_keeps_its_calls_at_alipay_within_the_concurrency(stack):
    apps = authorized_and_due(stack, [f"20210000000007{n:02d}" for n in range(24)])
    stack.emulator.call_times.clear()
    stack.emulator.inject(Fault.LATENCY, rate=1.0, delay=0.2)  # long enough for calls to pile up
    summary = refresher(stack, concurrency=3, max_calls_per_second=1000).run(remaining_seconds=lambda: 300)
    assert summary.count(REFRESHED) == len(apps)
    # Six workers, three of them at Alipay at any moment: never more, and the bound is reached.
    assert stack.emulator.max_calls_in_flight() == 3


def test_a_run_starts_its_calls_at_alipay_no_faster_than_the_rate(stack):
    apps = authorized_and_due(stack, [f"20210000000008{n:02d}" for n in range(11)])
    stack.emulator.call_times.clear()
    summary = refresher(stack, concurrency=8, max_calls_per_second=10).run(remaining_seconds=lambda: 300)
    assert summary.count(REFRESHED) == len(apps)
    arrivals = sorted(arrived for arrived, _ in stack.emulator.call_times)
    # Eleven calls at ten a second span at least a second; a slow machine only spreads them more.
    # (A few ms of slack: the spacing is kept where the calls leave, and they arrive a little apart.)
    assert len(arrivals) == len(apps) and arrivals[-1] - arrivals[0] >= 1.0 - 0.05, arrivals


def test_a_wrong_app_id_in_the_secret_stops_the_run_and_touches_no_merchant(stack):
    # Given 100 due tokens, and a secret whose app id Alipay does not know (a configuration mistake)
    apps = [f"20210000000009{n:02d}" for n in range(100)]
    seed_tokens(stack.emulator.authority, stack.container.store, stack.creds.app_id, apps)
    before = {app: stack.container.store.get_token(app) for app in apps}
    config = stack.aws.client("secretsmanager").get_secret_value(
        SecretId=stack.container.settings.alipay_secret_id
    )["SecretString"]
    stack.aws.client("secretsmanager").put_secret_value(
        SecretId=stack.container.settings.alipay_secret_id,
        SecretString=json.dumps({**json.loads(config), "app_id": "2021999999999999"}),
    )
    container = build_container(stack.container.settings, client=stack.aws.client, sleep=lambda _: None)
    calls = stack.emulator.requests_received

    # When the scheduled refresher runs
    summary = container.refresher.run(remaining_seconds=lambda: 300)

    # Then it stopped on the first refusals, said why once, and no merchant changed
    assert summary.configuration_error == "invalid-app-id" and summary.stopped_early
    assert stack.emulator.requests_received - calls <= 2 * container.refresher.policy.concurrency
    after = {app: container.store.get_token(app) for app in apps}
    assert {(r.status, r.failures, r.version) for r in after.values()} == {(ACTIVE, 0, 1)}
    assert all(after[app].sealed.current == before[app].sealed.current for app in apps)
    assert [e["detail-type"] for e in stack.published_events()] == ["Configuration Error"]


def run_metrics(capfd):
    """The refresher function's metric documents (CloudWatch EMF) printed since the last look."""
    return [json.loads(line) for line in capfd.readouterr().out.splitlines() if '"TokensDue"' in line]


class _FiveMinutes(LambdaContext):
    """A scheduled invocation's context: five minutes left."""

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def test_the_refresher_function_succeeds_with_failed_tokens_and_counts_them(stack, capfd):
    # Given two due tokens, and Alipay failing every call (unsigned 500s)
    apps = authorized_and_due(stack, ["2021000000001001", "2021000000001002"])
    stack.emulator.inject(Fault.HTTP_500, rate=1.0)
    refresher_function = load_function("refresher")
    # When the scheduled invocation runs
    result = refresher_function.lambda_handler({}, _FiveMinutes(aws_request_id="run-1"))
    # Then it returns (Lambda retries nothing), the failures are metrics, and each token backs off
    assert result["outcomes"] == {"failed": 2} and result["left_retryable"]
    [metrics] = run_metrics(capfd)
    assert (metrics["TokensFailed"], metrics["RunsStoppedEarly"]) == ([2.0], [0.0])
    assert {stack.container.store.get_token(app).failures for app in apps} == {1}


def test_a_scheduled_run_that_overlaps_a_slow_one_ends_at_once(stack, capfd):
    # Given a run still going in another execution environment, slowed by Alipay answering late
    authorized_and_due(stack, [f"20210000000011{n:02d}" for n in range(4)])
    stack.emulator.inject(Fault.LATENCY, rate=1.0, delay=3.0)
    other = build_container(stack.container.settings, client=stack.aws.client, sleep=lambda _: None)
    slow = threading.Thread(target=lambda: other.refresher.run(remaining_seconds=lambda: 300))
    calls = stack.emulator.requests_received
    slow.start()
    try:
        while stack.emulator.requests_received == calls and slow.is_alive():  # its calls are at Alipay
            time.sleep(0.05)
        # When the next scheduled invocation starts meanwhile
        result = load_function("refresher").lambda_handler({}, _FiveMinutes(aws_request_id="run-2"))
    finally:
        slow.join(60)
    # Then it did nothing and said so; the slow run did the work, each token once
    assert result["overlapped"] and result["due"] == 0
    [metrics] = run_metrics(capfd)
    assert (metrics["RunsOverlapped"], metrics["RunsCompleted"]) == ([1.0], [0.0])  # no heartbeat
    assert stack.emulator.requests_received - calls <= 4
    assert all(stack.emulator.refresh_count(f"20210000000011{n:02d}") == 1 for n in range(4))


def test_the_refresher_function_reports_a_heartbeat_the_least_time_left_and_alipay_throttling(stack, capfd):
    # Given three due tokens, one not due whose refresh token has three days left (its rotation
    # was put off: the run does not touch it), and Alipay throttling two calls
    authorized_and_due(stack, [f"20210000000012{n:02d}" for n in range(3)])
    now = time.time()
    short = AppToken("2021000000001299", "2088U", "tok-short", "ref-short", 86400, 3 * 86400, now)
    stack.container.store.save_authorization(short, isv_app_id=stack.creds.app_id, due_at=now + 10**6)
    stack.emulator.inject(Fault.HTTP_429, times=2)
    # When the scheduled invocation runs
    result = load_function("refresher").lambda_handler({}, _FiveMinutes(aws_request_id="run-3"))
    # Then the throttled calls were retried and counted, the run completed, and the least time left
    # before any served refresh token expires is reported in days
    assert result["outcomes"] == {"refreshed": 3}
    [metrics] = run_metrics(capfd)
    assert (metrics["AlipayThrottled"], metrics["RunsCompleted"]) == ([2.0], [1.0])
    assert metrics["RefreshTokenDaysLeft"][0] == pytest.approx(
        (now + 3 * 86400 - time.time()) / 86400, abs=0.01
    )


def test_a_timed_out_refresh_token_with_a_working_token_keeps_it_served(stack, capfd):
    # Given a due token whose refresh token has timed out at Alipay, while the token itself works
    # (it lives until the merchant re-authorizes or cancels: docs/alipay-v3-protocol.md section 8.1)
    [app] = authorized_and_due(stack, ["2021000000001301"])
    served = stack.http.get(f"{stack.url}/tokens/{app}", timeout=10).json()["app_auth_token"]
    stack.emulator.authority.re_expires_in = 0
    # When the scheduled refresher runs
    result = load_function("refresher").lambda_handler({}, _FiveMinutes(aws_request_id="run-4"))
    # Then Alipay's query kept the merchant served: not rotated, not dead, said once
    assert result["outcomes"] == {"rotation_unavailable": 1}
    [metrics] = run_metrics(capfd)
    assert metrics["TokensRotationUnavailable"] == [1.0] and metrics["TokensNeedingReauthorization"] == [0.0]
    read = stack.http.get(f"{stack.url}/tokens/{app}", timeout=10)
    assert read.status_code == 200 and read.json()["app_auth_token"] == served
    assert stack.container.store.get_token(app).status == "rotation_unavailable"
    assert [e["detail-type"] for e in stack.published_events()] == ["Token Rotation Unavailable"]
    # And the next runs leave it alone
    calls = stack.emulator.requests_received
    assert stack.container.refresher.run(remaining_seconds=lambda: 300).due == 0
    assert stack.emulator.requests_received == calls


def test_a_grant_cancelled_at_alipay_needs_reauthorization_once_alipay_says_its_token_is_invalid(stack):
    # Given a due token whose merchant cancelled at Alipay, the cancellation message lost
    [app] = authorized_and_due(stack, ["2021000000001302"])
    assert stack.emulator.revoke(stack.creds.app_id, app)
    # When the refresher runs
    summary = stack.container.refresher.run(remaining_seconds=lambda: 300)
    # Then the refresh failed dead, the query said invalid, and only then is the merchant dead
    assert summary.count(NEEDS_REAUTH) == 1
    assert stack.http.get(f"{stack.url}/tokens/{app}", timeout=10).status_code == 409
    assert [e["detail-type"] for e in stack.published_events()] == ["Reauthorization Needed"]
