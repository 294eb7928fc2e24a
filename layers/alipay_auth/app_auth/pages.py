"""The pages a merchant sees: Chinese and English, mobile-first, no external assets, strict CSP.

One stylesheet, inlined and allowed by its hash; no script at all. Nothing secret is ever put on
a page: no code, no token; the merchant app id and the ISV's reference are not secrets.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from html import escape

_STYLE = (
    "body{margin:0;font:16px/1.6 -apple-system,'PingFang SC','Microsoft YaHei',sans-serif;background:#f5f6f8;"
    "color:#1f2329}main{max-width:32rem;margin:0 auto;padding:2rem 1.25rem}"
    ".card{background:#fff;border-radius:12px;padding:1.5rem;box-shadow:0 1px 3px rgba(0,0,0,.08)}"
    "h1{font-size:1.35rem;margin:.5rem 0}p{margin:.5rem 0}.en{color:#646a73;font-size:.92rem}"
    ".mark{font-size:2.5rem;line-height:1}.ok{color:#1677ff}.warn{color:#d48806}.bad{color:#d4380d}"
    "a.button{display:inline-block;margin-top:1rem;padding:.7rem 1.2rem;border-radius:8px;background:#1677ff;"
    "color:#fff;text-decoration:none}dl{margin:1rem 0 0;font-size:.92rem}dt{color:#646a73}dd{margin:0 0 .5rem}"
    "code{word-break:break-all}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Page:
    mark: str  # ok | warn | bad
    title_zh: str
    title_en: str
    text_zh: str
    text_en: str


PAGES = {
    "authorized": Page(
        "ok",
        "授权成功",
        "Authorization complete",
        "您已成功授权，服务商现在可以代您的应用调用支付宝接口。您可以关闭此页面。",
        "Your app is now authorized for this service provider. You can close this page.",
    ),
    "parked": Page(
        "ok",
        "授权已收到",
        "Authorization received",
        "支付宝已确认您的授权，我们正在完成登记，无需再次操作。",
        "Alipay confirmed your authorization; we are finishing the registration. Nothing more is needed.",
    ),
    "in_progress": Page(
        "warn",
        "正在处理",
        "Still processing",
        "您的授权正在处理中，请稍后刷新此页面。",
        "Your authorization is still being processed. Please reload this page in a moment.",
    ),
    "code_spent": Page(
        "bad",
        "授权码已失效",
        "This authorization has expired",
        "该授权链接已使用或已过期。请重新发起授权。",
        "This authorization was already used or has expired. Please authorize again.",
    ),
    "unconfirmed": Page(
        "bad",
        "暂时无法确认授权",
        "The authorization could not be confirmed",
        "我们未能从支付宝确认此次授权。请重新发起授权；如问题持续，请联系服务商。",
        "We could not confirm this authorization with Alipay. Please authorize again; if it keeps "
        "happening, contact your service provider.",
    ),
    "invalid": Page(
        "bad",
        "授权链接无效",
        "This link is not valid",
        "此授权请求无法处理。请使用服务商提供的授权链接重新开始。",
        "This authorization request cannot be processed. Please start again from the link your service "
        "provider gave you.",
    ),
    "state_rejected": Page(
        "bad",
        "授权链接已失效",
        "This authorization link is no longer valid",
        "该链接已过期或已被使用。请向服务商索取新的授权链接。",
        "The link has expired or was already used. Please ask your service provider for a new one.",
    ),
    "unavailable": Page(
        "warn",
        "服务暂时不可用",
        "Temporarily unavailable",
        "请稍后刷新此页面重试，您的授权不会丢失。",
        "Please reload this page in a moment; your authorization is not lost.",
    ),
    "not_configured": Page(
        "warn",
        "服务尚未配置完成",
        "This service is not set up yet",
        "服务商尚未完成配置。请稍后刷新此页面重试，或联系服务商。",
        "The service provider has not finished setting it up. Please reload later or contact them.",
    ),
    "not_found": Page("bad", "页面不存在", "Page not found", "请检查链接地址。", "Please check the address."),
}
_MARKS = {"ok": "✓", "warn": "…", "bad": "!"}


def render(
    kind: str,
    *,
    detail: str | None = None,
    link: str | None = None,
    facts: dict[str, str] | None = None,
) -> str:
    """A complete HTML document; every dynamic value is escaped."""
    page = PAGES[kind]
    rows = "".join(
        f"<dt>{escape(k)}</dt><dd><code>{escape(v)}</code></dd>" for k, v in (facts or {}).items() if v
    )
    detail_html = f'<p class="en">{escape(detail)}</p>' if detail else ""
    link_html = (
        f'<a class="button" href="{escape(link, quote=True)}">重新授权 · Authorize again</a>' if link else ""
    )
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(page.title_zh)} · {escape(page.title_en)}</title><style>{_STYLE}</style></head>"
        f'<body><main><div class="card" data-outcome="{escape(kind)}">'
        f'<div class="mark {page.mark}" aria-hidden="true">{_MARKS[page.mark]}</div>'
        f"<h1>{escape(page.title_zh)}</h1><p>{escape(page.text_zh)}</p>"
        f'<h1 class="en" lang="en">{escape(page.title_en)}</h1><p class="en" lang="en">{escape(page.text_en)}</p>'
        f"{detail_html}{f'<dl>{rows}</dl>' if rows else ''}{link_html}</div></main></body></html>"
    )
