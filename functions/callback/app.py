"""HTTP API adapter: the merchant's pages and the ISV's link and token routes.

Routes (template.yaml wires them):

    GET  /authorize?state=…     public: sends the merchant on to Alipay's consent page
    GET  /callback?…            public: Alipay's redirect back with app_auth_code
    POST /links                 IAM: create an authorization link (optionally with the ISV's ref)
    GET  /tokens/{auth_app_id}  IAM: the current app_auth_token of a merchant app

Each route parses, calls one use case and maps the result; domain errors become responses in the
exception handlers below, and nothing else decides a status code.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from app_auth import pages
from app_auth.container import get_container
from app_auth.errors import AppAuthError, InvalidRequest, NotFound, StateRejected, StorageError
from app_auth.tokens import read_current_token

logger = Logger(service="alipay-app-auth")
metrics = Metrics(namespace="AlipayAppAuth", service="alipay-app-auth")
app = APIGatewayHttpResolver()

_OUTCOME_STATUS = {
    "authorized": 200,
    "parked": 202,
    "in_progress": 202,
    "code_spent": 410,
    "unconfirmed": 502,
}


def _page(status: int, kind: str, **kwargs: Any) -> Response:
    return Response(
        status, pages.SECURITY_HEADERS["Content-Type"], pages.render(kind, **kwargs), pages.SECURITY_HEADERS
    )


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status, "application/json", json.dumps(body), {"Cache-Control": "no-store"})


def _callback_url() -> str:
    """The redirect URI Alipay sends merchants back to: configured, or this API's own /callback."""
    configured = get_container().settings.callback_url
    return configured or f"https://{app.current_event.request_context.domain_name}/callback"


def _wants_json() -> bool:
    return app.current_event.path.startswith(("/links", "/tokens"))


@app.get("/authorize")
def authorize() -> Response:
    container = get_container()
    link = container.authorization.consent_link_for_state(
        app.current_event.get_query_string_value("state") or ""
    )
    return Response(302, "text/html; charset=utf-8", "", {**pages.SECURITY_HEADERS, "Location": link})


@app.get("/callback")
def callback() -> Response:
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


@app.post("/links")
def create_link() -> Response:
    body = app.current_event.json_body if app.current_event.body else {}
    if not isinstance(body, dict):
        raise InvalidRequest('the body must be a JSON object like {"ref": "customer-42"}')
    link = get_container().authorization.create_link(body.get("ref"), callback_url=_callback_url())
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
def read_token(auth_app_id: str) -> Response:
    token = read_current_token(get_container().store, auth_app_id)
    return _json(200, token.as_dict())


@app.exception_handler(StateRejected)
def _state_rejected(exc: StateRejected) -> Response:
    logger.info("callback refused", code=exc.code)
    if _wants_json():
        return _json(400, {"code": exc.code, "message": exc.message})
    return _page(400, "state_rejected", detail=exc.message)


@app.exception_handler(InvalidRequest)
def _invalid(exc: InvalidRequest) -> Response:
    logger.info("request refused", code=exc.code)
    if _wants_json():
        return _json(400, {"code": exc.code, "message": exc.message})
    return _page(400, "invalid", detail=exc.message)


@app.exception_handler(NotFound)
def _not_found(exc: NotFound) -> Response:
    if _wants_json():
        return _json(404, {"code": exc.code, "message": exc.message})
    return _page(404, "not_found")


@app.exception_handler(StorageError)
def _unavailable(exc: StorageError) -> Response:
    logger.error("dependency failure", code=exc.code, error=exc.message)
    metrics.add_metric(name="DependencyFailure", unit=MetricUnit.Count, value=1)
    if _wants_json():
        return _json(503, {"code": exc.code, "message": "temporarily unavailable; retry"})
    return _page(503, "unavailable")


@app.exception_handler(AppAuthError)
def _other_domain_error(exc: AppAuthError) -> Response:
    logger.warning("request failed", code=exc.code, error=exc.message)
    if _wants_json():
        return _json(409, {"code": exc.code, "message": exc.message})
    return _page(409, "unavailable", detail=exc.message)


@app.not_found
def _no_route(_: Exception) -> Response:
    if _wants_json():
        return _json(404, {"code": "not-found", "message": "no such route"})
    return _page(404, "not_found")


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
