"""Alipay's v3 gateway for the token endpoints (``token/app`` and ``token/app/query``), as a pure
function of a request.

``Gateway.handle`` authenticates a request the way Alipay does (signature, app certificate SN,
root certificate SN, timestamp), decrypts an AES body, applies the business rules of the
``AuthorizationAuthority`` and returns an ``Answer``: what to send, and with which key to sign
it. It does no socket I/O and no signing itself, so the HTTP layer can put faults in between.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives.asymmetric import rsa

from alipay_v3 import QUERY_PATH, TOKEN_PATH, AesKey, DecryptError
from alipay_v3.errors import RequestVerificationError
from alipay_v3.keys import cert_sn, root_cert_sn
from alipay_v3.server import DEFAULT_MAX_SKEW_MS, verify_request
from alipay_v3.signing import ParsedAuthorization
from sandbox.credentials import DevCredentials

from .authority import AuthorizationAuthority, BusinessError, IssuedToken, china_time_text

JSON_TYPE = "application/json;charset=UTF-8"
TEXT_TYPE = "text/plain;charset=UTF-8"


@dataclass(frozen=True)
class Registration:
    """One ISV app as Alipay knows it: the keys that check its requests and sign its answers."""

    credentials: DevCredentials
    app_public_key: rsa.RSAPublicKey
    app_cert_sn: str
    root_cert_sn: str
    alipay_key: rsa.RSAPrivateKey
    alipay_cert_sn: str
    aes: AesKey

    @classmethod
    def of(cls, credentials: DevCredentials) -> Registration:
        return cls(
            credentials=credentials,
            app_public_key=credentials.app_key.public_key(),
            app_cert_sn=cert_sn(credentials.app_cert),
            root_cert_sn=root_cert_sn(credentials.root_bundle),
            alipay_key=credentials.alipay_key,
            alipay_cert_sn=cert_sn(credentials.alipay_cert),
            aes=AesKey(credentials.encrypt_key),
        )


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # the raw request-target: path and query, exactly as received
    headers: Mapping[str, str]  # names in lowercase
    body: bytes


@dataclass(frozen=True)
class Signer:
    key: rsa.RSAPrivateKey
    sn: str | None  # the alipay-sn header: only for requests made in certificate mode


@dataclass(frozen=True)
class Answer:
    """A response before signing. ``signer`` is None for the gateway's unsigned errors."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE
    signer: Signer | None = None
    code: str | None = None  # the error code, for error answers


def error_body(code: str, message: str, trace_id: str) -> bytes:
    """Alipay's error envelope: ``links`` is a list of ``{link, desc}`` (see protocol notes 2.4)."""
    envelope = {
        "code": code,
        "message": message,
        "links": [{"link": f"https://open.alipay.com/api/errCheck?traceId={trace_id}", "desc": "解决方案"}],
    }
    return _json(envelope)


def new_trace_id() -> str:
    return secrets.token_hex(15)


def _json(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _platform_error(status: int, code: str, message: str, trace_id: str) -> Answer:
    return Answer(status, error_body(code, message, trace_id), code=code)


class _Refused(Exception):
    """A platform-level refusal (before any business rule): an unsigned error answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Gateway:
    def __init__(
        self,
        authority: AuthorizationAuthority,
        *,
        clock: Callable[[], float],
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
    ) -> None:
        self.authority = authority
        self.clock = clock
        self.max_skew_ms = max_skew_ms
        self._lock = threading.Lock()
        self._apps: dict[str, Registration] = {}

    def register(self, credentials: DevCredentials) -> Registration:
        registration = Registration.of(credentials)
        with self._lock:
            self._apps[credentials.app_id] = registration
        return registration

    def registration(self, app_id: str) -> Registration:
        with self._lock:
            try:
                return self._apps[app_id]
            except KeyError:
                raise KeyError(f"app {app_id} is not registered with the emulator") from None

    def handle(self, request: Request, trace_id: str) -> Answer:
        path = urlsplit(request.target).path
        routes = {TOKEN_PATH: ("POST", self._token), QUERY_PATH: ("GET", self._query)}
        if path not in routes:
            return _platform_error(404, "not-found", f"no API at {path[:100]}", trace_id)
        method, operation = routes[path]
        if request.method != method:
            return _platform_error(405, "method-not-allowed", f"{path} takes {method}", trace_id)
        try:
            registration, parsed = self._authenticate(request)
            encrypted = self._encrypted(request)
            plaintext = self._plaintext(request, registration, encrypted)
        except _Refused as refused:
            return _platform_error(refused.status, refused.code, refused.message, trace_id)
        signer = Signer(
            registration.alipay_key, registration.alipay_cert_sn if "app_cert_sn" in parsed.fields else None
        )
        try:
            payload = operation(registration, request, plaintext)
        except _Refused as refused:
            return _platform_error(refused.status, refused.code, refused.message, trace_id)
        except BusinessError as refused:
            # Business errors come from the API itself, which signs them like a success.
            return Answer(
                400, error_body(refused.code, refused.message, trace_id), signer=signer, code=refused.code
            )
        if encrypted:
            return Answer(200, registration.aes.encrypt(_json(payload).decode()).encode(), TEXT_TYPE, signer)
        return Answer(200, _json(payload), JSON_TYPE, signer)

    # --- authentication -------------------------------------------------------------------------

    def _authenticate(self, request: Request) -> tuple[Registration, ParsedAuthorization]:
        found: list[Registration] = []

        def key_for(parsed: ParsedAuthorization) -> rsa.RSAPublicKey:
            with self._lock:
                registration = self._apps.get(parsed.app_id)
            if registration is None:
                raise RequestVerificationError(
                    "app_id is not a known app", code="invalid-app-id", http_status=400
                )
            app_cert_sn = parsed.fields.get("app_cert_sn")
            if app_cert_sn is not None and app_cert_sn != registration.app_cert_sn:
                raise RequestVerificationError(
                    "app_cert_sn does not name this app's certificate",
                    code="app-cert-not-exist",
                    http_status=400,
                )
            # The PHP v3 SDK never sends the root SN (protocol notes 1.4), so only a wrong one is refused.
            root_sn = request.headers.get("alipay-root-cert-sn")
            if root_sn is not None and root_sn != registration.root_cert_sn:
                raise RequestVerificationError(
                    "alipay-root-cert-sn is not the SN of the current alipayRootCert.crt",
                    code="invalid-alipay-root-cert-sn",
                    http_status=400,
                )
            found.append(registration)
            return registration.app_public_key

        try:
            parsed = verify_request(
                method=request.method,
                path_and_query=request.target,
                headers=request.headers,
                body=request.body,
                key_for=key_for,
                now_ms=int(self.clock() * 1000),
                max_skew_ms=self.max_skew_ms,
            )
        except RequestVerificationError as exc:
            raise _Refused(exc.http_status, exc.code, exc.message) from exc
        return found[0], parsed

    @staticmethod
    def _encrypted(request: Request) -> bool:
        encrypt_type = request.headers.get("alipay-encrypt-type")
        if encrypt_type is None:
            return False
        if encrypt_type.upper() != "AES":
            raise _Refused(400, "invalid-encrypt-type", "alipay-encrypt-type must be AES")
        return True

    @staticmethod
    def _plaintext(request: Request, registration: Registration, encrypted: bool) -> str:
        if not encrypted or not request.body.strip():
            try:
                return request.body.decode()
            except UnicodeDecodeError:
                raise _Refused(400, "invalid-parameter", "the body is not UTF-8") from None
        try:
            return registration.aes.decrypt(request.body)
        except DecryptError:
            raise _Refused(
                400, "decryption-error", "the body cannot be decrypted with the app's AES key"
            ) from None

    # --- operations -----------------------------------------------------------------------------

    def _token(self, registration: Registration, request: Request, plaintext: str) -> dict[str, Any]:
        try:
            body = json.loads(plaintext)
        except json.JSONDecodeError:
            raise _Refused(400, "invalid-parameter", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise _Refused(400, "invalid-parameter", "the body is not a JSON object")
        isv_app_id = registration.credentials.app_id
        grant_type = body.get("grant_type")
        if grant_type == "authorization_code":
            tokens = self.authority.exchange_code(isv_app_id, _text(body.get("code")))
            answer = _token_fields(tokens[0])
            if len(tokens) > 1:
                answer["tokens"] = [_token_fields(token) for token in tokens]
            return answer
        if grant_type == "refresh_token":
            return _token_fields(self.authority.refresh(isv_app_id, _text(body.get("refresh_token"))))
        raise BusinessError("GRANT_TYPE_INVALID", "grant_type 必须是 authorization_code 或 refresh_token")

    def _query(self, registration: Registration, request: Request, plaintext: str) -> dict[str, Any]:
        """``GET token/app/query?app_auth_token=…`` (protocol notes sections 5 and 8.6). The answer has
        the fields of the official ``AlipayOpenAuthTokenAppQueryResponseModel`` with its types: numbers
        and booleans as JSON ones (``expires_in`` int, ``is_by_app_auth`` bool), times as China time
        strings. A missing token is the API's own ILLEGAL_PARAM (its ``…QueryErrorResponseModel``),
        signed like the other business errors."""
        values = parse_qs(urlsplit(request.target).query).get("app_auth_token")
        if not values or not values[0]:
            raise BusinessError("ILLEGAL_PARAM", "参数有误 (app_auth_token is required)")
        status = self.authority.query(registration.credentials.app_id, values[0])
        return {
            "auth_app_id": status.auth_app_id,
            "user_id": status.user_id,
            "status": "valid" if status.valid else "invalid",
            "expires_in": status.expires_in,
            "auth_start": china_time_text(status.auth_start),
            "auth_end": china_time_text(status.auth_end),
            "auth_methods": list(status.auth_methods),
            "is_by_app_auth": status.is_by_app_auth,
        }


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _token_fields(token: IssuedToken) -> dict[str, Any]:
    """The v3 schema types every field as a string, lifetimes included."""
    return {
        "user_id": token.user_id,
        "auth_app_id": token.auth_app_id,
        "app_auth_token": token.app_auth_token,
        "app_refresh_token": token.app_refresh_token,
        "expires_in": str(token.expires_in),
        "re_expires_in": str(token.re_expires_in),
    }
