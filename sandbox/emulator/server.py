"""The emulator over HTTP: a threaded HTTP/1.1 server on 127.0.0.1, signing and faults.

::

    with Emulator() as emu:
        emu.register_app(creds)
        code = emu.issue_code(creds.app_id)
        ...  # point an AlipayConfig at emu.base_url

The business state lives in ``authority``, the protocol in ``gateway``; this module turns
sockets into ``Request`` objects, signs the ``Answer`` and lets armed faults spoil it.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import socketserver
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from alipay_v3 import TOKEN_PATH
from alipay_v3.server import DEFAULT_MAX_SKEW_MS, sign_response
from sandbox.credentials import DevCredentials, make_cert, new_rsa_key

from .authority import AuthorizationAuthority, IssuedToken
from .consent import CONSENT_PAGE_PATH, ConsentDesk
from .faults import Draw, Fault, FaultPlan
from .gateway import JSON_TYPE, Answer, Gateway, Registration, Request, error_body, new_trace_id
from .notifier import Delivery, Notifier

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
# Idle keep-alive connections are closed after this many seconds, so that no handler thread
# waits forever for a client that went away.
IDLE_TIMEOUT_SECONDS = 30.0
_MAX_BODY = 1 << 20
# How often the accept loop looks for stop(): a test starts and stops one emulator per test.
_POLL_SECONDS = 0.02


@dataclasses.dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class Emulator:
    """A local stand-in for Alipay's ``/v3/alipay/open/auth/token/app`` (and its ``/query``), the
    merchant consent page (``consent``) and the notifications to the ISV's app gateway (``notify``).

    ``clock`` drives every rule (code and token lifetimes, grace windows, request timestamp
    checks, response timestamps): a test that moves it must give the client the same clock.
    ``seed`` makes probabilistic faults reproducible.
    """

    def __init__(
        self,
        *,
        grace_seconds: float = 3600.0,
        code_ttl_seconds: float = 86400.0,
        re_expires_in: int = 31536000,
        expires_in: int = 31536000,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
        notify_attempts: int = 3,
        notify_backoff_seconds: float = 0.2,
    ) -> None:
        self.clock = clock
        self.authority = AuthorizationAuthority(
            grace_seconds=grace_seconds,
            code_ttl_seconds=code_ttl_seconds,
            re_expires_in=re_expires_in,
            expires_in=expires_in,
            clock=clock,
        )
        self.gateway = Gateway(self.authority, clock=clock, max_skew_ms=max_skew_ms)
        self.faults = FaultPlan(seed)
        self.notifier = Notifier(
            clock=clock, attempts=notify_attempts, backoff_seconds=notify_backoff_seconds
        )
        self.consent = ConsentDesk(self.gateway, self.authority, on_consent=self._consented)
        # With a notify URL set (set_notify_url): announce consents and revocations to the app gateway.
        self.notify_on_consent = True
        self.notify_on_revoke = True
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._other_key: rsa.RSAPrivateKey | None = None
        self._other_key_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.requests_received = 0  # every API request, answered or not: tests prove "no call to Alipay"
        self.token_calls = 0  # of those, POST token/app: the exchanges and refreshes (not queries)
        # (arrived, left) per API request, monotonic: tests check a caller's concurrency and pace.
        self.call_times: deque[tuple[float, float]] = deque(maxlen=100_000)

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self, port: int = 0) -> str:
        """Serve in a background thread; returns the base URL (``http://127.0.0.1:<port>``)."""
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        server = _Server((HOST, port), self)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": _POLL_SECONDS}, daemon=True
        )
        thread.name = f"alipay-emulator-{server.server_address[1]}"
        thread.start()
        self._server, self._thread = server, thread
        return self.base_url

    def stop(self) -> None:
        self.notifier.stop()
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return f"http://{HOST}:{self._server.server_address[1]}"

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- Alipay's side of the world ---------------------------------------------------------------

    def register_app(self, creds: DevCredentials, *, redirect_uri: str | None = None) -> None:
        """Make an ISV app known: its app key and certificate, the Alipay key that answers it, its AES key.

        ``redirect_uri``: the app's registered callback URL, which consent requests must then name.
        """
        self.gateway.register(creds)
        if redirect_uri is not None:
            self.consent.set_redirect_uri(creds.app_id, redirect_uri)

    def set_redirect_uri(self, isv_app_id: str, redirect_uri: str | None) -> None:
        self.consent.set_redirect_uri(isv_app_id, redirect_uri)

    def set_notify_url(self, isv_app_id: str, url: str | None) -> None:
        """The app gateway (应用网关) that notifications for this ISV app are posted to."""
        self.notifier.set_url(isv_app_id, url)

    @property
    def consent_page_url(self) -> str:
        """The merchant consent page: what ``CONSENT_PAGE_URL`` names to use this emulator."""
        return self.base_url + CONSENT_PAGE_PATH

    def issue_code(
        self, isv_app_id: str, merchant_app_ids: Sequence[str] | None = None, user_id: str | None = None
    ) -> str:
        """What Alipay does when a merchant consents: a fresh, single-use ``app_auth_code``.

        Several ``merchant_app_ids`` make a batch authorization, answered with ``tokens[]``;
        by default one merchant app id is generated.
        """
        self.gateway.registration(isv_app_id)  # fail early for an app nobody registered
        return self.authority.issue_code(isv_app_id, merchant_app_ids, user_id)

    def revoke(self, isv_app_id: str, merchant_app_id: str) -> bool:
        """The merchant cancels the authorization; its tokens stop working at once (and Alipay says so)."""
        revoked = self.authority.revoke(isv_app_id, merchant_app_id)
        if revoked and self.notify_on_revoke:
            user_id = self.authority.user_id_of(isv_app_id, merchant_app_id)
            self.notifier.cancelled(self.gateway.registration(isv_app_id), merchant_app_id, user_id)
        return revoked

    def _consented(self, registration: Registration, code: str, tokens: list[IssuedToken]) -> None:
        if self.notify_on_consent:
            self.notifier.authorized(registration, tokens, code)

    def rotate_alipay_cert(self, isv_app_id: str) -> DevCredentials:
        """Alipay starts answering this app with a new key and certificate (a new ``alipay-sn``).

        Returns the app's credentials with the new Alipay key and certificate, so a test can
        write the configuration the ISV would download (``client_config``).
        """
        current = self.gateway.registration(isv_app_id).credentials
        new_key = new_rsa_key()
        # The sandbox CA's private key is not kept, so the new certificate is signed by its own
        # key under the CA's name. Nothing in the v3 call path checks the chain, and the SN only
        # depends on the issuer name and the serial.
        new_cert = make_cert(
            current.alipay_cert.subject,
            new_key.public_key(),
            current.alipay_cert.issuer,
            new_key,
            serial=int.from_bytes(os.urandom(16)) >> 2,
        )
        rotated = dataclasses.replace(current, alipay_key=new_key, alipay_cert=new_cert)
        self.gateway.register(rotated)
        return rotated

    # --- faults ---------------------------------------------------------------------------------

    def inject(
        self,
        fault: Fault,
        times: int | None = None,
        *,
        rate: float | None = None,
        delay: float = 0.0,
        after_processing: bool = False,
    ) -> None:
        """Arm a fault for the next ``times`` requests (default 1) or with probability ``rate``."""
        if fault is Fault.OTHER_KEY:
            self._foreign_key()  # generate it now, not while a request waits
        self.faults.inject(fault, times, rate=rate, delay=delay, after_processing=after_processing)

    def clear_faults(self) -> None:
        self.faults.clear()

    # --- inspection -----------------------------------------------------------------------------

    def refresh_count(self, merchant_app_id: str) -> int:
        return self.authority.refresh_count(merchant_app_id)

    def set_auth_methods(self, isv_app_id: str, merchant_app_id: str, methods: Sequence[str]) -> None:
        """The APIs ``token/app/query`` reports for an authorization (default ``DEFAULT_AUTH_METHODS``)."""
        self.authority.set_auth_methods(isv_app_id, merchant_app_id, methods)

    def token_valid(self, app_auth_token: str) -> bool:
        return self.authority.token_valid(app_auth_token)

    @property
    def notifications(self) -> list[Delivery]:
        """Every notification POST so far: ``(params, status, body)``, status None if unanswered."""
        return self.notifier.deliveries

    @property
    def notify_duplicates(self) -> int:
        """Deliver each notification this many extra times, with the same notify_id (a fault)."""
        return self.notifier.duplicates

    @notify_duplicates.setter
    def notify_duplicates(self, extra: int) -> None:
        self.notifier.duplicates = extra

    def wait_for_notifications(self, timeout: float = 10.0) -> bool:
        """Until every notification was accepted or given up; False if ``timeout`` ran out first."""
        return self.notifier.wait(timeout)

    # --- one request ----------------------------------------------------------------------------

    def respond(self, request: Request) -> Reply | None:
        """The reply to one request, faults included; None means: close without answering."""
        if self.consent.handles(request):  # a page for a person, not an API call: not counted
            page = self.consent.respond(request)
            return Reply(page.status, page.headers, page.body)
        with self._count_lock:
            self.requests_received += 1
            if request.method == "POST" and request.target.split("?")[0] == TOKEN_PATH:
                self.token_calls += 1
        arrived = time.monotonic()
        try:
            return self._respond_to_call(request)
        finally:
            self.call_times.append((arrived, time.monotonic()))

    def max_calls_in_flight(self) -> int:
        """The most API requests this emulator was handling at once."""
        calls = list(self.call_times)  # one snapshot: handler threads may still append
        edges = sorted([(arrived, 1) for arrived, _ in calls] + [(left, -1) for _, left in calls])
        in_flight = most = 0
        for _, step in edges:  # at a tie, -1 sorts first: a call that left as another arrived is not overlap
            in_flight += step
            most = max(most, in_flight)
        return most

    def _respond_to_call(self, request: Request) -> Reply | None:
        trace_id = new_trace_id()
        draw = self.faults.draw()
        if draw.delay:
            time.sleep(draw.delay)
        if Fault.DROP_CONNECTION in draw:
            return None
        if Fault.HTTP_500 in draw:
            return unsigned_reply(
                500, "system-error", "系统繁忙 (injected fault: request not processed)", trace_id
            )
        if Fault.HTTP_429 in draw:
            return unsigned_reply(
                429, "rate-limited", "调用频率超限 (injected fault: not processed)", trace_id
            )
        answer = self.gateway.handle(request, trace_id)
        if Fault.DROP_AFTER_PROCESSING in draw:
            return None
        if Fault.HTTP_502_AFTER_PROCESSING in draw:
            return unsigned_reply(
                502, "bad-gateway", "网关超时 (injected fault: the request was processed)", trace_id
            )
        return self._render(answer, draw, trace_id)

    def _render(self, answer: Answer, draw: Draw, trace_id: str) -> Reply:
        headers = {"content-type": answer.content_type, "alipay-trace-id": trace_id}
        body = answer.body
        if answer.signer is not None:
            key = self._foreign_key() if Fault.OTHER_KEY in draw else answer.signer.key
            sn = secrets.token_hex(16) if Fault.WRONG_SN in draw else answer.signer.sn
            timestamp = str(int(self.clock() * 1000))
            headers.update(sign_response(key, body, nonce=str(uuid.uuid4()), timestamp=timestamp, sn=sn))
            if Fault.TAMPER_SIGNATURE in draw:
                headers["alipay-signature"] = _tampered_signature(headers["alipay-signature"])
            if Fault.MISSING_SIGNATURE in draw:
                del headers["alipay-signature"]
            if Fault.TAMPER_BODY in draw:
                body = _tampered_body(body)
        return Reply(answer.status, headers, body)

    def _foreign_key(self) -> rsa.RSAPrivateKey:
        with self._other_key_lock:
            if self._other_key is None:
                self._other_key = new_rsa_key()
            return self._other_key


def unsigned_reply(status: int, code: str, message: str, trace_id: str) -> Reply:
    """An error answer without a signature, as Alipay gives when it cannot (or will not) sign one."""
    return Reply(
        status, {"content-type": JSON_TYPE, "alipay-trace-id": trace_id}, error_body(code, message, trace_id)
    )


def _tampered_signature(signature: str) -> str:
    raw = bytearray(base64.b64decode(signature))
    raw[len(raw) // 2] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def _tampered_body(body: bytes) -> bytes:
    """Change one letter or digit in the middle: still JSON (or base64), same length, wrong signature."""
    text = bytearray(body)
    middle = len(text) // 2
    for index in [*range(middle, len(text)), *range(middle - 1, -1, -1)]:
        char = chr(text[index])
        if char.isdigit():
            text[index] = ord(str((int(char) + 1) % 10))
            return bytes(text)
        if char.isascii() and char.isalpha():
            text[index] = (
                ord("b" if char == "a" else "a") if char.islower() else ord("B" if char == "A" else "A")
            )
            return bytes(text)
    return body + b" "


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client's connection pool reuses connections
    # Headers and body leave in two writes; with Nagle on, the body waits for the client's delayed
    # ACK of the headers: 40 ms added to every answer, which Alipay's real gateway does not add.
    disable_nagle_algorithm = True
    server_version = "AlipayEmulator/1.0"
    sys_version = ""
    timeout = IDLE_TIMEOUT_SECONDS
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        body = self._read_body()
        if body is None:
            self.close_connection = True  # the rest of the stream cannot be framed any more
            self._send(
                unsigned_reply(400, "invalid-parameter", "unreadable request body framing", new_trace_id())
            )
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            reply = self.server.emulator.respond(Request(self.command, self.path, headers, body))
        except Exception:
            # A bug in the emulator must show as one, not as a dropped connection a test would excuse.
            logger.exception("the emulator failed to answer %s %s", self.command, self.path.split("?")[0])
            reply = unsigned_reply(500, "emulator-error", "the emulator failed; see its log", new_trace_id())
        if reply is None:
            self.close_connection = True  # the server then closes the socket: the client sees EOF
            return
        self._send(reply)

    def _read_body(self) -> bytes | None:
        """The body by Content-Length, or by chunks; None when the framing is broken or too large."""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return self._read_chunks()
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            return None
        if not 0 <= length <= _MAX_BODY:
            return None
        return self.rfile.read(length)

    def _read_chunks(self) -> bytes | None:
        body = b""
        while len(body) <= _MAX_BODY:  # bounded: each round adds a chunk or ends
            try:
                size = int(self.rfile.readline(64).split(b";")[0].strip(), 16)
            except ValueError:
                return None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers, up to the blank line
                    pass
                return body
            body += self.rfile.read(size)
            if self.rfile.readline(8).strip():  # CRLF after each chunk
                return None
        return None

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def send_response(self, code: int, message: str | None = None) -> None:
        # Lowercase names throughout: the PHP SDK looks response headers up case-sensitively.
        self.send_response_only(code, message)
        self.send_header("server", self.version_string())
        self.send_header("date", self.date_time_string())

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no line per request (request lines could carry tokens in a query string)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a burst of concurrent clients must not overflow the listen backlog

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn); a loopback server does not need that.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = HOST, self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive connections."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away mid-request is normal here (fault tests drop connections).
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)
