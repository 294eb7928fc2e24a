"""No secret leaves the service: not in logs (at DEBUG), events, metrics or HTTP answers, and not
as plaintext in the table.

One test drives every flow over the local stack (AES-encrypted exchanges, notifications on):
links, /authorize, callback and its reload, the notification that follows, the read path, a
scheduled refresh through the refresher handler, operator and merchant revocation, and the error
paths (forged state, spent code, tampered answers, bad notifications, unusable tokens). It then
collects the secrets that were really used - the ISV's keys, the AES key, the state signing key,
every code and token the emulator issued, every Authorization header the client sent - and
searches every channel for each, in the forms a leak would take (raw, base64, URL-encoded).

A scanner that cannot fail proves nothing: a secret is planted in each channel first, and the
test insists the scan finds every plant before it insists on finding nothing else.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import secrets as random_secrets
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from alipay_v3 import sign_notification
from app_auth.links import StateSigner
from app_auth.operations import Operations
from app_auth.refresh import FAILED, REFRESHED, RefreshService
from app_auth.verification import Verified
from sandbox.emulator import Fault
from sandbox.front import LambdaContext, load_function
from tests.integration.stack_fixtures import Stack
from tests.integration.test_notifications import authorized_notification

pytestmark = [pytest.mark.integration, pytest.mark.security]

# The loggers the functions configure (the service logger and the layer's), all at DEBUG here.
LOGGERS = ("alipay-app-auth", "app_auth", "alipay_v3", "sandbox")
# The one route whose answer *is* a token: the IAM-protected read path hands out app_auth_token.
READ_PATH = "/tokens/"


# -- what a leak looks like ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Secret:
    name: str
    forms: frozenset[str]
    allowed_in_read_path: bool = False  # an app_auth_token may appear in GET /tokens/{id} answers


def text_forms(value: str) -> set[str]:
    """The value, and how it looks base64-, URL- or JSON-encoded."""
    forms = {value, quote(value, safe=""), quote_plus(value), base64.b64encode(value.encode()).decode()}
    forms.add(json.dumps(value)[1:-1])
    return {f for f in forms if len(f) >= 8}


def key_forms(key: rsa.RSAPrivateKey) -> set[str]:
    """A private key as PEM (PKCS#1 and PKCS#8): the whole base64 of the DER, each PEM line, and a
    slice from the middle (a truncated dump still leaks)."""
    forms: set[str] = set()
    for fmt in (serialization.PrivateFormat.TraditionalOpenSSL, serialization.PrivateFormat.PKCS8):
        der = key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
        body = base64.b64encode(der).decode()
        forms |= {body, body[len(body) // 2 : len(body) // 2 + 48], base64.urlsafe_b64encode(der).decode()}
        pem = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()
        # the first line is mostly the fixed ASN.1 header, the same for every key of this size
        forms |= {line for line in pem.splitlines()[2:-2] if len(line) == 64}
    numbers = key.private_numbers()
    forms.add(format(numbers.d, "x")[:48])  # the private exponent, as hex
    return forms


@dataclass(frozen=True)
class Finding:
    secret: str
    channel: str
    excerpt: str


def scan(found_in: dict[str, list[str]], secrets: Iterable[Secret]) -> list[Finding]:
    findings = []
    for secret in secrets:
        for channel, texts in found_in.items():
            if secret.allowed_in_read_path and channel.startswith("response GET " + READ_PATH):
                continue
            for text in texts:
                for form in secret.forms:
                    at = text.find(form)
                    if at >= 0:
                        findings.append(Finding(secret.name, channel, text[max(0, at - 60) : at + 20]))
                        break
    return findings


# -- what the run produced ----------------------------------------------------------------------------


class _Records(logging.Handler):
    """Every record of the service's loggers, rendered with every attribute (extras included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._plain = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        attributes = {k: v for k, v in record.__dict__.items() if k not in ("msg", "args", "exc_info")}
        text = record.getMessage() + " " + json.dumps(attributes, default=str)
        if record.exc_info:
            text += "\n" + self._plain.formatException(record.exc_info)
        self.lines.append(text)


@dataclass
class Capture:
    stack: Stack
    responses: list[requests.Response] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    authorization_headers: list[str] = field(default_factory=list)
    handler: _Records = field(default_factory=_Records)
    stdout: io.StringIO = field(default_factory=io.StringIO)  # the functions' JSON log handlers

    def drain_events(self) -> list[dict[str, Any]]:
        got = self.stack.published_events()
        self.events.extend(got)
        return got

    def channels(self, stdout: str, stderr: str) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {
            "log records": self.handler.lines,
            # the functions' JSON log lines and EMF metric lines go to stdout, as in Lambda
            "stdout (JSON logs, EMF metrics)": stdout.splitlines() + self.stdout.getvalue().splitlines(),
            "stderr": stderr.splitlines(),
            "EventBridge events": [json.dumps(e) for e in self.events],
        }
        for response in self.responses:
            path = requests.utils.urlparse(response.url).path
            channel = f"response {response.request.method} {path}"
            headers = json.dumps(dict(response.headers))
            found.setdefault(channel, []).extend([response.text, headers])
        for delivery in self.stack.emulator.notifications:  # what /notify answered Alipay
            found.setdefault("response POST /notify (to Alipay)", []).append(str(delivery.body))
        return found


@pytest.fixture
def capture(make_stack, monkeypatch) -> Iterator[Capture]:
    stack = make_stack(aes=True)  # AES-encrypted exchanges: the AES key is in play
    stack.emulator.set_notify_url(stack.creds.app_id, f"{stack.url}/notify")
    captured = Capture(stack)
    stack.http.hooks["response"].append(lambda response, *args, **kwargs: captured.responses.append(response))
    respond = stack.emulator.respond

    def recording_respond(request):  # the Authorization header each API call carried
        if "authorization" in request.headers:
            captured.authorization_headers.append(request.headers["authorization"])
        return respond(request)

    monkeypatch.setattr(stack.emulator, "respond", recording_respond)
    levels, streams = {}, {}
    for name in LOGGERS:
        logger = logging.getLogger(name)
        levels[name] = logger.level
        logger.setLevel(logging.DEBUG)
        # The functions' JSON handlers write to the stdout they found at import (pytest's, by now):
        # point them at our buffer so that what Lambda would ship to CloudWatch is read too.
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and handler not in streams:
                streams[handler] = handler.setStream(captured.stdout)
        logger.addHandler(captured.handler)
    try:
        yield captured
    finally:
        for handler, stream in streams.items():
            handler.setStream(stream)
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(captured.handler)
            logging.getLogger(name).setLevel(levels[name])


# -- the run ------------------------------------------------------------------------------------------


def run_every_flow(capture: Capture, refresher_module: Any) -> None:
    stack = capture.stack
    c = stack.container
    get = lambda path, **kw: stack.http.get(f"{stack.url}{path}", timeout=20, **kw)  # noqa: E731

    # Links and /authorize
    link = stack.create_link("shop-1")
    state = requests.utils.urlparse(link).query.split("state=")[1].split("&")[0]
    assert get(f"/authorize?state={state}", allow_redirects=False).status_code == 302

    # A merchant consents: callback, reload, then Alipay's notification for the same authorization
    params = stack.consent(link, merchant_app_ids=["2021000000000901"])
    assert stack.callback(params).status_code == 200
    assert stack.callback(params).status_code == 200  # reload
    stack.emulator.notifier.authorized(
        stack.emulator.gateway.registration(stack.creds.app_id),
        [_issued(stack, "2021000000000901")],
        params["app_auth_code"],
    )
    assert stack.emulator.wait_for_notifications(15)

    # A merchant whose callback never came: the notification alone stores it
    code = stack.emulator.issue_code(stack.creds.app_id, merchant_app_ids=["2021000000000902"])
    issued = stack.emulator.authority.exchange_code(stack.creds.app_id, code)  # consented; tab closed
    stack.emulator.notifier.authorized(stack.emulator.gateway.registration(stack.creds.app_id), issued, code)
    assert stack.emulator.wait_for_notifications(15)

    # The read path
    assert get("/tokens/2021000000000901").status_code == 200
    assert get("/tokens/2021000000000902").status_code == 200

    # A scheduled refresh through the refresher function, and an operator's forced refresh
    for app_id in ("2021000000000901", "2021000000000902"):
        _make_due(stack, app_id)
    result = refresher_module.lambda_handler({}, _FiveMinutes(aws_request_id="refresher"))
    assert result["due"] == 2, result
    assert Operations(c).refresh("2021000000000901").outcome == REFRESHED
    assert get("/tokens/2021000000000901").status_code == 200

    # Error paths: forged state, spent code, tampered answers (exchange and refresh), bad notification
    forged = {**stack.consent(stack.create_link()), "state": StateSigner(b"k" * 32).issue(60).value}
    assert stack.callback(forged).status_code == 400
    spent = {**params, "app_auth_code": code, "state": _state_of(stack.create_link())}
    assert stack.callback(spent).status_code == 410  # Alipay: this code was already used
    for fault in (Fault.TAMPER_BODY, Fault.OTHER_KEY, Fault.HTTP_500):
        tampered = stack.consent(stack.create_link("shop-2"), merchant_app_ids=["2021000000000903"])
        stack.emulator.inject(fault)
        assert stack.callback(tampered).status_code == 502
    service = RefreshService(
        settings=c.settings, store=c.store, token_api=c.new_token_api, publisher=c.publisher
    )
    for fault in (Fault.TAMPER_BODY, Fault.TAMPER_SIGNATURE):
        stack.emulator.inject(fault)
        assert service.refresh_one("2021000000000902", force=True) == FAILED
    bad = sign_notification(authorized_notification(stack, notify_id="forged"), _other_key(stack))
    assert stack.http.post(f"{stack.url}/notify", data=bad, timeout=10).status_code == 400
    assert stack.http.post(f"{stack.url}/notify", data=b"\xff\xfe", timeout=10).status_code == 400

    # Alipay's word on tokens: the operator's live look and verification; a refresh token timed
    # out while its token works (rotation unavailable); another subscription's message passed on
    assert Operations(c).describe("2021000000000901", live=True).live is not None
    assert Operations(c).verify(["2021000000000901", "2021000000000902"]).count(Verified.VALID) == 2
    _make_due(stack, "2021000000000902")
    life, stack.emulator.authority.re_expires_in = stack.emulator.authority.re_expires_in, 0
    result = refresher_module.lambda_handler({}, _FiveMinutes(aws_request_id="refresher-2"))
    stack.emulator.authority.re_expires_in = life
    assert result["outcomes"] == {"rotation_unavailable": 1}, result
    message = {
        "notify_id": "trade-1",
        "notify_type": "trade_status_sync",
        "notify_time": "2026-11-25 10:00:01",
        "app_id": stack.creds.app_id,
        "biz_content": json.dumps({"out_trade_no": "T-1"}),
    }
    signed = sign_notification(message, stack.creds.alipay_key)
    assert stack.http.post(f"{stack.url}/notify", data=signed, timeout=10).text == "success"

    # An import of an authorization held before the stack (the file's tokens are secrets too)
    code = stack.emulator.issue_code(stack.creds.app_id, merchant_app_ids=["2021000000000904"])
    [held] = stack.emulator.authority.exchange_code(stack.creds.app_id, code)
    with tempfile.TemporaryDirectory() as folder:
        rows = Path(folder) / "tokens.jsonl"
        fields = {k: v for k, v in dataclasses.asdict(held).items() if k != "expires_in"}
        rows.write_text(json.dumps({**fields, "isv_ref": "held-1"}) + "\n", encoding="utf-8")
        assert Operations(c).import_file(rows).counts == {"imported": 1}
    assert get("/tokens/2021000000000904").status_code == 200

    # Revocation: by the operator, and by the merchant (Alipay's cancellation notification)
    Operations(c).revoke("2021000000000902", "security test")
    assert stack.emulator.revoke(stack.creds.app_id, "2021000000000901")
    assert stack.emulator.wait_for_notifications(15)
    assert get("/tokens/2021000000000901").status_code == 409
    assert get("/tokens/2021000000000999").status_code == 404
    capture.drain_events()


def collect_secrets(capture: Capture) -> list[Secret]:
    stack = capture.stack
    creds = stack.creds
    authority = stack.emulator.authority
    found = [
        Secret("ISV app private key", frozenset(key_forms(creds.app_key))),
        Secret("Alipay private key", frozenset(key_forms(creds.alipay_key))),
        Secret("AES key", frozenset(text_forms(creds.encrypt_key) | _b64_forms(creds.encrypt_key))),
        Secret("state signing key", frozenset(text_forms(stack.container.secrets.state_key().decode()))),
    ]
    with authority._lock:
        codes = list(authority._codes)
        access = list(authority._by_access_token)
        refresh = list(authority._by_refresh_token)
    assert len(codes) >= 6 and len(access) >= 4 and len(refresh) >= 4, (len(codes), len(access))
    found += [Secret(f"app_auth_code #{i}", frozenset(text_forms(v))) for i, v in enumerate(codes)]
    found += [
        Secret(f"app_auth_token #{i}", frozenset(text_forms(v)), allowed_in_read_path=True)
        for i, v in enumerate(access)
    ]
    found += [Secret(f"app_refresh_token #{i}", frozenset(text_forms(v))) for i, v in enumerate(refresh)]
    # The KMS data keys the run sealed and opened tokens with (the cipher keeps them for minutes).
    data_keys = [key.plaintext for key in stack.container.cipher._opened.values()]
    assert data_keys
    found += [Secret(f"token data key #{i}", frozenset(_raw_forms(k))) for i, k in enumerate(data_keys)]
    assert len(capture.authorization_headers) >= 6, capture.authorization_headers
    for i, header in enumerate(capture.authorization_headers):
        signature = header.rsplit("sign=", 1)[1]
        found.append(
            Secret(f"Authorization header #{i}", frozenset(text_forms(header) | text_forms(signature)))
        )
    return found


# -- the test -----------------------------------------------------------------------------------------


def test_no_secret_in_logs_events_metrics_answers_or_the_table(capture, capfd):
    refresher_module = load_function("refresher")
    run_every_flow(capture, refresher_module)
    secrets = collect_secrets(capture)

    # Plant one secret in each channel the scan reads; it must find every one of them.
    planted = "202511BB" + random_secrets.token_hex(16)
    logging.getLogger("app_auth.planted").debug("planted %s", planted)
    refresher_module.logger.debug("planted", value=planted)
    capture.events.append({"detail": {"planted": planted}})
    stdout, stderr = capfd.readouterr()
    channels = capture.channels(stdout, stderr)
    channels["response GET /planted"] = [f"x{quote(planted)}x"]
    plant = Secret("planted", frozenset(text_forms(planted)))
    assert {f.channel for f in scan(channels, [plant])} == {
        "log records",
        "stdout (JSON logs, EMF metrics)",
        "EventBridge events",
        "response GET /planted",
    }
    del channels["response GET /planted"]
    for name in ("log records", "stdout (JSON logs, EMF metrics)"):
        channels[name] = [line for line in channels[name] if planted not in line]
    capture.events.pop()
    channels["EventBridge events"] = [json.dumps(e) for e in capture.events]

    # The channels were not empty: the run really logged, published, measured and answered.
    assert len(channels["log records"]) > 20
    assert any('"_aws"' in line for line in channels["stdout (JSON logs, EMF metrics)"])  # EMF
    assert {e["detail-type"] for e in capture.events} >= {
        "Authorization Granted",
        "Token Refreshed",
        "Token Refresh Failed",
        "Authorization Revoked",
        "Token Rotation Unavailable",
        "Alipay Message Received",
    }
    assert any(c.startswith("response GET /tokens/") for c in channels)

    # The one legitimate place for a token is the read path's answer, and the scan sees it there.
    handed_out = [
        dataclasses.replace(s, allowed_in_read_path=False) for s in secrets if s.allowed_in_read_path
    ]
    assert {f.channel for f in scan(channels, handed_out)} == {
        "response GET /tokens/2021000000000901",
        "response GET /tokens/2021000000000902",
        "response GET /tokens/2021000000000904",  # the imported one
    }

    assert scan(channels, secrets) == []
    # and the same run left only ciphertext in the table
    assert_token_fields_are_ciphertext(capture.stack, secrets)


def assert_token_fields_are_ciphertext(stack: Stack, secrets: list[Secret]) -> None:
    secrets = [s for s in secrets if "token" in s.name or "code" in s.name]
    items = stack.table_items()
    tokens = [i for i in items if i["sk"]["S"] == "TOKEN"]
    assert len(tokens) == 3  # two authorized here, one imported
    for item in tokens:
        for name in ("current", "previous"):
            if name in item:  # a sealed envelope: ciphertext and nonce, binary; a key version beside them
                sealed = item[name]["M"]
                assert {"ct", "n"} <= set(sealed), (name, sorted(sealed))
                assert all("B" in part for key, part in sealed.items() if key != "v"), (name, sealed)
    dump = json.dumps(items, default=_bytes_as_text)
    as_hex = json.dumps(items, default=lambda b: b.hex())
    assert scan({"table dump": [dump, as_hex]}, secrets) == []


# -- helpers ------------------------------------------------------------------------------------------


class _FiveMinutes(LambdaContext):
    """The refresher's schedule gives it minutes; the front's default context has 15 s."""

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def _bytes_as_text(value: Any) -> str:
    return base64.b64encode(value).decode() + " " + value.decode("latin-1")


def _raw_forms(raw: bytes) -> set[str]:
    return {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(), raw.hex()}


def _b64_forms(text: str) -> set[str]:
    """The AES key is base64 of 16 raw bytes: its raw bytes as hex, too."""
    return {base64.b64decode(text).hex()}


def _issued(stack: Stack, merchant_app_id: str):
    from sandbox.emulator.authority import IssuedToken

    tokens = stack.emulator.authority.current_tokens(stack.creds.app_id, merchant_app_id)
    assert tokens is not None
    access, refresh = tokens
    return IssuedToken(merchant_app_id, "2088000000000901", access, refresh, 31536000, 31536000)


def _make_due(stack: Stack, auth_app_id: str) -> None:
    stack.aws.client("dynamodb").update_item(
        TableName=stack.container.settings.table_name,
        Key={"pk": {"S": f"APP#{auth_app_id}"}, "sk": {"S": "TOKEN"}},
        UpdateExpression="SET due_at = :past",
        ExpressionAttributeValues={":past": {"N": "1"}},
    )


def _state_of(link: str) -> str:
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(link).query)["state"][0]


def _other_key(stack: Stack) -> rsa.RSAPrivateKey:
    from sandbox.credentials import new_rsa_key

    return new_rsa_key()
