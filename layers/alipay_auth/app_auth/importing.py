"""Bring the authorizations an ISV already holds: rows from its own database, checked with Alipay
and recorded through the grant rules like any other route.

Each row is read, checked for shape, then asked about with Alipay's query (at the refresher's
pace): only a token Alipay calls valid, for the merchant app the row names, is stored, with the
scope Alipay reports. Nothing newer is ever overwritten (``Route.IMPORT`` has the replay route's
rule: a stored token obtained later wins). A token already stored is skipped before Alipay is
asked, so a re-run after an interruption finishes the job without duplicates and without asking
again about what is done. Rows stream: memory does not grow with the file.

Due times are spread over ``SPREAD_SECONDS`` (never past half the refresh token's time left), so
that an import of old tokens does not all come due at once.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from alipay_v3 import AlipayError, AppToken, TokenApi

from .errors import AppAuthError, InvalidRequest
from .grants import Grants, Route
from .links import check_isv_ref
from .schedule import DAY, RotationSchedule, fraction_of
from .token_store import TokenStore, token_digest
from .verification import alipay_verdict

logger = logging.getLogger(__name__)

SPREAD_SECONDS = 7 * DAY
_APP_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")  # as the token route accepts
_TOKEN = re.compile(r"[A-Za-z0-9_.\-]{8,128}")  # as alipay_v3 sends a grant value
REQUIRED = ("auth_app_id", "app_auth_token", "app_refresh_token")
OPTIONAL = ("user_id", "isv_ref", "re_expires_in", "refresh_token_expires_at", "obtained_at")


class Imported(StrEnum):
    IMPORTED = "imported"  # checked with Alipay and stored (with --dry-run: would be)
    ALREADY_STORED = "already_stored"  # this very token is stored: nothing to do, Alipay not asked
    KEPT_NEWER = "kept_newer"  # a token obtained later is stored: the row is older news
    INVALID = "invalid"  # malformed, or Alipay says the token does not work (or is another app's)
    FAILED = "failed"  # Alipay or AWS could not answer: run the import again


@dataclass(frozen=True)
class Row:
    line: int
    token: AppToken
    isv_ref: str | None


@dataclass
class ImportReport:
    counts: dict[str, int] = field(default_factory=dict)
    invalid: list[dict[str, Any]] = field(default_factory=list)  # line, auth_app_id, reason
    failed: list[dict[str, Any]] = field(default_factory=list)
    # Stored, but with a refresh token near or past its end: served while Alipay says the token
    # works; the refresher rotates it first, or finds its rotation unavailable
    expiring: list[str] = field(default_factory=list)

    def add(self, outcome: Imported) -> None:
        self.counts[outcome.value] = self.counts.get(outcome.value, 0) + 1

    @property
    def rows(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "invalid": self.invalid,
            "failed": self.failed,
            "expiring": self.expiring,
        }


def read_rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    """(line, fields) of each row: JSON Lines, or CSV with a header (by the file's first character);
    a line that is not a JSON object comes as the reason it is not."""
    with path.open(encoding="utf-8", newline="") as stream:
        first = stream.read(1)
        stream.seek(0)
        if first == "{":
            for number, text in enumerate(stream, 1):
                if not text.strip():
                    continue
                try:
                    fields = json.loads(text)
                except json.JSONDecodeError:
                    yield number, "not a JSON object"
                    continue
                yield number, fields if isinstance(fields, dict) else "not a JSON object"
        else:
            reader = csv.DictReader(stream)
            for fields in reader:
                yield (
                    reader.line_num,
                    {k: v for k, v in fields.items() if k is not None and v not in ("", None)},
                )


def parse_row(line: int, fields: Mapping[str, Any], now: float) -> Row:
    """One row as a token, or ``InvalidRequest`` saying what is wrong with it (never its values)."""
    unknown = sorted(set(fields) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise InvalidRequest(f"unknown fields: {', '.join(unknown)}", code="malformed-row")
    missing = [name for name in REQUIRED if not fields.get(name)]
    if missing:
        raise InvalidRequest(f"missing {', '.join(missing)}", code="malformed-row")
    if not _APP_ID.fullmatch(str(fields["auth_app_id"])):
        raise InvalidRequest("auth_app_id is not a merchant app id", code="malformed-row")
    for name in ("app_auth_token", "app_refresh_token"):
        if not _TOKEN.fullmatch(str(fields[name])):
            raise InvalidRequest(f"{name} is not shaped like an Alipay token", code="malformed-row")
    obtained_at = _number(fields, "obtained_at", now)
    if obtained_at > now + 300:
        raise InvalidRequest("obtained_at is in the future", code="malformed-row")
    life = fields.get("re_expires_in")
    if life is None and fields.get("refresh_token_expires_at") is not None:
        life = _number(fields, "refresh_token_expires_at", 0) - obtained_at
    try:
        token = AppToken.from_fields(
            {
                "auth_app_id": str(fields["auth_app_id"]),
                "user_id": str(fields.get("user_id") or ""),
                "app_auth_token": str(fields["app_auth_token"]),
                "app_refresh_token": str(fields["app_refresh_token"]),
                "re_expires_in": None if life is None else int(float(life)),
            },
            obtained_at=obtained_at,
        )
        isv_ref = check_isv_ref(str(fields["isv_ref"])) if fields.get("isv_ref") else None
    except (AlipayError, ValueError) as exc:
        reason = exc.message if isinstance(exc, AlipayError | InvalidRequest) else "a number is malformed"
        raise InvalidRequest(reason, code="malformed-row") from exc
    return Row(line, token, isv_ref)


def _number(fields: Mapping[str, Any], name: str, default: float) -> float:
    value = fields.get(name)
    if value is None:
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{name} is not a number (Unix seconds)", code="malformed-row") from None


class Importer:
    def __init__(
        self,
        store: TokenStore,
        grants: Grants,
        token_api: Callable[[], TokenApi],
        isv_app_id: Callable[[], str],
        schedule: RotationSchedule,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._grants = grants
        self._token_api = token_api
        self._isv_app_id = isv_app_id
        self._schedule = schedule
        self._clock = clock

    def run(
        self,
        rows: Iterable[tuple[int, Mapping[str, Any] | str]],
        *,
        dry_run: bool = False,
        workers: int = 8,
        progress: Callable[[ImportReport], None] | None = None,
    ) -> ImportReport:
        """Import every row; ``ConfigurationRefused`` (Alipay refuses this service: every row would
        fail alike) ends it with what is done kept. At most ``4 * workers`` rows are held at once."""
        report = ImportReport()
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="import") as pool:
            running: dict[Future[tuple[Imported, str | None]], Row] = {}

            def settle(futures: Iterable[Future[tuple[Imported, str | None]]]) -> None:
                for future in futures:
                    row = running.pop(future)
                    outcome, reason = future.result()
                    self._tell(report, row, outcome, reason)
                    if progress is not None:
                        progress(report)

            for line, fields in rows:
                try:
                    if isinstance(fields, str):
                        raise InvalidRequest(fields, code="malformed-row")
                    row = parse_row(line, fields, self._clock())
                except InvalidRequest as exc:
                    report.add(Imported.INVALID)
                    report.invalid.append({"line": line, "reason": exc.message})
                    continue
                if len(running) >= 4 * workers:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    settle(done)
                running[pool.submit(self.import_one, row, dry_run=dry_run)] = row
            settle(list(running))
        return report

    def _tell(self, report: ImportReport, row: Row, outcome: Imported, reason: str | None) -> None:
        report.add(outcome)
        entry = {"line": row.line, "auth_app_id": row.token.auth_app_id, "reason": reason}
        if outcome is Imported.INVALID:
            report.invalid.append(entry)
        elif outcome is Imported.FAILED:
            report.failed.append(entry)
        elif outcome is Imported.IMPORTED and self._expiring(row.token):
            report.expiring.append(row.token.auth_app_id)

    def import_one(self, row: Row, *, dry_run: bool = False) -> tuple[Imported, str | None]:
        token = row.token
        try:
            stored = self._store.find_token(token.auth_app_id)
        except AppAuthError as exc:
            return Imported.FAILED, f"the table could not be read ({exc.code})"
        if stored is not None and stored.token_digest == token_digest(token.app_auth_token):
            return Imported.ALREADY_STORED, None
        if stored is not None and stored.obtained_at >= token.obtained_at:
            return Imported.KEPT_NEWER, "a token obtained later is stored"
        verdict = alipay_verdict(self._token_api().query, token.app_auth_token, token.auth_app_id)
        answer = verdict.answer
        if answer is not None and answer.auth_app_id != token.auth_app_id:
            return Imported.INVALID, f"the token is merchant app {answer.auth_app_id}'s"
        if verdict.works is None:
            return Imported.FAILED, f"Alipay could not say ({verdict.code})"
        if not verdict.works or answer is None:
            return (
                Imported.INVALID,
                "Alipay says the token is invalid" if answer else "Alipay holds no such token",
            )
        if dry_run:
            return Imported.IMPORTED, None
        try:
            recorded = self._grants.record(
                token,
                via=Route.IMPORT,
                isv_app_id=self._isv_app_id(),
                isv_ref=row.isv_ref,
                due_at=self._spread_due(token),
            )
            if recorded is None:  # another writer (or a twin row) got there first
                stored = self._store.find_token(token.auth_app_id)
                if stored is not None and stored.token_digest == token_digest(token.app_auth_token):
                    return Imported.ALREADY_STORED, None
                return Imported.KEPT_NEWER, "a token obtained later is stored"
            self._store.record_check(token.auth_app_id, token.app_auth_token, answer)
        except AppAuthError as exc:
            return Imported.FAILED, f"storing failed ({exc.code})"
        return Imported.IMPORTED, None

    def _spread_due(self, token: AppToken) -> float:
        """The schedule's due time, unless it falls within the spread: then a time in it fixed by
        the merchant app, never later than half the refresh token's time left."""
        now = self._clock()
        due = self._schedule.next_due(token.obtained_at, token.re_expires_in, token.auth_app_id)
        expires = token.refresh_expires_at or now + self._schedule.default_life_seconds
        window = min(SPREAD_SECONDS, max(0.0, (expires - now) / 2))
        return due if due >= now + window else now + window * fraction_of(token.auth_app_id)

    def _expiring(self, token: AppToken) -> bool:
        expires = token.refresh_expires_at
        return expires is not None and expires - self._clock() < self._schedule.lead_seconds
