"""The replay queue: where a callback's result or a rotation goes when Alipay answered but the table
did not take it, and the one drain that stores them back (``Replayer``), run by ``alipay-auth
replay`` and at the start of every refresher run. Writer and reader of the format, together.

The tokens travel sealed (the same envelope encryption as the table, bound to ``PARKED#<digest>``);
the message names only the merchant apps.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from alipay_v3 import AlipayError, AppToken

from .crypto import DataKey, EnvelopeCipher
from .errors import AppAuthError, InvalidRequest, StorageError
from .grants import Grants, Route

logger = logging.getLogger(__name__)

_KIND = "authorization"
_FIELD = "parked"
_VISIBILITY_SECONDS = 120  # a message being replayed stays hidden from a concurrent drain
_RECEIVE_BATCH = 10  # SQS's most per ReceiveMessage


class QueueFailed(StorageError):
    """SQS itself failed (not one message): ``aws_code`` is AWS's error code."""

    def __init__(self, doing: str, exc: BotoCoreError | ClientError) -> None:
        if isinstance(exc, ClientError):
            self.aws_code = str(exc.response.get("Error", {}).get("Code") or "ClientError")
        else:
            self.aws_code = type(exc).__name__
        super().__init__(f"{doing} failed ({self.aws_code})")


@dataclass(frozen=True)
class ParkedResult:
    tokens: tuple[AppToken, ...]
    isv_ref: str | None


class ReplayQueue:
    def __init__(self, sqs: Any, queue_url: str | None, cipher: EnvelopeCipher) -> None:
        self._sqs = sqs
        self._url = queue_url
        self._cipher = cipher

    @property
    def configured(self) -> bool:
        return bool(self._url)

    def park(
        self,
        tokens: tuple[AppToken, ...],
        *,
        isv_ref: str | None,
        digest: str,
        key: DataKey | None = None,
    ) -> bool:
        """Send the sealed result; False when there is no queue or the send failed."""
        if not self._url:
            return False
        pk = f"PARKED#{digest}"
        sealed = self._cipher.seal(
            {
                "tokens": [
                    {
                        "auth_app_id": t.auth_app_id,
                        "user_id": t.user_id,
                        "app_auth_token": t.app_auth_token,
                        "app_refresh_token": t.app_refresh_token,
                        "expires_in": t.expires_in,
                        "re_expires_in": t.re_expires_in,
                        "obtained_at": t.obtained_at,
                    }
                    for t in tokens
                ],
                "isv_ref": isv_ref,
            },
            pk=pk,
            field=_FIELD,
            key=key,
        )
        body = {
            "kind": _KIND,
            "pk": pk,
            "auth_app_ids": [t.auth_app_id for t in tokens],
            "sealed": {k: ({"B": v["B"].hex()} if "B" in v else v) for k, v in sealed["M"].items()},
        }
        try:
            self._sqs.send_message(QueueUrl=self._url, MessageBody=json.dumps(body))
        except Exception:  # the last line of defence must not raise past the caller
            logger.exception("parking an authorization result failed")
            return False
        return True

    def open(self, body_text: str) -> ParkedResult:
        """A message's result; ``InvalidRequest`` when it is not one of ours or is incomplete."""
        try:
            body = json.loads(body_text)
            if body.get("kind") != _KIND or not str(body.get("pk", "")).startswith("PARKED#"):
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
        payload = self._cipher.open(sealed, pk=body["pk"], field=_FIELD)
        try:
            tokens = tuple(
                AppToken.from_fields(fields, obtained_at=float(fields["obtained_at"]))
                for fields in payload.get("tokens", [])
            )
        except (AlipayError, ValueError, KeyError, TypeError) as exc:
            raise InvalidRequest("the parked tokens are incomplete", code="malformed-message") from exc
        return ParkedResult(tokens, payload.get("isv_ref"))

    def receive(self, max_messages: int, *, wait_seconds: int) -> list[dict[str, Any]]:
        """Up to ``max_messages`` (at most ten), hidden from other readers while they are replayed;
        ``QueueFailed`` when SQS fails."""
        try:
            batch = self._sqs.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=min(_RECEIVE_BATCH, max_messages),
                WaitTimeSeconds=wait_seconds,
                VisibilityTimeout=_VISIBILITY_SECONDS,
            )
        except (BotoCoreError, ClientError) as exc:
            raise QueueFailed("reading the replay queue", exc) from exc
        messages: list[dict[str, Any]] = batch.get("Messages", [])
        return messages

    def delete(self, receipt_handle: str) -> None:
        try:
            self._sqs.delete_message(QueueUrl=self._url, ReceiptHandle=receipt_handle)
        except (BotoCoreError, ClientError) as exc:
            raise QueueFailed("deleting a replayed message", exc) from exc


@dataclass
class ReplaySummary:
    replayed: list[str] = field(default_factory=list)  # merchant apps stored from the queue
    skipped: list[str] = field(default_factory=list)  # a newer (or the same) token was stored already
    failed: int = 0  # messages that could not be replayed: they stay on the queue
    messages: int = 0  # messages handled (stored or superseded) in this drain
    undeleted: int = 0  # of those, messages SQS did not delete: the next drain finds them stored
    queue_error: QueueFailed | None = None  # SQS failed to give messages: the drain stopped there
    out_of_time: bool = False  # the drain stopped for lack of time, perhaps with messages left


class Replayer:
    """Stores what waits on the replay queue, through the grant rules of ``Route.REPLAY``: a parked
    result never replaces a token obtained later, so an old message is deleted as superseded.

    Idempotent: a message is deleted only after its tokens are stored (or found superseded), and
    storing a token that is already stored changes nothing. A message that cannot be opened or
    stored stays on the queue, and comes back after its visibility timeout.
    """

    def __init__(self, queue: ReplayQueue, grants: Grants, isv_app_id: Callable[[], str]) -> None:
        self._queue = queue
        self._grants = grants
        self._isv_app_id = isv_app_id

    @property
    def configured(self) -> bool:
        return self._queue.configured

    def drain(
        self,
        *,
        max_messages: int,
        wait_seconds: int,
        has_time: Callable[[], bool] = lambda: True,
        progress: Callable[[str], None] | None = None,
    ) -> ReplaySummary:
        """At most ``max_messages``, none started once ``has_time()`` is false; ``progress`` gets a
        line per message (merchant app ids and error codes, never a token)."""
        say = progress or (lambda _: None)
        summary = ReplaySummary()
        if not self.configured:
            return summary
        pending = self._received(max_messages, wait_seconds, summary)
        while True:
            if not has_time():
                summary.out_of_time = True  # what was received comes back after its visibility timeout
                break
            message = next(pending, None)
            if message is None:
                break
            self._replay_message(message, summary, say)
        return summary

    def _received(
        self, max_messages: int, wait_seconds: int, summary: ReplaySummary
    ) -> Iterator[dict[str, Any]]:
        """Up to ``max_messages``, one at a time: the next batch is asked for when this one is used
        up. A failure of SQS ends them, kept as the summary's ``queue_error``."""
        handled = 0
        while handled < max_messages:
            try:
                messages = self._queue.receive(max_messages - handled, wait_seconds=wait_seconds)
            except QueueFailed as exc:
                summary.queue_error = exc
                return
            if not messages:
                return
            for message in messages:
                handled += 1
                yield message

    def _replay_message(
        self, message: dict[str, Any], summary: ReplaySummary, say: Callable[[str], None]
    ) -> None:
        message_id = message["MessageId"]
        try:
            stored, superseded = self._record(message["Body"])
        except AppAuthError as exc:
            summary.failed += 1
            say(f"message {message_id}: not replayed, left on the queue ({exc.code})")
            return
        try:
            self._queue.delete(message["ReceiptHandle"])
        except QueueFailed as exc:
            # Stored all the same; the next drain finds the tokens stored and deletes it.
            summary.undeleted += 1
            say(f"message {message_id}: replayed but not deleted ({exc.aws_code})")
        summary.replayed.extend(stored)
        summary.skipped.extend(superseded)
        summary.messages += 1
        say(
            f"message {message_id}: stored {', '.join(stored) or '-'}; "
            f"newer token kept for {', '.join(superseded) or '-'}"
        )

    def _record(self, body_text: str) -> tuple[list[str], list[str]]:
        """The merchant apps whose parked token was stored, and those where a newer one was kept."""
        parked = self._queue.open(body_text)
        isv_app_id = self._isv_app_id()
        stored: list[str] = []
        superseded: list[str] = []
        for token in parked.tokens:
            recorded = self._grants.record(
                token, via=Route.REPLAY, isv_app_id=isv_app_id, isv_ref=parked.isv_ref
            )
            (stored if recorded else superseded).append(token.auth_app_id)
        return stored, superseded
