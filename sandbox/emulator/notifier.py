"""Alipay's asynchronous notifications to the ISV's app gateway (v2 form posts, protocol notes 6.3).

Two messages, both signed with the Alipay key that answers the ISV app:

* ``open_app_auth_notify`` after a merchant consented: the live token pair in ``biz_content``;
* ``alipay.open.auth.appauth.cancelled`` (message service) after the merchant cancelled. Its
  ``biz_content`` fields are not documented anywhere we could find: the ones here are our model.

Delivery is Alipay's: a form POST in a background thread, repeated until the gateway answers
``success`` (status 200), a bounded number of times. Every attempt is recorded in
``Notifier.deliveries`` so tests can assert what was sent and what came back. Nothing here logs
a form: it carries tokens.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import requests

from alipay_v3.notify import sign_notification

from .authority import IssuedToken, china_time_text
from .gateway import Registration

logger = logging.getLogger(__name__)

AUTH_NOTIFY_TYPE = "open_app_auth_notify"
CANCEL_MSG_METHOD = "alipay.open.auth.appauth.cancelled"
FORM_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
# What the app gateway answers when it accepted a notification; anything else means "send again".
ACCEPTED = "success"
_MAX_ANSWER_CHARS = 200  # recorded answers are cut: a broken gateway may send a whole error page


class Delivery(NamedTuple):
    """One POST to the app gateway: the form, then the status and body of the answer.

    ``status`` is None when no answer came (connection refused, timeout); ``body`` then says why.
    """

    params: dict[str, str]
    status: int | None
    body: str

    @property
    def accepted(self) -> bool:
        return self.status == 200 and self.body.strip() == ACCEPTED


def _json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def authorization_message(
    registration: Registration, token: IssuedToken, *, app_auth_code: str, now: float
) -> dict[str, str]:
    """The signed ``open_app_auth_notify`` form for one authorized merchant app."""
    isv_app_id = registration.credentials.app_id
    biz_content = {
        "notify_context": {
            "trigger": "user_app_auth",
            "trigger_context": {"out_biz_no": f"{int(now * 1000)}{secrets.randbelow(10**6):06d}"},
        },
        "detail": {
            "app_auth_token": token.app_auth_token,
            "app_refresh_token": token.app_refresh_token,
            "user_id": token.user_id,
            "auth_app_id": token.auth_app_id,
            "app_id": isv_app_id,
            "expires_in": token.expires_in,
            "re_expires_in": token.re_expires_in,
            "auth_time": int(now * 1000),
            "app_auth_code": app_auth_code,
        },
    }
    params = {
        "notify_id": uuid.uuid4().hex,
        "notify_type": AUTH_NOTIFY_TYPE,
        "notify_time": china_time_text(now),
        "charset": "utf-8",
        "version": "1.0",
        "app_id": isv_app_id,
        "auth_app_id": token.auth_app_id,
        "status": "execute_auth",
        "biz_content": _json(biz_content),
    }
    return sign_notification(params, registration.alipay_key)


def cancellation_message(
    registration: Registration, *, merchant_app_id: str, user_id: str | None, now: float
) -> dict[str, str]:
    """The signed ``alipay.open.auth.appauth.cancelled`` message-service form."""
    isv_app_id = registration.credentials.app_id
    biz_content = {
        "auth_app_id": merchant_app_id,
        "user_id": user_id or "",
        "app_id": isv_app_id,
        "cancel_time": china_time_text(now),
    }
    params = {
        "notify_id": uuid.uuid4().hex,
        "utc_timestamp": str(int(now * 1000)),
        "msg_method": CANCEL_MSG_METHOD,
        "app_id": isv_app_id,
        "msg_type": "sys",
        "msg_uid": user_id or "",
        "msg_app_id": merchant_app_id,
        "version": "1.1",
        "charset": "utf-8",
        "biz_content": _json(biz_content),
    }
    return sign_notification(params, registration.alipay_key)


class Notifier:
    """Posts notifications to each ISV app's gateway URL, each message in its own thread.

    ``attempts`` POSTs at most per message (Alipay keeps trying until it reads ``success``; the
    emulator gives up sooner), ``backoff_seconds`` before the 2nd attempt, doubling after.
    ``duplicates`` delivers every message that many extra times, with the same ``notify_id``.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        attempts: int = 3,
        backoff_seconds: float = 0.2,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.clock = clock
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.timeout_seconds = timeout_seconds
        self.duplicates = 0
        self._urls: dict[str, str] = {}
        self._lock = threading.Lock()
        self._deliveries: list[Delivery] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    def set_url(self, isv_app_id: str, url: str | None) -> None:
        with self._lock:
            if url:
                self._urls[isv_app_id] = url
            else:
                self._urls.pop(isv_app_id, None)

    def url(self, isv_app_id: str) -> str | None:
        with self._lock:
            return self._urls.get(isv_app_id)

    @property
    def deliveries(self) -> list[Delivery]:
        """Every attempt so far, in the order they were made (a copy)."""
        with self._lock:
            return list(self._deliveries)

    # --- the two messages -----------------------------------------------------------------------

    def authorized(
        self, registration: Registration, tokens: Sequence[IssuedToken], app_auth_code: str
    ) -> int:
        """Announce a consent: one message per merchant app. Returns how many were queued."""
        now = self.clock()
        messages = [
            authorization_message(registration, token, app_auth_code=app_auth_code, now=now)
            for token in tokens
        ]
        return self._send(registration.credentials.app_id, messages)

    def cancelled(self, registration: Registration, merchant_app_id: str, user_id: str | None) -> int:
        message = cancellation_message(
            registration, merchant_app_id=merchant_app_id, user_id=user_id, now=self.clock()
        )
        return self._send(registration.credentials.app_id, [message])

    # --- delivery -------------------------------------------------------------------------------

    def wait(self, timeout: float = 10.0) -> bool:
        """Wait until every queued message was delivered or given up; False if time ran out."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()]
                pending = list(self._threads)
            if not pending:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            pending[0].join(timeout=remaining)

    def stop(self, timeout: float = 5.0) -> None:
        """End the backoff waits and let the threads finish (each is bounded by the POST timeout)."""
        self._stopping.set()
        self.wait(timeout)
        self._stopping.clear()  # a restarted emulator notifies again

    def _send(self, isv_app_id: str, messages: list[dict[str, str]]) -> int:
        url = self.url(isv_app_id)
        if url is None or not messages:
            return 0
        copies = 1 + max(0, self.duplicates)
        thread = threading.Thread(
            target=self._deliver_all, args=(url, messages, copies), name="alipay-emulator-notify", daemon=True
        )
        with self._lock:
            self._threads.append(thread)
        thread.start()
        return len(messages)

    def _deliver_all(self, url: str, messages: list[dict[str, str]], copies: int) -> None:
        with requests.Session() as session:
            for message in messages:
                for _ in range(copies):
                    self._deliver(session, url, message)

    def _deliver(self, session: requests.Session, url: str, message: dict[str, str]) -> None:
        delay = self.backoff_seconds
        for attempt in range(1, max(1, self.attempts) + 1):
            if attempt > 1 and self._stopping.wait(delay):
                return  # the emulator is stopping: no more retries
            if attempt > 1:
                delay *= 2
            delivery = self._post(session, url, message)
            with self._lock:
                self._deliveries.append(delivery)
            if delivery.accepted:
                return
            logger.info(
                "notification %s not accepted (attempt %d of %d, status %s)",
                message["notify_id"],
                attempt,
                self.attempts,
                delivery.status,
            )

    def _post(self, session: requests.Session, url: str, message: dict[str, str]) -> Delivery:
        try:
            response = session.post(
                url,
                data=message,
                headers={"content-type": FORM_TYPE},
                timeout=self.timeout_seconds,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            # The exception text names the URL, never the form.
            return Delivery(dict(message), None, type(exc).__name__)
        return Delivery(dict(message), response.status_code, response.text[:_MAX_ANSWER_CHARS])
