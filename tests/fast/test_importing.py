"""Importer: the ISV's existing authorizations, checked with Alipay's query, recorded through the
grant rules (Route.IMPORT), resumable, due times spread."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from alipay_v3 import AppToken
from app_auth import events
from app_auth.errors import ConfigurationRefused
from app_auth.grants import Route
from app_auth.importing import SPREAD_SECONDS, Importer, read_rows
from app_auth.schedule import DAY
from tests.fast.fake_alipay import api_error, transport_error
from tests.fast.world import World

ISV = "2021000000000001"


def importer(world: World) -> Importer:
    return Importer(
        world.store,
        world.grants,
        lambda: world.alipay,  # type: ignore[arg-type,return-value]
        lambda: ISV,
        world.store.schedule,
        clock=world.clock,
    )


def row(token: AppToken, **extra: Any) -> dict[str, Any]:
    return {
        "auth_app_id": token.auth_app_id,
        "app_auth_token": token.app_auth_token,
        "app_refresh_token": token.app_refresh_token,
        "obtained_at": token.obtained_at,
        "re_expires_in": token.re_expires_in,
        **extra,
    }


def numbered(*rows: dict[str, Any] | str) -> list[tuple[int, Any]]:
    return list(enumerate(rows, 1))


def test_valid_rows_are_stored_with_their_scope_and_announced(world: World) -> None:
    tokens = [world.alipay.issue(f"20880000000002{n:02d}") for n in range(3)]
    report = importer(world).run(numbered(*(row(t, isv_ref=f"cust-{n}") for n, t in enumerate(tokens))))
    assert report.counts == {"imported": 3}
    for n, token in enumerate(tokens):
        record = world.store.get_token(token.auth_app_id)
        assert (record.isv_ref, record.checked_status) == (f"cust-{n}", "valid")
        assert world.store.open_current(record).app_auth_token == token.app_auth_token
    kinds = [(kind, d["via"]) for kind, d in world.events.published()]
    assert kinds == [(events.AUTHORIZED, "import")] * 3
    assert all(t.app_auth_token not in json.dumps(world.events.entries) for t in tokens)


def test_each_bad_row_is_reported_with_its_line_and_nothing_stored_for_it(world: World) -> None:
    good = world.alipay.issue("2088000000000210")
    replaced = world.alipay.issue("2088000000000211")
    world.alipay.issue("2088000000000211")  # the one above is replaced: Alipay calls it invalid
    someone_elses = world.alipay.issue("2088000000000212")
    report = importer(world).run(
        numbered(
            row(good),
            {"auth_app_id": "2088000000000213"},  # tokens missing
            "not a JSON object",
            row(replaced),
            {**row(someone_elses), "auth_app_id": "2088000000000299"},
            row(world.alipay.issue("2088000000000214"), obtained_at="yesterday"),
            {**row(good), "auth_app_id": "2088000000000215", "app_auth_token": "202511BBnever" + "0" * 20},
        )
    )
    assert report.counts == {"imported": 1, "invalid": 6}
    reasons = {entry["line"]: entry["reason"] for entry in report.invalid}
    assert reasons == {
        2: "missing app_auth_token, app_refresh_token",
        3: "not a JSON object",
        4: "Alipay says the token is invalid",
        5: "the token is merchant app 2088000000000212's",
        6: "obtained_at is not a number (Unix seconds)",
        7: "Alipay holds no such token",
    }
    assert [i["pk"]["S"] for i in world.items("APP#")] == ["APP#2088000000000210"]


def test_a_newer_stored_authorization_is_never_overwritten(world: World) -> None:
    old = world.alipay.issue("2088000000000220")
    world.clock.advance(3600)
    newer = world.alipay.issue("2088000000000220")
    world.grants.record(newer, via=Route.CALLBACK, isv_app_id=ISV, isv_ref="live")
    report = importer(world).run(numbered(row(old, isv_ref="from-db")))
    assert report.counts == {"kept_newer": 1}
    record = world.store.get_token("2088000000000220")
    assert (record.isv_ref, world.store.open_current(record).app_auth_token) == ("live", newer.app_auth_token)
    assert old.app_auth_token not in world.alipay.queries  # decided without asking Alipay


def test_a_rerun_after_an_interruption_asks_alipay_only_about_what_is_not_done(world: World) -> None:
    tokens = [world.alipay.issue(f"20880000000003{n:02d}") for n in range(6)]
    rows = numbered(*(row(t) for t in tokens))
    importer(world).run(rows[:4])  # interrupted after four rows
    world.alipay.queries.clear()
    again = importer(world).run(rows)
    assert again.counts == {"already_stored": 4, "imported": 2}
    assert sorted(world.alipay.queries) == sorted([tokens[4].app_auth_token, tokens[5].app_auth_token])
    assert len(world.items("APP#")) == 6


def test_a_dry_run_checks_every_row_and_writes_nothing(world: World) -> None:
    tokens = [world.alipay.issue(f"20880000000004{n:02d}") for n in range(3)]
    report = importer(world).run(numbered(*(row(t) for t in tokens)), dry_run=True)
    assert report.counts == {"imported": 3} and len(world.alipay.queries) == 3
    assert world.items("APP#") == [] and world.events.entries == []


@pytest.mark.parametrize("failure", [transport_error(), api_error("SYSTEM_ERROR", http_status=500)])
def test_alipay_failing_on_a_row_leaves_it_for_the_next_run(world: World, failure: object) -> None:
    token = world.alipay.issue("2088000000000500")
    world.alipay.answer_query(failure)  # type: ignore[arg-type]
    report = importer(world).run(numbered(row(token)))
    assert report.counts == {"failed": 1} and report.failed[0]["line"] == 1
    assert importer(world).run(numbered(row(token))).counts == {"imported": 1}


def test_alipay_refusing_this_service_stops_the_import(world: World) -> None:
    world.alipay.answer_query(api_error("AUTH_TOKEN_NOT_CONSISTENT"))
    with pytest.raises(ConfigurationRefused):
        importer(world).run(numbered(row(world.alipay.issue("2088000000000600"))))
    assert world.items("APP#") == []


def test_old_tokens_come_due_spread_over_a_week_and_near_ends_are_reported(world: World) -> None:
    # Given a hundred tokens obtained long ago (all past their schedule's due time), and one
    # whose refresh token ends in two days
    world.clock.advance(400 * DAY)
    now = world.clock()
    old = [world.alipay.issue(f"20880000007{n:05d}") for n in range(100)]
    rows = [row(t, obtained_at=now - 340 * DAY, re_expires_in=360 * DAY) for t in old]
    report = importer(world).run(numbered(*rows))
    assert report.counts == {"imported": 100}
    dues = sorted(world.store.get_token(t.auth_app_id).due_at or 0 for t in old)
    # Then none is due later than half its remaining life, and they spread, not all now
    assert now <= dues[0] and dues[-1] <= now + 10 * DAY
    assert dues[-1] - dues[0] > 4 * DAY
    assert sum(1 for d in dues if d < now + DAY) < 30
    assert len(report.expiring) == 100  # 20 days left, under the 30-day lead: rotated first
    assert SPREAD_SECONDS == 7 * DAY


def test_rows_are_read_from_json_lines_and_from_csv(tmp_path: Path) -> None:
    lines = tmp_path / "tokens.jsonl"
    lines.write_text('{"auth_app_id": "1"}\n\n[1]\n{"auth_app_id": "2"}\n', encoding="utf-8")
    assert list(read_rows(lines)) == [
        (1, {"auth_app_id": "1"}),
        (3, "not a JSON object"),
        (4, {"auth_app_id": "2"}),
    ]
    table = tmp_path / "tokens.csv"
    table.write_text("auth_app_id,isv_ref,user_id\n1,c-1,\n2,c-2,u\n", encoding="utf-8")
    assert list(read_rows(table)) == [
        (2, {"auth_app_id": "1", "isv_ref": "c-1"}),
        (3, {"auth_app_id": "2", "isv_ref": "c-2", "user_id": "u"}),
    ]
