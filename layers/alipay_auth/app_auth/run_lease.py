"""One scheduled run at a time: a lease on the run itself.

    RUN#<name>   LEASE   lease_owner, lease_until

Reserved concurrency would do it too, but it cannot be set on an account whose concurrency limit is
still the default of 10 (Lambda keeps 10 unreserved), which is where a first deploy lands; and it
makes an overlapping schedule wait in Lambda's queue rather than stop. With the lease an overlapping
run finds the lease held and ends at once, so two runs never share Alipay's rate, and a run killed
at its deadline holds it no longer than that deadline.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from .table import ConditionFailed, Table, num


class RunLease:
    def __init__(self, table: Table, name: str, *, clock: Callable[[], float] = time.time) -> None:
        self._table = table
        self._key = {"pk": {"S": f"RUN#{name}"}, "sk": {"S": "LEASE"}}
        self._clock = clock

    def acquire(self, owner: str, seconds: float) -> bool:
        """Hold the run for ``seconds`` (the invocation's time left); False when another holds it."""
        now = self._clock()
        try:
            self._table.call(
                "update_item",
                Key=self._key,
                UpdateExpression="SET lease_owner = :me, lease_until = :until",
                ConditionExpression="attribute_not_exists(lease_until) OR lease_until < :now OR lease_owner = :me",
                ExpressionAttributeValues={
                    ":me": {"S": owner},
                    ":until": {"N": num(now + seconds)},
                    ":now": {"N": num(now)},
                },
            )
        except ConditionFailed:
            return False
        return True

    def release(self, owner: str) -> None:
        """Let the next run start at once; a lease another run has taken since is left alone."""
        with contextlib.suppress(ConditionFailed):
            self._table.call(
                "update_item",
                Key=self._key,
                UpdateExpression="SET lease_until = :zero",
                ConditionExpression="lease_owner = :me",
                ExpressionAttributeValues={":me": {"S": owner}, ":zero": {"N": "0"}},
            )
