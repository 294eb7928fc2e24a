"""When a token is rotated, and how long the pair it replaces stays served: one policy, shared by
the token store (which writes due times and grace windows) and the refresher."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

DAY = 86400


@dataclass(frozen=True)
class RotationSchedule:
    lead_seconds: int = 30 * DAY  # rotate this long before the refresh token's life ends
    max_age_seconds: int = 0  # 0: rotate only as the refresh token's life requires
    default_life_seconds: int = 360 * DAY  # when Alipay sends no re_expires_in
    previous_grace_seconds: int = 600  # the replaced pair stays served this long
    jitter_seconds: int = DAY  # due times spread this much earlier, so a batch does not come due at once

    def next_due(self, obtained_at: float, re_expires_in: int | None, auth_app_id: str = "") -> float:
        """When a token obtained at ``obtained_at`` should be rotated next.

        Well inside the refresh token's life (``lead`` before it ends, and never later than half
        of it for short lives), or after the maximum age when that policy is on; then earlier by a
        part of the jitter that is fixed per merchant app, at most a tenth of the wait.
        """
        life = re_expires_in if re_expires_in and re_expires_in > 0 else self.default_life_seconds
        wait = max(life - self.lead_seconds, life / 2)
        if self.max_age_seconds:
            wait = min(wait, self.max_age_seconds)
        return obtained_at + wait - min(self.jitter_seconds, wait / 10) * fraction_of(auth_app_id)


def fraction_of(auth_app_id: str) -> float:
    """A number in [0, 1) fixed by the merchant app: spreads apps evenly, moves no app between runs."""
    return int.from_bytes(hashlib.sha256(auth_app_id.encode()).digest()[:8], "big") / 2**64
