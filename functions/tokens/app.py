"""HTTP API adapter for the ISV's own services (IAM-authorized): ``GET /tokens/{auth_app_id}``
reads a merchant app's current token; ``GET /tokens?ref=R`` finds the merchant apps tied to the
ISV's own reference R (no token in that answer).

A function of its own because it is the only HTTP route that opens tokens: its role may decrypt
them, read the table by key and query its ref index, and nothing else; the public callback function can seal a grant
but never open one. Answers are JSON; nothing escapes as a bare 500.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from app_auth.container import get_container
from app_auth.errors import AppAuthError, InvalidRequest, NotConfigured, NotFound, StorageError
from app_auth.links import check_isv_ref
from app_auth.tokens import TokenUnusable, merchant_apps_for_ref, read_current_token

logger = Logger(service="alipay-app-auth")
copy_config_to_registered_loggers(source_logger=logger, include={"app_auth", "alipay_v3"})
metrics = Metrics(namespace="AlipayAppAuth", service="alipay-app-auth")

# Alipay app ids are digits; anything else (or longer than a DynamoDB key allows) is no merchant app.
_AUTH_APP_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")  # fullmatch: "$" would let a trailing newline through

# Each refusal's status; a dependency or configuration failure is the service's, not the caller's.
_STATUS: tuple[tuple[type[AppAuthError], int], ...] = (
    (InvalidRequest, 400),
    (NotFound, 404),
    (TokenUnusable, 409),
    (NotConfigured, 503),
    (StorageError, 503),
)


def _json(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", "Cache-Control": "no-store"},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def _refusal(exc: AppAuthError) -> dict[str, Any]:
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 409)
    if status >= 500:
        logger.error("token read failed", code=exc.code, error=exc.message)
        metrics.add_metric(name="DependencyFailure", unit=MetricUnit.Count, value=1)
    return _json(status, {"code": exc.code, "message": exc.message})


def _find(event: dict[str, Any]) -> dict[str, Any]:
    ref = check_isv_ref((event.get("queryStringParameters") or {}).get("ref"))
    if ref is None:
        raise InvalidRequest("give ?ref=R, your reference for the customer", code="missing-ref")
    return {"isv_ref": ref, "merchant_apps": merchant_apps_for_ref(get_container().store, ref)}


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        if event.get("routeKey") == "GET /tokens":
            return _json(200, _find(event))
        auth_app_id = (event.get("pathParameters") or {}).get("auth_app_id", "")
        if not _AUTH_APP_ID.fullmatch(auth_app_id):
            raise NotFound("no such merchant app")
        token = read_current_token(get_container().store, auth_app_id)
    except AppAuthError as exc:
        return _refusal(exc)
    except Exception:  # a bug or an untranslated failure: logged whole, answered as JSON
        logger.exception("unhandled error")
        metrics.add_metric(name="UnhandledErrors", unit=MetricUnit.Count, value=1)
        return _json(503, {"code": "unavailable", "message": "temporarily unavailable"})
    return _json(200, token.as_dict())
