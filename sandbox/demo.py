"""The product's main job on one machine: ``make demo`` walks a merchant through it; ``make serve`` stays up.

Starts DynamoDB Local and moto (sandbox.aws_standins), the Alipay emulator with its consent page and
notifications, and the API front with the real handlers; creates the stack's resources from
template.yaml; then, as ``demo``: link -> consent -> callback -> stored token -> refresh ->
cancellation, printing each step, and exits 0 (1 if a step does not do what it should).

``--config FILE`` points the stack at any Alipay-compatible gateway with the operator's own
configuration (the JSON of ``alipay-v3``): no emulator then, and the consent happens on the real
consent page of that environment, which sends the browser back to this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import secrets
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests

from alipay_v3 import AlipayConfig, ConfigError, mask
from app_auth.importing import ImportReport
from app_auth.local_stack import LOCAL_STACK_FILE, named_local_stack_file, write_local_stack_file
from app_auth.operations import Operations

from .aws_standins import REGION, LocalAws
from .credentials import DevCredentials
from .emulator import Emulator
from .front import Front
from .stack import observe_events, provision

HIDDEN_INPUT = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
CONSENT_PAGE = "/oauth2/appToAppAuth.htm"
ROOT = Path(__file__).resolve().parent.parent


class DemoFailed(Exception):
    """A step did not do what it should; the message says which."""


def say(text: str) -> None:
    print(text, flush=True)


def check(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailed(what)


@dataclass
class Running:
    aws: LocalAws
    front: Front
    emulator: Emulator | None
    creds: DevCredentials | None
    env: dict[str, str]
    http: requests.Session

    @property
    def url(self) -> str:
        return self.front.url

    def container(self) -> Any:
        from app_auth.container import get_container

        return get_container()


@contextlib.contextmanager
def running_stack(config_file: Path | None = None, *, log_level: str = "WARNING") -> Iterator[Running]:
    """Everything up, the handlers' environment set as the template would set it; torn down on exit."""
    from app_auth.container import set_container

    os.environ["POWERTOOLS_LOG_LEVEL"] = log_level
    if log_level != "DEBUG":
        os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")  # EMF lines would drown the story
        warnings.filterwarnings("ignore", "No application metrics to publish")
    say("Starting DynamoDB Local, moto (Secrets Manager, KMS, EventBridge, SQS) and the API front ...")
    with contextlib.ExitStack() as stack:
        aws = stack.enter_context(LocalAws())
        os.environ.update(aws.env())
        front = stack.enter_context(Front())
        emulator: Emulator | None = None
        creds: DevCredentials | None = None
        if config_file is None:
            creds = DevCredentials.generate()
            emulator = stack.enter_context(Emulator())
            emulator.register_app(creds)
            emulator.set_notify_url(creds.app_id, f"{front.url}/notify")
            alipay_config: dict[str, Any] = creds.client_config(emulator.base_url)
            consent_page: str | None = emulator.base_url + CONSENT_PAGE
            say(f"  Alipay emulator      {emulator.base_url}  (ISV app {creds.app_id}, throw-away keys)")
        else:
            alipay_config = json.loads(config_file.read_text(encoding="utf-8"))
            parsed = AlipayConfig.from_mapping(alipay_config)  # refuse a broken file before starting
            consent_page = None
            say(f"  Alipay gateway       {parsed.gateway}  (ISV app {parsed.app_id}, from {config_file})")
        provisioned = provision(
            aws, alipay_config, callback_url=f"{front.url}/callback", consent_page_url=consent_page
        )
        os.environ.update(provisioned.env)
        set_container(None)  # the handlers build theirs from the environment, as in Lambda
        stack.callback(set_container, None)
        say(f"  API (HTTP API front) {front.url}")
        say(
            f"  DynamoDB Local       {aws.endpoints.dynamodb}  table {provisioned.settings.table_name} (from template.yaml)"
        )
        yield Running(aws, front, emulator, creds, provisioned.env, requests.Session())


def consent_in_emulator(run: Running, link: str) -> requests.Response:
    """What the merchant does: open the link, press 同意授权 on the consent page, follow the redirect."""
    page = run.http.get(link, timeout=10)
    check(page.status_code == 200 and 'id="authorize"' in page.text, "the consent page did not render")
    fields = {name: unescape(value) for name, value in HIDDEN_INPUT.findall(page.text)}
    fields["decision"] = "authorize"
    return run.http.post(urljoin(link, "/oauth2/consent"), data=fields, timeout=20)


def demo(run: Running) -> None:
    if run.emulator is None or run.creds is None:
        raise DemoFailed("the scripted demo needs the emulator")
    say("\n1. The ISV creates an authorization link for its customer 'demo-shop-1' (POST /links, IAM in AWS)")
    created = run.http.post(f"{run.url}/links", json={"ref": "demo-shop-1"}, timeout=10)
    check(created.status_code == 201, f"POST /links answered {created.status_code}")
    link = created.json()["url"]
    say(f"   {link[:110]}...")

    say("\n2. The merchant opens it, consents on Alipay's page, and Alipay redirects back to /callback")
    landed = consent_in_emulator(run, link)
    check(
        landed.status_code == 200 and 'data-outcome="authorized"' in landed.text,
        "the callback did not succeed",
    )
    say(f"   {landed.status_code} {landed.url.split('?')[0]} -> '授权成功 · Authorization complete'")
    again = run.http.get(landed.url, timeout=20)
    check('data-outcome="authorized"' in again.text, "a reload did not show the same result")
    say("   a reload shows the same page, without a second exchange")

    container = run.container()
    [record] = [r for r in _records(run)]
    app_id = record["auth_app_id"]["S"]
    say("\n3. Stored: encrypted token pair in DynamoDB (AES-GCM, keys from KMS), due for rotation later")
    say(
        f"   merchant app {app_id}: status {record['status']['S']}, version {record['version']['N']}, "
        f"ref {record['isv_ref']['S']}, due {time.strftime('%Y-%m-%d', time.gmtime(float(record['due_at']['N'])))}"
    )
    token = run.http.get(f"{run.url}/tokens/{app_id}", timeout=10).json()
    check(run.emulator.token_valid(token["app_auth_token"]), "the stored token is not valid at Alipay")
    say(
        f"   GET /tokens/{app_id} (IAM in AWS) -> app_auth_token {mask(token['app_auth_token'])}, live at Alipay"
    )
    check(run.emulator.wait_for_notifications(), "Alipay's authorization notification was not answered")
    check(all(d.accepted for d in run.emulator.notifications), "a notification was not answered 'success'")
    say("   Alipay's open_app_auth_notify arrived at /notify: verified, answered 'success', same token")

    say("\n4. Rotation: the refresher renews the pair (lease, refresh, one fenced write)")
    outcome = container.refresher.refresh_one(app_id, force=True)
    after = run.http.get(f"{run.url}/tokens/{app_id}", timeout=10).json()
    check(outcome == "refreshed" and after["version"] == token["version"] + 1, f"refresh ended {outcome}")
    check(run.emulator.token_valid(after["app_auth_token"]), "the rotated token is not valid")
    say(
        f"   {outcome}: version {after['version']}, app_auth_token {mask(after['app_auth_token'])}; the old pair "
        "stays valid through its grace window"
    )

    say("\n5. The merchant cancels the authorization on Alipay; the cancellation message arrives at /notify")
    sent = len(run.emulator.notifications)
    run.emulator.revoke(run.creds.app_id, app_id)
    check(
        run.emulator.wait_for_notifications() and len(run.emulator.notifications) > sent,
        "no cancellation message",
    )
    check(run.emulator.notifications[-1].accepted, "the cancellation message was not answered 'success'")
    revoked = run.http.get(f"{run.url}/tokens/{app_id}", timeout=10)
    check(revoked.status_code == 409, "the token is still served after the cancellation")
    say(f"   GET /tokens/{app_id} -> {revoked.status_code} {revoked.json()['code']}: it must authorize again")

    say("\n6. The ISV brings two merchants it already holds tokens for (alipay-auth tokens import FILE)")
    imported, received = import_held_merchants(run)
    say(
        f"   {imported.counts.get('imported', 0)} imported after Alipay's query said valid; refused: "
        + "; ".join(f"line {row['line']} {row['auth_app_id']} ({row['reason']})" for row in imported.invalid)
    )
    say("   the events the ISV's services receive on the stack's bus (an EventBridge rule to a queue):")
    for event in received:
        detail = event["detail"]
        say(
            f"   - {event['detail-type']}: {detail['auth_app_id']}, ref {detail.get('isv_ref')}, via {detail.get('via')}"
        )

    say(
        "\nDone: link, consent, callback, storage, rotation, cancellation and import all worked on the local"
        " stack. Next: `make serve` keeps it running and prints a link to open in your browser."
    )


def import_held_merchants(run: Running) -> tuple[ImportReport, list[dict[str, Any]]]:
    """Two rows an ISV might hold: one Alipay still honours, one it does not know."""
    if run.emulator is None or run.creds is None:
        raise DemoFailed("the import step needs the emulator")
    queue = observe_events(run.aws, run.env["EVENT_BUS_NAME"], name="demo-isv-service")
    code = run.emulator.authority.issue_code(run.creds.app_id, ["2021000000000801"])
    [held] = run.emulator.authority.exchange_code(run.creds.app_id, code)
    rows = [
        {
            "auth_app_id": held.auth_app_id,
            "app_auth_token": held.app_auth_token,
            "app_refresh_token": held.app_refresh_token,
            "isv_ref": "existing-shop-1",
        },
        {
            "auth_app_id": "2021000000000802",
            "app_auth_token": "202612BB" + secrets.token_hex(16),
            "app_refresh_token": "202612BB" + secrets.token_hex(16),
            "isv_ref": "existing-shop-2",
        },
    ]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tokens.jsonl"
        path.touch(mode=0o600)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        report = Operations(run.container()).import_file(path)
    check(
        report.counts.get("imported") == 1 and len(report.invalid) == 1,
        f"the import ended {report.as_dict()}",
    )
    sqs = run.aws.client("sqs")
    received: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            received.append(json.loads(message["Body"]))
    check(
        [e["detail"]["auth_app_id"] for e in received] == [held.auth_app_id],
        "the import's event did not reach the bus",
    )
    return report, received


def _records(run: Running) -> list[dict[str, Any]]:
    dynamodb = run.aws.client("dynamodb")
    items = dynamodb.scan(TableName=run.env["TABLE_NAME"])["Items"]
    return [i for i in items if i["sk"]["S"] == "TOKEN"]


def serve(run: Running) -> None:
    created = run.http.post(f"{run.url}/links", json={"ref": "browser-demo"}, timeout=10).json()
    say("\nReady. Open this link in a browser to authorize as a merchant:")
    say(f"\n  {run.url}/authorize?state={created['url'].split('state=')[1]}\n")
    say(f'More links: curl -X POST {run.url}/links -d \'{{"ref": "my-customer"}}\'')
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    # Names, ARNs and endpoints (no secret) for the operator CLI: `alipay-auth --local ...`.
    local_file = named_local_stack_file() or ROOT / LOCAL_STACK_FILE
    write_local_stack_file(
        local_file,
        environment=run.env,
        endpoints={"default": run.aws.endpoints.moto, "dynamodb": run.aws.endpoints.dynamodb},
        region=REGION,
        api_url=run.url,
    )
    say(f"Operator CLI: .venv/bin/alipay-auth --local tokens list  (reads {local_file})")
    say("Stop with Ctrl-C.")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            stopped.wait()
    finally:
        local_file.unlink(missing_ok=True)


def configure_logging(*, debug: bool) -> None:
    """Our own loggers at DEBUG with --debug; libraries stay at WARNING, since at DEBUG botocore
    logs the secret values it fetches and urllib3 the callback URLs with their codes."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", force=True)
    for name in ("app_auth", "alipay_v3", "sandbox"):
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)


def config_problem(path: Path) -> str | None:
    """Why an Alipay configuration file cannot be used, in one line (None: it loads)."""
    try:
        AlipayConfig.from_mapping(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"not JSON ({exc}); README.md, 'The Alipay configuration', shows its fields"
    except ConfigError as exc:
        return exc.message
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["demo", "serve"], nargs="?", default="demo")
    parser.add_argument("--config", type=Path, help="an Alipay configuration JSON (default: the emulator)")
    parser.add_argument("--debug", action="store_true", help="log at DEBUG (secrets stay out of logs)")
    args = parser.parse_args(argv)
    configure_logging(debug=args.debug)
    if args.mode == "demo" and args.config:
        parser.error(
            "the scripted demo drives the emulator's consent page; use 'serve --config FILE' with a real gateway"
        )
    if args.config and (problem := config_problem(args.config)):
        parser.error(f"{args.config}: {problem}")  # before any stand-in starts: one line, exit 2
    try:
        with running_stack(args.config, log_level="DEBUG" if args.debug else "WARNING") as run:
            if args.mode == "demo":
                demo(run)
            else:
                serve(run)
    except DemoFailed as exc:
        say(f"\nFAILED: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
