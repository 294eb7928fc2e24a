"""A rotation Alipay has made is never thrown away: when DynamoDB fails the fenced commit after
Alipay answered (a 500, throttling, a dropped connection, on every attempt), the new pair goes sealed
to the replay queue, and the next scheduled run stores it before rotating anything, with no operator.
Faults on the real botocore wire."""

from __future__ import annotations

import json
import threading

import pytest
from botocore.exceptions import EndpointConnectionError

from app_auth.container import build_container
from app_auth.refresh import PARKED
from app_auth.token_store import ACTIVE
from sandbox.front import LambdaContext, load_function
from sandbox.seed import seed_tokens
from tests.integration.stack_fixtures import Stack
from tests.integration.wire_faults import error_response

pytestmark = pytest.mark.integration

FAULTS = {
    "500": ("InternalServerError", 500),
    "throttled": ("ProvisionedThroughputExceededException", 400),
    "dropped": (None, None),
}


def fail_every_commit(dynamodb, how: str) -> list[str]:
    """Every fenced commit of a rotation fails on the wire, retries included; other calls pass."""
    failed: list[str] = []
    lock = threading.Lock()
    code, status = FAULTS[how]

    def before_send(request, **_):
        if b"refreshed_at" not in request.body:  # only commit_rotation's update sets it
            return None
        with lock:
            failed.append(how)
        if code is None:
            raise EndpointConnectionError(endpoint_url=request.url)
        return error_response(request, "dynamodb", status, f"com.amazonaws.dynamodb.v20120810#{code}")

    dynamodb.meta.events.register("before-send.dynamodb.UpdateItem", before_send)
    return failed


def queue_depth(stack: Stack) -> int:
    """Messages on the replay queue, visible or being received."""
    attributes = stack.aws.client("sqs").get_queue_attributes(
        QueueUrl=stack.container.settings.replay_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def run_metrics(capfd) -> dict[str, list[float]]:
    """The one metric document (CloudWatch EMF) the refresher function printed since the last look."""
    [metrics] = [json.loads(line) for line in capfd.readouterr().out.splitlines() if '"TokensDue"' in line]
    return metrics


@pytest.mark.parametrize("how", sorted(FAULTS))
def test_a_rotation_whose_commit_fails_is_parked_and_stored_by_the_next_run(
    stack: Stack, how: str, capfd
) -> None:
    # Given 100 due tokens, and DynamoDB failing every commit after Alipay rotated
    apps = [f"2021000000002{n:03d}" for n in range(100)]
    seed_tokens(stack.emulator.authority, stack.container.store, stack.creds.app_id, apps)
    refresher = build_container(stack.container.settings, client=stack.aws.client, sleep=lambda _: None)
    failed = fail_every_commit(refresher.clients["dynamodb"], how)

    # When the scheduled run rotates them
    summary = refresher.refresher.run(remaining_seconds=lambda: 300)

    # Then Alipay rotated each once, none was committed, and each new pair is parked
    assert summary.count(PARKED) == len(apps), summary
    assert failed and all(stack.emulator.refresh_count(app) == 1 for app in apps)
    assert {stack.container.store.get_token(app).version for app in apps} == {1}
    assert queue_depth(stack) == len(apps)
    capfd.readouterr()

    # And the next scheduled run (the table well again; no operator) stores every one before rotating
    result = load_function("refresher").lambda_handler(
        {}, LambdaContext(aws_request_id="next-run", timeout_seconds=300)
    )
    assert (result["replayed"], result["replay_superseded"], result["replay_failed"]) == (len(apps), 0, 0)
    assert result["due"] == 0 and result["outcomes"] == {}, result
    metrics = run_metrics(capfd)
    assert (metrics["TokensReplayed"], metrics["ReplayFailures"]) == ([float(len(apps))], [0.0])
    assert queue_depth(stack) == 0

    # Active, the pair Alipay issued, Alipay not asked again, and nobody to re-authorize
    for app in apps:
        record = stack.container.store.get_token(app)
        assert (record.status, record.version) == (ACTIVE, 2)
        current = stack.container.store.open_current(record)
        assert stack.emulator.token_valid(current.app_auth_token)
        assert stack.emulator.refresh_count(app) == 1
    published = stack.published_events()
    assert all(e["detail-type"] != "Reauthorization Needed" for e in published)
    replayed = [e["detail"]["auth_app_id"] for e in published if e["detail"].get("via") == "replay"]
    assert sorted(replayed) == apps
