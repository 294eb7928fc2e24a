"""How the callback function finds a route: by API Gateway's routeKey, which the local front sets the
way API Gateway does (method and path against the declared routes, else ``$default``). No route, no
container: these never reach a use case."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from app_auth.errors import NotFound
from sandbox.front import LambdaContext, declared_routes, http_api_event, load_function, match_route


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


def test_production_routes_come_from_the_route_key_with_decoded_path_parameters(callback: ModuleType) -> None:
    found, params = callback._find_route(
        event(
            "GET",
            "/tokens/2088%2D1",
            route_key="GET /tokens/{auth_app_id}",
            pathParameters={"auth_app_id": "2088-1"},
        )
    )
    assert found is callback.read_token
    assert params == {"auth_app_id": "2088-1"}


@pytest.mark.parametrize(
    ("method", "path", "name", "params"),
    [
        ("GET", "/authorize", "authorize", {}),
        ("GET", "/callback", "callback", {}),
        ("POST", "/notify", "notify", {}),
        ("POST", "/links", "create_link", {}),
        ("GET", "/tokens/2088%2D1", "read_token", {"auth_app_id": "2088-1"}),
    ],
)
def test_the_front_matches_method_and_path_to_the_declared_route(
    callback: ModuleType, method: str, path: str, name: str, params: dict[str, str]
) -> None:
    front_event = http_api_event(method, path, {"host": "example.com"}, b"", "127.0.0.1")
    assert front_event["routeKey"] == front_event["requestContext"]["routeKey"] != "$default"
    found, found_params = callback._find_route(front_event)
    assert found is getattr(callback, name)
    assert found_params == params


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
    api = callback.lambda_handler(event("PUT", "/tokens/x"), LambdaContext(aws_request_id="r2"))
    assert api["statusCode"] == 404
    assert api["headers"]["Content-Type"] == "application/json"
    assert '"code": "not-found"' in api["body"]


def test_the_front_routes_by_the_keys_the_function_declares(callback: ModuleType) -> None:
    # The front reads template.yaml, as API Gateway does; test_template checks the template's keys
    # against ROUTES as well.
    assert set(declared_routes()) == set(callback.ROUTES)
