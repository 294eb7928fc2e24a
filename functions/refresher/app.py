"""EventBridge Scheduler adapter: one call into the rotation use case per scheduled run.

The run stops taking work before the invocation's time is up and leaves the rest to the next
run. When it leaves retryable failures behind it raises, so that the schedule's retry policy,
the dead-letter queue and the failure alarm all see it; the summary is logged either way.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from app_auth.container import get_container
from app_auth.refresh import FAILED, NEEDS_REAUTH, RACED, REFRESHED, SKIPPED

logger = Logger(service="alipay-app-auth")
# The layer logs through the standard library: give it this function's JSON format and level.
copy_config_to_registered_loggers(source_logger=logger, include={"app_auth", "alipay_v3"})
metrics = Metrics(namespace="AlipayAppAuth", service="alipay-app-auth")

_METRICS = {
    REFRESHED: "TokensRefreshed",
    FAILED: "TokensFailed",
    NEEDS_REAUTH: "TokensNeedingReauthorization",
    RACED: "TokensRaced",
    SKIPPED: "TokensSkipped",
}


class RefreshIncomplete(Exception):
    """Raised after the run so the failure is visible to Lambda's retry, the DLQ and the alarm."""


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    summary = get_container().refresher.run(
        remaining_seconds=lambda: context.get_remaining_time_in_millis() / 1000
    )
    metrics.add_metric(name="TokensDue", unit=MetricUnit.Count, value=summary.due)
    for outcome, name in _METRICS.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=summary.count(outcome))
    metrics.add_metric(name="RefreshLagSeconds", unit=MetricUnit.Seconds, value=summary.max_lag_seconds)
    metrics.add_metric(
        name="ConfigurationErrors", unit=MetricUnit.Count, value=int(summary.configuration_error is not None)
    )
    result = asdict(summary)
    logger.info("refresh run finished", **result)
    if summary.configuration_error:
        return result  # a retry would be refused alike: the ConfigurationErrors alarm says what to fix
    if summary.left_retryable:
        raise RefreshIncomplete(
            f"{summary.count(FAILED)} refreshes failed and will be retried"
            + ("; the run stopped early for lack of time" if summary.stopped_early else "")
        )
    return result
