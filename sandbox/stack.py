"""The local stack: what ``sam deploy`` creates, made on the local stand-ins.

``provision()`` creates the table (from template.yaml), the KMS key, both secrets, the event bus
and the replay queue on a running ``LocalAws``, and returns the ``Settings`` the functions would
get from their environment. The Alipay configuration in the secret is the ISV's (the emulator's
credentials, or an operator's own file pointing at any Alipay-compatible gateway).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app_auth.settings import Settings

from .aws_standins import LocalAws
from .table import table_definition_from_template, ttl_attribute_from_template

STACK = "alipay-app-auth-local"


@dataclass(frozen=True)
class Provisioned:
    settings: Settings
    env: dict[str, str]  # the function environment template.yaml would set


def provision(
    aws: LocalAws,
    alipay_config: Mapping[str, Any],
    *,
    callback_url: str,
    consent_page_url: str | None = None,
    allow_stateless_callbacks: bool = False,
    success_redirect_url: str | None = None,
    name: str = STACK,
) -> Provisioned:
    dynamodb, kms, secretsmanager = aws.client("dynamodb"), aws.client("kms"), aws.client("secretsmanager")
    table = f"{name}-tokens"
    dynamodb.create_table(TableName=table, **table_definition_from_template())
    dynamodb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
    ttl = ttl_attribute_from_template()
    if ttl:
        dynamodb.update_time_to_live(
            TableName=table, TimeToLiveSpecification={"AttributeName": ttl, "Enabled": True}
        )
    key_id = kms.create_key(Description=f"{name} token encryption")["KeyMetadata"]["Arn"]
    alipay_secret = secretsmanager.create_secret(
        Name=f"{name}/alipay", SecretString=json.dumps(alipay_config)
    )["ARN"]
    state_secret = secretsmanager.create_secret(Name=f"{name}/state", SecretString=secrets.token_urlsafe(48))[
        "ARN"
    ]
    bus = f"{name}-events"
    aws.client("events").create_event_bus(Name=bus)
    queue_url = aws.client("sqs").create_queue(QueueName=f"{name}-replay")["QueueUrl"]
    env = {
        "TABLE_NAME": table,
        # As deployed, sealed values are bound to the store's name, not the table's (a restore keeps it)
        "TOKEN_STORE_ID": f"{name}/token-store",
        "SEALED_TABLE_NAME": table,
        "SECRET_ARN": alipay_secret,
        "STATE_SECRET_ARN": state_secret,
        "TOKEN_KMS_KEY_ID": key_id,
        "EVENT_BUS_NAME": bus,
        "REPLAY_QUEUE_URL": queue_url,
        "ALIPAY_ENVIRONMENT": "sandbox",
        "CALLBACK_URL": callback_url,
        "ALLOW_STATELESS_CALLBACKS": "true" if allow_stateless_callbacks else "false",
        "POWERTOOLS_SERVICE_NAME": "alipay-app-auth",
        "POWERTOOLS_METRICS_NAMESPACE": "AlipayAppAuth",
    }
    if consent_page_url:
        env["CONSENT_PAGE_URL"] = consent_page_url
    if success_redirect_url:
        env["SUCCESS_REDIRECT_URL"] = success_redirect_url
    return Provisioned(Settings.from_env(env), env)


def observe_events(aws: LocalAws, bus: str, name: str = "observed-events") -> str:
    """An SQS queue ``name`` that receives every event the stack publishes on ``bus``, as an ISV's
    service would through an EventBridge rule; its URL."""
    events, sqs = aws.client("events"), aws.client("sqs")
    queue_url: str = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps({"source": ["alipay-app-auth"]}))
    events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}])
    return queue_url
