"""``FakeDynamoDB``: an in-memory stand-in for the boto3 DynamoDB *client*, wire format in and out.

It supports what ``app_auth.table``'s callers send, no more: get_item, put_item, update_item, query
(on the KEYS_ONLY indexes, with Limit), scan; condition, filter, key-condition, projection and update
expressions with ExpressionAttributeNames/Values (top-level attributes only). A lost condition raises
botocore's ``ClientError`` (ConditionalCheckFailedException, the old item under ``Item`` when asked
for ALL_OLD); an unused or undefined name/value raises ValidationException, as DynamoDB does.
tests/contract runs the same scenarios over this and DynamoDB Local.
"""

from __future__ import annotations

import contextlib
import copy
import re
import zlib
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

Item = dict[str, Any]
KEY = ("pk", "sk")
INDEXES = {  # KEYS_ONLY, as the template's
    "due": ("due_shard", "due_at"),
    "expiry": ("expiry_shard", "refresh_expires_at"),
    "ref": ("isv_ref", "sk"),
}

_TOKEN = re.compile(r"\s*(<=|>=|<>|[=<>(),+-]|[#:]?[A-Za-z_][A-Za-z0-9_]*)")


def _error(code: str, operation: str, message: str = "", **extra: Any) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}, **extra}, operation)


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        if not match:
            raise ValueError(f"cannot read expression at {text[pos:]!r}")
        out.append(match.group(1))
        pos = match.end()
    return out


class _Expr:
    """Tokens of one expression, the request's names and values, and a cursor (recursive descent)."""

    def __init__(self, text: str, names: dict[str, str], values: dict[str, Any], used: set[str]) -> None:
        self.toks, self.i = _tokens(text), 0
        self.names, self.values, self.used = names, values, used

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok.upper() != expected):
            raise ValueError(f"expected {expected or 'more'} at token {self.i}, got {tok!r}")
        self.i += 1
        return tok

    def keyword(self, word: str) -> bool:
        if (self.peek() or "").upper() == word:
            self.i += 1
            return True
        return False

    def path(self) -> str:
        tok = self.take()
        if tok.startswith("#"):
            if tok not in self.names:
                raise KeyError(tok)
            self.used.add(tok)
            return self.names[tok]
        if tok.startswith(":") or not tok[0].isalpha():
            raise ValueError(f"expected an attribute, got {tok!r}")
        return tok

    # -- conditions: or := and (OR and)* ; and := not (AND not)* ; not := NOT not | primary --------

    def condition(self, item: Item) -> bool:
        result = self._and(item)
        while self.keyword("OR"):
            result = self._and(item) or result  # evaluate both sides: every token is read
        return result

    def _and(self, item: Item) -> bool:
        result = self._not(item)
        while self.keyword("AND"):
            result = self._not(item) and result
        return result

    def _not(self, item: Item) -> bool:
        if self.keyword("NOT"):
            return not self._not(item)
        if self.peek() == "(":
            self.take("(")
            result = self.condition(item)
            self.take(")")
            return result
        func = (self.peek() or "").lower()
        if func in ("attribute_exists", "attribute_not_exists", "begins_with"):
            self.take()
            self.take("(")
            name = self.path()
            prefix = None
            if func == "begins_with":
                self.take(",")
                prefix = self.operand(item)
            self.take(")")
            if func == "attribute_exists":
                return name in item
            if func == "attribute_not_exists":
                return name not in item
            value = item.get(name)
            return value is not None and prefix is not None and _begins(value, prefix)
        left = self.operand(item)
        op = self.take()
        right = self.operand(item)
        return _compare(left, op, right)

    def operand(self, item: Item) -> Any:
        """A value (``:v``) or an attribute's value (None when absent)."""
        tok = self.peek() or ""
        if tok.startswith(":"):
            self.take()
            if tok not in self.values:
                raise KeyError(tok)
            self.used.add(tok)
            return self.values[tok]
        return item.get(self.path())

    # -- updates: SET a = v[, ...] REMOVE a[, ...] --------------------------------------------------

    def update(self, item: Item) -> Item:
        new = copy.deepcopy(item)
        while self.peek() is not None:
            clause = self.take().upper()
            while True:
                if clause == "SET":
                    name = self.path()
                    self.take("=")
                    new[name] = self._set_value(item)
                elif clause == "REMOVE":
                    new.pop(self.path(), None)
                else:
                    raise ValueError(f"unsupported update clause {clause}")
                if self.peek() != ",":
                    break
                self.take(",")
        return new

    def _set_value(self, item: Item) -> Any:
        left = self._set_operand(item)
        if self.peek() in ("+", "-"):
            op = self.take()
            right = self._set_operand(item)
            if left is None or right is None or "N" not in left or "N" not in right:
                raise ValueError("An operand in the update expression has an incorrect data type")
            total = Decimal(left["N"]) + (Decimal(right["N"]) if op == "+" else -Decimal(right["N"]))
            return {"N": str(total)}
        if left is None:
            raise ValueError("The provided expression refers to an attribute that does not exist in the item")
        return left

    def _set_operand(self, item: Item) -> Any:
        if (self.peek() or "").lower() == "if_not_exists":
            self.take()
            self.take("(")
            name = self.path()
            self.take(",")
            fallback = self.operand(item)
            self.take(")")
            return copy.deepcopy(item.get(name, fallback))
        return copy.deepcopy(self.operand(item))

    def done(self) -> None:
        if self.peek() is not None:
            raise ValueError(f"unexpected {self.peek()!r} at token {self.i}")


def _scalar(value: Any) -> tuple[str, Any] | None:
    if value is None:
        return None
    kind, raw = next(iter(value.items()))
    return kind, Decimal(raw) if kind == "N" else raw


def _compare(left: Any, op: str, right: Any) -> bool:
    a, b = _scalar(left), _scalar(right)
    if a is None or b is None:
        return False  # a comparison with an absent attribute is false, <> included
    if op == "=":
        return a == b
    if op == "<>":
        return a != b
    if a[0] != b[0] or a[0] not in ("S", "N", "B"):
        return False
    x, y = a[1], b[1]
    return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]


def _begins(value: Any, prefix: Any) -> bool:
    a, b = _scalar(value), _scalar(prefix)
    return a is not None and b is not None and a[0] == b[0] in ("S", "B") and a[1].startswith(b[1])


class FakeDynamoDB:
    """One process's tables, created on first use (every table has the token table's shape)."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[tuple[str, str], Item]] = {}
        self.calls: list[str] = []

    def _table(self, name: str) -> dict[tuple[str, str], Item]:
        return self.tables.setdefault(name, {})

    @staticmethod
    def _key(key: Item, operation: str) -> tuple[str, str]:
        if set(key) != set(KEY):
            raise _error(
                "ValidationException", operation, "The provided key element does not match the schema"
            )
        return key["pk"]["S"], key["sk"]["S"]

    @staticmethod
    def _check_used(operation: str, names: dict[str, str], values: dict[str, Any], used: set[str]) -> None:
        unused = (set(names) | set(values)) - used
        if unused:
            raise _error(
                "ValidationException",
                operation,
                f"Value provided in ExpressionAttribute* unused in expressions: {sorted(unused)}",
            )

    def _condition_holds(
        self, operation: str, kwargs: dict[str, Any], old: Item | None, used: set[str]
    ) -> bool:
        text = kwargs.get("ConditionExpression")
        if text is None:
            return True
        names, values = (
            kwargs.get("ExpressionAttributeNames", {}),
            kwargs.get("ExpressionAttributeValues", {}),
        )
        expr = _Expr(text, names, values, used)
        holds = expr.condition(old or {})
        expr.done()
        return holds

    def _lost(self, operation: str, kwargs: dict[str, Any], old: Item | None) -> ClientError:
        extra = (
            {"Item": copy.deepcopy(old)}
            if old and kwargs.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD"
            else {}
        )
        return _error("ConditionalCheckFailedException", operation, "The conditional request failed", **extra)

    def _run(self, operation: str, kwargs: dict[str, Any], body: Any) -> Any:
        self.calls.append(operation)
        names, values = (
            kwargs.get("ExpressionAttributeNames", {}),
            kwargs.get("ExpressionAttributeValues", {}),
        )
        used: set[str] = set()
        try:
            result = body(used)
        except (KeyError, ValueError) as exc:
            raise _error("ValidationException", operation, f"Invalid expression: {exc}") from exc
        self._check_used(operation, names, values, used)
        return result

    # -- the operations ----------------------------------------------------------------------------

    def get_item(self, *, TableName: str, Key: Item, ConsistentRead: bool = False) -> dict[str, Any]:
        item = self._table(TableName).get(self._key(Key, "GetItem"))
        return {} if item is None else {"Item": copy.deepcopy(item)}

    def put_item(self, *, TableName: str, Item: Item, **kwargs: Any) -> dict[str, Any]:
        table, key = self._table(TableName), self._key({k: Item[k] for k in KEY if k in Item}, "PutItem")

        def body(used: set[str]) -> dict[str, Any]:
            old = table.get(key)
            holds = self._condition_holds("PutItem", kwargs, old, used)
            self._check_used(
                "PutItem",
                kwargs.get("ExpressionAttributeNames", {}),
                kwargs.get("ExpressionAttributeValues", {}),
                used,
            )
            if not holds:
                raise self._lost("PutItem", kwargs, old)
            table[key] = copy.deepcopy(Item)
            return {}

        return self._run("put_item", kwargs, body)

    def update_item(
        self, *, TableName: str, Key: Item, UpdateExpression: str, **kwargs: Any
    ) -> dict[str, Any]:
        table, key = self._table(TableName), self._key(Key, "UpdateItem")

        def body(used: set[str]) -> dict[str, Any]:
            old = table.get(key)
            holds = self._condition_holds("UpdateItem", kwargs, old, used)
            names, values = (
                kwargs.get("ExpressionAttributeNames", {}),
                kwargs.get("ExpressionAttributeValues", {}),
            )
            expr = _Expr(UpdateExpression, names, values, used)
            if not holds:  # the condition is checked first: an update it forbids is never evaluated
                with contextlib.suppress(ValueError):
                    expr.update(old or {})
                self._check_used("UpdateItem", names, values, used)
                raise self._lost("UpdateItem", kwargs, old)
            new = expr.update(old or copy.deepcopy(Key))
            expr.done()
            self._check_used("UpdateItem", names, values, used)
            table[key] = new
            return {"Attributes": copy.deepcopy(new)} if kwargs.get("ReturnValues") == "ALL_NEW" else {}

        return self._run("update_item", kwargs, body)

    def query(
        self, *, TableName: str, IndexName: str, KeyConditionExpression: str, **kwargs: Any
    ) -> dict[str, Any]:
        hash_key, range_key = INDEXES[IndexName]

        def body(used: set[str]) -> dict[str, Any]:
            names, values = (
                kwargs.get("ExpressionAttributeNames", {}),
                kwargs.get("ExpressionAttributeValues", {}),
            )
            matched = []
            for item in self._table(TableName).values():
                if hash_key not in item or range_key not in item:
                    continue  # a sparse index: items without both keys are not in it
                expr = _Expr(KeyConditionExpression, names, values, used)
                if expr.condition(item):
                    matched.append({k: copy.deepcopy(item[k]) for k in (*KEY, hash_key, range_key)})
                expr.done()
            _Expr(KeyConditionExpression, names, values, used).condition({})  # reads every name and value
            matched.sort(
                key=lambda i: Decimal(i[range_key]["N"]) if "N" in i[range_key] else i[range_key]["S"]
            )
            limit = kwargs.get("Limit")
            if limit is not None and len(matched) > limit:
                page = matched[:limit]
                return {"Items": page, "Count": len(page), "LastEvaluatedKey": page[-1]}
            return {"Items": matched, "Count": len(matched)}

        return self._run("query", kwargs, body)

    def scan(self, *, TableName: str, **kwargs: Any) -> dict[str, Any]:
        def body(used: set[str]) -> dict[str, Any]:
            names, values = (
                kwargs.get("ExpressionAttributeNames", {}),
                kwargs.get("ExpressionAttributeValues", {}),
            )
            projection = None
            if "ProjectionExpression" in kwargs:
                projection = []
                for part in kwargs["ProjectionExpression"].split(","):
                    expr = _Expr(part, names, values, used)
                    projection.append(expr.path())
                    expr.done()
            items = []
            segment, segments = kwargs.get("Segment", 0), kwargs.get("TotalSegments", 1)
            for item in sorted(self._table(TableName).values(), key=lambda i: (i["pk"]["S"], i["sk"]["S"])):
                if zlib.crc32(item["pk"]["S"].encode()) % segments != segment:
                    continue  # a parallel scan's segment: DynamoDB splits by key hash too
                if "FilterExpression" in kwargs:
                    expr = _Expr(kwargs["FilterExpression"], names, values, used)
                    keep = expr.condition(item)
                    expr.done()
                    if not keep:
                        continue
                kept = item if projection is None else {k: v for k, v in item.items() if k in projection}
                items.append(copy.deepcopy(kept))
            if "FilterExpression" in kwargs:
                _Expr(kwargs["FilterExpression"], names, values, used).condition({})
            return {"Items": items, "Count": len(items)}

        return self._run("scan", kwargs, body)
