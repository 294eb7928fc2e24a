"""How the callback function finds a route: by API Gateway's routeKey, which the local front sets the
way API Gateway does (method and path against the declared routes, else ``$default``). No route, no
container: these never reach a use case."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from app_auth.errors import NotFound
from sandbox.front import (
    HttpApi,
    Integration,
    LambdaContext,
    http_api_event,
    integrations,
    load_function,
    match_route,
)


@pytest.fixture(scope="module")
def callback() -> ModuleType:
    return load_function("callback")


def event(method: str, path: str, route_key: str = "$default", **extra: Any) -> dict[str, Any]:
    return {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "requestContext": {"http": {"method": method, "path": path}, "domainName": "example.com"},
        **extra,
    }


def test_the_token_route_is_another_functions_with_decoded_path_parameters() -> None:
    front_event = http_api_event("GET", "/tokens/2088%2D1", {"host": "example.com"}, b"", "127.0.0.1")
    assert front_event["routeKey"] == "GET /tokens/{auth_app_id}"
    assert front_event["pathParameters"] == {"auth_app_id": "2088-1"}
    assert integrations()["GET /tokens/{auth_app_id}"] == Integration("tokens", 10)


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("GET", "/authorize", "authorize"),
        ("GET", "/callback", "callback"),
        ("POST", "/notify", "notify"),
        ("POST", "/links", "create_link"),
    ],
)
def test_the_front_matches_method_and_path_to_the_declared_route(
    callback: ModuleType, method: str, path: str, name: str
) -> None:
    front_event = http_api_event(method, path, {"host": "example.com"}, b"", "127.0.0.1")
    assert front_event["routeKey"] == front_event["requestContext"]["routeKey"] == f"{method} {path}"
    assert integrations()[front_event["routeKey"]].function == "callback"
    assert callback._find_route(front_event) is getattr(callback, name)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/callback"),  # right path, wrong method
        ("GET", "/tokens/"),  # an empty parameter
        ("GET", "/tokens/a/b"),  # one segment too many
        ("GET", "/callback/"),
        ("GET", "/"),
        ("DELETE", "/links"),
    ],
)
def test_anything_else_is_no_route(callback: ModuleType, method: str, path: str) -> None:
    assert match_route(method, path) == ("$default", {})
    front_event = http_api_event(method, path, {"host": "example.com"}, b"", "127.0.0.1")
    assert front_event["routeKey"] == "$default"
    assert "pathParameters" not in front_event
    with pytest.raises(NotFound):
        callback._find_route(front_event)
    with pytest.raises(NotFound):
        callback._find_route(event(method, path))


def test_an_undeclared_route_key_is_no_route(callback: ModuleType) -> None:
    with pytest.raises(NotFound):
        callback._find_route(event("GET", "/callback", route_key="GET /elsewhere"))


def test_no_route_answers_404_in_the_callers_form(callback: ModuleType) -> None:
    page = callback.lambda_handler(event("GET", "/nowhere"), LambdaContext(aws_request_id="r1"))
    assert page["statusCode"] == 404
    assert page["headers"]["Content-Type"].startswith("text/html")
    api = callback.lambda_handler(event("PUT", "/links"), LambdaContext(aws_request_id="r2"))
    assert api["statusCode"] == 404
    assert api["headers"]["Content-Type"] == "application/json"
    assert '"code": "not-found"' in api["body"]


def test_the_front_routes_by_the_keys_the_function_declares(callback: ModuleType) -> None:
    # The front reads template.yaml, as API Gateway does; test_template checks the template's keys
    # against ROUTES as well.
    assert {key for key, i in integrations().items() if i.function == "callback"} == set(callback.ROUTES)


def test_no_route_at_all_is_answered_by_api_gateway_not_a_function() -> None:
    answer = HttpApi()(event("GET", "/nowhere"), LambdaContext(aws_request_id="r3"))
    assert (answer["statusCode"], answer["body"]) == (404, '{"message":"Not Found"}')
