"""The world of a chaos test: the local stack with an emulator built to order, many due tokens,
and refreshers in their own OS processes (``make_world`` in conftest.py builds one).

The emulator runs in this (test) process and serves the refresher processes over 127.0.0.1, so
it survives every kill and counts every rotation. Its clock can be moved (``world.clock.offset``):
backwards while seeding tokens whose refresh token is to be expired, forwards once the refreshers
are done, to check that each stored pair outlives the grace window of the pair it replaced, i.e.
that it is Alipay's current pair and not a superseded one still in its grace.

The refreshers write a trace (``sandbox.run_refresher``: ``<pid> start|answer|done <app> [outcome]``)
to one shared file; ``world.trace()`` reads it back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alipay_v3 import AlipayClient, AlipayConfig
from app_auth import events
from app_auth.container import Container
from app_auth.token_store import TokenRecord
from sandbox.aws_standins import LocalAws
from sandbox.credentials import DevCredentials
from sandbox.emulator import Emulator
from sandbox.seed import merchant_app_ids, seed_tokens

ROOT = Path(__file__).resolve().parents[2]
QUERY_PATH = "/v3/alipay/open/auth/token/app/query"
# Upper bound for one refresher process; every wait on a child is bounded by it.
PROCESS_SECONDS = 90.0


class ShiftableClock:
    """Real time plus an offset the test may move (never while a request to the emulator is in flight)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass(frozen=True)
class TraceLine:
    pid: int
    step: str  # start | answer | done
    app: str
    outcome: str | None


@dataclass
class World:
    aws: LocalAws
    emulator: Emulator
    clock: ShiftableClock
    creds: DevCredentials
    container: Container
    env: dict[str, str]  # the function's environment (TABLE_NAME, SECRET_ARN...)
    tmp: Path
    apps: list[str] = field(default_factory=list)
    events_queue: str | None = None
    processes: list[subprocess.Popen[str]] = field(default_factory=list)  # stopped by the fixture

    @property
    def trace_file(self) -> Path:
        return self.tmp / "refresher.trace"

    # -- setup -------------------------------------------------------------------------------------

    def seed(self, count: int, *, prefix: str = "2098", due_at: float = 1.0) -> list[str]:
        apps = merchant_app_ids(count, start=len(self.apps), prefix=prefix)
        seed_tokens(self.emulator.authority, self.container.store, self.creds.app_id, apps, due_at=due_at)
        self.apps.extend(apps)
        return apps

    def observe_events(self, *detail_types: str) -> None:
        """Copy the token events of these types to an SQS queue, so the test can count them (only
        the rare kinds: moto's SQS takes ~0.3 s per receive once a thousand messages wait)."""
        bridge, sqs = self.aws.client("events"), self.aws.client("sqs")
        queue_url = sqs.create_queue(QueueName="chaos-observed-events")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        bus = self.container.settings.event_bus_name
        pattern = {"source": [events.SOURCE], "detail-type": list(detail_types)}
        bridge.put_rule(Name="observe", EventBusName=bus, EventPattern=json.dumps(pattern))
        bridge.put_targets(Rule="observe", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}])
        self.events_queue = queue_url

    def published_events(self) -> list[dict[str, Any]]:
        assert self.events_queue, "call observe_events() first"
        sqs = self.aws.client("sqs")
        found: list[dict[str, Any]] = []
        for _ in range(1000):  # bounded: far more batches than any test publishes
            batch = sqs.receive_message(
                QueueUrl=self.events_queue, MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not batch:
                return found
            found.extend(json.loads(message["Body"]) for message in batch)
            sqs.delete_message_batch(
                QueueUrl=self.events_queue,
                Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(batch)],
            )
        raise AssertionError("the event queue never ran dry")

    # -- refresher processes -----------------------------------------------------------------------

    def child_env(self, **overrides: Any) -> dict[str, str]:
        env = self.aws.process_env()
        env.update(self.env)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "layers" / "alipay_auth")])
        env["REFRESHER_TRACE_FILE"] = str(self.trace_file)
        env.update({name: str(value) for name, value in overrides.items()})
        return env

    def start_refresher(
        self, env: dict[str, str], name: str, *, max_seconds: float = PROCESS_SECONDS - 10
    ) -> subprocess.Popen[str]:
        """A refresher process; its stdout (JSON lines) and stderr go to files named after ``name``."""
        out = open(self.tmp / f"{name}.out", "w")  # noqa: SIM115 - the child holds its own copy
        err = open(self.tmp / f"{name}.err", "w")  # noqa: SIM115
        with out, err:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sandbox.run_refresher",
                    "--until-done",
                    "--max-seconds",
                    str(max_seconds),
                ],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=err,
                text=True,
            )
        self.processes.append(process)
        return process

    def stop_processes(self) -> None:
        """SIGKILL every refresher still running (a test that failed half-way leaves some)."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)

    def finish(self, process: subprocess.Popen[str], name: str) -> dict[str, Any]:
        """Wait (bounded) for a refresher that is to run to its end; its totals."""
        try:
            process.wait(timeout=PROCESS_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise AssertionError(f"refresher {name} did not finish: {self.stderr_tail(name)}") from None
        assert process.returncode in (0, 1), self.stderr_tail(name)
        return self.totals(name)

    def run_refresher(self, env: dict[str, str], name: str) -> dict[str, Any]:
        return self.finish(self.start_refresher(env, name), name)

    def stderr_tail(self, name: str) -> str:
        return (self.tmp / f"{name}.err").read_text()[-3000:]

    def totals(self, name: str) -> dict[str, Any]:
        lines = (self.tmp / f"{name}.out").read_text().splitlines()
        assert lines, self.stderr_tail(name)
        last: dict[str, Any] = json.loads(lines[-1])["totals"]
        return last

    def trace(self) -> list[TraceLine]:
        if not self.trace_file.exists():
            return []
        lines = []
        for text in self.trace_file.read_text().splitlines():
            words = text.split()
            if len(words) < 3:
                continue  # a line cut short by SIGKILL cannot happen (one write), but never trust it
            lines.append(TraceLine(int(words[0]), words[1], words[2], words[3] if len(words) > 3 else None))
        return lines

    # -- what ended up where -----------------------------------------------------------------------

    def records(self, apps: list[str]) -> dict[str, TokenRecord]:
        """The token items of ``apps``, read in one consistent scan (a get per item takes seconds)."""
        wanted = set(apps)
        found: dict[str, TokenRecord] = {}
        pages = self.aws.client("dynamodb").get_paginator("scan")
        for page in pages.paginate(TableName=self.container.settings.table_name, ConsistentRead=True):
            for item in page["Items"]:
                if item["sk"]["S"] == "TOKEN" and item["auth_app_id"]["S"] in wanted:
                    record = TokenRecord.from_item(item)
                    found[record.auth_app_id] = record
        assert set(found) == wanted, f"{len(wanted - set(found))} token items missing"
        return found

    def stored_pairs(self, records: dict[str, TokenRecord]) -> dict[str, tuple[str, str]]:
        """Each record's current pair, opened (one KMS call each, a few at a time)."""

        def open_pair(record: TokenRecord) -> tuple[str, str]:
            pair = self.container.store.open_current(record)
            return pair.app_auth_token, pair.app_refresh_token

        with ThreadPoolExecutor(8) as pool:
            return dict(zip(records, pool.map(open_pair, records.values()), strict=True))

    def alipay_pair(self, app: str) -> tuple[str, str] | None:
        return self.emulator.authority.current_tokens(self.creds.app_id, app)

    def query_over_http(self, app_auth_token: str) -> str:
        """``token/app/query`` at the emulator, over the wire, signed as the ISV: "valid" or "invalid"."""
        config = AlipayConfig.from_mapping(self.creds.client_config(self.emulator.base_url))
        response = AlipayClient(config).call("GET", QUERY_PATH, query={"app_auth_token": app_auth_token})
        return str(response.data["status"])
