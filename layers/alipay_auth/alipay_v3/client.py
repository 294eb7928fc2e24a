"""HTTP for the v3 API: a ``requests`` AuthBase over the pure signing steps, and a small client.

The client verifies every response before it is used, retries only where a retry cannot spend
something twice, and reports whether a failed request may have reached Alipay.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import urlencode

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

from .config import AlipayConfig
from .errors import AlipayApiError, AlipayError, TransportError, UnknownAlipayCertError
from .response import AlipayResponse, open_response
from .signing import AuthParams, authorization_header, request_sign_content, sign

logger = logging.getLogger(__name__)

USER_AGENT = "alipay-app-auth/0.1 (python)"


def _new_nonce() -> str:
    return str(uuid.uuid4())


class AlipayAuth(requests.auth.AuthBase):
    """Signs a prepared request: the ``Authorization`` header and the headers that go with it.

    Signs exactly what will be sent: the request-target ``requests`` built and the body bytes
    (already encrypted if AES is on). The clock and the nonce source are injected for tests.
    """

    def __init__(
        self,
        config: AlipayConfig,
        *,
        app_auth_token: str | None = None,
        clock: Callable[[], float] = time.time,
        nonce: Callable[[], str] = _new_nonce,
    ) -> None:
        self.config = config
        self.app_auth_token = app_auth_token
        self.clock = clock
        self.nonce = nonce

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        params = AuthParams(
            app_id=self.config.app_id,
            nonce=self.nonce(),
            timestamp=str(int(self.clock() * 1000)),
            app_cert_sn=self.config.app_cert_sn,
        )
        auth_string = params.auth_string()
        content = request_sign_content(
            auth_string, request.method or "GET", request.path_url, body, self.app_auth_token
        )
        request.headers["Authorization"] = authorization_header(
            auth_string, sign(self.config.private_key.key, content)
        )
        if self.app_auth_token:
            request.headers["alipay-app-auth-token"] = self.app_auth_token
        if self.config.alipay_root_cert_sn:
            request.headers["alipay-root-cert-sn"] = self.config.alipay_root_cert_sn
        return request


def _request_reached_server(exc: requests.RequestException) -> bool:
    """False only when we know the request never left: connect refused or connect timeout."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError) and exc.args:
        inner = exc.args[0]
        if isinstance(inner, MaxRetryError) and isinstance(
            inner.reason, (NewConnectionError, ConnectTimeoutError)
        ):
            return False
    return True


@functools.lru_cache(maxsize=256)
def _prepared_url(url: str) -> str:
    """The URL as ``requests`` sends it (IDNA, quoting): the costliest step of preparing a request,
    and a client calls few URLs, many times."""
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)
    return str(prepared.url)


def _prepare(
    method: str, url: str, headers: Mapping[str, str], body: bytes, auth: requests.auth.AuthBase
) -> requests.PreparedRequest:
    """``PreparedRequest.prepare`` step by step, with the URL step cached; no session cookies,
    headers or netrc, none of which the v3 API uses."""
    prepared = requests.PreparedRequest()
    prepared.prepare_method(method)
    prepared.url = _prepared_url(url)
    prepared.prepare_headers(headers)
    prepared.prepare_body(body, None)
    prepared.prepare_auth(auth)
    return prepared


class AlipayClient:
    """Calls ``/v3/...`` endpoints with signing, verification and safe retries.

    ``idempotent=True`` on a call allows retries after the request may have been processed
    (dropped connections, 5xx); otherwise only failures that prove the request never arrived, and
    429, are retried. A read timeout is never retried: the request may still be processed after
    the retry, and a refresh processed late rotates away the pair the retry returned (the caller
    retries later, once it cannot overtake the late one). ``reload_config`` is called once when a
    response names an Alipay certificate we do not hold, to pick up a rotated certificate without
    a restart.

    A caller that needs its own transport (a pace, a proxy, a test double) passes a ``session``
    with its adapters mounted.
    """

    def __init__(
        self,
        config: AlipayConfig,
        *,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = (3.05, 10.0),
        max_attempts: int = 3,
        backoff_base: float = 0.2,
        backoff_cap: float = 2.0,
        pool_size: int = 32,
        reload_config: Callable[[], AlipayConfig] | None = None,
        clock: Callable[[], float] = time.time,
        nonce: Callable[[], str] = _new_nonce,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._reload_config = reload_config
        self._clock = clock
        self._nonce = nonce
        self._sleep = sleep
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        self.session = session
        # Proxies and CA bundle from the environment, resolved once for the gateway (requests'
        # prepared-request recipe): Session.request would walk os.environ on every call.
        settings = session.merge_environment_settings(config.gateway, {}, None, None, None)
        self._proxies: MutableMapping[str, str] = settings["proxies"]
        self._verify: bool | str = True if settings["verify"] is None else settings["verify"]
        self._cert: str | tuple[str, str] | None = settings["cert"]

    def call(
        self,
        method: str,
        path: str,
        *,
        data: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
        app_auth_token: str | None = None,
        encrypt: bool = False,
        idempotent: bool = False,
        timeout: tuple[float, float] | None = None,
    ) -> AlipayResponse:
        """``timeout`` (connect, read) overrides the client's for this call: a caller with a
        deadline passes what is left of it."""
        method = method.upper()
        if not path.startswith("/"):
            raise ValueError("path must start with '/', e.g. /v3/alipay/open/auth/token/app")
        if encrypt and self.config.aes is None:
            raise AlipayError("encrypt=True needs encrypt_key in the configuration", code="invalid-config")
        url = self.config.gateway + path + ("?" + urlencode(query) if query else "")
        body = "" if data is None else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        headers = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "alipay-request-id": os.urandom(16).hex(),  # unique per call
        }
        if encrypt and self.config.aes is not None:
            # A GET/HEAD has no body: nothing to encrypt (no SDK sends one), but the header still asks
            # for an encrypted answer, as the PHP SDK does.
            if method not in ("GET", "HEAD"):
                body = self.config.aes.encrypt(body)
            headers.update({"Content-Type": "text/plain", "alipay-encrypt-type": "AES"})
        payload = body.encode()

        for attempt in range(1, self.max_attempts + 1):
            try:
                return self._attempt(
                    method, url, path, payload, headers, app_auth_token, encrypt, timeout or self.timeout
                )
            except TransportError as exc:
                may_retry = (idempotent and not exc.timed_out) or not exc.request_sent
                error: AlipayError = exc
            except AlipayApiError as exc:
                may_retry = exc.retryable and (idempotent or exc.http_status == 429)
                error = exc
            if not may_retry or attempt == self.max_attempts:
                raise error
            delay = random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)))  # noqa: S311
            logger.info(
                "retrying %s %s after %s (attempt %d, in %.2fs)", method, path, error.code, attempt, delay
            )
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(
        self,
        method: str,
        url: str,
        path: str,
        payload: bytes,
        headers: dict[str, str],
        app_auth_token: str | None,
        encrypted: bool,
        timeout: tuple[float, float],
    ) -> AlipayResponse:
        auth = AlipayAuth(self.config, app_auth_token=app_auth_token, clock=self._clock, nonce=self._nonce)
        started = time.monotonic()
        try:
            # Straight to the session's transport adapter (the refresher's carries its pace): Session.send
            # would add hooks, a cookie jar and redirect handling, which the v3 API never uses (a
            # redirect would come back unsigned), and measured side by side they took the AES modes
            # over the protocol benchmark's target.
            response = self.session.get_adapter(url).send(
                _prepare(method, url, headers, payload, auth),
                timeout=timeout,
                verify=self._verify,
                cert=self._cert,
                proxies=self._proxies,
            )
        except requests.RequestException as exc:
            reached = _request_reached_server(exc)
            # requests' messages quote the URL, and a query string may carry a token
            # (token/app/query?app_auth_token=…): then the cause stays out of every traceback.
            cause = None if "?" in url else exc
            raise TransportError(
                f"{method} {path} failed before a response arrived ({type(exc).__name__})"
                + ("; Alipay may have processed it" if reached else "; the request was not sent"),
                request_sent=reached,
                timed_out=isinstance(exc, requests.ReadTimeout),
            ) from cause
        logger.debug(
            "%s %s -> %d in %.0f ms (trace id %s)",
            method,
            path,
            response.status_code,
            (time.monotonic() - started) * 1000,
            response.headers.get("alipay-trace-id"),
        )
        try:
            return open_response(
                self.config, response.status_code, response.headers, response.content, encrypted=encrypted
            )
        except UnknownAlipayCertError:
            if self._reload_config is None:
                raise
            # Alipay rotated its certificate: reload once and check the same bytes again.
            self.config = self._reload_config()
            return open_response(
                self.config, response.status_code, response.headers, response.content, encrypted=encrypted
            )
