"""HTTP API adapter: the merchant's pages and the ISV's link and token routes.

Routes (template.yaml wires them):

    GET  /authorize?state=…     public: sends the merchant on to Alipay's consent page
    GET  /callback?…            public: Alipay's redirect back with app_auth_code
    POST /notify                public: Alipay's notifications (authorized, cancelled), answered "success"
    POST /links                 IAM: create an authorization link (optionally with the ISV's ref)
    GET  /tokens/{auth_app_id}  IAM: the current app_auth_token of a merchant app

Each route parses, calls one use case and maps the result; domain errors become responses in the
exception handlers below, and nothing else decides a status code.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from app_auth import pages
from app_auth.container import get_container
from app_auth.errors import AppAuthError, InvalidRequest, NotFound, StateRejected, StorageError
from app_auth.tokens import TokenUnusable, read_current_token

logger = Logger(service="alipay-app-auth")
# The layer logs through the standard library: give it this function's JSON format and level.
copy_config_to_registered_loggers(source_logger=logger, include={"app_auth", "alipay_v3"})
metrics = Metrics(namespace="AlipayAppAuth", service="alipay-app-auth")
app = APIGatewayHttpResolver()

# Alipay app ids are digits; anything else (or longer than a DynamoDB key allows) is no merchant app.
_AUTH_APP_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")

_OUTCOME_STATUS = {
    "authorized": 200,
    "parked": 202,
    "in_progress": 202,
    "code_spent": 410,
    "unconfirmed": 502,
}


def _page(status: int, kind: str, **kwargs: Any) -> Response[str]:
    return Response(
        status, pages.SECURITY_HEADERS["Content-Type"], pages.render(kind, **kwargs), pages.SECURITY_HEADERS
    )


def _json(status: int, body: dict[str, Any]) -> Response[str]:
    return Response(status, "application/json", json.dumps(body), {"Cache-Control": "no-store"})


def _callback_url() -> str:
    """The redirect URI Alipay sends merchants back to: configured, or this API's own /callback."""
    configured = get_container().settings.callback_url
    return configured or f"https://{app.current_event.request_context.domain_name}/callback"


@app.get("/authorize")
def authorize() -> Response[str]:
    container = get_container()
    link = container.authorization.consent_link_for_state(
        app.current_event.get_query_string_value("state") or ""
    )
    return Response(302, "text/html; charset=utf-8", "", {**pages.SECURITY_HEADERS, "Location": link})


@app.get("/callback")
def callback() -> Response[str]:
    container = get_container()
    params = app.current_event.query_string_parameters or {}
    result = container.authorization.handle_callback(params)
    metrics.add_metric(name=f"Callback_{result.outcome}", unit=MetricUnit.Count, value=1)
    logger.info(
        "callback answered",
        outcome=result.outcome,
        repeated=result.repeated,
        auth_app_ids=list(result.auth_app_ids),
        isv_ref=result.isv_ref,
    )
    redirect = container.settings.success_redirect_url
    if result.outcome == "authorized" and redirect:
        query = urlencode({"auth_app_id": ",".join(result.auth_app_ids), "ref": result.isv_ref or ""})
        separator = "&" if "?" in redirect else "?"
        return Response(
            302,
            "text/html; charset=utf-8",
            "",
            {**pages.SECURITY_HEADERS, "Location": f"{redirect}{separator}{query}"},
        )
    facts = {"商户应用 · Merchant app": ", ".join(result.auth_app_ids)}
    return _page(_OUTCOME_STATUS[result.outcome], result.outcome, facts=facts, link=result.fresh_link)


@app.post("/notify")
def notify() -> Response[str]:
    params = _form_fields(_body_text())
    answer = get_container().notifications.handle(params)
    logger.info("notification handled", kind=params.get("notify_type") or params.get("msg_method"))
    return Response(200, "text/plain; charset=utf-8", answer)


def _body_text() -> str:
    """The request body as text; a body that is not UTF-8 is the caller's mistake (400), not a crash."""
    try:
        return app.current_event.decoded_body or ""
    except ValueError as exc:  # UnicodeDecodeError, or base64 that does not decode
        raise InvalidRequest("the body is not UTF-8 text") from exc


def _form_fields(body: str) -> dict[str, str]:
    """Alipay posts application/x-www-form-urlencoded UTF-8; a malformed body is a 400, not a crash."""
    try:
        return dict(parse_qsl(body, keep_blank_values=True, strict_parsing=True, max_num_fields=100))
    except ValueError as exc:
        raise InvalidRequest("the body is not a form (application/x-www-form-urlencoded)") from exc


@app.post("/links")
def create_link() -> Response[str]:
    text = _body_text()
    try:
        body = json.loads(text) if text else {}
    except (ValueError, RecursionError) as exc:  # not JSON, or nested deeper than the parser goes
        raise InvalidRequest('the body must be a JSON object like {"ref": "customer-42"}') from exc
    if not isinstance(body, dict):
        raise InvalidRequest('the body must be a JSON object like {"ref": "customer-42"}')
    ref = body.get("ref")
    if ref is not None and not isinstance(ref, str):
        raise InvalidRequest("ref must be a string", code="invalid-ref")
    link = get_container().authorization.create_link(ref, callback_url=_callback_url())
    return _json(
        201,
        {
            "url": link.url,
            "b_alipay_url": link.b_alipay_url,
            "expires_at": link.expires_at,
            "ref": link.isv_ref,
        },
    )


@app.get("/tokens/<auth_app_id>")
def read_token(auth_app_id: str) -> Response[str]:
    if not _AUTH_APP_ID.match(auth_app_id):
        raise NotFound("no such merchant app")
    token = read_current_token(get_container().store, auth_app_id)
    return _json(200, token.as_dict())


def _refusal(status: int, exc: AppAuthError, page: str) -> Response[str]:
    """One error, in the form its caller reads: JSON for the ISV's routes, text for Alipay's
    notifications, a page for the merchant's browser."""
    path = app.current_event.path
    if path.startswith(("/links", "/tokens")):
        return _json(status, {"code": exc.code, "message": exc.message})
    if path.startswith("/notify"):
        return Response(status, "text/plain; charset=utf-8", f"fail: {exc.code}")
    return _page(status, page, detail=exc.message if status < 500 else None)


@app.exception_handler(StateRejected)
def _state_rejected(exc: StateRejected) -> Response[str]:
    logger.info("request refused", code=exc.code)
    return _refusal(400, exc, "state_rejected")


@app.exception_handler(InvalidRequest)
def _invalid(exc: InvalidRequest) -> Response[str]:
    logger.info("request refused", code=exc.code)
    return _refusal(400, exc, "invalid")


@app.exception_handler(NotFound)
def _not_found(exc: NotFound) -> Response[str]:
    return _refusal(404, exc, "not_found")


@app.exception_handler(TokenUnusable)
def _unusable(exc: TokenUnusable) -> Response[str]:
    return _refusal(409, exc, "invalid")


@app.exception_handler(StorageError)
def _unavailable(exc: StorageError) -> Response[str]:
    logger.error("dependency failure", code=exc.code, error=exc.message)
    metrics.add_metric(name="DependencyFailure", unit=MetricUnit.Count, value=1)
    return _refusal(503, exc, "unavailable")


@app.exception_handler(AppAuthError)
def _other_domain_error(exc: AppAuthError) -> Response[str]:
    logger.warning("request failed", code=exc.code, error=exc.message)
    return _refusal(409, exc, "unavailable")


@app.not_found
def _no_route(_: Exception) -> Response[str]:
    return _refusal(404, NotFound("no such route"), "not_found")


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
