"""Token items: one per authorized merchant app, its sealed pairs, status, version and schedule.

    APP#<auth_app_id>   TOKEN   sealed current (and previous) pair, status, version, lease, due time

Every change is a conditional write; a lost condition becomes a domain error (``from exc``), never a
silent overwrite. Token items never expire. When a pair is replaced, the old one stays as
``previous`` through the schedule's grace window and is served beside the current one until then.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from alipay_v3 import AppAuthorization, AppToken

from .crypto import DataKey, EnvelopeCipher
from .errors import ConcurrentUpdate, NotFound
from .schedule import RotationSchedule
from .table import ConditionFailed, Item, Table, dec, num, plain, wire

DUE_INDEX = "due"
DUE_SHARDS = 4  # the due index is partitioned so that no single key takes every write
# Sparse too: every served token whose refresh token's expiry is known, by that expiry, so that the
# least time left before any of them expires is one short query per shard, quarantined ones included.
EXPIRY_INDEX = "expiry"
# Sparse: items by the ISV's reference (sort key sk, so a query asks for token items only).
REF_INDEX = "ref"
_SEALED = frozenset({"current", "previous"})
# What a listing reads: never the sealed pairs, so a listing needs no KMS and moves no secret.
_LISTED = (
    "pk",
    "sk",
    "auth_app_id",
    "status",
    "version",
    "isv_app_id",
    "user_id",
    "isv_ref",
    "obtained_at",
    "re_expires_in",
    "expires_in",
    "refresh_expires_at",
    "due_at",
    "authorized_at",
    "updated_at",
    "refreshed_at",
    "previous_valid_until",
    "last_error",
    "token_digest",
    "previous_token_digest",
    "failures",
    "out_biz_no",
    "previous_isv_ref",
    "auth_methods",
    "auth_start",
    "auth_end",
    "is_by_app_auth",
    "checked_at",
    "checked_status",
)


class TokenStatus(StrEnum):
    ACTIVE = "active"
    NEEDS_REAUTH = "needs_reauth"  # Alipay says the token no longer works: only the merchant can help
    QUARANTINED = "quarantined"  # rotation failed too often: served while valid, no longer retried
    # The refresh token is dead but Alipay says the token works (it lives until the merchant
    # re-authorizes or cancels): served, never rotated again; a new authorization makes it active.
    ROTATION_UNAVAILABLE = "rotation_unavailable"
    REVOKED = "revoked"


ACTIVE, NEEDS_REAUTH, REVOKED = TokenStatus.ACTIVE, TokenStatus.NEEDS_REAUTH, TokenStatus.REVOKED
QUARANTINED, ROTATION_UNAVAILABLE = TokenStatus.QUARANTINED, TokenStatus.ROTATION_UNAVAILABLE
SERVED = frozenset({ACTIVE, QUARANTINED, ROTATION_UNAVAILABLE})  # whose current token is handed out


def token_pk(auth_app_id: str) -> str:
    return f"APP#{auth_app_id}"


def token_digest(app_auth_token: str) -> str:
    """Tells two tokens apart without storing either: a 128-bit prefix of SHA-256 of a random token."""
    return hashlib.sha256(app_auth_token.encode()).hexdigest()[:32]


def _shard(auth_app_id: str) -> int:
    return int(hashlib.sha256(auth_app_id.encode()).hexdigest(), 16) % DUE_SHARDS


def due_shard(auth_app_id: str) -> str:
    return f"DUE#{_shard(auth_app_id)}"


def expiry_shard(auth_app_id: str) -> str:
    return f"EXPIRY#{_shard(auth_app_id)}"


def _is_served() -> tuple[str, dict[str, Any]]:
    """A condition that the item's status (``#s``) is one whose token is handed out, and its values."""
    values = {f":served{n}": {"S": status.value} for n, status in enumerate(sorted(SERVED))}
    return "(" + " OR ".join(f"#s = {name}" for name in values) + ")", values


@dataclass(frozen=True)
class Sealed:
    """The pairs as stored: opaque to everything but the store's cipher (absent in a listing)."""

    current: Item | None = None
    previous: Item | None = None


@dataclass(frozen=True)
class TokenRecord:
    """A token item without its secrets; the store opens its pairs when needed."""

    auth_app_id: str
    status: TokenStatus
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
    refreshed_at: float | None
    previous_valid_until: float | None
    last_error: str | None
    token_digest: str
    failures: int
    # The pair this one replaced: a late notification bringing it back is no news
    previous_token_digest: str | None = None
    # The ISV's business number of an invitation (a notification's trigger_context.out_biz_no)
    out_biz_no: str | None = None
    previous_isv_ref: str | None = None  # the reference a later link replaced: shown, not lost
    # What Alipay's query last said of the current token (``record_check``): the APIs the merchant
    # granted, the authorization period, full delegation, and valid/invalid, with when it was asked
    auth_methods: tuple[str, ...] = ()
    auth_start: float | None = None
    auth_end: float | None = None
    is_by_app_auth: bool | None = None
    checked_at: float | None = None
    checked_status: str | None = None
    sealed: Sealed = field(default=Sealed(), repr=False, compare=False)

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> TokenRecord:
        values = plain(item, sealed=_SEALED)

        def number(name: str) -> float | None:
            value = values.get(name)
            return None if value is None else float(value)

        def whole(name: str) -> int | None:
            value = values.get(name)
            return None if value is None else int(value)

        return cls(
            auth_app_id=values["auth_app_id"],
            status=TokenStatus(values["status"]),
            version=int(values["version"]),
            isv_app_id=values.get("isv_app_id", ""),
            user_id=values.get("user_id", ""),
            isv_ref=values.get("isv_ref"),
            obtained_at=float(values["obtained_at"]),
            re_expires_in=whole("re_expires_in"),
            expires_in=whole("expires_in"),
            due_at=number("due_at"),
            authorized_at=float(values["authorized_at"]),
            updated_at=float(values["updated_at"]),
            refreshed_at=number("refreshed_at"),
            previous_valid_until=number("previous_valid_until"),
            last_error=values.get("last_error"),
            token_digest=values.get("token_digest", ""),
            failures=int(values.get("failures") or 0),
            previous_token_digest=values.get("previous_token_digest"),
            out_biz_no=values.get("out_biz_no"),
            previous_isv_ref=values.get("previous_isv_ref"),
            auth_methods=tuple(values.get("auth_methods") or ()),
            auth_start=number("auth_start"),
            auth_end=number("auth_end"),
            is_by_app_auth=values.get("is_by_app_auth"),
            checked_at=number("checked_at"),
            checked_status=values.get("checked_status"),
            sealed=Sealed(values.get("current"), values.get("previous")),
        )


@dataclass(frozen=True)
class TokenPair:
    app_auth_token: str
    app_refresh_token: str

    def __repr__(self) -> str:
        return "TokenPair(<redacted>)"


class Admission(Protocol):
    """Whether a token replaces the stored record, and the ISV reference it is stored with; asked
    again of whatever another writer left when it got there first (``grants`` holds the rules)."""

    def supersedes(self, existing: TokenRecord) -> bool: ...

    def isv_ref(self, existing: TokenRecord | None) -> str | None: ...


@dataclass(frozen=True)
class Replace:
    """Always replaces; stored with ``ref``."""

    ref: str | None = None

    def supersedes(self, existing: TokenRecord) -> bool:
        return True

    def isv_ref(self, existing: TokenRecord | None) -> str | None:
        return self.ref


class TokenStore:
    """Typed access to the token items. The table, the cipher, the schedule and the clock are injected."""

    def __init__(
        self,
        table: Table,
        cipher: EnvelopeCipher,
        schedule: RotationSchedule,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._table = table
        self._cipher = cipher
        self.schedule = schedule
        self._clock = clock

    # -- reading -----------------------------------------------------------------------------------

    def find_token(self, auth_app_id: str) -> TokenRecord | None:
        item = self._table.get(token_pk(auth_app_id), "TOKEN")
        return None if item is None else TokenRecord.from_item(item)

    def get_token(self, auth_app_id: str) -> TokenRecord:
        record = self.find_token(auth_app_id)
        if record is None:
            raise NotFound(f"no authorization stored for merchant app {auth_app_id}")
        return record

    def tokens_for_ref(self, isv_ref: str) -> list[TokenRecord]:
        """The authorizations tied to the ISV's reference ``isv_ref``, through the ref index; each
        is read again by key, since an index is eventually consistent and holds keys only."""
        kwargs: dict[str, Any] = {
            "IndexName": REF_INDEX,
            "KeyConditionExpression": "isv_ref = :ref AND sk = :token",
            "ExpressionAttributeValues": {":ref": {"S": isv_ref}, ":token": {"S": "TOKEN"}},
        }
        records = []
        while True:
            page = self._table.call("query", **kwargs)
            for key in page.get("Items", []):
                item = self._table.get(key["pk"]["S"], "TOKEN")
                record = None if item is None else TokenRecord.from_item(item)
                if record is not None and record.isv_ref == isv_ref:  # not re-tied since indexed
                    records.append(record)
            if "LastEvaluatedKey" not in page:
                return sorted(records, key=lambda r: r.auth_app_id)
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def open_current(self, record: TokenRecord) -> TokenPair:
        return self._open(record, "current")

    def open_previous(self, record: TokenRecord) -> TokenPair | None:
        """The replaced pair while its grace window lasts, else None."""
        if record.sealed.previous is None or (record.previous_valid_until or 0) <= self._clock():
            return None
        return self._open(record, "previous")

    def _open(self, record: TokenRecord, name: str) -> TokenPair:
        sealed = getattr(record.sealed, name)
        if sealed is None:
            raise NotFound(f"merchant app {record.auth_app_id} was read without its tokens")
        # A pair is sealed once, as "current", and moves to "previous" as it is: it opens as sealed.
        values = self._cipher.open(sealed, pk=token_pk(record.auth_app_id), field="current")
        return TokenPair(values["app_auth_token"], values["app_refresh_token"])

    def list_tokens(
        self,
        *,
        status: TokenStatus | None = None,
        unclaimed: bool = False,
        on_page: Callable[[int], None] | None = None,
    ) -> Iterator[TokenRecord]:
        """Every token item (optionally of one status, or only those no ISV reference ties to a
        customer), page by page; reads no sealed attribute."""
        names = {f"#a{i}": name for i, name in enumerate(_LISTED)}
        kwargs: dict[str, Any] = {
            "FilterExpression": "#sk = :token AND begins_with(#pk, :app)",
            "ProjectionExpression": ", ".join(names),
            "ExpressionAttributeNames": {**names, "#sk": "sk", "#pk": "pk"},
            "ExpressionAttributeValues": {":token": {"S": "TOKEN"}, ":app": {"S": "APP#"}},
        }
        if status:
            kwargs["FilterExpression"] += " AND #st = :status"
            kwargs["ExpressionAttributeNames"]["#st"] = "status"
            kwargs["ExpressionAttributeValues"][":status"] = {"S": str(status)}
        if unclaimed:
            kwargs["FilterExpression"] += " AND attribute_not_exists(#ref)"
            kwargs["ExpressionAttributeNames"]["#ref"] = "isv_ref"
        seen = 0
        while True:
            page = self._table.call("scan", **kwargs)
            for item in page.get("Items", []):
                seen += 1
                yield TokenRecord.from_item(item)
            if on_page is not None:
                on_page(seen)
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- authorizations ----------------------------------------------------------------------------

    def save_authorization(
        self,
        token: AppToken,
        *,
        isv_app_id: str,
        admission: Admission = Replace(),
        due_at: float | None = None,
        key: DataKey | None = None,
        out_biz_no: str | None = None,
    ) -> TokenRecord | None:
        """Store a freshly obtained token unless ``admission`` holds it back (None).

        The superseded pair stays as ``previous`` through the schedule's grace window. Saving the
        token already stored changes nothing (a notification and a callback may both bring it),
        except that a reference is added where there was none. Conditional on the version read;
        when another writer got there first, ``admission`` decides again against what it left.
        ``due_at`` overrides the schedule (seeding a test stack).
        """
        pk = token_pk(token.auth_app_id)
        digest = token_digest(token.app_auth_token)
        existing = self._table.get(pk, "TOKEN")
        for _ in range(5):
            record = TokenRecord.from_item(existing) if existing is not None else None
            if record is not None and not admission.supersedes(record):
                return None
            isv_ref = admission.isv_ref(record)
            if existing is not None and record is not None and record.token_digest == digest:
                if isv_ref and record.isv_ref is None:
                    # The notification stored this token first; the callback knows whose it is.
                    return self._add_isv_ref(existing, isv_ref)
                return record
            now = self._clock()
            values: dict[str, Any] = {
                "pk": pk,
                "sk": "TOKEN",
                "auth_app_id": token.auth_app_id,
                "isv_app_id": isv_app_id,
                "user_id": token.user_id,
                "status": ACTIVE.value,
                "obtained_at": dec(token.obtained_at),
                "authorized_at": dec(now),
                "updated_at": dec(now),
                "due_at": dec(
                    self.schedule.next_due(token.obtained_at, token.re_expires_in, token.auth_app_id)
                    if due_at is None
                    else due_at
                ),
                "due_shard": due_shard(token.auth_app_id),
                "failures": 0,
                "token_digest": digest,
                "current": self._seal(token, key),
            }
            if isv_ref:
                values["isv_ref"] = isv_ref
            # What the ISV knows of the merchant is never dropped by a later grant that lacks it
            kept_out_biz_no = out_biz_no or (record.out_biz_no if record else None)
            if kept_out_biz_no:
                values["out_biz_no"] = kept_out_biz_no
            if record is not None and record.isv_ref and record.isv_ref != isv_ref:
                values["previous_isv_ref"] = record.isv_ref
            elif record is not None and record.previous_isv_ref:
                values["previous_isv_ref"] = record.previous_isv_ref
            for name in ("re_expires_in", "expires_in"):
                if getattr(token, name) is not None:
                    values[name] = getattr(token, name)
            if token.re_expires_in is not None:
                values["refresh_expires_at"] = dec(token.obtained_at + token.re_expires_in)
                values["expiry_shard"] = expiry_shard(token.auth_app_id)
            if existing is None:
                values["version"] = 1
                condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
            else:
                version = int(existing["version"]["N"])
                values["version"] = version + 1
                values["previous"] = existing["current"]
                values["previous_valid_until"] = dec(now + self.schedule.previous_grace_seconds)
                if record is not None and record.token_digest:
                    values["previous_token_digest"] = record.token_digest
                condition = {
                    "ConditionExpression": "#v = :v",
                    "ExpressionAttributeNames": {"#v": "version"},
                    "ExpressionAttributeValues": {":v": {"N": str(version)}},
                }
            item = wire(values, sealed=_SEALED)
            try:
                self._table.call("put_item", Item=item, **condition)
            except ConditionFailed as exc:
                existing = exc.existing  # what the other writer left: decide again against it
                continue
            return TokenRecord.from_item(item)
        raise ConcurrentUpdate(f"merchant app {token.auth_app_id} kept changing while it was being stored")

    def _seal(self, token: AppToken, key: DataKey | None = None) -> Item:
        return self._cipher.seal(
            {"app_auth_token": token.app_auth_token, "app_refresh_token": token.app_refresh_token},
            pk=token_pk(token.auth_app_id),
            field="current",
            key=key,
        )

    def reserve_seal(self) -> DataKey:
        """The data key a pair to come will be sealed with (``commit_rotation(key=...)``)."""
        return self._cipher.reserve()

    def _add_isv_ref(self, item: Item, isv_ref: str) -> TokenRecord:
        result = self._table.call(
            "update_item",
            Key={"pk": item["pk"], "sk": item["sk"]},
            UpdateExpression="SET isv_ref = :ref",
            ConditionExpression="#v = :v",
            ExpressionAttributeNames={"#v": "version"},
            ExpressionAttributeValues={":ref": {"S": isv_ref}, ":v": item["version"]},
            ReturnValues="ALL_NEW",
        )
        return TokenRecord.from_item(result["Attributes"])

    def record_check(self, auth_app_id: str, app_auth_token: str, answer: AppAuthorization) -> bool:
        """Keep what Alipay's query said about ``app_auth_token``, if it is still the current token
        (False when another has replaced it since: the answer is about the old one)."""
        values: dict[str, Any] = {
            ":digest": {"S": token_digest(app_auth_token)},
            ":methods": {"L": [{"S": m} for m in answer.auth_methods]},
            ":status": {"S": answer.status.value},
            ":now": {"N": num(self._clock())},
        }
        update = "SET auth_methods = :methods, checked_status = :status, checked_at = :now"
        removed = []
        for name in ("auth_start", "auth_end"):
            moment = getattr(answer, name)
            if moment is None:
                removed.append(name)
            else:
                update += f", {name} = :{name}"
                values[f":{name}"] = {"N": num(moment)}
        if answer.is_by_app_auth is None:
            removed.append("is_by_app_auth")
        else:
            update += ", is_by_app_auth = :full"
            values[":full"] = {"BOOL": answer.is_by_app_auth}
        try:
            self._table.call(
                "update_item",
                Key={"pk": {"S": token_pk(auth_app_id)}, "sk": {"S": "TOKEN"}},
                UpdateExpression=update + (f" REMOVE {', '.join(removed)}" if removed else ""),
                ConditionExpression="token_digest = :digest",
                ExpressionAttributeValues=values,
            )
        except ConditionFailed:
            return False
        return True

    def mark_needs_reauth_if_current(self, auth_app_id: str, digest: str, reason: str) -> TokenRecord | None:
        """Alipay says the token with ``digest`` does not work: the merchant must authorize again.
        None when that token is no longer the stored one, or no longer served."""
        served, values = _is_served()
        try:
            return self._update_if(
                auth_app_id,
                UpdateExpression="SET #s = :dead, last_error = :reason, updated_at = :now, #v = #v + :one "
                "REMOVE due_shard, due_at, expiry_shard, lease_owner, lease_until",
                ConditionExpression=f"token_digest = :digest AND {served}",
                ExpressionAttributeNames={"#s": "status", "#v": "version"},
                ExpressionAttributeValues={
                    ":dead": {"S": NEEDS_REAUTH.value},
                    ":reason": {"S": reason[:200]},
                    ":now": {"N": num(self._clock())},
                    ":one": {"N": "1"},
                    ":digest": {"S": digest},
                    **values,
                },
            )
        except NotFound:
            return None

    def _update_if(self, auth_app_id: str, **update: Any) -> TokenRecord | None:
        """A conditional update of the token item, returned as it is after; None when the item is
        there but the condition did not hold, ``NotFound`` when there is no item."""
        try:
            result = self._table.call(
                "update_item",
                Key={"pk": {"S": token_pk(auth_app_id)}, "sk": {"S": "TOKEN"}},
                ReturnValues="ALL_NEW",
                **update,
            )
        except ConditionFailed as exc:
            if exc.existing is None:
                raise NotFound(f"no authorization stored for merchant app {auth_app_id}") from exc
            return None
        return TokenRecord.from_item(result["Attributes"])

    def claim(self, auth_app_id: str, isv_ref: str) -> TokenRecord | None:
        """Tie an authorization that arrived with no reference to the ISV's customer ``isv_ref``;
        None when it has a reference already (a claim never re-binds). ``NotFound`` when absent."""
        return self._update_if(
            auth_app_id,
            UpdateExpression="SET isv_ref = :ref, updated_at = :now",
            ConditionExpression="attribute_exists(pk) AND attribute_not_exists(isv_ref)",
            ExpressionAttributeValues={":ref": {"S": isv_ref}, ":now": {"N": num(self._clock())}},
        )

    def mark_revoked(self, auth_app_id: str, reason: str) -> TokenRecord | None:
        """Revocation is final until the merchant authorizes again; it leaves the due index. None
        when it is revoked already (its reason and version stay as they were)."""
        return self._revoke(auth_app_id, reason, obtained_before=None)

    def revoke_if_obtained_before(
        self, auth_app_id: str, reason: str, cancelled_at: float
    ) -> TokenRecord | None:
        """A cancellation revokes the authorization it cancels, never a later one: None when the
        stored token was obtained after ``cancelled_at`` (the merchant authorized again). At the
        same instant it is the one cancelled: it existed when the merchant cancelled."""
        return self._revoke(auth_app_id, reason, obtained_before=cancelled_at)

    def _revoke(self, auth_app_id: str, reason: str, *, obtained_before: float | None) -> TokenRecord | None:
        condition, values = (
            "attribute_exists(pk) AND #s <> :revoked",
            {
                ":revoked": {"S": REVOKED.value},
                ":reason": {"S": reason[:200]},
                ":now": {"N": num(self._clock())},
                ":one": {"N": "1"},
            },
        )
        if obtained_before is not None:
            condition += " AND obtained_at <= :before"
            values[":before"] = {"N": num(obtained_before)}
        return self._update_if(
            auth_app_id,
            UpdateExpression="SET #s = :revoked, last_error = :reason, updated_at = :now, #v = #v + :one "
            "REMOVE due_shard, due_at, expiry_shard, lease_owner, lease_until",
            ConditionExpression=condition,
            ExpressionAttributeNames={"#s": "status", "#v": "version"},
            ExpressionAttributeValues=values,
        )

    # -- rotation ----------------------------------------------------------------------------------
    #
    # A refresh holds a lease on the item (owner + expiry) taken with a conditional write, and
    # commits the new pair with a write conditional on the version it leased and on still owning
    # the lease. So two refreshers never both commit, a refresher whose lease ran out cannot
    # overwrite the one that took over, and a re-authorization in between wins over both.

    def due_app_ids(self, now: float, *, limit: int | None = None) -> Iterator[tuple[str, float]]:
        """(merchant app, due time) of each rotation due, oldest first across the shards of the
        sparse index (each shard is read in due order, a page at a time, and the shards merged)."""
        shards = (self._due_in_shard(shard, now) for shard in range(DUE_SHARDS))
        merged = heapq.merge(*shards, key=lambda due: due[1])
        return merged if limit is None else itertools.islice(merged, limit)

    def _due_in_shard(self, shard: int, now: float) -> Iterator[tuple[str, float]]:
        kwargs: dict[str, Any] = {
            "IndexName": DUE_INDEX,
            "KeyConditionExpression": "due_shard = :shard AND due_at <= :now",
            "ExpressionAttributeValues": {":shard": {"S": f"DUE#{shard}"}, ":now": {"N": num(now)}},
        }
        while True:
            page = self._table.call("query", **kwargs)
            for item in page.get("Items", []):
                yield item["pk"]["S"].removeprefix("APP#"), float(item["due_at"]["N"])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def served_app_ids(self, segment: int, segments: int) -> Iterator[str]:
        """The served merchant apps in one of ``segments`` parts of the table (a parallel scan's
        segment): a slice of every token, different each time, that covers all of them in turn."""
        served, values = _is_served()
        kwargs: dict[str, Any] = {
            "Segment": segment,
            "TotalSegments": segments,
            "FilterExpression": f"#sk = :token AND {served}",
            "ProjectionExpression": "#pk",
            "ExpressionAttributeNames": {"#sk": "sk", "#s": "status", "#pk": "pk"},
            "ExpressionAttributeValues": {":token": {"S": "TOKEN"}, **values},
        }
        while True:
            page = self._table.call("scan", **kwargs)
            for item in page.get("Items", []):
                yield item["pk"]["S"].removeprefix("APP#")
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def earliest_refresh_expiry(self) -> float | None:
        """When the first refresh token of a served merchant app expires (None: none is known)."""
        earliest = []
        for shard in range(DUE_SHARDS):
            page = self._table.call(
                "query",
                IndexName=EXPIRY_INDEX,
                KeyConditionExpression="expiry_shard = :shard",
                ExpressionAttributeValues={":shard": {"S": f"EXPIRY#{shard}"}},
                Limit=1,  # the index is sorted by expiry: the first item is the shard's earliest
            )
            earliest += [float(item["refresh_expires_at"]["N"]) for item in page.get("Items", [])]
        return min(earliest, default=None)

    def acquire_lease(
        self, auth_app_id: str, owner: str, lease_seconds: float, *, force: bool = False
    ) -> TokenRecord:
        """Take the item for one refresh. Raises ``ConcurrentUpdate`` when it is not due (any more),
        not active, or leased by a live holder: in each case there is nothing for this caller to do.
        ``force`` (an operator's refresh) takes any served token, whether due or not."""
        now = self._clock()
        if force:
            status, wanted = _is_served()
        else:
            wanted, status = {":active": {"S": ACTIVE.value}}, "#s = :active AND due_at <= :now"
        condition = status + " AND (attribute_not_exists(lease_until) OR lease_until < :now)"
        result = self._table.call(
            "update_item",
            Key={"pk": {"S": token_pk(auth_app_id)}, "sk": {"S": "TOKEN"}},
            UpdateExpression="SET lease_owner = :owner, lease_until = :until",
            ConditionExpression=condition,
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":now": {"N": num(now)},
                ":owner": {"S": owner},
                ":until": {"N": num(now + lease_seconds)},
                **wanted,
            },
            ReturnValues="ALL_NEW",
        )
        return TokenRecord.from_item(result["Attributes"])

    @staticmethod
    def _fenced(record: TokenRecord) -> dict[str, Any]:
        """Key and condition of a write that holds only while ``record``'s version and lease do."""
        return {
            "Key": {"pk": {"S": token_pk(record.auth_app_id)}, "sk": {"S": "TOKEN"}},
            "ConditionExpression": "#v = :v AND lease_owner = :owner",
        }

    def commit_rotation(
        self, record: TokenRecord, owner: str, token: AppToken, *, key: DataKey | None = None
    ) -> None:
        """Write the new pair in one fenced update; the pair it replaces stays as ``previous``."""
        now = self._clock()
        values: dict[str, Any] = {
            ":v": {"N": str(record.version)},
            ":next": {"N": str(record.version + 1)},
            ":owner": {"S": owner},
            ":current": self._seal(token, key),
            ":previous": record.sealed.current,
            ":grace": {"N": num(now + self.schedule.previous_grace_seconds)},
            ":obtained": {"N": num(token.obtained_at)},
            ":due": {
                "N": num(self.schedule.next_due(token.obtained_at, token.re_expires_in, token.auth_app_id))
            },
            ":digest": {"S": token_digest(token.app_auth_token)},
            ":previous_digest": {"S": record.token_digest},
            ":now": {"N": num(now)},
            ":zero": {"N": "0"},
            ":active": {"S": ACTIVE.value},
            ":shard": {"S": due_shard(record.auth_app_id)},
        }
        update = (
            "SET #v = :next, #cur = :current, previous = :previous, previous_valid_until = :grace, "
            "obtained_at = :obtained, due_at = :due, token_digest = :digest, "
            "previous_token_digest = :previous_digest, updated_at = :now, "
            "refreshed_at = :now, failures = :zero, #s = :active, due_shard = :shard"
        )
        removed = "lease_owner, lease_until, last_error"
        for name in ("re_expires_in", "expires_in"):
            if getattr(token, name) is not None:
                update += f", {name} = :{name}"
                values[f":{name}"] = {"N": str(getattr(token, name))}
        if token.re_expires_in is None:  # Alipay did not say: the old expiry no longer holds
            removed += ", refresh_expires_at, expiry_shard"
        else:
            update += ", refresh_expires_at = :expiry, expiry_shard = :expiry_shard"
            values[":expiry"] = {"N": num(token.obtained_at + token.re_expires_in)}
            values[":expiry_shard"] = {"S": expiry_shard(record.auth_app_id)}
        self._table.call(
            "update_item",
            **self._fenced(record),
            UpdateExpression=f"{update} REMOVE {removed}",
            ExpressionAttributeNames={"#v": "version", "#cur": "current", "#s": "status"},
            ExpressionAttributeValues=values,
        )

    def release_lease(self, record: TokenRecord, owner: str) -> None:
        """Give a leased item back untouched (its refresh never started): the next run takes it."""
        with contextlib.suppress(ConcurrentUpdate):  # the lease lapsed and was taken: nothing of ours
            self._table.call(
                "update_item",
                **self._fenced(record),
                UpdateExpression="REMOVE lease_owner, lease_until",
                ExpressionAttributeNames={"#v": "version"},
                ExpressionAttributeValues={":v": {"N": str(record.version)}, ":owner": {"S": owner}},
            )

    def record_refresh_failure(
        self,
        record: TokenRecord,
        owner: str,
        *,
        error: str,
        retry_at: float,
        leave_as: TokenStatus | None = None,
    ) -> TokenRecord:
        """A failed refresh: back off (``retry_at``), or leave the schedule ``leave_as``:
        ``needs_reauth`` for good (the grant is dead); ``rotation_unavailable`` (the refresh token is
        dead, the token still works) and ``quarantined`` (failed too often) still served, the latter
        until an operator's refresh succeeds. The first two no longer count for the earliest refresh
        token expiry: their refresh token is past use."""
        values: dict[str, Any] = {
            ":v": {"N": str(record.version)},
            ":owner": {"S": owner},
            ":error": {"S": error[:200]},
            ":now": {"N": num(self._clock())},
            ":one": {"N": "1"},
        }
        names = {"#v": "version"}
        if leave_as is None:
            update = (
                "SET due_at = :retry, last_error = :error, updated_at = :now, failures = failures + :one "
                "REMOVE lease_owner, lease_until"
            )
            values[":retry"] = {"N": num(retry_at)}
        else:
            update = (
                "SET #s = :status, last_error = :error, updated_at = :now, #v = #v + :one"
                + (", failures = failures + :one" if leave_as is QUARANTINED else "")
                + " REMOVE due_shard, due_at, lease_owner, lease_until"
                + ("" if leave_as is QUARANTINED else ", expiry_shard")
            )
            values[":status"] = {"S": leave_as.value}
            names["#s"] = "status"
        result = self._table.call(
            "update_item",
            **self._fenced(record),
            UpdateExpression=update,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        return TokenRecord.from_item(result["Attributes"])
