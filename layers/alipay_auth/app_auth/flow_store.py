"""The authorization flow's short-lived items: link states, code claims, handled notifications.

    STATE#<state_id>    STATE   an authorization link's state: ISV reference, expiry, which code used it
    CODE#<sha256(code)> CLAIM   a claimed app_auth_code: its ClaimStatus, never the code itself
    NOTIFY#<notify_id>  NOTIFY  a notification already handled

TTL (``expires_at``) removes all three.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .errors import NotFound
from .table import ConditionFailed, Item, Table, dec, num, plain, wire


class ClaimStatus(StrEnum):
    EXCHANGING = "exchanging"  # the code is at Alipay right now
    DONE = "done"  # exchanged and stored
    FAILED = "failed"  # Alipay refused it or did not answer: the code may be spent
    PARKED = "parked"  # exchanged; the result waits sealed on the replay queue


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


@dataclass(frozen=True)
class CodeClaim:
    status: ClaimStatus
    claimed_at: float
    auth_app_ids: tuple[str, ...]
    isv_ref: str | None
    error_code: str | None
    exchanging_until: float | None = None  # the claiming invocation's deadline: exchanging no longer after it

    @classmethod
    def from_item(cls, item: Item) -> CodeClaim:
        values = plain(item)
        until = values.get("exchanging_until")
        return cls(
            status=ClaimStatus(values["status"]),
            claimed_at=float(values["claimed_at"]),
            auth_app_ids=tuple(values.get("auth_app_ids") or ()),
            isv_ref=values.get("isv_ref"),
            error_code=values.get("error_code"),
            exchanging_until=None if until is None else float(until),
        )

    def abandoned(self, now: float) -> bool:
        """Still marked exchanging after the deadline of the request that claimed it: that request
        was killed (a Lambda timeout) somewhere between its claim and its answer."""
        return (
            self.status == ClaimStatus.EXCHANGING
            and self.exchanging_until is not None
            and now > self.exchanging_until
        )


class FlowStore:
    def __init__(self, table: Table, *, clock: Callable[[], float] = time.time) -> None:
        self._table = table
        self._clock = clock

    # -- notifications -----------------------------------------------------------------------------

    def notification_seen(self, notify_id: str) -> bool:
        return self._table.get(f"NOTIFY#{notify_id}", "NOTIFY") is not None

    def remember_notification(self, notify_id: str, *, kind: str, ttl_seconds: float) -> None:
        """Recorded after the notification was handled, so a failure leaves it to Alipay's retry."""
        now = self._clock()
        values = {
            "pk": f"NOTIFY#{notify_id}",
            "sk": "NOTIFY",
            "kind": kind,
            "handled_at": dec(now),
            "expires_at": int(now + ttl_seconds),
        }
        self._table.call("put_item", Item=wire(values))

    # -- authorization states ----------------------------------------------------------------------

    def put_state(self, state_id: str, *, isv_ref: str | None, expires_at: float) -> None:
        values: dict[str, Any] = {
            "pk": f"STATE#{state_id}",
            "sk": "STATE",
            "created_at": dec(self._clock()),
            "expires_at": int(expires_at),
        }
        if isv_ref:
            values["isv_ref"] = isv_ref
        self._table.call("put_item", Item=wire(values), ConditionExpression="attribute_not_exists(pk)")

    def state_usable(self, state_id: str) -> bool:
        """True while the state exists, has not expired and no code has used it yet."""
        item = self._table.get(f"STATE#{state_id}", "STATE")
        return item is not None and "used_by" not in item and int(item["expires_at"]["N"]) > self._clock()

    def consume_state(self, state_id: str, code_digest: str) -> str | None:
        """Bind a state to the code it authorized; the same code may present it again (a reload),
        no other code may. Returns the ISV reference stored with the state."""
        now = self._clock()
        try:
            result = self._table.call(
                "update_item",
                Key={"pk": {"S": f"STATE#{state_id}"}, "sk": {"S": "STATE"}},
                UpdateExpression="SET used_by = :code, used_at = if_not_exists(used_at, :now)",
                ConditionExpression="attribute_exists(pk) AND expires_at > :now_int "
                "AND (attribute_not_exists(used_by) OR used_by = :code)",
                ExpressionAttributeValues={
                    ":code": {"S": code_digest},
                    ":now": {"N": num(now)},
                    ":now_int": {"N": str(int(now))},
                },
                ReturnValues="ALL_NEW",
            )
        except ConditionFailed as exc:
            raise NotFound("state unknown, expired or already used by another authorization") from exc
        isv_ref = result["Attributes"].get("isv_ref")
        return None if isv_ref is None else str(isv_ref["S"])

    # -- code claims -------------------------------------------------------------------------------

    def claim_code(
        self, digest: str, *, isv_ref: str | None, ttl_seconds: float, exchanging_until: float | None = None
    ) -> CodeClaim | None:
        """Claim a code before it is exchanged. Returns None when the claim is ours, else the
        existing claim (a reload, a double click, or a concurrent duplicate). ``exchanging_until``:
        the claiming invocation's deadline, as Powertools' idempotency records an in-progress one."""
        now = self._clock()
        values: dict[str, Any] = {
            "pk": f"CODE#{digest}",
            "sk": "CLAIM",
            "status": ClaimStatus.EXCHANGING.value,
            "claimed_at": dec(now),
            "expires_at": int(now + ttl_seconds),
        }
        if isv_ref:
            values["isv_ref"] = isv_ref
        if exchanging_until is not None:
            values["exchanging_until"] = dec(exchanging_until)
        try:
            self._table.call("put_item", Item=wire(values), ConditionExpression="attribute_not_exists(pk)")
        except ConditionFailed as exc:
            if exc.existing is None:  # a put conditioned on absence fails only over an item (ALL_OLD)
                raise
            return CodeClaim.from_item(exc.existing)
        return None

    def get_claim(self, digest: str) -> CodeClaim | None:
        item = self._table.get(f"CODE#{digest}", "CLAIM")
        return None if item is None else CodeClaim.from_item(item)

    def finish_claim(
        self,
        digest: str,
        status: ClaimStatus,
        *,
        auth_app_ids: tuple[str, ...] = (),
        error_code: str | None = None,
    ) -> None:
        values: dict[str, Any] = {
            ":s": {"S": status.value},
            ":exchanging": {"S": ClaimStatus.EXCHANGING.value},
        }
        update = "SET #s = :s"
        if auth_app_ids:
            update += ", auth_app_ids = :ids"
            values[":ids"] = {"L": [{"S": i} for i in auth_app_ids]}
        if error_code:
            update += ", error_code = :e"
            values[":e"] = {"S": error_code}
        self._table.call(
            "update_item",
            Key={"pk": {"S": f"CODE#{digest}"}, "sk": {"S": "CLAIM"}},
            UpdateExpression=update,
            ConditionExpression="#s = :exchanging",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=values,
        )
