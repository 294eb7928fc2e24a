"""The one DynamoDB table: token items, authorization states, code claims.

Item keys (generic ``pk``/``sk`` so one table holds everything)::

    APP#<auth_app_id>   TOKEN   one authorized merchant app: sealed token pairs, status, version, due time
    STATE#<state_id>    STATE   an authorization link's state: ISV reference, expiry, which code used it
    CODE#<sha256(code)> CLAIM   a claimed app_auth_code: exchanging / done / failed, never the code itself

Every change is a conditional write; a lost condition becomes a domain error (``from exc``), never a
silent overwrite. TTL (``expires_at``) removes states and claims; token items never expire.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from alipay_v3 import AppToken

from .crypto import EnvelopeCipher
from .errors import ConcurrentUpdate, NotFound, StorageError

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

DUE_INDEX = "due"
DUE_SHARDS = 4  # the due index is partitioned so that no single key takes every write

ACTIVE, NEEDS_REAUTH, REVOKED = "active", "needs_reauth", "revoked"


def token_pk(auth_app_id: str) -> str:
    return f"APP#{auth_app_id}"


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def token_digest(app_auth_token: str) -> str:
    """Tells two tokens apart without storing either: a 128-bit prefix of SHA-256 of a random token."""
    return hashlib.sha256(app_auth_token.encode()).hexdigest()[:32]


def due_shard(auth_app_id: str) -> str:
    return f"DUE#{int(hashlib.sha256(auth_app_id.encode()).hexdigest(), 16) % DUE_SHARDS}"


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    """Deserialize every attribute except sealed maps, which stay in wire format for the cipher."""
    return {k: (v if k in _SEALED else _deserializer.deserialize(v)) for k, v in item.items()}


def _wire(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v if k in _SEALED else _serializer.serialize(v)) for k, v in values.items()}


_SEALED = frozenset({"current", "previous"})


def _condition_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in (
        "ConditionalCheckFailedException",
        "TransactionCanceledException",
    )


@dataclass(frozen=True)
class TokenRecord:
    """A token item without its secrets; ``tokens()`` on the store opens them when needed."""

    auth_app_id: str
    status: str
    version: int
    isv_app_id: str
    user_id: str
    isv_ref: str | None
    obtained_at: float
    re_expires_in: int | None
    expires_in: int | None
    due_at: float | None
    authorized_at: float
    updated_at: float
    previous_valid_until: float | None
    last_error: str | None
    token_digest: str
    failures: int
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> TokenRecord:
        plain = _plain(item)

        def num(name: str) -> float | None:
            value = plain.get(name)
            return None if value is None else float(value)

        return cls(
            auth_app_id=plain["auth_app_id"],
            status=plain["status"],
            version=int(plain["version"]),
            isv_app_id=plain.get("isv_app_id", ""),
            user_id=plain.get("user_id", ""),
            isv_ref=plain.get("isv_ref"),
            obtained_at=float(plain["obtained_at"]),
            re_expires_in=None if plain.get("re_expires_in") is None else int(plain["re_expires_in"]),
            expires_in=None if plain.get("expires_in") is None else int(plain["expires_in"]),
            due_at=num("due_at"),
            authorized_at=float(plain["authorized_at"]),
            updated_at=float(plain["updated_at"]),
            previous_valid_until=num("previous_valid_until"),
            last_error=plain.get("last_error"),
            token_digest=plain.get("token_digest", ""),
            failures=int(plain.get("failures") or 0),
            raw=dict(item),
        )


@dataclass(frozen=True)
class TokenPair:
    app_auth_token: str
    app_refresh_token: str

    def __repr__(self) -> str:
        return "TokenPair(<redacted>)"


@dataclass(frozen=True)
class CodeClaim:
    status: str  # exchanging | done | failed | parked
    claimed_at: float
    auth_app_ids: tuple[str, ...]
    isv_ref: str | None
    error_code: str | None


class Store:
    """Typed access to the table. The DynamoDB client and the clock are injected."""

    def __init__(
        self,
        dynamodb: Any,
        table: str,
        cipher: EnvelopeCipher,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = dynamodb
        self.table = table
        self._cipher = cipher
        self._clock = clock

    # -- low level ---------------------------------------------------------------------------------

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._db, operation)(TableName=self.table, **kwargs)
        except ClientError as exc:
            if _condition_failed(exc):
                raise ConcurrentUpdate(f"{operation} lost a conditional write; re-read and retry") from exc
            raise StorageError(
                f"DynamoDB {operation} failed: {exc.response.get('Error', {}).get('Code')}"
            ) from exc
        except BotoCoreError as exc:
            raise StorageError(f"DynamoDB {operation} could not be completed ({type(exc).__name__})") from exc

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self._call(
            "get_item", Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True
        ).get("Item")
        return item

    # -- tokens ------------------------------------------------------------------------------------

    def get_token(self, auth_app_id: str) -> TokenRecord:
        item = self._get(token_pk(auth_app_id), "TOKEN")
        if item is None:
            raise NotFound(f"no authorization stored for merchant app {auth_app_id}")
        return TokenRecord.from_item(item)

    def open_current(self, record: TokenRecord) -> TokenPair:
        values = self._cipher.open(record.raw["current"], pk=token_pk(record.auth_app_id), field="current")
        return TokenPair(values["app_auth_token"], values["app_refresh_token"])

    def save_authorization(
        self, token: AppToken, *, isv_app_id: str, isv_ref: str | None, due_at: float, grace_seconds: float
    ) -> TokenRecord:
        """Store a freshly exchanged token, superseding any earlier authorization of the same app.

        The superseded pair stays readable as ``previous`` for ``grace_seconds``, so a service that
        read it a moment ago is not handed a dead token mid-flight. Saving the token already stored
        changes nothing (a notification and a callback may both bring it). Conditional on the
        version read, retried a few times when another writer got there first.
        """
        pk = token_pk(token.auth_app_id)
        now = self._clock()
        digest = token_digest(token.app_auth_token)
        for _ in range(5):
            existing = self._get(pk, "TOKEN")
            if existing is not None and existing.get("token_digest", {}).get("S") == digest:
                if isv_ref and "isv_ref" not in existing:
                    # The notification stored this token first; the callback knows whose it is.
                    return self._add_isv_ref(existing, isv_ref)
                return TokenRecord.from_item(existing)
            values: dict[str, Any] = {
                "pk": pk,
                "sk": "TOKEN",
                "auth_app_id": token.auth_app_id,
                "isv_app_id": isv_app_id,
                "user_id": token.user_id,
                "status": ACTIVE,
                "obtained_at": _dec(token.obtained_at),
                "authorized_at": _dec(now),
                "updated_at": _dec(now),
                "due_at": _dec(due_at),
                "due_shard": due_shard(token.auth_app_id),
                "failures": 0,
                "token_digest": digest,
            }
            if isv_ref:
                values["isv_ref"] = isv_ref
            for name in ("re_expires_in", "expires_in"):
                if getattr(token, name) is not None:
                    values[name] = getattr(token, name)
            values["current"] = self._cipher.seal(
                {"app_auth_token": token.app_auth_token, "app_refresh_token": token.app_refresh_token},
                pk=pk,
                field="current",
            )
            if existing is None:
                values["version"] = 1
                condition, names, params = "attribute_not_exists(pk)", {}, {}
            else:
                version = int(existing["version"]["N"])
                values["version"] = version + 1
                values["previous"] = existing["current"]
                values["previous_valid_until"] = _dec(now + grace_seconds)
                condition, names, params = "#v = :v", {"#v": "version"}, {":v": {"N": str(version)}}
            try:
                self._call(
                    "put_item",
                    Item=_wire(values),
                    ConditionExpression=condition,
                    **(
                        {"ExpressionAttributeNames": names, "ExpressionAttributeValues": params}
                        if names
                        else {}
                    ),
                )
            except ConcurrentUpdate:
                continue
            return TokenRecord.from_item(_wire(values))
        raise ConcurrentUpdate(f"merchant app {token.auth_app_id} kept changing while it was being stored")

    def _add_isv_ref(self, item: dict[str, Any], isv_ref: str) -> TokenRecord:
        result = self._call(
            "update_item",
            Key={"pk": item["pk"], "sk": item["sk"]},
            UpdateExpression="SET isv_ref = :ref",
            ConditionExpression="#v = :v",
            ExpressionAttributeNames={"#v": "version"},
            ExpressionAttributeValues={":ref": {"S": isv_ref}, ":v": item["version"]},
            ReturnValues="ALL_NEW",
        )
        return TokenRecord.from_item(result["Attributes"])

    def mark_revoked(self, auth_app_id: str, reason: str) -> TokenRecord:
        """Revocation is final until the merchant authorizes again; it leaves the due index."""
        now = self._clock()
        try:
            result = self._call(
                "update_item",
                Key={"pk": {"S": token_pk(auth_app_id)}, "sk": {"S": "TOKEN"}},
                UpdateExpression="SET #s = :revoked, last_error = :reason, updated_at = :now, #v = #v + :one "
                "REMOVE due_shard, due_at, lease_owner, lease_until",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#s": "status", "#v": "version"},
                ExpressionAttributeValues={
                    ":revoked": {"S": REVOKED},
                    ":reason": {"S": reason[:200]},
                    ":now": {"N": _num(now)},
                    ":one": {"N": "1"},
                },
                ReturnValues="ALL_NEW",
            )
        except ConcurrentUpdate as exc:
            raise NotFound(f"no authorization stored for merchant app {auth_app_id}") from exc
        return TokenRecord.from_item(result["Attributes"])

    # -- rotation ----------------------------------------------------------------------------------
    #
    # A refresh holds a lease on the item (owner + expiry) taken with a conditional write, and
    # commits the new pair with a write conditional on the version it leased and on still owning
    # the lease. So two refreshers never both commit, a refresher whose lease ran out cannot
    # overwrite the one that took over, and a re-authorization in between wins over both.

    def due_app_ids(self, now: float, *, limit: int | None = None) -> Iterator[tuple[str, float]]:
        """(merchant app, due time) of each rotation due, oldest first per shard, via the sparse index."""
        returned = 0
        for shard in range(DUE_SHARDS):
            kwargs: dict[str, Any] = {
                "IndexName": DUE_INDEX,
                "KeyConditionExpression": "due_shard = :shard AND due_at <= :now",
                "ExpressionAttributeValues": {":shard": {"S": f"DUE#{shard}"}, ":now": {"N": _num(now)}},
            }
            while True:
                page = self._call("query", **kwargs)
                for item in page.get("Items", []):
                    yield item["pk"]["S"].removeprefix("APP#"), float(item["due_at"]["N"])
                    returned += 1
                    if limit is not None and returned >= limit:
                        return
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def acquire_lease(
        self, auth_app_id: str, owner: str, lease_seconds: float, *, force: bool = False
    ) -> TokenRecord:
        """Take the item for one refresh. Raises ``ConcurrentUpdate`` when it is not due (any more),
        not active, or leased by a live holder: in each case there is nothing for this caller to do."""
        now = self._clock()
        condition = "#s = :active AND (attribute_not_exists(lease_until) OR lease_until < :now)"
        if not force:
            condition += " AND due_at <= :now"
        result = self._call(
            "update_item",
            Key={"pk": {"S": token_pk(auth_app_id)}, "sk": {"S": "TOKEN"}},
            UpdateExpression="SET lease_owner = :owner, lease_until = :until",
            ConditionExpression=condition,
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":active": {"S": ACTIVE},
                ":now": {"N": _num(now)},
                ":owner": {"S": owner},
                ":until": {"N": _num(now + lease_seconds)},
            },
            ReturnValues="ALL_NEW",
        )
        return TokenRecord.from_item(result["Attributes"])

    @staticmethod
    def _fenced(record: TokenRecord, owner: str) -> dict[str, Any]:
        return {
            "Key": {"pk": {"S": token_pk(record.auth_app_id)}, "sk": {"S": "TOKEN"}},
            "ConditionExpression": "#v = :v AND lease_owner = :owner",
        }

    def commit_rotation(
        self, record: TokenRecord, owner: str, token: AppToken, *, due_at: float, grace_seconds: float
    ) -> None:
        """Write the new pair in one conditional update; the pair it replaces stays as ``previous``."""
        now = self._clock()
        pk = token_pk(record.auth_app_id)
        sealed = self._cipher.seal(
            {"app_auth_token": token.app_auth_token, "app_refresh_token": token.app_refresh_token},
            pk=pk,
            field="current",
        )
        values: dict[str, Any] = {
            ":v": {"N": str(record.version)},
            ":next": {"N": str(record.version + 1)},
            ":owner": {"S": owner},
            ":current": sealed,
            ":previous": record.raw["current"],
            ":grace": {"N": _num(now + grace_seconds)},
            ":obtained": {"N": _num(token.obtained_at)},
            ":due": {"N": _num(due_at)},
            ":digest": {"S": token_digest(token.app_auth_token)},
            ":now": {"N": _num(now)},
            ":zero": {"N": "0"},
        }
        update = (
            "SET #v = :next, #cur = :current, previous = :previous, previous_valid_until = :grace, "
            "obtained_at = :obtained, due_at = :due, token_digest = :digest, updated_at = :now, "
            "refreshed_at = :now, failures = :zero"
        )
        for name in ("re_expires_in", "expires_in"):
            if getattr(token, name) is not None:
                update += f", {name} = :{name}"
                values[f":{name}"] = {"N": str(getattr(token, name))}
        self._call(
            "update_item",
            **self._fenced(record, owner),
            UpdateExpression=update + " REMOVE lease_owner, lease_until, last_error",
            ExpressionAttributeNames={"#v": "version", "#cur": "current"},
            ExpressionAttributeValues=values,
        )

    def record_refresh_failure(
        self, record: TokenRecord, owner: str, *, error: str, retry_at: float, dead: bool
    ) -> TokenRecord:
        """A failed refresh: back off (``retry_at``), or, for a dead grant, leave the schedule for good."""
        now = self._clock()
        values: dict[str, Any] = {
            ":v": {"N": str(record.version)},
            ":owner": {"S": owner},
            ":error": {"S": error[:200]},
            ":now": {"N": _num(now)},
            ":one": {"N": "1"},
        }
        if dead:
            update = (
                "SET #s = :dead, last_error = :error, updated_at = :now, #v = #v + :one "
                "REMOVE due_shard, due_at, lease_owner, lease_until"
            )
            values[":dead"] = {"S": NEEDS_REAUTH}
        else:
            update = (
                "SET due_at = :retry, last_error = :error, updated_at = :now, failures = failures + :one "
                "REMOVE lease_owner, lease_until"
            )
            values[":retry"] = {"N": _num(retry_at)}
        result = self._call(
            "update_item",
            **self._fenced(record, owner),
            UpdateExpression=update,
            ExpressionAttributeNames={"#v": "version", **({"#s": "status"} if dead else {})},
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        return TokenRecord.from_item(result["Attributes"])

    # -- notifications -----------------------------------------------------------------------------

    def notification_seen(self, notify_id: str) -> bool:
        return self._get(f"NOTIFY#{notify_id}", "NOTIFY") is not None

    def remember_notification(self, notify_id: str, *, kind: str, ttl_seconds: float) -> None:
        """Recorded after the notification was handled, so a failure leaves it to Alipay's retry."""
        now = self._clock()
        values = {
            "pk": f"NOTIFY#{notify_id}",
            "sk": "NOTIFY",
            "kind": kind,
            "handled_at": _dec(now),
            "expires_at": int(now + ttl_seconds),
        }
        self._call("put_item", Item=_wire(values))

    # -- authorization states ----------------------------------------------------------------------

    def put_state(self, state_id: str, *, isv_ref: str | None, expires_at: float) -> None:
        values: dict[str, Any] = {
            "pk": f"STATE#{state_id}",
            "sk": "STATE",
            "created_at": _dec(self._clock()),
            "expires_at": int(expires_at),
        }
        if isv_ref:
            values["isv_ref"] = isv_ref
        self._call("put_item", Item=_wire(values), ConditionExpression="attribute_not_exists(pk)")

    def state_usable(self, state_id: str) -> bool:
        """True while the state exists, has not expired and no code has used it yet."""
        item = self._get(f"STATE#{state_id}", "STATE")
        return item is not None and "used_by" not in item and int(item["expires_at"]["N"]) > self._clock()

    def consume_state(self, state_id: str, code_digest: str) -> str | None:
        """Bind a state to the code it authorized; the same code may present it again (a reload),
        no other code may. Returns the ISV reference stored with the state."""
        try:
            result = self._call(
                "update_item",
                Key={"pk": {"S": f"STATE#{state_id}"}, "sk": {"S": "STATE"}},
                UpdateExpression="SET used_by = :code, used_at = if_not_exists(used_at, :now)",
                ConditionExpression="attribute_exists(pk) AND expires_at > :now_int "
                "AND (attribute_not_exists(used_by) OR used_by = :code)",
                ExpressionAttributeValues={
                    ":code": {"S": code_digest},
                    ":now": {"N": _num(self._clock())},
                    ":now_int": {"N": str(int(self._clock()))},
                },
                ReturnValues="ALL_NEW",
            )
        except ConcurrentUpdate as exc:
            raise NotFound("state unknown, expired or already used by another authorization") from exc
        isv_ref = result["Attributes"].get("isv_ref")
        return None if isv_ref is None else str(isv_ref["S"])

    # -- code claims -------------------------------------------------------------------------------

    def claim_code(self, digest: str, *, isv_ref: str | None, ttl_seconds: float) -> CodeClaim | None:
        """Claim a code before it is exchanged. Returns None when the claim is ours, else the
        existing claim (a reload, a double click, or a concurrent duplicate)."""
        now = self._clock()
        values: dict[str, Any] = {
            "pk": f"CODE#{digest}",
            "sk": "CLAIM",
            "status": "exchanging",
            "claimed_at": _dec(now),
            "expires_at": int(now + ttl_seconds),
        }
        if isv_ref:
            values["isv_ref"] = isv_ref
        try:
            self._call("put_item", Item=_wire(values), ConditionExpression="attribute_not_exists(pk)")
        except ConcurrentUpdate:
            claim = self.get_claim(digest)
            if claim is None:  # expired by TTL between the two calls: treat as taken, the code is old
                return CodeClaim("failed", now, (), isv_ref, "AUTH_CODE_NOT_VALID")
            return claim
        return None

    def get_claim(self, digest: str) -> CodeClaim | None:
        item = self._get(f"CODE#{digest}", "CLAIM")
        if item is None:
            return None
        plain = _plain(item)
        return CodeClaim(
            status=plain["status"],
            claimed_at=float(plain["claimed_at"]),
            auth_app_ids=tuple(plain.get("auth_app_ids") or ()),
            isv_ref=plain.get("isv_ref"),
            error_code=plain.get("error_code"),
        )

    def finish_claim(
        self, digest: str, status: str, *, auth_app_ids: tuple[str, ...] = (), error_code: str | None = None
    ) -> None:
        names = {"#s": "status"}
        values: dict[str, Any] = {":s": {"S": status}, ":exchanging": {"S": "exchanging"}}
        update = "SET #s = :s"
        if auth_app_ids:
            update += ", auth_app_ids = :ids"
            values[":ids"] = {"L": [{"S": i} for i in auth_app_ids]}
        if error_code:
            update += ", error_code = :e"
            values[":e"] = {"S": error_code}
        self._call(
            "update_item",
            Key={"pk": {"S": f"CODE#{digest}"}, "sk": {"S": "CLAIM"}},
            UpdateExpression=update,
            ConditionExpression="#s = :exchanging",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )


def _num(value: float) -> str:
    """DynamoDB numbers travel as strings; keep millisecond precision, no float noise."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _dec(value: float) -> Decimal:
    return Decimal(_num(value))
