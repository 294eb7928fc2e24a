"""What an operator does by hand: list and inspect tokens, refresh or revoke one, exchange a code
obtained outside the callback, replay parked results, and import the Alipay keys.

Built on the same container as the functions, so every write goes through the same store methods
(conditional, versioned, encrypted) and publishes the same events. Nothing here returns a secret:
token views carry masked tokens only (``alipay_v3.mask``), and the full values never leave the
method that opened them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from alipay_v3 import AlipayError, AppAuthorization, mask
from alipay_v3.diagnose import Report, diagnose

from . import events
from .authorize import SOURCE, CallbackResult
from .container import Container
from .errors import AppAuthError, InvalidRequest, StorageError
from .importing import Importer, ImportReport, read_rows
from .links import StateSigner, check_isv_ref
from .refresh import RefreshOutcome
from .replay import ReplaySummary as ReplaySummary  # re-exported: the CLI reads it from here
from .token_store import SERVED, TokenRecord, TokenStatus
from .verification import VerifyReport

STATUSES = tuple(status.value for status in TokenStatus)
# A state made for a code the operator brings: used at once, so it need not live long.
_OPERATOR_STATE_TTL_SECONDS = 600


@dataclass(frozen=True)
class TokenView:
    """A token item as an operator sees it: metadata, and the tokens masked."""

    record: TokenRecord
    app_auth_token: str | None  # masked
    app_refresh_token: str | None  # masked
    unreadable: str | None = None  # why the pair could not be opened (e.g. no KMS permission)
    live: AppAuthorization | None = None  # what Alipay's query says now (``--live``)
    live_error: str | None = None  # why Alipay could not say


@dataclass(frozen=True)
class RefreshResult:
    outcome: RefreshOutcome
    before: TokenRecord
    after: TokenRecord


class Operations:
    def __init__(self, container: Container, *, clock: Callable[[], float] = time.time) -> None:
        self.container = container
        self.settings = container.settings
        self.store = container.store
        self._clock = clock

    # -- reading -----------------------------------------------------------------------------------

    def list_tokens(
        self,
        *,
        status: str | None = None,
        unclaimed: bool = False,
        ref: str | None = None,
        on_page: Callable[[int], None] | None = None,
    ) -> Iterator[TokenRecord]:
        """Every token item (optionally of one status, with no ISV reference, or tied to the
        reference ``ref``, found through its index), page by page; reads no sealed attribute."""
        wanted = TokenStatus(status) if status else None
        if ref is not None:
            return (r for r in self.store.tokens_for_ref(ref) if wanted in (None, r.status))
        return self.store.list_tokens(status=wanted, unclaimed=unclaimed, on_page=on_page)

    def describe(self, auth_app_id: str, *, live: bool = False) -> TokenView:
        """The stored authorization; with ``live``, beside what Alipay's query says of its token
        now (read only: ``verify`` is what acts on the answer)."""
        record = self.store.get_token(auth_app_id)
        try:
            pair = self.store.open_current(record)
        except AppAuthError as exc:  # e.g. the operator may read the table but not use the key
            return TokenView(record, None, None, unreadable=exc.message)
        view = TokenView(record, mask(pair.app_auth_token), mask(pair.app_refresh_token))
        if not live:
            return view
        try:
            return replace(view, live=self.container.refresher.token_api().query(pair.app_auth_token))
        except AlipayError as exc:
            return replace(view, live_error=f"[{exc.code}] {exc}")

    def verify(
        self, auth_app_ids: Sequence[str], *, progress: Callable[[VerifyReport], None] | None = None
    ) -> VerifyReport:
        """Check stored tokens against Alipay's query at the refresher's pace (every served one when
        ``auth_app_ids`` is empty): store what each may do, mark those Alipay calls invalid."""
        ids = list(auth_app_ids) or [r.auth_app_id for r in self.store.list_tokens() if r.status in SERVED]
        return self.container.refresher.verifier.verify_all(
            ids, workers=self.container.refresher.policy.concurrency, progress=progress
        )

    def import_file(
        self, path: Path, *, dry_run: bool = False, progress: Callable[[ImportReport], None] | None = None
    ) -> ImportReport:
        """Bring the authorizations in ``path`` (JSON Lines, or CSV with a header), each checked
        with Alipay at the refresher's pace and recorded through the grant rules (``Importer``)."""
        importer = Importer(
            self.store,
            self.container.grants,
            self.container.refresher.token_api,
            lambda: self.container.secrets.alipay_config().app_id,
            self.settings.schedule,
            clock=self._clock,
        )
        return importer.run(
            read_rows(path),
            dry_run=dry_run,
            workers=self.container.refresher.policy.concurrency,
            progress=progress,
        )

    def export(self, path: Path, *, include_secrets: bool = False) -> int:
        """Write every served authorization to ``path`` (a new file, mode 0600) as JSON Lines in the
        rows ``import_file`` reads: with ``include_secrets`` the token values too (a backup, or a
        move to another stack), else only what identifies each. Announced, never with a token."""
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise InvalidRequest(f"{path} exists: give a new file", code="file-exists") from None
        count = 0
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            for record in self.store.list_tokens():
                if record.status not in SERVED:
                    continue
                row: dict[str, Any] = {
                    "auth_app_id": record.auth_app_id,
                    "user_id": record.user_id or None,
                    "isv_ref": record.isv_ref,
                    "re_expires_in": record.re_expires_in,
                    "obtained_at": record.obtained_at,
                }
                if include_secrets:
                    pair = self.store.open_current(self.store.get_token(record.auth_app_id))
                    row.update(app_auth_token=pair.app_auth_token, app_refresh_token=pair.app_refresh_token)
                out.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")
                count += 1
        self.container.publisher.publish(events.EXPORTED, count=count, include_secrets=include_secrets)
        return count

    # -- changing one token ------------------------------------------------------------------------

    def refresh(self, auth_app_id: str, *, starting: Callable[[], None] | None = None) -> RefreshResult:
        """Rotate now, whether due or not; the same leased, fenced rotation the schedule runs.
        ``starting`` is told once the token is found and may be refreshed, before Alipay is called."""
        before = self.store.get_token(auth_app_id)
        if before.status not in SERVED:
            raise InvalidRequest(
                f"merchant app {auth_app_id} is {before.status}; only a token still served can be "
                "refreshed (the merchant must authorize again)",
                code="not-active",
            )
        if starting is not None:
            starting()
        outcome = self.container.refresher.refresh_one(auth_app_id, force=True)
        return RefreshResult(outcome, before, self.store.get_token(auth_app_id))

    def claim(self, auth_app_id: str, isv_ref: str) -> TokenRecord:
        """Tie an authorization that came with no reference (a notification, a console invitation)
        to the ISV's customer; one that has a reference keeps it (a new link re-binds, visibly)."""
        ref = check_isv_ref(isv_ref)
        if ref is None:
            raise InvalidRequest("give the reference to tie the merchant app to (--ref)", code="invalid-ref")
        record = self.store.claim(auth_app_id, ref)
        if record is None:
            held = self.store.get_token(auth_app_id).isv_ref
            raise InvalidRequest(
                f"merchant app {auth_app_id} is tied to {held} already; a link created with the new "
                "reference re-binds it when the merchant authorizes through it",
                code="already-claimed",
            )
        self.container.publisher.publish(
            events.REFERENCE_CHANGED, auth_app_id=auth_app_id, isv_ref=ref, via="operator"
        )
        return record

    def revoke(self, auth_app_id: str, reason: str) -> tuple[TokenRecord, bool]:
        """Stop handing out and rotating this token; it stays revoked until the merchant authorizes
        again. Returns the record and whether this call revoked it (False: it was already)."""
        record = self.store.mark_revoked(auth_app_id, reason)
        if record is None:
            return self.store.get_token(auth_app_id), False
        self.container.publisher.publish(
            events.REVOKED,
            auth_app_id=record.auth_app_id,
            isv_app_id=record.isv_app_id or None,
            isv_ref=record.isv_ref,
            reason=reason[:200],
            via="operator",
        )
        return record, True

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
        self.container.flow.put_state(issued.state_id, isv_ref=isv_ref, expires_at=issued.expires_at)
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
        """Store the results parked on the replay queue, unless a newer token is stored already
        (``Replayer``, the refresher's drain); ``StorageError`` when the queue cannot be read."""
        if not self.container.replayer.configured:
            raise InvalidRequest("no replay queue is configured (REPLAY_QUEUE_URL)", code="no-replay-queue")
        summary = self.container.replayer.drain(
            max_messages=max_messages, wait_seconds=wait_seconds, progress=progress
        )
        if summary.queue_error is not None:
            raise summary.queue_error
        return summary


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
