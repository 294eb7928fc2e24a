"""Load: many merchant authorizations through the local stack's HTTP front, with duplicates and failures.

``LOAD_AUTHORIZATIONS`` merchants (default 2,000), ``LOAD_CONCURRENCY`` at a time (default 50), each
doing what a merchant does: the ISV creates a link (POST /links), Alipay issues a code at consent,
the browser comes back (GET /callback). 10% of the callbacks arrive twice at once (a double
click); 5% of the exchanges fail at Alipay (an unsigned 500, the code not spent).

What must hold: every authorization Alipay completed is stored exactly once (one exchange per
code, one token item, one event, under the link's ref); every duplicate sees the same result;
no request gets a 5xx - except the documented 502 "unconfirmed" page, and only for a merchant
whose exchange Alipay failed. The latency our code adds beyond Alipay's (the handler's time less
the time it waited for the emulator) is written to benchmarks/results/load.json (or LOAD_RESULT).

The front takes ``LOAD_CONCURRENCY`` merchants at once and runs the real handler one request at a
time (see ``Environments``): Powertools keeps the current request in process-wide state.
"""

from __future__ import annotations

import json
import os
import random
import re
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from alipay_v3 import TokenApi
from app_auth.container import build_container, set_container
from sandbox.aws_standins import LocalAws
from sandbox.credentials import DevCredentials
from sandbox.emulator import Emulator
from sandbox.emulator.gateway import Request
from sandbox.emulator.server import Reply, unsigned_reply
from sandbox.front import Front, HttpApi
from sandbox.stack import provision

pytestmark = [pytest.mark.load, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
AUTHORIZATIONS = int(os.environ.get("LOAD_AUTHORIZATIONS", "2000"))
CONCURRENCY = int(os.environ.get("LOAD_CONCURRENCY", "50"))
RESULT = Path(os.environ.get("LOAD_RESULT", ROOT / "benchmarks" / "results" / "load.json"))
DUPLICATE_SHARE = 0.10
FAILURE_SHARE = 0.05
SEED = 20261125
_OUTCOME = re.compile(r'data-outcome="([a-z_]+)"')


# -- the stack under load -----------------------------------------------------------------------------

_waits = threading.local()  # per request thread: seconds spent waiting for Alipay


class Environments:
    """The handler behind the front, one request at a time, as one Lambda execution environment
    runs it (Powertools' Logger and Metrics keep the invocation's keys and metrics on module-level
    objects). The load stays 50 merchants at a time at the front, and the time a request waits
    for the handler is measured apart from its work."""

    def __init__(self) -> None:
        self._api = HttpApi()
        self._one_at_a_time = threading.Lock()
        self._lock = threading.Lock()
        # (path, handler seconds, Alipay seconds, seconds queued for the handler)
        self.timings: list[tuple[str, float, float, float]] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        arrived = time.perf_counter()
        with self._one_at_a_time:
            _waits.alipay = 0.0
            started = time.perf_counter()
            try:
                result: dict[str, Any] = self._api(event, context)
                return result
            finally:
                elapsed = time.perf_counter() - started
                with self._lock:
                    self.timings.append((event["rawPath"], elapsed, _waits.alipay, started - arrived))


class TimedTokenApi(TokenApi):
    """The container's TokenApi, with the time each exchange waits for Alipay counted."""

    def __init__(self, inner: TokenApi) -> None:
        super().__init__(inner.client, clock=inner.clock)

    def exchange_code(self, code: str, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().exchange_code(code, **kwargs)
        finally:
            _waits.alipay = getattr(_waits, "alipay", 0.0) + time.perf_counter() - started


class FailingAlipay:
    """Wraps the emulator's ``respond``: exchanges of the doomed codes fail with an unsigned 500
    before Alipay processes them; every exchange is counted per code."""

    def __init__(self, emulator: Emulator, doomed: set[str]) -> None:
        self._respond = emulator.respond
        self.doomed = doomed
        self.exchanges: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Reply | None:
        code = None
        if request.method == "POST" and request.body.startswith(b"{"):
            code = json.loads(request.body).get("code")
        if code is not None:
            with self._lock:
                self.exchanges[code] += 1
            if code in self.doomed:
                return unsigned_reply(500, "system-error", "系统繁忙 (load test: injected failure)", "load")
        return self._respond(request)


class PublishedEvents:
    """The events our code published (still sent on to EventBridge): reading 2,000 back through
    moto's SQS takes a minute."""

    def __init__(self, publish: Callable[..., bool]) -> None:
        self._publish = publish
        self._lock = threading.Lock()
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, detail_type: str, **detail: Any) -> bool:
        delivered = self._publish(detail_type, **detail)
        with self._lock:
            self.sent.append((detail_type, detail))
        return delivered


@dataclass
class LoadStack:
    aws: LocalAws
    emulator: Emulator
    creds: DevCredentials
    front: Front
    environments: Environments
    alipay: FailingAlipay
    table_name: str
    events: PublishedEvents
    _sessions: threading.local = field(default_factory=threading.local)

    def http(self) -> requests.Session:
        session: requests.Session | None = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = requests.Session()
        return session


@pytest.fixture
def load_stack(aws: LocalAws, creds: DevCredentials, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoadStack]:
    # socketserver listens with a backlog of 5: 50 merchants connecting at once overflow it and
    # the kernel resets some connections. API Gateway has no such queue; give the servers one.
    monkeypatch.setattr(ThreadingHTTPServer, "request_queue_size", 4 * CONCURRENCY)
    environments = Environments()
    with Emulator(seed=SEED) as emulator, Front(environments) as front:
        emulator.register_app(creds)
        alipay = FailingAlipay(emulator, set())
        emulator.respond = alipay  # type: ignore[method-assign]
        provisioned = provision(
            aws, creds.client_config(emulator.base_url), callback_url=f"{front.url}/callback"
        )
        container = build_container(
            provisioned.settings, client=aws.client, sleep=lambda _: None, wrap_token_api=TimedTokenApi
        )
        published = PublishedEvents(container.publisher.publish)
        container.publisher.publish = published  # type: ignore[method-assign]
        set_container(container)
        try:
            yield LoadStack(
                aws, emulator, creds, front, environments, alipay, provisioned.settings.table_name, published
            )
        finally:
            set_container(None)


# -- one merchant ---------------------------------------------------------------------------------------


@dataclass
class Merchant:
    number: int
    app_id: str
    duplicated: bool
    doomed: bool
    code: str = ""
    answers: list[tuple[int, str]] = field(default_factory=list)  # (status, outcome) of each callback
    seconds: list[float] = field(default_factory=list)  # client-side latency of each callback


def authorize(stack: LoadStack, merchant: Merchant) -> None:
    http = stack.http()
    link = http.post(f"{stack.front.url}/links", json={"ref": f"load-{merchant.number}"}, timeout=60)
    assert link.status_code == 201, (link.status_code, link.text[:300])
    state = parse_qs(urlsplit(link.json()["url"]).query)["state"][0]
    params = {
        "app_id": stack.creds.app_id,
        "source": "alipay_app_auth",
        "app_auth_code": merchant.code,
        "state": state,
    }

    def callback(session: requests.Session) -> None:
        started = time.perf_counter()
        response = session.get(f"{stack.front.url}/callback", params=params, timeout=60)
        merchant.seconds.append(time.perf_counter() - started)
        found = _OUTCOME.search(response.text)
        merchant.answers.append((response.status_code, found.group(1) if found else response.text[:200]))

    if not merchant.duplicated:
        callback(http)
        return
    # A double click: both requests in flight at once, each on its own connection
    twin = threading.Thread(target=callback, args=(requests.Session(),))
    twin.start()
    callback(http)
    twin.join(timeout=120)
    assert not twin.is_alive()
    if any(outcome == "in_progress" for _, outcome in merchant.answers):
        # the documented answer while the first is still exchanging: the reload sees the result
        callback(http)


# -- the test -------------------------------------------------------------------------------------------


def test_authorizations_under_load(load_stack: LoadStack) -> None:
    stack = load_stack
    phases = {"issue_codes": time.perf_counter()}
    rng = random.Random(SEED)
    merchants = [
        Merchant(n, f"2077{n:012d}", rng.random() < DUPLICATE_SHARE, rng.random() < FAILURE_SHARE)
        for n in range(AUTHORIZATIONS)
    ]
    for merchant in merchants:  # what the merchants' consents produced at Alipay
        merchant.code = stack.emulator.issue_code(stack.creds.app_id, merchant_app_ids=[merchant.app_id])
    stack.alipay.doomed.update(m.code for m in merchants if m.doomed)

    started = time.perf_counter()
    phases["issue_codes"] = started - phases["issue_codes"]
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(lambda m: authorize(stack, m), merchants))
    wall_seconds = time.perf_counter() - started
    checked = time.perf_counter()

    # Alipay completed exactly the authorizations it did not fail, each code exchanged once
    completed = {
        app_id
        for grant in stack.emulator.authority._codes.values()
        if grant.spent_at is not None
        for app_id in grant.merchant_app_ids
    }
    assert completed == {m.app_id for m in merchants if not m.doomed}
    assert set(stack.alipay.exchanges) == {m.code for m in merchants}
    assert max(stack.alipay.exchanges.values()) == 1, stack.alipay.exchanges.most_common(3)

    # ... and each is stored exactly once, under its link's ref, with one event
    scanned = time.perf_counter()
    tokens = _token_items(stack)
    phases["scan_table"] = time.perf_counter() - scanned
    assert set(tokens) == completed  # one item per merchant app (_token_items checks no key repeats)
    refs = {m.app_id: f"load-{m.number}" for m in merchants}
    wrong_refs = {
        app_id: (tokens[app_id], refs[app_id]) for app_id in tokens if tokens[app_id] != refs[app_id]
    }
    assert wrong_refs == {}, (len(wrong_refs), sorted(wrong_refs.items())[:5])
    granted = Counter(
        detail["auth_app_id"] for kind, detail in stack.events.sent if kind == "Authorization Granted"
    )
    assert granted == Counter({app_id: 1 for app_id in completed})

    # Every answer is the documented one, and duplicates agree
    for merchant in merchants:
        final = {answer for answer in merchant.answers if answer[1] != "in_progress"}
        expected = (502, "unconfirmed") if merchant.doomed else (200, "authorized")
        assert final == {expected}, (merchant, merchant.answers)
        assert all(
            status < 500 or (status, outcome) == (502, "unconfirmed") for status, outcome in merchant.answers
        )
    link_and_callback_paths = {path for path, *_ in stack.environments.timings}
    assert link_and_callback_paths == {"/links", "/callback"}

    phases["checks"] = time.perf_counter() - checked
    _report(stack, merchants, wall_seconds, phases)


# -- helpers --------------------------------------------------------------------------------------------


def _token_items(stack: LoadStack) -> dict[str, str | None]:
    dynamodb = stack.aws.client("dynamodb")
    found: dict[str, str | None] = {}
    count = 0
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=stack.table_name,
        FilterExpression="sk = :token",
        ExpressionAttributeValues={":token": {"S": "TOKEN"}},
    )
    for page in pages:
        for item in page["Items"]:
            count += 1
            found[item["pk"]["S"].removeprefix("APP#")] = item.get("isv_ref", {}).get("S")
    assert count == len(found)
    return found


def _percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"p50_ms": round(values[0] * 1000, 2) if values else 0.0, "p99_ms": 0.0, "count": len(values)}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50_ms": round(cuts[49] * 1000, 2), "p99_ms": round(cuts[98] * 1000, 2), "count": len(values)}


def _report(
    stack: LoadStack, merchants: list[Merchant], wall_seconds: float, phases: dict[str, float]
) -> None:
    callbacks = [
        (total, alipay) for path, total, alipay, _ in stack.environments.timings if path == "/callback"
    ]
    links = [total for path, total, _, _ in stack.environments.timings if path == "/links"]
    queued = [waited for *_, waited in stack.environments.timings]
    exchanged = [(total, alipay) for total, alipay in callbacks if alipay > 0]
    result = {
        "benchmark": "load",
        "what": "merchant authorizations through the local HTTP front (real handler, DynamoDB Local, "
        "moto KMS/EventBridge, the emulator), the handler one request at a time like one Lambda "
        "environment; 'ours' is the handler's time less its wait for Alipay, so it includes DynamoDB "
        "Local and moto round-trips but neither the front's HTTP nor the queue for the handler",
        "authorizations": len(merchants),
        "concurrency": CONCURRENCY,
        "duplicated_callbacks": sum(m.duplicated for m in merchants),
        "failed_at_alipay": sum(m.doomed for m in merchants),
        "requests": len(stack.environments.timings),
        "wall_seconds": round(wall_seconds, 2),
        "authorizations_per_second": round(len(merchants) / wall_seconds, 1),
        "other_phases_seconds": {name: round(seconds, 2) for name, seconds in phases.items()},
        "latency": {
            "callback_ours": _percentiles([total - alipay for total, alipay in callbacks]),
            "callback_with_exchange_ours": _percentiles([total - alipay for total, alipay in exchanged]),
            "callback_alipay_wait": _percentiles([alipay for _, alipay in exchanged]),
            "callback_handler_total": _percentiles([total for total, _ in callbacks]),
            "callback_client_observed": _percentiles([s for m in merchants for s in m.seconds]),
            "links_handler": _percentiles(links),
            "queued_for_the_handler": _percentiles(queued),
        },
        "cpus": os.cpu_count(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))  # the report is the point of the run
