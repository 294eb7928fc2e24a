"""How a callback ended, and what each ending means to the merchant's browser and to the operator:
one table. The merchant's page for an outcome is ``pages.PAGES[outcome]``."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CallbackOutcome(StrEnum):
    AUTHORIZED = "authorized"  # exchanged and stored
    PARKED = "parked"  # exchanged; storing failed, the result waits sealed on the replay queue
    IN_PROGRESS = "in_progress"  # another request is exchanging this code right now
    CODE_SPENT = "code_spent"  # Alipay says the code is spent or invalid
    UNCONFIRMED = "unconfirmed"  # Alipay did not confirm: the code may be spent


@dataclass(frozen=True)
class Answer:
    http_status: int
    operator_says: str


ANSWERS = {
    CallbackOutcome.AUTHORIZED: Answer(200, "authorized and stored"),
    CallbackOutcome.PARKED: Answer(
        202, "exchanged, but storing failed: the result is parked on the replay queue; run `replay`"
    ),
    CallbackOutcome.IN_PROGRESS: Answer(
        202, "this code is being exchanged right now by another request; check with tokens show"
    ),
    CallbackOutcome.CODE_SPENT: Answer(
        410, "Alipay says the code is spent or invalid: the merchant must authorize again"
    ),
    CallbackOutcome.UNCONFIRMED: Answer(
        502, "the exchange was not confirmed; the code may be spent: the merchant should authorize again"
    ),
}
