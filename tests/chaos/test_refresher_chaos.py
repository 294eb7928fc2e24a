"""The refresher under chaos, against DynamoDB Local, moto and the emulator, in its own OS processes.

1. Kills: refresher processes SIGKILLed at random instants, some of them on purpose between Alipay's
   answer and our write; a last run to completion leaves every token active, Alipay's current pair,
   rotated (committed) exactly once, and no rotation at Alipay beyond one that a kill explains.
2. Races: two refreshers over the same due tokens at once rotate each exactly once at Alipay.
3. Faults: with a fifth of Alipay's answers spoiled (5xx, timeouts, dropped connections, some after
   Alipay processed the call), every live token is rotated within a few runs, and dead grants
   (revoked, refresh token expired) end ``needs_reauth`` with exactly one event each.

Each refresher is ``python -m sandbox.run_refresher`` with a shared trace file (see conftest.py).
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from typing import Any

import pytest

from app_auth import events
from app_auth.token_store import ACTIVE, NEEDS_REAUTH
from sandbox.emulator import Fault
from tests.chaos.world import TraceLine, World

pytestmark = pytest.mark.chaos

TOKENS = 1000
# Alipay keeps a replaced refresh token usable for a while; ten minutes is a realistic window and
# far longer than a lease, so a retry after a killed worker's lease expired is within it.
ALIPAY_GRACE_SECONDS = 600.0
FAST_RUNS = {"REFRESH_MAX_CALLS_PER_SECOND": 1000, "REFRESH_STOP_MARGIN_SECONDS": 0}


def assert_rotated_once_to_alipays_current_pair(world: World, apps: list[str]) -> dict[str, tuple[str, str]]:
    """Each app: active, one committed rotation (seeded at version 1), holding Alipay's live pair.
    Returns the stored pairs."""
    records = world.records(apps)
    not_active = {app: r.status for app, r in records.items() if r.status != ACTIVE}
    assert not not_active, f"{len(not_active)} apps not active, e.g. {list(not_active.items())[:5]}"
    versions = Counter(r.version for r in records.values())
    assert versions == {2: len(apps)}, f"versions (2 = exactly one committed rotation): {versions}"
    now = time.time()
    assert all(r.due_at is not None and r.due_at > now + 86400 for r in records.values())
    pairs = world.stored_pairs(records)
    stale = [app for app in apps if pairs[app] != world.alipay_pair(app)]
    assert not stale, f"{len(stale)} apps do not hold Alipay's current pair, e.g. {stale[:5]}"
    return pairs


def assert_usable_after_grace(world: World, pairs: dict[str, tuple[str, str]]) -> None:
    """Over the wire for a sample; then past every grace window, every stored token is still valid."""
    apps = sorted(pairs)
    for app in apps[:: max(1, len(apps) // 10)]:
        assert world.query_over_http(pairs[app][0]) == "valid", app
    world.clock.offset = ALIPAY_GRACE_SECONDS + 60  # no request is in flight any more
    try:
        dead = [app for app in apps if not world.emulator.token_valid(pairs[app][0])]
    finally:
        world.clock.offset = 0
    assert not dead, f"{len(dead)} stored tokens die with the grace window, e.g. {dead[:5]}"


def discarded_calls(trace: list[TraceLine], killed: set[int]) -> Counter[str]:
    """Per app: refreshes whose Alipay answer may have been thrown away, so that Alipay may have
    rotated once more than we committed: started by a process that was killed before it finished,
    or finished as "raced" (the lease ran out before the commit, which the fence then refused)."""
    open_starts: Counter[tuple[int, str]] = Counter()
    discarded: Counter[str] = Counter()
    for line in trace:
        if line.step == "start" and line.pid in killed:
            open_starts[(line.pid, line.app)] += 1
        elif line.step == "done" and line.pid in killed:
            open_starts[(line.pid, line.app)] -= 1
        if line.step == "done" and line.outcome == "raced":
            discarded[line.app] += 1
    for (_, app), count in open_starts.items():
        discarded[app] += count
    return discarded


def wait_for_answer(world: World, pid: int, *, timeout: float = 30.0) -> bool:
    """Until the trace shows Alipay answered one of ``pid``'s calls (which then pauses before writing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(line.pid == pid and line.step == "answer" for line in world.trace()):
            return True
        time.sleep(0.02)
    return False


def kill(process: subprocess.Popen[str]) -> bool:
    """SIGKILL; True when the process was still running (a real kill, not a corpse)."""
    alive = process.poll() is None
    if alive:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    return alive and process.returncode == -signal.SIGKILL


def test_refreshers_killed_at_random_instants_lose_no_token(make_world):
    world = make_world(grace_seconds=ALIPAY_GRACE_SECONDS)
    apps = world.seed(TOKENS)
    rng = random.Random(4242)
    lease = 4.0  # short, so that what a killed worker held is retried soon; far above one call
    # Paced at 30 calls/s a process, so that twelve rounds leave due tokens for every round.
    env = world.child_env(
        REFRESH_LEASE_SECONDS=lease,
        REFRESH_CONCURRENCY=4,
        **(FAST_RUNS | {"REFRESH_MAX_CALLS_PER_SECOND": 30}),
    )

    killed_pids: set[int] = set()
    killed_after_answer: set[int] = set()
    for round_ in range(12):
        # Two processes at a time, racing each other too. One is killed while it sits between
        # Alipay's answer and our write (its pause holds it there); the other at a random instant,
        # start-up, lease, call or commit alike.
        holder = world.start_refresher(env | {"REFRESHER_PAUSE_AFTER_CALL_SECONDS": "1.0"}, f"held{round_}")
        pause = rng.choice(["0", "0.05", "0.2"])
        other = world.start_refresher(env | {"REFRESHER_PAUSE_AFTER_CALL_SECONDS": pause}, f"other{round_}")
        other_dies_at = time.monotonic() + rng.uniform(0.3, 3.0)
        assert wait_for_answer(world, holder.pid), world.stderr_tail(f"held{round_}")
        time.sleep(rng.uniform(0.0, 0.3))
        if kill(holder):
            killed_pids.add(holder.pid)
            killed_after_answer.add(holder.pid)
        time.sleep(max(0.0, other_dies_at - time.monotonic()))
        if kill(other):
            killed_pids.add(other.pid)

    left = sum(1 for r in world.records(apps).values() if r.version == 1)
    totals = world.run_refresher(world.child_env(REFRESH_LEASE_SECONDS=lease, **FAST_RUNS), "final")

    assert len(killed_pids) >= 20, f"only {len(killed_pids)} processes were killed while running"
    assert len(killed_after_answer) >= 10
    assert 0 < left < TOKENS, f"the kills left {left} of {TOKENS} tokens to the last run"
    assert totals["done"] and not totals["left_retryable"], totals
    assert totals["outcomes"].get("needs_reauth", 0) == totals["outcomes"].get("failed", 0) == 0, totals
    pairs = assert_rotated_once_to_alipays_current_pair(world, apps)

    # Alipay rotated each token once, plus once more for each call whose answer was thrown away (its
    # worker killed before it finished): that pair was never handed out, and the retry used the old
    # refresh token, still valid in its grace window.
    trace = world.trace()
    discarded = discarded_calls(trace, killed_pids)
    counts = {app: world.emulator.refresh_count(app) for app in apps}
    unexplained = {app: n for app, n in counts.items() if not 1 <= n <= 1 + discarded[app]}
    assert not unexplained, f"rotations at Alipay not explained by a kill: {list(unexplained.items())[:5]}"
    answered = {
        (line.pid, line.app) for line in trace if line.step == "answer" and line.pid in killed_after_answer
    }
    finished = {(line.pid, line.app) for line in trace if line.step == "done"}
    lost_answers = {app for pid, app in answered - finished}
    assert len(answered - finished) >= len(killed_after_answer)
    assert all(counts[app] >= 2 for app in lost_answers)  # the lost answers really were rotations
    print(
        f"{len(killed_pids)} kills ({len(killed_after_answer)} after an answer), {left} tokens left to the"
        f" last run, {sum(counts.values()) - len(apps)} extra rotations at Alipay, each explained by a discarded answer"
    )

    assert_usable_after_grace(world, pairs)


def test_two_refreshers_racing_over_the_same_tokens_rotate_each_exactly_once(make_world):
    world = make_world(grace_seconds=ALIPAY_GRACE_SECONDS)
    apps = world.seed(TOKENS)
    world.observe_events(events.NEEDS_REAUTHORIZATION, events.REFRESH_FAILED)
    env = world.child_env(REFRESH_CONCURRENCY=8, **FAST_RUNS)

    # Both walk the due index in the same order, so they contend for the same items all along.
    racers = [world.start_refresher(env, "racer-a"), world.start_refresher(env, "racer-b")]
    totals = [world.finish(racers[0], "racer-a"), world.finish(racers[1], "racer-b")]

    outcomes = [t["outcomes"] for t in totals]
    assert sum(o.get("refreshed", 0) for o in outcomes) == TOKENS, outcomes
    assert all(o.get("refreshed", 0) > 0 for o in outcomes), f"no race took place: {outcomes}"
    assert sum(o.get("needs_reauth", 0) + o.get("failed", 0) for o in outcomes) == 0, outcomes
    counts = Counter(world.emulator.refresh_count(app) for app in apps)
    assert counts == {1: TOKENS}, f"rotations at Alipay per app: {counts}"
    pairs = assert_rotated_once_to_alipays_current_pair(world, apps)
    refreshed_by = Counter(
        line.app for line in world.trace() if line.step == "done" and line.outcome == "refreshed"
    )
    assert refreshed_by == dict.fromkeys(apps, 1)
    assert world.published_events() == []  # no false alarm: neither a failure nor a re-authorization
    assert_usable_after_grace(world, pairs)


def test_a_fifth_of_alipay_calls_failing_delays_rotation_and_dead_grants_are_told_apart(make_world):
    world = make_world(grace_seconds=ALIPAY_GRACE_SECONDS)
    authority = world.emulator.authority
    live = world.seed(TOKENS - 40)
    revoked = world.seed(20, prefix="2097")
    for app in revoked:
        assert authority.revoke(world.creds.app_id, app)  # at Alipay only: no notification reaches us
    world.clock.offset = -(authority.re_expires_in + 3600)  # issued long ago: the refresh token is dead
    try:
        expired = world.seed(20, prefix="2096")
    finally:
        world.clock.offset = 0
    world.observe_events(events.NEEDS_REAUTHORIZATION)

    # Five kinds of spoiled answer, each armed with its own probability: about 20% of calls draw one.
    # Two of them come after Alipay processed the call (the rotation happened, the answer is lost),
    # as does a timeout; the client retries with the same refresh token, valid in its grace window.
    per_fault = 1 - 0.8 ** (1 / 5)
    for fault in (Fault.HTTP_500, Fault.HTTP_502_AFTER_PROCESSING, Fault.DROP_CONNECTION):
        world.emulator.faults.inject(fault, rate=per_fault)
    world.emulator.faults.inject(Fault.DROP_CONNECTION, rate=per_fault, after_processing=True)
    world.emulator.faults.inject(Fault.LATENCY, rate=per_fault, delay=2.5)  # beyond the read timeout
    env = world.child_env(
        REFRESH_CONCURRENCY=8,
        REFRESH_BACKOFF_BASE_SECONDS=4,
        REFRESH_BACKOFF_CAP_SECONDS=4,
        ALIPAY_READ_TIMEOUT_SECONDS=1.5,
        **FAST_RUNS,
    )

    # The schedule fires again while some tokens are still backing off: at most six runs.
    runs: list[dict[str, Any]] = []
    for run in range(6):
        runs.append(world.run_refresher(env, f"run{run}"))
        # Still retryable: a live token not yet rotated, or a dead grant not yet classified (a fault
        # can hide Alipay's verdict on a run's last attempt too).
        waiting = [r for r in world.records(live).values() if r.version == 1]
        waiting += [r for r in world.records(revoked + expired).values() if r.status != NEEDS_REAUTH]
        if not waiting:
            break
        time.sleep(max(0.0, max(r.due_at or 0 for r in waiting) - time.time()) + 0.1)
    requests = world.emulator.requests_received
    world.emulator.faults.clear()

    assert requests > 1.1 * TOKENS, "the faults never fired"
    pairs = assert_rotated_once_to_alipays_current_pair(world, live)
    assert sum(r["outcomes"].get("needs_reauth", 0) for r in runs) == len(revoked + expired), runs

    dead = world.records(revoked + expired)
    assert {app: r.status for app, r in dead.items()} == dict.fromkeys(revoked + expired, NEEDS_REAUTH)
    assert {app: dead[app].last_error for app in revoked} == dict.fromkeys(revoked, "REFRESH_TOKEN_NOT_VALID")
    assert {app: dead[app].last_error for app in expired} == dict.fromkeys(expired, "REFRESH_TOKEN_TIME_OUT")
    assert all(r.due_at is None for r in dead.values())  # out of the schedule for good

    reauth = Counter(
        (e["detail"]["auth_app_id"], e["detail"]["error_code"]) for e in world.published_events()
    )
    assert reauth == {
        **{(app, "REFRESH_TOKEN_NOT_VALID"): 1 for app in revoked},
        **{(app, "REFRESH_TOKEN_TIME_OUT"): 1 for app in expired},
    }
    assert_usable_after_grace(world, pairs)
