"""Hostile input, property-based: whatever arrives, the answer is a refusal or the documented answer.

For every public and IAM route: never a 5xx, never a traceback in the body, never a call to Alipay
for input that fails validation, never a CODE#/APP#/NOTIFY# item, never an event. Most examples go
straight into the handler as payload-2.0 events (fast); a smaller set goes over real HTTP through
the front, where a crash shows up as a dropped connection.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sandbox import front as front_module
from sandbox.front import HttpApi
from tests.security.conftest import assert_refused, bounded, invoke, traces

pytestmark = [pytest.mark.integration, pytest.mark.security]

_CODE = re.compile(r"^[A-Za-z0-9]{16,64}$")  # the handler's own rule for app_auth_code
_ISV_REF = re.compile(r"^[A-Za-z0-9_.:@\-]{1,128}$")  # and for ref

# -- strategies ------------------------------------------------------------------------------------

# Text with everything a browser or an attacker can put in a URL: controls and NUL, every plane of
# Unicode, right-to-left marks, combining characters; no lone surrogates (they cannot be encoded).
any_text = st.text(st.characters(codec="utf-8"), max_size=80)
# Raw query material, not encoded by us: stray and broken percent-escapes, separators, invalid UTF-8.
raw_query_text = st.lists(
    st.sampled_from([*"%&=+;?#/ az09AZ.-_~", "%00", "%FF", "%C3%28", "%E2%82", "%2", "%%", "%u00e9"]),
    max_size=30,
).map("".join)
huge_value = st.integers(min_value=1_000, max_value=200_000).map(lambda n: "A" * n)


@st.composite
def callback_queries(draw: st.DrawFn, real: dict[str, str]) -> str:
    """A query string for /callback: hostile pairs mixed with genuine ones, keys repeated, any encoding."""
    keys = st.one_of(st.sampled_from(["app_id", "app_auth_code", "state", "source"]), any_text)
    values = st.one_of(any_text, huge_value, st.sampled_from(sorted(real.values())), raw_query_text)
    pairs = draw(st.lists(st.tuples(keys, values), max_size=8))
    style = draw(st.sampled_from(["urlencode", "quote", "raw"]))
    if style == "urlencode":
        return urlencode(pairs)
    if style == "quote":
        safe = draw(st.sampled_from(["", "%", "=&", "%=&+;"]))
        return "&".join(f"{quote(k, safe=safe)}={quote(v, safe=safe)}" for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in pairs) + draw(raw_query_text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def link_bodies(draw: st.DrawFn) -> bytes:
    """A body for POST /links: JSON of any shape, a ref of any type, broken JSON, bytes."""
    kind = draw(st.sampled_from(["ref", "json", "text", "bytes", "deep"]))
    if kind == "deep":  # deeper than json.loads recurses: RecursionError, not JSONDecodeError
        depth = draw(st.integers(1_000, 200_000))
        return draw(st.sampled_from([b"[" * depth, b'{"ref":' * depth]))
    if kind == "ref":
        return json.dumps({"ref": draw(json_values)}).encode()
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "text":
        return draw(any_text).encode()
    return draw(st.binary(max_size=200))


notify_fields = st.sampled_from(
    [
        "notify_id",
        "sign",
        "sign_type",
        "app_id",
        "biz_content",
        "notify_type",
        "msg_method",
        "alipay_cert_sn",
        "notify_time",
        "utc_timestamp",
        "charset",
    ]
)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded; charset=utf-8",
            "application/x-www-form-urlencoded; charset=gbk",
            "application/json",
            "text/plain; charset=utf-16",
            "multipart/form-data; boundary=x",
            "",
        ]
    ),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40),
)

# Headers a client controls: the ones the handler or Powertools might read, and any others.
header_names = st.one_of(
    st.sampled_from(
        [
            "content-type",
            "content-encoding",
            "content-length",
            "transfer-encoding",
            "host",
            "x-forwarded-for",
            "x-forwarded-proto",
            "authorization",
            "cookie",
            "accept-language",
            "user-agent",
            "x-amzn-trace-id",
        ]
    ),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30),
).map(str.lower)
hostile_headers = st.dictionaries(
    header_names, st.one_of(any_text, huge_value, st.sampled_from(["gzip", "chunked", "-1", "0"])), max_size=6
)


@st.composite
def notify_bodies(draw: st.DrawFn, app_id: str) -> bytes:
    """A body for POST /notify: forms (with a sign that cannot verify), in any charset, or bytes."""
    kind = draw(st.sampled_from(["form", "form", "bytes", "many-fields", "big"]))
    if kind == "bytes":
        return draw(st.binary(max_size=4096))
    if kind == "many-fields":
        return "&".join(f"f{i}=v" for i in range(draw(st.integers(90, 400)))).encode()
    if kind == "big":
        return b"notify_id=" + b"x" * draw(st.integers(10_000, 900_000))
    fields = draw(
        st.dictionaries(
            st.one_of(notify_fields, any_text),
            st.one_of(any_text, st.sampled_from([app_id, "RSA2", "open_app_auth_notify"]), raw_query_text),
            max_size=10,
        )
    )
    charset = draw(st.sampled_from(["utf-8", "gbk", "utf-16", "latin-1"]))
    form = urlencode(fields, encoding=charset, errors="replace")
    return draw(st.sampled_from([form, form + draw(raw_query_text)])).encode("utf-8", "replace")


# -- direct: payload-2.0 events straight into the handler --------------------------------------------


def test_callback_refuses_hostile_queries(stack, callback_module):
    link = stack.create_link("hostile-1")
    state = parse_qs(urlsplit(link).query)["state"][0]
    real = {"app_id": stack.creds.app_id, "source": "alipay_app_auth", "state": state}

    @bounded(250)
    @given(query=callback_queries(real), headers=hostile_headers)
    def check(query: str, headers: dict[str, str]) -> None:
        code = _values_seen(query).get("app_auth_code", "")
        assume(not _CODE.match(code))  # a well-formed code with a genuine state is a real attempt
        result = invoke(callback_module.lambda_handler, "GET", f"/callback?{query}", headers=headers)
        assert_refused(result["statusCode"], result.get("body") or "")
        assert "Location" not in (result.get("headers") or {})
        assert stack.emulator.requests_received == 0

    check()
    assert traces(stack) == []
    assert stack.published_events() == []
    # and the genuine link survived all of it: hostile input never burns a merchant's link
    assert stack.container.flow.state_usable(stack.container.authorization._signer().verify(state))


def test_authorize_refuses_hostile_states(stack, callback_module):
    @bounded(150)
    @given(state=st.one_of(any_text, raw_query_text, huge_value, _near_states()))
    def check(state: str) -> None:
        result = invoke(callback_module.lambda_handler, "GET", f"/authorize?{urlencode({'state': state})}")
        assert_refused(result["statusCode"], result.get("body") or "")
        assert "Location" not in (result.get("headers") or {})

    check()
    assert stack.emulator.requests_received == 0
    assert traces(stack) == []


def test_notify_refuses_hostile_bodies(stack, callback_module):
    @bounded(200)
    @given(body=notify_bodies(stack.creds.app_id), content_type=content_types, headers=hostile_headers)
    def check(body: bytes, content_type: str, headers: dict[str, str]) -> None:
        headers = {**headers, "content-type": content_type}
        result = invoke(callback_module.lambda_handler, "POST", "/notify", body=body, headers=headers)
        text = result.get("body") or ""
        assert_refused(result["statusCode"], text)
        assert text.startswith("fail"), text[:200]  # Alipay reads anything but "success" as "retry"

    check()
    assert stack.emulator.requests_received == 0
    assert traces(stack) == []
    assert stack.published_events() == []


def test_links_answers_201_or_400(stack, callback_module):
    @bounded(150)
    @given(body=link_bodies())
    def check(body: bytes) -> None:
        result = invoke(
            callback_module.lambda_handler,
            "POST",
            "/links",
            body=body,
            headers={"content-type": "application/json"},
        )
        text = result.get("body") or ""
        assert_refused(result["statusCode"], text, allowed=(201,))
        answer = json.loads(text)
        if result["statusCode"] == 201:
            ref = _ref_of(body)
            assert ref in (None, "") or _ISV_REF.match(ref)
            assert answer["ref"] == (ref or None) and "state=v1." in answer["url"]
        else:
            assert set(answer) == {"code", "message"}

    check()
    assert stack.emulator.requests_received == 0
    assert traces(stack) == []


def test_tokens_and_unknown_routes_answer_4xx(stack):
    api = HttpApi()  # the token route is another function's; unknown routes are API Gateway's 404
    methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
    ids = st.one_of(any_text, raw_query_text, huge_value.map(lambda s: s.replace("A", "2")))

    @bounded(200)
    @given(method=methods, auth_app_id=ids, anywhere=any_text)
    def check(method: str, auth_app_id: str, anywhere: str) -> None:
        for target in (f"/tokens/{quote(auth_app_id, safe='')}", f"/tokens/{auth_app_id}", f"/{anywhere}"):
            try:
                target.encode("ascii")
            except UnicodeEncodeError:
                target = quote(target, safe="/%")
            result = invoke(api, method, target)
            assert_refused(result["statusCode"], result.get("body") or "")

    check()
    assert stack.emulator.requests_received == 0
    assert traces(stack) == []


# -- over real HTTP, through the front ---------------------------------------------------------------


def test_hostile_requests_over_http(stack):
    """Fewer examples, the real wire: a crash in the handler would surface as a dropped connection."""
    link = stack.create_link()
    real = {"app_id": stack.creds.app_id, "source": "alipay_app_auth", "state": _state_of(link)}
    host, port = urlsplit(stack.url).hostname, urlsplit(stack.url).port
    assert host and port

    def send(method: str, target: str, body: bytes = b"", content_type: str = "") -> tuple[int, str]:
        connection = http.client.HTTPConnection(host, port, timeout=20)
        try:
            headers = {"Content-Type": content_type} if content_type else {}
            connection.request(method, _wire_safe(target), body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        finally:
            connection.close()

    @bounded(40)
    @given(
        query=callback_queries(real),
        state=any_text,
        body=notify_bodies(stack.creds.app_id),
        content_type=content_types,
        link_body=link_bodies(),
        auth_app_id=any_text,
    )
    def check(
        query: str, state: str, body: bytes, content_type: str, link_body: bytes, auth_app_id: str
    ) -> None:
        assume(not _CODE.match(_values_seen(query).get("app_auth_code", "")))
        assert_refused(*send("GET", f"/callback?{query}"))
        assert_refused(*send("GET", f"/authorize?{urlencode({'state': state})}"))
        status, text = send("POST", "/notify", body, content_type)
        assert_refused(status, text)
        assert text.startswith("fail"), text[:200]
        assert_refused(*send("POST", "/links", link_body, "application/json"), allowed=(201,))
        assert_refused(*send("GET", f"/tokens/{quote(auth_app_id, safe='')}"))
        assert stack.emulator.requests_received == 0

    check()
    assert traces(stack) == []
    assert stack.published_events() == []


def test_an_oversized_body_gets_a_readable_413(stack):
    """The front refuses a body over its limit, and the client, still sending, can read why."""
    host, port = urlsplit(stack.url).hostname, urlsplit(stack.url).port
    connection = http.client.HTTPConnection(host, port, timeout=20)
    try:
        connection.request(
            "POST", "/links", body=b'{"ref":' * 1_500_000, headers={"Content-Type": "application/json"}
        )
        assert connection.getresponse().status == 413
    finally:
        connection.close()


@pytest.mark.parametrize("length", ["-1", "12abc", "1e3"])
def test_a_content_length_that_is_no_length_gets_a_400_and_the_front_lives_on(stack, length):
    host, port = urlsplit(stack.url).hostname, urlsplit(stack.url).port
    with socket.create_connection((host, port), timeout=10) as raw:
        raw.sendall(f"POST /links HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n{{}}".encode())
        assert raw.recv(200).split(b" ")[1] == b"400"
    assert stack.http.get(f"{stack.url}/authorize", timeout=10).status_code == 400  # still serving


def test_a_client_that_stops_sending_loses_its_connection(monkeypatch):
    monkeypatch.setattr(front_module, "READ_TIMEOUT_SECONDS", 0.5)
    with front_module.Front(lambda event, context: {"statusCode": 200, "body": ""}) as front:
        host, port = urlsplit(front.url).hostname, urlsplit(front.url).port
        with socket.create_connection((host, port), timeout=30) as raw:
            raw.sendall(b"POST /links HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
            assert raw.recv(100) == b""  # closed by the front, not a thread left waiting forever


# -- helpers -----------------------------------------------------------------------------------------


def _values_seen(query: str) -> dict[str, str]:
    """The query as the handler sees it (API Gateway joins repeated keys with commas)."""
    seen: dict[str, list[str]] = {}
    for key, values in parse_qs(query.split("#", 1)[0], keep_blank_values=True).items():
        seen.setdefault(key, []).extend(values)
    return {k: ",".join(v) for k, v in seen.items()}


def _state_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["state"][0]


def _ref_of(body: bytes) -> str | None:
    value = json.loads(body or b"{}")
    return value.get("ref") if isinstance(value, dict) else None


def _near_states() -> st.SearchStrategy[str]:
    """Strings shaped like a state (v1.<id>.<expiry>.<mac>) with a hostile part anywhere."""
    part = st.one_of(any_text, st.from_regex(r"\A[A-Za-z0-9_\-]{0,24}\Z"), st.sampled_from(["²", "٣", "-1"]))
    return st.tuples(st.sampled_from(["v1", "v2", ""]), part, part, part).map(".".join)


def _wire_safe(target: str) -> str:
    """http.client refuses controls and spaces in a request line: percent-encode what it would refuse."""
    return "".join(c if 0x21 <= ord(c) <= 0x7E else quote(c, safe="") for c in target)
