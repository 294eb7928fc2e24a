"""Alipay's notifications to the ISV's app gateway (``POST /notify``).

Two kinds matter here:

* ``open_app_auth_notify`` (status ``execute_auth``): a merchant authorized the app. It carries the
  tokens, so it fills in an authorization whose callback never arrived (the merchant closed the
  tab), and it is how a re-authorization started from Alipay's console reaches us at all. Grants
  decides by its ``auth_time`` (and Alipay's query) whether it is newer than what is stored:
  notifications are retried for hours, and a late one must not roll a token back.
* ``alipay.open.auth.appauth.cancelled``: the merchant withdrew the authorization: the token is
  marked revoked and leaves the rotation schedule - unless the stored authorization is newer than
  the cancellation (the merchant authorized again; a late or replayed cancellation changes nothing).

Every other message is the ISV's: the app gateway is one URL for all its subscriptions, so each is
passed on to the event bus as ``Alipay Message Received``, and acknowledged only once it is there.

Every notification is verified (v2 ``sign``) before anything is read from it, and answered
``success`` once handled - also when it was handled before, which is how duplicates end.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from alipay_v3 import AlipayConfig, AlipayError, AppToken, verify_notification

from . import events
from .errors import InvalidRequest, NotFound, StorageError
from .flow_store import FlowStore
from .grants import Grants, Route
from .token_store import TokenStore

logger = logging.getLogger(__name__)

AUTH_NOTIFY = "open_app_auth_notify"
CANCELLED = "alipay.open.auth.appauth.cancelled"
ACKNOWLEDGED = "success"
_SEEN_TTL_SECONDS = 30 * 86400
_NOTIFY_ID = re.compile(r"[A-Za-z0-9_\-]{1,128}")
_OUT_BIZ_NO = re.compile(r"[A-Za-z0-9_.:@\-]{1,64}")


@dataclass(kw_only=True)
class NotificationService:
    tokens: TokenStore
    flow: FlowStore
    grants: Grants
    alipay_config: Callable[[], AlipayConfig]
    publisher: events.EventPublisher
    clock: Callable[[], float] = time.time

    def handle(self, params: Mapping[str, str]) -> str:
        config = self.alipay_config()
        if not params.get("sign"):
            raise InvalidRequest("the notification is not signed", code="unsigned-notification")
        try:
            key = config.alipay_key_for(params.get("alipay_cert_sn"))
        except AlipayError as exc:  # an SN we have no certificate for: nothing can verify it
            raise InvalidRequest(
                "the notification names an Alipay certificate that is not configured",
                code="unknown-alipay-cert",
            ) from exc
        if not verify_notification(params, key):
            raise InvalidRequest(
                "the notification's signature does not verify", code="invalid-notification-signature"
            )
        if params.get("app_id") != config.app_id:
            raise InvalidRequest("the notification is for another application", code="wrong-app-id")
        # De-duplicated on notify_id alone: msg_uid is the merchant's Alipay uid, not a message id
        # (docs/alipay-v3-protocol.md section 8.7). A padded notify_id ("…&utc_timestamp=…") can
        # still verify, since the v2 sign string can be built from other fields: only the plain
        # token Alipay sends is accepted. Refused, a message is sent again by Alipay.
        notify_id = params.get("notify_id")
        if not notify_id:
            raise InvalidRequest("the notification carries no notify_id", code="missing-notify-id")
        if not _NOTIFY_ID.fullmatch(notify_id):
            raise InvalidRequest("the notification's notify_id is malformed", code="malformed-notify-id")
        if self.flow.notification_seen(notify_id):
            return ACKNOWLEDGED
        kind = params.get("msg_method") or params.get("notify_type") or "unknown"
        biz = _biz_content(params)
        if kind == AUTH_NOTIFY:
            self._authorized(biz, config.app_id)
        elif kind == CANCELLED:
            self._cancelled(biz, config.app_id, _cancelled_at(params))
        else:
            self._forward(kind, notify_id, biz, config.app_id)
        self.flow.remember_notification(notify_id, kind=kind, ttl_seconds=_SEEN_TTL_SECONDS)
        return ACKNOWLEDGED

    def _authorized(self, biz: Mapping[str, Any], isv_app_id: str) -> None:
        detail = biz.get("detail")
        if not isinstance(detail, Mapping) or not detail.get("auth_app_id"):
            raise InvalidRequest(
                "the authorization notification has no detail.auth_app_id", code="malformed-notification"
            )
        granted_at = _china_time(detail.get("auth_time"))
        # The refresh token's life runs from the grant, not from a late delivery of its news
        obtained_at = min(granted_at, self.clock()) if granted_at is not None else self.clock()
        try:
            token = AppToken.from_fields(detail, obtained_at=obtained_at)
        except AlipayError as exc:  # signed by Alipay, yet not a grant we can read
            raise InvalidRequest(
                f"the authorization notification's detail is malformed ({exc.code})",
                code="malformed-notification",
            ) from exc
        recorded = self.grants.record(
            token,
            via=Route.NOTIFICATION,
            isv_app_id=isv_app_id,
            granted_at=granted_at,
            out_biz_no=_out_biz_no(biz),
        )
        if recorded is not None:
            self.grants.check_scope(token)

    def _cancelled(self, biz: Mapping[str, Any], isv_app_id: str, cancelled_at: float) -> None:
        auth_app_id = biz.get("auth_app_id")
        if not auth_app_id:
            raise InvalidRequest("the cancellation carries no auth_app_id", code="malformed-notification")
        try:
            record = self.tokens.revoke_if_obtained_before(
                str(auth_app_id), "authorization cancelled by the merchant", cancelled_at
            )
        except NotFound:
            logger.info("cancellation for merchant app %s, which has no stored token", auth_app_id)
            return
        if record is None:
            logger.info(
                "cancellation for merchant app %s changes nothing: revoked already, or authorized since",
                auth_app_id,
            )
            return
        self.publisher.publish(
            events.REVOKED,
            auth_app_id=record.auth_app_id,
            isv_app_id=isv_app_id,
            isv_ref=record.isv_ref,
            reason="cancelled",
            via="notification",
        )

    def _forward(self, kind: str, notify_id: str, biz: Mapping[str, Any], isv_app_id: str) -> None:
        delivered = self.publisher.publish(
            events.MESSAGE_RECEIVED, method=kind, isv_app_id=isv_app_id, notify_id=notify_id, biz_content=biz
        )
        if not delivered:  # not acknowledged: Alipay sends it again, and the ISV loses nothing
            raise StorageError(f"the {kind} message could not be passed on to the event bus")


def _cancelled_at(params: Mapping[str, str]) -> float:
    """A cancellation's time (``utc_timestamp``, ms), which decides whether it is older than the
    authorization stored; Alipay's cancellations carry it (docs/alipay-v3-protocol.md section 7)."""
    if not params.get("utc_timestamp", "").isdigit():
        raise InvalidRequest("the cancellation carries no utc_timestamp", code="malformed-notification")
    return int(params["utc_timestamp"]) / 1000


def _out_biz_no(biz: Mapping[str, Any]) -> str | None:
    """``notify_context.trigger_context.out_biz_no``: the ISV's business number of an invitation,
    which public ISV handlers use to tie an authorization to their customer (section 8.7). Kept
    when it is a reference we can show; anything else is ignored, the grant still recorded."""
    context = biz.get("notify_context")
    trigger = context.get("trigger_context") if isinstance(context, Mapping) else None
    value = trigger.get("out_biz_no") if isinstance(trigger, Mapping) else None
    return value if isinstance(value, str) and _OUT_BIZ_NO.fullmatch(value) else None


def _china_time(value: Any) -> float | None:
    """``auth_time`` is China time, ``YYYY-MM-DD HH:MM:SS`` (docs/alipay-v3-protocol.md section 8.7);
    None when absent or unreadable: then Alipay's query decides."""
    try:
        moment = dt.datetime.strptime(str(value or ""), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return moment.replace(tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp()


def _biz_content(params: Mapping[str, str]) -> dict[str, Any]:
    raw = params.get("biz_content") or "{}"
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidRequest("biz_content is not JSON", code="malformed-notification") from exc
    if not isinstance(value, dict):
        raise InvalidRequest("biz_content is not a JSON object", code="malformed-notification")
    return value
