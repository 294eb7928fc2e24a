"""HTTP API adapter: the merchant's pages and the ISV's link and token routes.

Routes (template.yaml wires them):

    GET  /authorize?state=…     public: sends the merchant on to Alipay's consent page
    GET  /callback?…            public: Alipay's redirect back with app_auth_code
    POST /notify                public: Alipay's notifications (authorized, cancelled), answered "success"
    POST /links                 IAM: create an authorization link (optionally with the ISV's ref)

``GET /tokens/{auth_app_id}`` is another function's (functions/tokens): this one, public, may seal a
grant but never open a stored token.

Each route parses, calls one use case and maps the result; domain errors become responses in
``_refusal``, and nothing else decides a status code.

API Gateway has already matched the route and names it in ``routeKey``, so a dictionary finds the
function. A router that matches paths again
(Powertools' APIGatewayHttpResolver) would lengthen every cold start, importing resolvers this API
never uses (AppSync, asyncio, Bedrock). The local front (sandbox/front.py) matches paths the way
API Gateway does and sends the same keys; a key that is not declared here is no route.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from app_auth import pages
from app_auth.container import get_container
from app_auth.errors import (
    AlipayUnavailable,
    AppAuthError,
    InvalidRequest,
    NotConfigured,
    NotFound,
    StateRejected,
    StorageError,
)
from app_auth.outcomes import ANSWERS, CallbackOutcome

logger = Logger(service="alipay-app-auth")
# The layer logs through the standard library: give it this function's JSON format and level.
copy_config_to_registered_loggers(source_logger=logger, include={"app_auth", "alipay_v3"})
metrics = Metrics(namespace="AlipayAppAuth", service="alipay-app-auth")

Response = dict[str, Any]  # the payload-2.0 answer: statusCode, headers, body


class Request:
    """One payload-2.0 event, read the way the routes need it."""

    def __init__(self, event: Mapping[str, Any], context: LambdaContext) -> None:
        self.event = event
        self.context = context

    def remaining_seconds(self) -> float:
        return self.context.get_remaining_time_in_millis() / 1000

    @property
    def query(self) -> dict[str, str]:
        return dict(self.event.get("queryStringParameters") or {})

    @property
    def domain_name(self) -> str:
        return str(self.event.get("requestContext", {}).get("domainName", ""))

    def body_text(self) -> str:
        """The body as text; a body that is not UTF-8 is the caller's mistake (400), not a crash."""
        body = self.event.get("body") or ""
        try:
            return (
                base64.b64decode(body, validate=True).decode() if self.event.get("isBase64Encoded") else body
            )
        except ValueError as exc:  # UnicodeDecodeError, or base64 that does not decode
            raise InvalidRequest("the body is not UTF-8 text") from exc


Route = Callable[[Request], Response]
ROUTES: dict[str, Route] = {}  # "METHOD /path" -> route, the routeKeys template.yaml gives this function


def route(key: str) -> Callable[[Route], Route]:
    def register(function: Route) -> Route:
        ROUTES[key] = function
        return function

    return register


def _response(status: int, body: str, headers: Mapping[str, str]) -> Response:
    return {"statusCode": status, "headers": dict(headers), "body": body, "isBase64Encoded": False}


def _page(status: int, kind: str, **kwargs: Any) -> Response:
    return _response(status, pages.render(kind, **kwargs), pages.SECURITY_HEADERS)


def _redirect(location: str) -> Response:
    return _response(302, "", {**pages.SECURITY_HEADERS, "Location": location})


def _json(status: int, body: dict[str, Any]) -> Response:
    return _response(
        status, json.dumps(body), {"Content-Type": "application/json", "Cache-Control": "no-store"}
    )


def _text(status: int, body: str) -> Response:
    return _response(status, body, {"Content-Type": "text/plain; charset=utf-8"})


def _callback_url(request: Request) -> str:
    """The redirect URI Alipay sends merchants back to: configured, or this API's own /callback."""
    configured = get_container().settings.callback_url
    return configured or f"https://{request.domain_name}/callback"


@route("GET /authorize")
def authorize(request: Request) -> Response:
    link = get_container().authorization.consent_link_for_state(
        request.query.get("state") or "", callback_url=_callback_url(request)
    )
    return _redirect(link)


@route("GET /callback")
def callback(request: Request) -> Response:
    container = get_container()
    result = container.authorization.handle_callback(
        request.query, callback_url=_callback_url(request), remaining_seconds=request.remaining_seconds
    )
    metrics.add_metric(name=f"Callback_{result.outcome}", unit=MetricUnit.Count, value=1)
    logger.info(
        "callback answered",
        outcome=result.outcome,
        repeated=result.repeated,
        auth_app_ids=list(result.auth_app_ids),
        isv_ref=result.isv_ref,
    )
    redirect = container.settings.success_redirect_url
    if result.outcome == CallbackOutcome.AUTHORIZED and redirect:
        query = urlencode({"auth_app_id": ",".join(result.auth_app_ids), "ref": result.isv_ref or ""})
        separator = "&" if "?" in redirect else "?"
        return _redirect(f"{redirect}{separator}{query}")
    facts = {"商户应用 · Merchant app": ", ".join(result.auth_app_ids)}
    status = ANSWERS[result.outcome].http_status
    return _page(status, result.outcome, facts=facts, link=result.fresh_link)


@route("POST /notify")
def notify(request: Request) -> Response:
    params = _form_fields(request.body_text())
    answer = get_container().notifications.handle(params)
    logger.info("notification handled", kind=params.get("notify_type") or params.get("msg_method"))
    return _text(200, answer)


def _form_fields(body: str) -> dict[str, str]:
    """Alipay posts application/x-www-form-urlencoded UTF-8; a malformed body is a 400, not a crash."""
    try:
        return dict(parse_qsl(body, keep_blank_values=True, strict_parsing=True, max_num_fields=100))
    except ValueError as exc:
        raise InvalidRequest("the body is not a form (application/x-www-form-urlencoded)") from exc


@route("POST /links")
def create_link(request: Request) -> Response:
    text = request.body_text()
    try:
        body = json.loads(text) if text else {}
    except (ValueError, RecursionError) as exc:  # not JSON, or nested deeper than the parser goes
        raise InvalidRequest('the body must be a JSON object like {"ref": "customer-42"}') from exc
    if not isinstance(body, dict):
        raise InvalidRequest('the body must be a JSON object like {"ref": "customer-42"}')
    ref = body.get("ref")
    if ref is not None and not isinstance(ref, str):
        raise InvalidRequest("ref must be a string", code="invalid-ref")
    link = get_container().authorization.create_link(ref, callback_url=_callback_url(request))
    return _json(
        201,
        {
            "url": link.url,
            "b_alipay_url": link.b_alipay_url,
            "expires_at": link.expires_at,
            "ref": link.isv_ref,
        },
    )


def _find_route(event: Mapping[str, Any]) -> Route:
    key = event.get("routeKey")
    if key not in ROUTES:
        raise NotFound("no such route")
    return ROUTES[key]


class Unavailable(AppAuthError):
    """What a caller is told of a failure nothing translated (logged whole where it was caught)."""

    code = "unavailable"


def _refusal(event: Mapping[str, Any], exc: AppAuthError) -> Response:
    """One error, in the form its caller reads: JSON for the ISV's routes, text for Alipay's
    notifications, a page for the merchant's browser."""
    if isinstance(exc, Unavailable):
        status, page = 503, "unavailable"
    elif isinstance(exc, StateRejected | InvalidRequest):
        status, page = 400, "state_rejected" if isinstance(exc, StateRejected) else "invalid"
        logger.info("request refused", code=exc.code)
    elif isinstance(exc, NotFound):
        status, page = 404, "not_found"
    elif isinstance(exc, NotConfigured):
        status, page = 503, "not_configured"
        logger.error("service not configured", code=exc.code, error=exc.message)
        metrics.add_metric(name="ConfigurationErrors", unit=MetricUnit.Count, value=1)
    elif isinstance(exc, StorageError | AlipayUnavailable):
        status, page = 503, "unavailable"
        logger.error("dependency failure", code=exc.code, error=exc.message)
        metrics.add_metric(name="DependencyFailure", unit=MetricUnit.Count, value=1)
    else:
        status, page = 409, "unavailable"
        logger.warning("request failed", code=exc.code, error=exc.message)
    path = str(event.get("rawPath", ""))
    if path.startswith("/links"):
        return _json(status, {"code": exc.code, "message": exc.message})
    if path.startswith("/notify"):
        return _text(status, f"fail: {exc.code}")
    return _page(status, page, detail=exc.message if status < 500 else None)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> Response:
    try:
        return _find_route(event)(Request(event, context))
    except AppAuthError as exc:
        return _refusal(event, exc)
    except Exception:  # a bug or an untranslated failure: logged whole, answered in the caller's form
        logger.exception("unhandled error")
        metrics.add_metric(name="UnhandledErrors", unit=MetricUnit.Count, value=1)
        return _refusal(event, Unavailable("temporarily unavailable"))
