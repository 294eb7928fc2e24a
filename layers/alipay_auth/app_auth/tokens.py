"""The read path: the current app_auth_token of a merchant app, for the ISV's other services.

Never the refresh token: readers call Alipay on the merchant's behalf; only the refresher rotates.
Lambdas in the same account call ``get_app_auth_token``; others use the IAM-protected route.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from .errors import AppAuthError, NotConfigured
from .token_store import SERVED, TokenStore


class TokenUnusable(AppAuthError):
    """The merchant app is known but its token must not be used (revoked, needs re-authorization)."""

    code = "token-unusable"


@dataclass(frozen=True)
class CurrentToken:
    auth_app_id: str
    app_auth_token: str
    user_id: str
    isv_ref: str | None
    version: int
    obtained_at: float
    # The pair this one replaced, still served while Alipay keeps it valid: a service that read it
    # a moment ago can tell it is not stale yet.
    previous_app_auth_token: str | None = None
    previous_valid_until: float | None = None

    def __repr__(self) -> str:
        return f"CurrentToken(auth_app_id={self.auth_app_id!r}, version={self.version}, app_auth_token=<redacted>)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "auth_app_id": self.auth_app_id,
            "app_auth_token": self.app_auth_token,
            "user_id": self.user_id,
            "isv_ref": self.isv_ref,
            "version": self.version,
            "obtained_at": int(self.obtained_at),
            "previous_app_auth_token": self.previous_app_auth_token,
            "previous_valid_until": None
            if self.previous_valid_until is None
            else int(self.previous_valid_until),
        }


def read_current_token(store: TokenStore, auth_app_id: str) -> CurrentToken:
    record = store.get_token(auth_app_id)
    if record.status not in SERVED:
        raise TokenUnusable(f"merchant app {auth_app_id} is {record.status}; it must authorize again")
    pair = store.open_current(record)
    previous = store.open_previous(record)
    return CurrentToken(
        record.auth_app_id,
        pair.app_auth_token,
        record.user_id,
        record.isv_ref,
        record.version,
        record.obtained_at,
        previous.app_auth_token if previous else None,
        record.previous_valid_until if previous else None,
    )


def merchant_apps_for_ref(store: TokenStore, isv_ref: str) -> list[dict[str, Any]]:
    """The merchant apps tied to the ISV's reference, and whether each token may be used; no token
    is opened: a service reads the one it needs by its auth_app_id."""
    return [
        {
            "auth_app_id": record.auth_app_id,
            "user_id": record.user_id,
            "status": str(record.status),
            "usable": record.status in SERVED,
            "version": record.version,
            "obtained_at": int(record.obtained_at),
        }
        for record in store.tokens_for_ref(isv_ref)
    ]


# The stack outputs that locate the tokens, and the reader's settings they become.
_LOCATION = ("TableName", "TokenStoreId", "SealedTableName", "KmsKeyArn")
STACK_VARIABLE = "ALIPAY_AUTH_STACK"


def store_for_stack(stack_name: str, client: Callable[[str], Any] | None = None) -> TokenStore:
    """A read-only view of a deployed stack's tokens, found through its outputs; what the stack's
    ``TokenReadPolicyArn`` policy grants is all it needs."""
    from botocore.exceptions import BotoCoreError, ClientError

    from .aws import AwsClients
    from .crypto import EnvelopeCipher
    from .schedule import RotationSchedule
    from .table import Table

    clients = AwsClients(client)
    try:
        [stack] = clients["cloudformation"].describe_stacks(StackName=stack_name)["Stacks"]
    except (BotoCoreError, ClientError) as exc:
        raise NotConfigured(f"the stack {stack_name} could not be read; is the region right?") from exc
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    missing = [key for key in _LOCATION if not outputs.get(key)]
    if missing:
        raise NotConfigured(f"the stack {stack_name} has no output {', '.join(missing)}: deploy this release")
    table_name, store_id, sealed_table, key = (outputs[k] for k in _LOCATION)
    cipher = EnvelopeCipher(clients.deferred("kms"), key, store_id, legacy_table=sealed_table)
    return TokenStore(Table(clients.deferred("dynamodb"), table_name), cipher, RotationSchedule())


_store_for_stack = cache(store_for_stack)  # one per stack and execution environment


def get_app_auth_token(auth_app_id: str, *, stack: str | None = None) -> str:
    """The token to send as alipay-app-auth-token. In a Lambda with this layer it needs only the
    stack's name (``stack``, or the ALIPAY_AUTH_STACK variable) and the stack's TokenReadPolicyArn;
    the stack's own functions find it through their environment."""
    stack = stack or os.environ.get(STACK_VARIABLE)
    if stack:
        store = _store_for_stack(stack)
    else:
        from .container import get_container  # built once, from the function's environment

        store = get_container().store
    return read_current_token(store, auth_app_id).app_auth_token
