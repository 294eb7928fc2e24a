"""Alipay's merchant consent page (``/oauth2/appToAppAuth.htm``), for a person in a browser.

``GET /oauth2/appToAppAuth.htm?app_id=<ISV app id>&redirect_uri=<url>[&state=…]`` shows which
ISV app asks for the authorization, a field for the merchant app id(s) and two buttons. The form
goes to ``/oauth2/consent`` (POST, or GET with the same fields for scripts): "authorize" makes the
authority issue a code, with its token pairs minted at once, and redirects (302) to
``redirect_uri?app_id=…&source=alipay_app_auth&app_auth_code=…[&state=…]`` (protocol notes 6.2).

What real Alipay does on "decline" is not documented; the emulator shows a page and redirects
nowhere. The redirect_uri is taken as given unless one was registered for the app
(``set_redirect_uri``), which it must then match (query aside), as the console's
授权回调地址 does. These pages are not API calls: they are not counted and no fault touches them.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import string
import threading
from collections.abc import Callable
from html import escape
from typing import NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit

from .authority import AuthorizationAuthority, IssuedToken
from .gateway import Gateway, Registration, Request

CONSENT_PAGE_PATH = "/oauth2/appToAppAuth.htm"
CONSENT_ACTION_PATH = "/oauth2/consent"
SOURCE = "alipay_app_auth"
MAX_MERCHANT_APPS = 10
_APP_ID = re.compile(r"^\d{16}$")
_MAX_FIELD = 2048

ConsentListener = Callable[[Registration, str, list[IssuedToken]], None]

_STYLE = (
    "body{margin:0;font:16px/1.6 -apple-system,'PingFang SC','Microsoft YaHei',sans-serif;background:#f5f6f8;"
    "color:#1f2329}header{background:#1677ff;color:#fff;padding:.8rem 1.25rem;font-weight:600}"
    "main{max-width:32rem;margin:0 auto;padding:1.5rem 1.25rem}"
    ".card{background:#fff;border-radius:12px;padding:1.5rem;box-shadow:0 1px 3px rgba(0,0,0,.08)}"
    "h1{font-size:1.3rem;margin:.25rem 0}p{margin:.5rem 0}.en{color:#646a73;font-size:.92rem}"
    "code{word-break:break-all}label{display:block;margin-top:1rem;font-size:.92rem}"
    "input{box-sizing:border-box;width:100%;margin-top:.35rem;padding:.65rem;font:inherit;"
    "border:1px solid #d0d3d6;border-radius:8px}"
    ".actions{display:flex;gap:.75rem;margin-top:1.25rem}"
    "button{flex:1;padding:.75rem;font:inherit;border-radius:8px;border:1px solid #d0d3d6;background:#fff;"
    "color:#1f2329;cursor:pointer}button.primary{background:#1677ff;border-color:#1677ff;color:#fff}"
    "ul{padding-left:1.2rem;font-size:.92rem}.note{margin-top:1rem;font-size:.8rem;color:#8f959e}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
# No form-action: the form's answer redirects to the ISV's redirect_uri, on another origin.
_SECURITY_HEADERS = {
    "content-type": "text/html; charset=utf-8",
    "content-security-policy": (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}


class Page(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


class _Refused(Exception):
    """The request cannot lead to a consent: shown on an error page (the message is escaped)."""

    def __init__(self, status: int, message_zh: str, message_en: str) -> None:
        super().__init__(message_en)
        self.status = status
        self.message_zh = message_zh
        self.message_en = message_en


class ConsentDesk:
    """The consent page and its form handler; ``on_consent`` hears of every code it issues."""

    def __init__(
        self, gateway: Gateway, authority: AuthorizationAuthority, on_consent: ConsentListener
    ) -> None:
        self.gateway = gateway
        self.authority = authority
        self.on_consent = on_consent
        self._lock = threading.Lock()
        self._redirect_uris: dict[str, str] = {}

    def set_redirect_uri(self, isv_app_id: str, redirect_uri: str | None) -> None:
        """Register the app's 授权回调地址: consent requests must then name it. None removes it."""
        with self._lock:
            if redirect_uri:
                self._redirect_uris[isv_app_id] = redirect_uri
            else:
                self._redirect_uris.pop(isv_app_id, None)

    @staticmethod
    def handles(request: Request) -> bool:
        return urlsplit(request.target).path in (CONSENT_PAGE_PATH, CONSENT_ACTION_PATH)

    def respond(self, request: Request) -> Page:
        path = urlsplit(request.target).path
        allowed = ("GET",) if path == CONSENT_PAGE_PATH else ("GET", "POST")
        if request.method not in allowed:
            return _error_page(_Refused(405, "不支持的请求方式", f"{path} takes {' or '.join(allowed)}"))
        try:
            fields = _fields(request)
            registration = self._registration(fields.get("app_id", ""))
            redirect_uri = self._redirect_uri(registration, fields.get("redirect_uri", ""))
            state = fields.get("state") or None
            if path == CONSENT_PAGE_PATH:
                return _html(200, _consent_form(registration, redirect_uri, state))
            decision = fields.get("decision", "authorize")
            if decision == "decline":
                return _html(200, _declined_page(registration))
            if decision != "authorize":
                raise _Refused(400, "无法识别的操作", "decision must be authorize or decline")
            merchant_app_ids = _merchant_app_ids(fields.get("merchant_app_id", ""))
        except _Refused as refused:
            return _error_page(refused)
        return self._consent(registration, redirect_uri, state, merchant_app_ids)

    def _consent(
        self, registration: Registration, redirect_uri: str, state: str | None, merchant_app_ids: list[str]
    ) -> Page:
        isv_app_id = registration.credentials.app_id
        code, tokens = self.authority.consent(isv_app_id, merchant_app_ids)
        self.on_consent(registration, code, tokens)
        query = {"app_id": isv_app_id, "source": SOURCE, "app_auth_code": code}
        if state is not None:
            query["state"] = state
        separator = "&" if urlsplit(redirect_uri).query else ("" if redirect_uri.endswith("?") else "?")
        location = f"{redirect_uri}{separator}{urlencode(query)}"
        return Page(302, {"location": location, "cache-control": "no-store"}, b"")

    def _registration(self, app_id: str) -> Registration:
        if not app_id:
            raise _Refused(400, "缺少 app_id 参数", "the link carries no app_id")
        try:
            return self.gateway.registration(app_id)
        except KeyError:
            raise _Refused(400, "应用不存在", "no app with this app_id is known") from None

    def _redirect_uri(self, registration: Registration, redirect_uri: str) -> str:
        parts = urlsplit(redirect_uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _Refused(400, "回调地址无效", "redirect_uri must be an http(s) URL")
        with self._lock:
            registered = self._redirect_uris.get(registration.credentials.app_id)
        if registered is not None and _without_query(registered) != _without_query(redirect_uri):
            raise _Refused(
                400,
                "回调地址与应用配置的授权回调地址不一致",
                "redirect_uri is not the app's registered callback URL",
            )
        return redirect_uri


def _fields(request: Request) -> dict[str, str]:
    """The query, and for a POST the form body too (the body wins); values cut at a sane length."""
    pairs = parse_qsl(urlsplit(request.target).query, keep_blank_values=True)
    if request.method == "POST":
        try:
            pairs += parse_qsl(request.body.decode(), keep_blank_values=True)
        except UnicodeDecodeError:
            raise _Refused(400, "请求格式错误", "the form is not UTF-8") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if len(value) > _MAX_FIELD:
            raise _Refused(400, "参数过长", f"{name[:40]} is too long")
        fields[name] = value
    return fields


def _merchant_app_ids(text: str) -> list[str]:
    """One or several app ids (comma or space separated); none typed: a generated one."""
    ids = [part for part in re.split(r"[\s,，]+", text.strip()) if part]
    if not ids:
        return [new_merchant_app_id()]
    if len(ids) > MAX_MERCHANT_APPS or not all(_APP_ID.match(app_id) for app_id in ids):
        raise _Refused(
            400,
            "商户应用 AppID 应为 16 位数字",
            f"merchant app ids are 16 digits; at most {MAX_MERCHANT_APPS}, separated by commas",
        )
    return list(dict.fromkeys(ids))  # a repeated id is one app


def new_merchant_app_id() -> str:
    return "2021" + "".join(secrets.choice(string.digits) for _ in range(12))


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(query="", fragment="").geturl()


# --- pages ----------------------------------------------------------------------------------------


def _html(status: int, body: str) -> Page:
    return Page(status, dict(_SECURITY_HEADERS), body.encode())


def _document(title: str, outcome: str, content: str) -> str:
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        '<header>支付宝 · Alipay <span class="en">(emulator)</span></header>'
        f'<main><div class="card" data-outcome="{escape(outcome)}">{content}</div></main></body></html>'
    )


def _consent_form(registration: Registration, redirect_uri: str, state: str | None) -> str:
    isv_app_id = escape(registration.credentials.app_id)
    hidden = {"app_id": registration.credentials.app_id, "redirect_uri": redirect_uri}
    if state is not None:
        hidden["state"] = state
    hidden_inputs = "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value, quote=True)}">'
        for name, value in hidden.items()
    )
    return_host = escape(urlsplit(redirect_uri).netloc)
    content = (
        "<h1>授权服务商代运营</h1>"
        f"<p>服务商应用 <code>{isv_app_id}</code> 请求获得您的应用授权，以代您调用支付宝开放接口。</p>"
        '<h1 class="en" lang="en">Authorize a service provider</h1>'
        f'<p class="en" lang="en">The service provider app <code>{isv_app_id}</code> asks to call Alipay '
        "open APIs on behalf of your app.</p>"
        "<ul><li>代调用已授权的接口 · Call the authorized APIs for your app</li>"
        "<li>您可以随时取消授权 · You can cancel this authorization at any time</li></ul>"
        f'<form method="post" action="{CONSENT_ACTION_PATH}">{hidden_inputs}'
        '<label for="merchant_app_id">授权的商户应用 AppID · Merchant app to authorize'
        f'<input id="merchant_app_id" name="merchant_app_id" value="{new_merchant_app_id()}" '
        'inputmode="numeric" autocomplete="off"></label>'
        '<div class="actions">'
        '<button id="decline" type="submit" name="decision" value="decline">拒绝 · Decline</button>'
        '<button id="authorize" class="primary" type="submit" name="decision" value="authorize">'
        "同意授权 · Authorize</button></div></form>"
        f'<p class="note">授权后将返回 · You will return to <code>{return_host}</code></p>'
    )
    return _document("授权确认 · Authorize a service provider", "consent", content)


def _declined_page(registration: Registration) -> str:
    content = (
        "<h1>您已拒绝授权</h1>"
        f"<p>服务商应用 <code>{escape(registration.credentials.app_id)}</code> 未获得授权。您可以关闭此页面。</p>"
        '<h1 class="en" lang="en">You declined the authorization</h1>'
        '<p class="en" lang="en">The service provider was not authorized. You can close this page.</p>'
    )
    return _document("已拒绝授权 · Authorization declined", "declined", content)


def _error_page(refused: _Refused) -> Page:
    content = (
        "<h1>无法完成授权</h1>"
        f"<p>{escape(refused.message_zh)}</p>"
        '<h1 class="en" lang="en">The authorization cannot go on</h1>'
        f'<p class="en" lang="en">{escape(refused.message_en)}</p>'
    )
    return _html(refused.status, _document("无法完成授权 · Cannot authorize", "error", content))
