"""EventBridge Scheduler adapter: one call into the rotation use case per scheduled run.

A run succeeds when it did its work: a token that failed backs off on its own, and what a run left
for lack of time the next run takes; both are metrics, not Lambda errors, so Lambda never retries
a whole run (the template sets no retries) and the errors alarm means the function itself broke.
A run that overlaps another (the run lease) ends at once. What the run stored from the replay queue
(and left there) is counted like the rotations. The metrics are flushed on every path.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from app_auth.container import get_container
from app_auth.refresh import RefreshOutcome
from app_auth.verification import Verified

logger = Logger(service="alipay-app-auth")
# The layer logs through the standard library: give it this function's JSON format and level.
copy_config_to_registered_loggers(source_logger=logger, include={"app_auth", "alipay_v3"})
metrics = Metrics(namespace="AlipayAppAuth", service="alipay-app-auth")

_METRICS = {
    RefreshOutcome.REFRESHED: "TokensRefreshed",
    RefreshOutcome.FAILED: "TokensFailed",
    RefreshOutcome.NEEDS_REAUTH: "TokensNeedingReauthorization",
    RefreshOutcome.RACED: "TokensRaced",
    RefreshOutcome.SKIPPED: "TokensSkipped",
    RefreshOutcome.DEFERRED: "TokensDeferred",
    RefreshOutcome.PARKED: "TokensParked",
    RefreshOutcome.QUARANTINED: "TokensQuarantined",
    RefreshOutcome.ROTATION_UNAVAILABLE: "TokensRotationUnavailable",
}


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    summary = get_container().refresher.run(
        remaining_seconds=lambda: context.get_remaining_time_in_millis() / 1000
    )
    metrics.add_metric(name="TokensDue", unit=MetricUnit.Count, value=summary.due)
    for outcome, name in _METRICS.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=summary.count(outcome))
    for name, count in (
        ("TokensReplayed", summary.replayed),
        ("TokensReplaySuperseded", summary.replay_superseded),
        ("ReplayFailures", summary.replay_failed),
        ("AlipayThrottled", summary.alipay_throttled),
        # This run's slice of the verification: tokens Alipay says work, and those it says do not
        ("TokensVerified", summary.verified.get(Verified.VALID, 0)),
        ("TokensFoundInvalid", summary.verified.get(Verified.INVALID, 0)),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=count)
    if summary.refresh_token_days_left is not None:  # no served token, or the table could not say
        metrics.add_metric(
            name="RefreshTokenDaysLeft", unit=MetricUnit.Count, value=summary.refresh_token_days_left
        )
    metrics.add_metric(name="RefreshLagSeconds", unit=MetricUnit.Seconds, value=summary.max_lag_seconds)
    for name, happened in (
        ("ConfigurationErrors", summary.configuration_error is not None),
        ("RunsStoppedEarly", summary.stopped_early),
        ("RunsOverlapped", summary.overlapped),
        # The heartbeat: a run that did its own work, whatever became of each token
        ("RunsCompleted", not summary.overlapped and summary.configuration_error is None),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=int(happened))
    result = asdict(summary)
    logger.info("refresh run finished", **result)
    return result
