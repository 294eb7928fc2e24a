"""Token lifecycle events on EventBridge. Details name the app and what happened, never a secret."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

SOURCE = "alipay-app-auth"
AUTHORIZED = "Authorization Granted"
REFRESHED = "Token Refreshed"
REVOKED = "Authorization Revoked"
REFRESH_FAILED = "Token Refresh Failed"
RECOVERED = "Token Refresh Recovered"
NEEDS_REAUTHORIZATION = "Reauthorization Needed"
REFERENCE_CHANGED = "Authorization Reference Changed"
EXPORTED = "Authorization Exported"  # an operator wrote the stored authorizations to a file
QUARANTINED = "Token Quarantined"
ROTATION_UNAVAILABLE = "Token Rotation Unavailable"
CONFIGURATION_ERROR = "Configuration Error"
# Any other verified message to the app gateway: the ISV's own subscriptions, passed on as they came.
MESSAGE_RECEIVED = "Alipay Message Received"

# Only these keys may appear in a detail: a whitelist, so a token can never slip in by accident.
_ALLOWED_DETAIL = frozenset(
    {
        "auth_app_id",
        "isv_app_id",
        "user_id",
        "isv_ref",
        "previous_isv_ref",
        "version",
        "status",
        "reason",
        "error_code",
        "at",
        "via",
        "reauthorized",
        "out_biz_no",  # the ISV's own number for an invitation, as Alipay passed it back
        "count",
        "include_secrets",  # a grant that replaced a stored one (the merchant authorized again)
        "method",  # Alipay's msg_method or notify_type
        "notify_id",
        "biz_content",  # of messages that are not ours (never an authorization's, which holds tokens)
    }
)


PUT_EVENTS_MAX_ENTRIES = 10  # EventBridge's limit per PutEvents call


class EventSink(Protocol):
    """Where a use case's events go: the publisher (sent now) or a run's ``EventBatch``."""

    def publish(self, detail_type: str, **detail: Any) -> Any: ...


class EventPublisher:
    def __init__(self, events: Any, bus_name: str, *, clock: Callable[[], float] = time.time) -> None:
        self._events = events
        self._bus = bus_name
        self._clock = clock

    def publish(self, detail_type: str, **detail: Any) -> bool:
        """Best effort: the state change is already stored; a lost event is logged, not raised."""
        return self.send([self.entry(detail_type, **detail)])

    def entry(self, detail_type: str, **detail: Any) -> dict[str, str]:
        """One PutEvents entry; only whitelisted detail keys, so that no secret can ride along."""
        unexpected = set(detail) - _ALLOWED_DETAIL
        if unexpected:
            raise ValueError(f"event detail keys not allowed: {sorted(unexpected)}")
        body = {k: v for k, v in {**detail, "at": int(self._clock())}.items() if v is not None}
        return {
            "Source": SOURCE,
            "DetailType": detail_type,
            "Detail": json.dumps(body),
            "EventBusName": self._bus,
        }

    def send(self, entries: list[dict[str, str]]) -> bool:
        """One PutEvents call (at most ``PUT_EVENTS_MAX_ENTRIES``); True when every entry was accepted."""
        try:
            result = self._events.put_events(Entries=entries)
        except (BotoCoreError, ClientError) as exc:
            for entry in entries:
                logger.warning(
                    "event %s for %s not published: %s", entry["DetailType"], _app(entry), type(exc).__name__
                )
            return False
        if not result.get("FailedEntryCount"):
            return True
        for entry, outcome in zip(entries, result.get("Entries", []), strict=False):
            if outcome.get("ErrorCode"):
                logger.warning(
                    "event %s for %s rejected by EventBridge: %s",
                    entry["DetailType"],
                    _app(entry),
                    outcome["ErrorCode"],
                )
        return False

    def batch(self, *, max_hold_seconds: float = 1.0) -> EventBatch:
        return EventBatch(self, max_hold_seconds=max_hold_seconds)


def _app(entry: Mapping[str, str]) -> Any:
    return json.loads(entry["Detail"]).get("auth_app_id")


class EventBatch:
    """The events of one refresh run, sent up to ten per PutEvents call instead of one each.

    A rotation's event then costs its worker no round trip of its own. An event waits until ten are
    pending or the oldest has waited ``max_hold_seconds`` (checked as events arrive), and
    ``flush()`` sends the rest when the run ends. The trade: a process killed outright loses the
    events it was holding, up to a second's worth, where it would otherwise lose the one it was
    about to send. Thread-safe; ``publish`` has the publisher's signature.
    """

    def __init__(
        self,
        publisher: EventPublisher,
        *,
        max_hold_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._publisher = publisher
        self._max_hold = max_hold_seconds
        self._monotonic = monotonic
        self._pending: list[dict[str, str]] = []
        self._oldest = 0.0
        self._lock = threading.Lock()

    def publish(self, detail_type: str, **detail: Any) -> None:
        entry = self._publisher.entry(detail_type, **detail)
        now = self._monotonic()
        with self._lock:
            if not self._pending:
                self._oldest = now
            self._pending.append(entry)
            if len(self._pending) < PUT_EVENTS_MAX_ENTRIES and now - self._oldest < self._max_hold:
                return
            ready, self._pending = self._pending, []
        self._publisher.send(ready)

    def __enter__(self) -> EventBatch:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.flush()  # on the way out of a failed run too: its rotations are stored, tell of them

    def flush(self) -> None:
        with self._lock:
            ready, self._pending = self._pending, []
        for start in range(0, len(ready), PUT_EVENTS_MAX_ENTRIES):
            self._publisher.send(ready[start : start + PUT_EVENTS_MAX_ENTRIES])
