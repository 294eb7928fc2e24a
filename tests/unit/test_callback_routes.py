"""How the callback function finds a route: by API Gateway's routeKey in production, by method and
path behind a catch-all route (the local front sends ``$default``). No route, no container: these
never reach a use case."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from app_auth.errors import NotFound
from sandbox.front import LambdaContext, load_function


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
def test_a_catch_all_route_is_matched_by_method_and_path(
    callback: ModuleType, method: str, path: str, name: str, params: dict[str, str]
) -> None:
    found, found_params = callback._find_route(event(method, path))
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
    with pytest.raises(NotFound):
        callback._find_route(event(method, path))


def test_no_route_answers_404_in_the_callers_form(callback: ModuleType) -> None:
    page = callback.lambda_handler(event("GET", "/nowhere"), LambdaContext(aws_request_id="r1"))
    assert page["statusCode"] == 404
    assert page["headers"]["Content-Type"].startswith("text/html")
    api = callback.lambda_handler(event("PUT", "/tokens/x"), LambdaContext(aws_request_id="r2"))
    assert api["statusCode"] == 404
    assert api["headers"]["Content-Type"] == "application/json"
    assert '"code": "not-found"' in api["body"]
