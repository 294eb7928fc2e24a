"""``FakeEvents``: an EventBridge client that records put_events; wrap it in the real ``EventPublisher``."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError


class FakeEvents:
    def __init__(self) -> None:
        self.entries: list[dict[str, str]] = []
        self.down = False  # True: every call fails, as EventBridge answering 500 does

    def put_events(self, *, Entries: list[dict[str, str]]) -> dict[str, Any]:
        if self.down:
            raise ClientError({"Error": {"Code": "InternalException", "Message": "down"}}, "PutEvents")
        self.entries.extend(Entries)
        return {"FailedEntryCount": 0, "Entries": [{"EventId": str(i)} for i, _ in enumerate(Entries)]}

    def published(self) -> list[tuple[str, dict[str, Any]]]:
        """(detail type, detail) of each event sent, in order."""
        return [(e["DetailType"], json.loads(e["Detail"])) for e in self.entries]

    def types(self) -> list[str]:
        return [e["DetailType"] for e in self.entries]
