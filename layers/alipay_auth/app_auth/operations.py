"""What an operator does by hand: list and inspect tokens, refresh or revoke one, exchange a code
obtained outside the callback, replay parked results, and import the Alipay keys.

Built on the same container as the functions, so every write goes through the same store methods
(conditional, versioned, encrypted) and publishes the same events. Nothing here returns a secret:
token views carry masked tokens only (``alipay_v3.mask``), and the full values never leave the
method that opened them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from alipay_v3 import AlipayError, AppToken, mask
from alipay_v3.diagnose import Report, diagnose

from . import events
from .authorize import SOURCE, CallbackResult
from .container import Container
from .crypto import EnvelopeCipher
from .errors import AppAuthError, InvalidRequest, NotFound, StorageError
from .links import StateSigner, check_isv_ref
from .store import ACTIVE, REVOKED, TokenRecord, token_digest

STATUSES = ("active", "needs_reauth", "revoked")
# A state made for a code the operator brings: used at once, so it need not live long.
_OPERATOR_STATE_TTL_SECONDS = 600
_REPLAY_VISIBILITY_SECONDS = 120  # a message being replayed stays hidden from a concurrent replay
# Attributes a listing reads: never the sealed pairs, so a listing needs no KMS and moves no secret.
_LIST_ATTRIBUTES = (
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
    "due_at",
    "authorized_at",
    "updated_at",
    "previous_valid_until",
    "last_error",
    "token_digest",
    "failures",
    "refreshed_at",
)


@dataclass(frozen=True)
class TokenView:
    """A token item as an operator sees it: metadata, and the tokens masked."""

    record: TokenRecord
    app_auth_token: str | None  # masked
    app_refresh_token: str | None  # masked
    unreadable: str | None = None  # why the pair could not be opened (e.g. no KMS permission)

    @property
    def refreshed_at(self) -> float | None:
        value = self.record.raw.get("refreshed_at", {}).get("N")
        return None if value is None else float(value)


@dataclass(frozen=True)
class RefreshResult:
    outcome: str  # refresh.REFRESHED | RACED | SKIPPED | FAILED | NEEDS_REAUTH
    before: TokenRecord
    after: TokenRecord


@dataclass
class ReplaySummary:
    replayed: list[str] = field(default_factory=list)  # merchant apps stored from the queue
    skipped: list[str] = field(default_factory=list)  # a newer (or the same) token was stored already
    failed: int = 0  # messages that could not be replayed: they stay on the queue
    messages: int = 0  # messages handled (deleted) in this run


class Operations:
    def __init__(self, container: Container, *, clock: Callable[[], float] = time.time) -> None:
        self.container = container
        self.settings = container.settings
        self.store = container.store
        self._clock = clock

    # -- reading -----------------------------------------------------------------------------------

    def list_tokens(
        self, *, status: str | None = None, on_page: Callable[[int], None] | None = None
    ) -> Iterator[TokenRecord]:
        """Every token item (optionally of one status), page by page; reads no sealed attribute."""
        names = {f"#a{i}": name for i, name in enumerate(_LIST_ATTRIBUTES)}
        kwargs: dict[str, Any] = {
            "TableName": self.settings.table_name,
            "FilterExpression": "#sk = :token AND begins_with(#pk, :app)",
            "ProjectionExpression": ", ".join(names),
            "ExpressionAttributeNames": {**names, "#sk": "sk", "#pk": "pk"},
            "ExpressionAttributeValues": {":token": {"S": "TOKEN"}, ":app": {"S": "APP#"}},
        }
        if status:
            kwargs["FilterExpression"] += " AND #st = :status"
            kwargs["ExpressionAttributeNames"]["#st"] = "status"
            kwargs["ExpressionAttributeValues"][":status"] = {"S": status}
        dynamodb = self.container.clients["dynamodb"]
        seen = 0
        while True:
            try:
                page = dynamodb.scan(**kwargs)
            except (BotoCoreError, ClientError) as exc:
                raise StorageError(f"listing the token table failed ({_aws_code(exc)})") from exc
            for item in page.get("Items", []):
                seen += 1
                yield TokenRecord.from_item(item)
            if on_page is not None:
                on_page(seen)
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def describe(self, auth_app_id: str) -> TokenView:
        record = self.store.get_token(auth_app_id)
        try:
            pair = self.store.open_current(record)
        except AppAuthError as exc:  # e.g. the operator may read the table but not use the key
            return TokenView(record, None, None, unreadable=exc.message)
        return TokenView(record, mask(pair.app_auth_token), mask(pair.app_refresh_token))

    # -- changing one token ------------------------------------------------------------------------

    def refresh(self, auth_app_id: str) -> RefreshResult:
        """Rotate now, whether due or not; the same leased, fenced rotation the schedule runs."""
        before = self.store.get_token(auth_app_id)
        if before.status != ACTIVE:
            raise InvalidRequest(
                f"merchant app {auth_app_id} is {before.status}; only an active token can be refreshed "
                "(the merchant must authorize again)",
                code="not-active",
            )
        outcome = self.container.refresher.refresh_one(auth_app_id, force=True)
        return RefreshResult(outcome, before, self.store.get_token(auth_app_id))

    def revoke(self, auth_app_id: str, reason: str) -> TokenRecord:
        """Stop handing out and rotating this token; it stays revoked until the merchant authorizes again."""
        record = self.store.mark_revoked(auth_app_id, reason)
        self.container.publisher.publish(
            events.REVOKED,
            auth_app_id=record.auth_app_id,
            isv_app_id=record.isv_app_id or None,
            isv_ref=record.isv_ref,
            reason=reason[:200],
            via="operator",
        )
        return record

    # -- authorizations ----------------------------------------------------------------------------

    def create_link(self, isv_ref: str | None = None) -> Any:
        return self.container.authorization.create_link(isv_ref, callback_url=self.settings.callback_url)

    def exchange_code(self, code: str, isv_ref: str | None = None) -> CallbackResult:
        """A code obtained by hand, handled exactly as the callback handles one.

        The operator's request gets a state of its own (signed with the stack's state key, stored
        with the ISV reference), and then goes through the callback's use case: validation, the
        claim that keeps a code from being exchanged twice, the exchange, the encrypted save, the
        replay queue when the save fails, and the events.
        """
        isv_ref = check_isv_ref(isv_ref)
        issued = StateSigner(self.container.secrets.state_key(), clock=self._clock).issue(
            _OPERATOR_STATE_TTL_SECONDS
        )
        self.store.put_state(issued.state_id, isv_ref=isv_ref, expires_at=issued.expires_at)
        return self.container.authorization.handle_callback(
            {
                "app_id": self.container.secrets.alipay_config().app_id,
                "source": SOURCE,
                "app_auth_code": code,
                "state": issued.value,
            }
        )

    def replay(
        self,
        *,
        max_messages: int = 100,
        wait_seconds: int = 1,
        progress: Callable[[str], None] | None = None,
    ) -> ReplaySummary:
        """Store the results parked on the replay queue, unless a newer token is stored already.

        Idempotent: a message is deleted only after its tokens are stored (or found superseded),
        and storing a token that is already stored changes nothing. A message that cannot be
        opened or stored stays on the queue for the next replay.
        """
        queue_url = self.settings.replay_queue_url
        if not queue_url:
            raise InvalidRequest("no replay queue is configured (REPLAY_QUEUE_URL)", code="no-replay-queue")
        sqs = self.container.clients["sqs"]
        cipher = EnvelopeCipher(
            self.container.clients["kms"], self.settings.kms_key_id, self.settings.table_name
        )
        say = progress or (lambda _: None)
        summary = ReplaySummary()
        received = 0
        while received < max_messages:
            try:
                batch = sqs.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=min(10, max_messages - received),
                    WaitTimeSeconds=wait_seconds,
                    VisibilityTimeout=_REPLAY_VISIBILITY_SECONDS,
                )
            except (BotoCoreError, ClientError) as exc:
                raise StorageError(f"reading the replay queue failed ({_aws_code(exc)})") from exc
            messages = batch.get("Messages", [])
            if not messages:
                break
            for message in messages:
                received += 1
                try:
                    stored, superseded = self._replay_one(message["Body"], cipher)
                except AppAuthError as exc:
                    summary.failed += 1
                    say(f"message {message['MessageId']}: not replayed, left on the queue ({exc.code})")
                    continue
                try:
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                except (BotoCoreError, ClientError) as exc:
                    # Stored all the same; the next replay finds the tokens stored and deletes it.
                    say(f"message {message['MessageId']}: replayed but not deleted ({_aws_code(exc)})")
                summary.replayed.extend(stored)
                summary.skipped.extend(superseded)
                summary.messages += 1
                say(
                    f"message {message['MessageId']}: stored {', '.join(stored) or '-'}; "
                    f"newer token kept for {', '.join(superseded) or '-'}"
                )
        return summary

    def _replay_one(self, body_text: str, cipher: EnvelopeCipher) -> tuple[list[str], list[str]]:
        try:
            body = json.loads(body_text)
            if body.get("kind") != "authorization" or not str(body.get("pk", "")).startswith("PARKED#"):
                raise ValueError("not a parked authorization")
            sealed = {
                "M": {
                    name: ({"B": bytes.fromhex(value["B"])} if "B" in value else value)
                    for name, value in body["sealed"].items()
                }
            }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidRequest(
                "the message is not a parked authorization", code="malformed-message"
            ) from exc
        payload = cipher.open(sealed, pk=body["pk"], field="parked")
        isv_ref = payload.get("isv_ref")
        isv_app_id = self.container.secrets.alipay_config().app_id
        stored: list[str] = []
        superseded: list[str] = []
        try:
            tokens = [
                AppToken.from_fields(fields, obtained_at=float(fields["obtained_at"]))
                for fields in payload.get("tokens", [])
            ]
        except (AlipayError, ValueError, KeyError, TypeError) as exc:
            raise InvalidRequest("the parked tokens are incomplete", code="malformed-message") from exc
        for token in tokens:
            if self._superseded(token):
                superseded.append(token.auth_app_id)
                continue
            self.store.save_authorization(
                token,
                isv_app_id=isv_app_id,
                isv_ref=isv_ref,
                due_at=self.settings.next_due(token.obtained_at, token.re_expires_in),
                grace_seconds=self.settings.previous_token_grace_seconds,
            )
            self.container.publisher.publish(
                events.AUTHORIZED,
                auth_app_id=token.auth_app_id,
                isv_app_id=isv_app_id,
                user_id=token.user_id,
                isv_ref=isv_ref,
                via="replay",
            )
            stored.append(token.auth_app_id)
        return stored, superseded

    def _superseded(self, token: AppToken) -> bool:
        """True when the table holds this token already, a later one, or a revocation after it."""
        try:
            existing = self.store.get_token(token.auth_app_id)
        except NotFound:
            return False
        return (
            existing.token_digest == token_digest(token.app_auth_token)
            or existing.obtained_at >= token.obtained_at
            or (existing.status == REVOKED and existing.updated_at >= token.obtained_at)
        )


def import_keys(
    secretsmanager: Any, secret_id: str, config: Mapping[str, Any], *, dry_run: bool = False
) -> tuple[Report, bool]:
    """Check an Alipay configuration and, when nothing is an ERROR, store it in the stack's secret.

    Needs no table, key or queue: only the secret. Returns the report and whether it was written.
    """
    report = diagnose(config)
    if not report.ok or dry_run:
        return report, False
    try:
        secretsmanager.put_secret_value(SecretId=secret_id, SecretString=json.dumps(dict(config)))
    except (BotoCoreError, ClientError) as exc:
        raise StorageError(f"the secret could not be written ({_aws_code(exc)})") from exc
    return report, True


def _aws_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "ClientError")
    return type(exc).__name__
