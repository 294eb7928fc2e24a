"""An HTTP front that does what API Gateway (HTTP API, payload 2.0) does for our routes.

It turns each request into the event API Gateway would send, calls the real handler in this
process, and turns the handler's answer back into HTTP. Like API Gateway, it matches the request
against the routes template.yaml declares and names the one found in ``routeKey``, with its decoded
``pathParameters``; a request no route fits goes to ``$default``. Routes that are IAM-protected in
the template are marked as IAM-authorized here, since only the operator reaches 127.0.0.1.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .table import TEMPLATE, load_template

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"


def load_function(name: str) -> ModuleType:
    """functions/<name>/app.py as its own module (every function's module is called ``app``)."""
    spec = importlib.util.spec_from_file_location(f"{name}_app", FUNCTIONS / name / "app.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"functions/{name}/app.py not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Integration:
    """The function template.yaml wires a route to: its directory under functions/ and its Timeout."""

    function: str
    timeout_seconds: float


@functools.cache
def integrations() -> dict[str, Integration]:
    """Each route key template.yaml declares ("GET /tokens/{auth_app_id}") and its function."""
    template = load_template(TEMPLATE)
    default_timeout = template.get("Globals", {}).get("Function", {}).get("Timeout", 3)
    found = {}
    for resource in template["Resources"].values():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource["Properties"]
        integration = Integration(
            props["CodeUri"].strip("/").removeprefix("functions/"), props.get("Timeout", default_timeout)
        )
        for event in props.get("Events", {}).values():
            if event["Type"] == "HttpApi":
                found[f"{event['Properties']['Method']} {event['Properties']['Path']}"] = integration
    return found


def declared_routes() -> tuple[str, ...]:
    """The route keys template.yaml declares, as API Gateway has them."""
    return tuple(integrations())


class HttpApi:
    """The API's integrations, in this process: each event goes to the handler of the function its
    route belongs to, with that function's deadline; a request no route fits is answered by API
    Gateway itself (an HTTP API without a ``$default`` route answers 404 ``{"message":"Not Found"}``)."""

    def __init__(self) -> None:
        self.modules = {i.function: load_function(i.function) for i in integrations().values()}

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        integration = integrations().get(event["routeKey"])
        if integration is None:
            return {"statusCode": 404, "headers": {"Content-Type": "application/json"}, "body": NOT_FOUND}
        context.timeout_seconds = integration.timeout_seconds
        context.function_name = f"local-{integration.function}"
        result: dict[str, Any] = self.modules[integration.function].lambda_handler(event, context)
        return result


NOT_FOUND = '{"message":"Not Found"}'


def match_route(method: str, path: str) -> tuple[str, dict[str, str]]:
    """The declared route key ``method`` and ``path`` fit and its path parameters, decoded as API
    Gateway's are; ``("$default", {})`` when no declared route fits."""
    wanted = f"{method} "
    for key in declared_routes():
        if key.startswith(wanted):
            params = _match(key.removeprefix(wanted), path)
            if params is not None:
                return key, params
    return "$default", {}


def _match(template: str, path: str) -> dict[str, str] | None:
    """The path parameters if ``path`` fits ``template`` (``/tokens/{auth_app_id}``), else None."""
    parts, segments = template.split("/"), path.split("/")
    if len(parts) != len(segments):
        return None
    params = {}
    for part, segment in zip(parts, segments, strict=True):
        if part.startswith("{") and segment:
            params[part[1:-1]] = unquote(segment)  # decoded, as API Gateway's pathParameters are
        elif part != segment:
            return None
    return params


IAM_ROUTES = ("/links", "/tokens")
MAX_BODY = 1024 * 1024  # API Gateway's payload limit is larger; nothing of ours needs more
DISCARD_AT_MOST = 16 * MAX_BODY  # of a body refused for its size; beyond, the connection just closes
READ_TIMEOUT_SECONDS = 30.0  # API Gateway's own integration limit


@dataclass
class LambdaContext:
    """What Powertools reads from a context object."""

    function_name: str = "local-callback"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:ap-east-1:000000000000:function:local-callback"
    aws_request_id: str = ""
    log_group_name: str = "/aws/lambda/local-callback"
    log_stream_name: str = "local"

    timeout_seconds: float = 29.0  # the callback function's Timeout in template.yaml
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return int((self.started + self.timeout_seconds - time.monotonic()) * 1000)


def http_api_event(
    method: str, target: str, headers: dict[str, str], body: bytes, source_ip: str
) -> dict[str, Any]:
    """The payload-2.0 event for one request (duplicate query keys joined with commas, as AWS does)."""
    parts = urlsplit(target)
    route_key, path_parameters = match_route(method, parts.path)
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value
    lowered: dict[str, str] = {}
    for key, value in headers.items():
        name = key.lower()
        lowered[name] = f"{lowered[name]},{value}" if name in lowered else value
    try:
        text, is_base64 = body.decode(), False
    except UnicodeDecodeError:
        text, is_base64 = base64.b64encode(body).decode(), True
    context: dict[str, Any] = {
        "accountId": "000000000000",
        "apiId": "local",
        "domainName": lowered.get("host", "127.0.0.1"),
        "domainPrefix": "local",
        "http": {
            "method": method,
            "path": parts.path,
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
            "userAgent": lowered.get("user-agent", ""),
        },
        "requestId": uuid.uuid4().hex,
        "routeKey": route_key,
        "stage": "$default",
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
        "timeEpoch": int(time.time() * 1000),
    }
    if parts.path.startswith(IAM_ROUTES):
        context["authorizer"] = {
            "iam": {"accountId": "000000000000", "userArn": "arn:aws:iam::000000000000:user/local"}
        }
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": parts.path,
        "rawQueryString": parts.query,
        "headers": lowered,
        "requestContext": context,
        "isBase64Encoded": is_base64,
    }
    if query:
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = path_parameters
    if body:
        event["body"] = text
    return event


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # socketserver's 5 resets a burst of merchants; API Gateway queues them


class Front:
    """``with Front() as front: front.url`` — one thread per request, like Lambda's concurrency.

    Unlike Lambda, the threads share one process, and with it Powertools' Logger and Metrics, which
    keep an invocation's log keys and metrics on module-level objects: concurrent requests may log
    or flush each other's. Responses are unaffected (each call gets its own event); tests that
    time the handler serialize it (tests/load).
    """

    def __init__(self, handler: Handler | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler or HttpApi()
        front = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: see sandbox.emulator.server
            timeout = READ_TIMEOUT_SECONDS  # a client that stops sending loses its connection, not a thread

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the query string carries codes: never log request lines

            def _discard(self, length: int) -> None:
                while length > 0:
                    chunk = self.rfile.read(min(length, 65536))
                    if not chunk:
                        return
                    length -= len(chunk)

            def _serve(self) -> None:
                declared = self.headers.get("Content-Length") or "0"
                if not declared.isdigit():  # negative, or not a number: no body can be read by it
                    self.send_error(400, "Bad Content-Length")
                    self.close_connection = True
                    return
                length = int(declared)
                if length > MAX_BODY:
                    # Take what the client sends before answering, as a gateway does: closing on a
                    # client still sending shows it a broken pipe instead of our 413.
                    self._discard(min(length, DISCARD_AT_MOST))
                    self.send_error(413, "Payload Too Large")
                    return
                body = self.rfile.read(length) if length else b""
                event = http_api_event(
                    self.command, self.path, dict(self.headers.items()), body, self.client_address[0]
                )
                result = front.handler(
                    event, LambdaContext(aws_request_id=event["requestContext"]["requestId"])
                )
                payload = result.get("body") or ""
                data = base64.b64decode(payload) if result.get("isBase64Encoded") else payload.encode()
                self.send_response(int(result.get("statusCode", 200)))
                for name, value in (result.get("headers") or {}).items():
                    self.send_header(name, value)
                for cookie in result.get("cookies") or []:
                    self.send_header("Set-Cookie", cookie)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

        self._server = _Server((host, port), RequestHandler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        self._thread = threading.Thread(target=self._server.serve_forever, name="front", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Front:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
