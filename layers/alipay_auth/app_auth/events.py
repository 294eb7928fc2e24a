"""Token lifecycle events on EventBridge. Details name the app and what happened, never a secret."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

SOURCE = "alipay-app-auth"
AUTHORIZED = "Authorization Granted"
REFRESHED = "Token Refreshed"
REVOKED = "Authorization Revoked"
REFRESH_FAILED = "Token Refresh Failed"
RECOVERED = "Token Refresh Recovered"
NEEDS_REAUTHORIZATION = "Reauthorization Needed"

# Only these keys may appear in a detail: a whitelist, so a token can never slip in by accident.
_ALLOWED_DETAIL = frozenset(
    {
        "auth_app_id",
        "isv_app_id",
        "user_id",
        "isv_ref",
        "version",
        "status",
        "reason",
        "error_code",
        "at",
        "via",
    }
)


class EventPublisher:
    def __init__(self, events: Any, bus_name: str, *, clock: Callable[[], float] = time.time) -> None:
        self._events = events
        self._bus = bus_name
        self._clock = clock

    def publish(self, detail_type: str, **detail: Any) -> bool:
        """Best effort: the state change is already stored; a lost event is logged, not raised."""
        unexpected = set(detail) - _ALLOWED_DETAIL
        if unexpected:
            raise ValueError(f"event detail keys not allowed: {sorted(unexpected)}")
        body = {k: v for k, v in {**detail, "at": int(self._clock())}.items() if v is not None}
        entry = {
            "Source": SOURCE,
            "DetailType": detail_type,
            "Detail": json.dumps(body),
            "EventBusName": self._bus,
        }
        try:
            result = self._events.put_events(Entries=[entry])
        except (BotoCoreError, ClientError) as exc:
            logger.warning(
                "event %s for %s not published: %s",
                detail_type,
                detail.get("auth_app_id"),
                type(exc).__name__,
            )
            return False
        if result.get("FailedEntryCount"):
            logger.warning("event %s for %s rejected by EventBridge", detail_type, detail.get("auth_app_id"))
            return False
        return True
