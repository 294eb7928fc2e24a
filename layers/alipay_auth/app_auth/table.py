"""The one DynamoDB table, underneath the stores: calls, errors and attribute encoding.

Item keys are generic (``pk``/``sk``) so one table holds every item type; each store owns its own
types (``token_store`` the token items, ``flow_store`` the authorization flow's short-lived ones).
A lost condition becomes ``ConcurrentUpdate`` carrying the item DynamoDB found
(``ReturnValuesOnConditionCheckFailure=ALL_OLD``), so a caller decides again without a re-read.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from .errors import ConcurrentUpdate, StorageError

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

Item = dict[str, Any]  # an item in DynamoDB's wire format


class ConditionFailed(ConcurrentUpdate):
    """A conditional write lost; ``existing`` is the item as DynamoDB found it (None: no item)."""

    def __init__(self, message: str, existing: Item | None) -> None:
        super().__init__(message)
        self.existing = existing


class Table:
    """One client and one table name; every call's failure translated here, ``from exc``."""

    def __init__(self, dynamodb: Any, name: str) -> None:
        self._db = dynamodb
        self.name = name

    def call(self, operation: str, **kwargs: Any) -> Any:
        if "ConditionExpression" in kwargs and operation in ("put_item", "update_item", "delete_item"):
            kwargs.setdefault("ReturnValuesOnConditionCheckFailure", "ALL_OLD")
        try:
            return getattr(self._db, operation)(TableName=self.name, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") in ("ConditionalCheckFailedException", "TransactionCanceledException"):
                existing = exc.response.get("Item")
                raise ConditionFailed(
                    f"{operation} lost a conditional write; re-read and retry", existing or None
                ) from exc
            raise StorageError(f"DynamoDB {operation} failed: {error.get('Code')}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"DynamoDB {operation} could not be completed ({type(exc).__name__})") from exc

    def get(self, pk: str, sk: str) -> Item | None:
        item: Item | None = self.call(
            "get_item", Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True
        ).get("Item")
        return item


def plain(item: Mapping[str, Any], *, sealed: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Deserialize every attribute except the ``sealed`` ones, which stay in wire format for the cipher."""
    return {k: (v if k in sealed else _deserializer.deserialize(v)) for k, v in item.items()}


def wire(values: Mapping[str, Any], *, sealed: frozenset[str] = frozenset()) -> Item:
    return {k: (v if k in sealed else _serializer.serialize(v)) for k, v in values.items()}


def num(value: float) -> str:
    """DynamoDB numbers travel as strings; keep millisecond precision, no float noise."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def dec(value: float) -> Decimal:
    return Decimal(num(value))
