"""``alipay-auth`` against the local stack (DynamoDB Local, moto, the emulator, the real callback).

Each command runs in-process through ``main(argv)`` with ``--local-file``: the same file ``make
serve`` writes, pointing at this test's stack, so the CLI builds its own container from it exactly
as an operator's would. One test runs the installed script as a real process.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from app_auth.container import build_container, set_container
from app_auth.links import CONSENT_PAGES
from app_auth.local_stack import LOCAL_STACK_FILE_VARIABLE, write_local_stack_file
from app_auth.operations import Operations
from app_auth.operator_cli import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_NOT_NOW,
    EXIT_OK,
    EXIT_USAGE,
    main,
)
from sandbox.aws_standins import OVERRIDDEN_VARIABLES, REGION
from sandbox.credentials import DevCredentials
from sandbox.seed import seed_tokens

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MERCHANT = "2021000000000701"


def write_stack_file(stack, path: Path, **more: str) -> Path:
    """The file `make serve` writes, for ``stack`` (this process stands in for `serve`); ``more``
    adds to the functions' environment."""
    settings = stack.container.settings
    environment = {
        "TABLE_NAME": settings.table_name,
        "TOKEN_STORE_ID": settings.token_store_id,
        "SEALED_TABLE_NAME": settings.sealed_table_name,
        "SECRET_ARN": settings.alipay_secret_id,
        "STATE_SECRET_ARN": settings.state_secret_id,
        "TOKEN_KMS_KEY_ID": settings.kms_key_id,
        "EVENT_BUS_NAME": settings.event_bus_name,
        "REPLAY_QUEUE_URL": settings.replay_queue_url or "",
        "ALIPAY_ENVIRONMENT": settings.alipay_environment,
        "CALLBACK_URL": settings.callback_url or "",
        **more,
    }
    endpoints = stack.aws.endpoints
    write_local_stack_file(
        path,
        environment=environment,
        endpoints={"default": endpoints.moto, "dynamodb": endpoints.dynamodb},
        region=REGION,
        api_url=stack.url,
    )
    return path


@pytest.fixture
def local_file(stack, tmp_path: Path) -> Path:
    return write_stack_file(stack, tmp_path / ".local-stack" / "env.json")


class Cli:
    def __init__(self, local_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.local_file = local_file
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(["--local-file", str(self.local_file), *argv], environ={})
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    def json(self, *argv: str) -> tuple[int, Any]:
        code, out, err = self(*argv, "--json")
        assert out, (code, err)
        return code, json.loads(out)


@pytest.fixture
def cli(local_file: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(local_file, capsys)


def authorize(stack, merchant: str = MERCHANT, ref: str = "shop-7") -> None:
    link = stack.create_link(ref)
    assert stack.callback(stack.consent(link, merchant_app_ids=[merchant])).status_code == 200
    stack.published_events()


def current_token(stack, merchant: str = MERCHANT) -> str:
    return stack.container.store.open_current(stack.container.store.get_token(merchant)).app_auth_token


def test_tokens_list_and_show_report_metadata_and_mask_the_tokens(stack, cli):
    authorize(stack)
    authorize(stack, "2021000000000702", ref="shop-8")
    token = current_token(stack)

    code, rows = cli.json("tokens", "list")
    assert code == EXIT_OK
    assert {(r["auth_app_id"], r["status"], r["isv_ref"]) for r in rows} == {
        (MERCHANT, "active", "shop-7"),
        ("2021000000000702", "active", "shop-8"),
    }
    assert all(r["obtained_at"].endswith("Z") and r["due_at"] > r["obtained_at"] for r in rows)

    code, out, err = cli("tokens", "list")
    assert code == EXIT_OK and out.splitlines()[0].split()[:3] == ["AUTH_APP_ID", "STATUS", "REF"]
    assert MERCHANT in out and "shop-8" in out and "2 authorization(s) read" in err

    code, shown = cli.json("tokens", "show", MERCHANT)
    assert code == EXIT_OK and shown["version"] == 1 and shown["user_id"]
    assert shown["app_auth_token"].startswith(token[:4]) and str(len(token)) in shown["app_auth_token"]
    code, out, err = cli("tokens", "show", MERCHANT)
    assert code == EXIT_OK and "app_refresh_token" in out
    assert token not in out + err and token not in json.dumps(shown)

    code, rows = cli.json("tokens", "list", "--status", "revoked")
    assert code == EXIT_OK and rows == []


def test_show_of_an_unknown_app_exits_3(cli):
    code, out, err = cli("tokens", "show", "2021000000009999")
    assert code == EXIT_NOT_FOUND and out == "" and "no authorization stored" in err
    assert "Traceback" not in err


def test_refresh_rotates_now_and_the_new_token_is_live(stack, cli):
    authorize(stack)
    before = current_token(stack)
    code, out, err = cli("tokens", "refresh", MERCHANT)
    assert code == EXIT_OK and out.startswith("refreshed: version 1 -> 2"), out
    assert "refreshing" in err
    after = current_token(stack)
    assert after != before and stack.emulator.token_valid(after)
    assert stack.emulator.refresh_count(MERCHANT) == 1
    assert [e["detail-type"] for e in stack.published_events()] == ["Token Refreshed"]
    assert after not in out + err and before not in out + err

    code, result = cli.json("tokens", "refresh", MERCHANT, "--quiet")
    assert code == EXIT_OK and result["outcome"] == "refreshed" and result["after"]["version"] == 3


def test_refresh_of_a_grant_cancelled_at_alipay_exits_1_and_asks_for_reauthorization(stack, cli):
    authorize(stack)
    # Cancelled on Alipay's side (the notification aside): Alipay refuses the refresh token for good.
    stack.emulator.revoke(stack.creds.app_id, MERCHANT)
    code, out, err = cli("tokens", "refresh", MERCHANT)
    assert code == EXIT_FAILED, (out, err)
    record = stack.container.store.get_token(MERCHANT)
    assert record.status == "needs_reauth" and record.last_error and record.last_error in out
    assert "authorize again" in out


def test_revoke_stops_the_token_and_refresh_then_exits_4(stack, cli):
    authorize(stack)
    code, out, _ = cli("tokens", "revoke", MERCHANT, "--reason", "contract ended")
    assert code == EXIT_OK and "revoked" in out
    record = stack.container.store.get_token(MERCHANT)
    assert record.status == "revoked" and record.last_error == "contract ended" and record.due_at is None
    [event] = stack.published_events()
    assert event["detail-type"] == "Authorization Revoked" and event["detail"]["via"] == "operator"
    assert stack.http.get(f"{stack.url}/tokens/{MERCHANT}", timeout=10).status_code == 409

    code, out, err = cli("tokens", "refresh", MERCHANT)
    assert code == EXIT_NOT_NOW and "revoked" in err and stack.emulator.refresh_count(MERCHANT) == 0
    assert cli("tokens", "revoke", "2021000000009999")[0] == EXIT_NOT_FOUND


def test_exchange_code_stores_the_tokens_like_the_callback(stack, cli, monkeypatch):
    code = stack.emulator.issue_code(stack.creds.app_id, merchant_app_ids=[MERCHANT])
    exit_code, out, err = cli("exchange-code", code, "--ref", "by-hand-1")
    assert exit_code == EXIT_OK and out.startswith(f"authorized and stored: {MERCHANT}"), (out, err)
    record = stack.container.store.get_token(MERCHANT)
    assert record.isv_ref == "by-hand-1" and record.status == "active"
    assert stack.emulator.token_valid(current_token(stack))
    [event] = stack.published_events()
    assert event["detail-type"] == "Authorization Granted" and event["detail"]["isv_ref"] == "by-hand-1"
    assert code not in out + err

    # The same code again: answered from its claim, never exchanged twice.
    exit_code, result = cli.json("exchange-code", code)
    assert exit_code == EXIT_OK and result["repeated"] is True and result["auth_app_ids"] == [MERCHANT]

    # From stdin, so that the code stays out of the shell's history.
    second = stack.emulator.issue_code(stack.creds.app_id, merchant_app_ids=["2021000000000703"])
    monkeypatch.setattr("sys.stdin", io.StringIO(second + "\n"))
    exit_code, result = cli.json("exchange-code", "-")
    assert exit_code == EXIT_OK and result["outcome"] == "authorized"
    assert result["auth_app_ids"] == ["2021000000000703"]


def test_exchange_of_an_unknown_code_exits_1_with_a_fresh_link(cli):
    exit_code, result = cli.json("exchange-code", "0123456789abcdef0123456789abcdef")
    assert exit_code == EXIT_FAILED and result["outcome"] == "code_spent" and result["fresh_link"]
    # In text: what happened, no dangling list, no log record, and the new link said to be new
    exit_code, out, err = cli("exchange-code", "fedcba9876543210fedcba9876543210")
    assert exit_code == EXIT_FAILED and out.strip() and ": -" not in out and "{" not in out + err
    assert "a new link was created for the merchant" in err
    exit_code, _, err = cli("exchange-code", "not a code")
    assert exit_code == EXIT_USAGE and "malformed" in err and "not a code" not in err


class FailingTokenWrites:
    """A DynamoDB client whose token writes fail, as during a throttling storm or an outage."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def put_item(self, **kwargs: Any) -> Any:
        if kwargs["Item"]["pk"]["S"].startswith("APP#"):
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                "PutItem",
            )
        return self._real.put_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_replay_stores_a_result_parked_after_a_storage_failure(stack, cli):
    def client(service: str) -> Any:
        made = stack.aws.client(service)
        return FailingTokenWrites(made) if service == "dynamodb" else made

    set_container(build_container(stack.container.settings, client=client, sleep=lambda _: None))
    link = stack.create_link("parked-1")
    page = stack.callback(stack.consent(link, merchant_app_ids=[MERCHANT]))
    set_container(stack.container)
    assert page.status_code == 202 and 'data-outcome="parked"' in page.text, page.status_code
    assert not [i for i in stack.table_items() if i["pk"]["S"] == f"APP#{MERCHANT}"]

    code, result = cli.json("replay")
    assert code == EXIT_OK and result == {"messages": 1, "replayed": [MERCHANT], "skipped": [], "failed": 0}
    record = stack.container.store.get_token(MERCHANT)
    assert record.isv_ref == "parked-1" and record.status == "active"
    assert stack.emulator.token_valid(current_token(stack))
    [event] = stack.published_events()
    assert event["detail-type"] == "Authorization Granted" and event["detail"]["via"] == "replay"

    code, out, _ = cli("replay")
    assert code == EXIT_OK and out.strip() == "nothing to replay"


def test_replay_keeps_a_newer_authorization(stack, cli):
    """Parked, then the merchant authorized again before the replay: the newer token stays."""
    operations = Operations(
        build_container(
            stack.container.settings,
            client=lambda s: (
                FailingTokenWrites(stack.aws.client(s)) if s == "dynamodb" else stack.aws.client(s)
            ),
        )
    )
    parked = operations.exchange_code(
        stack.emulator.issue_code(stack.creds.app_id, merchant_app_ids=[MERCHANT])
    )
    assert parked.outcome == "parked"
    authorize(stack)
    newer = current_token(stack)
    code, result = cli.json("replay")
    assert code == EXIT_OK and result["skipped"] == [MERCHANT] and result["replayed"] == []
    assert current_token(stack) == newer


def test_link_create_prints_a_link_that_leads_to_the_consent_page(stack, cli):
    code, out, err = cli("link", "create", "--ref", "customer-42")
    assert code == EXIT_OK and out.startswith(CONSENT_PAGES["sandbox"]) and "state=" in out
    assert "no QR code" in err and f"{stack.url}/authorize?state=" in err

    code, link = cli.json("link", "create")
    assert code == EXIT_OK and link["ref"] is None and link["expires_at"].endswith("Z")
    sent_on = stack.http.get(link["authorize_url"], allow_redirects=False, timeout=10)
    assert sent_on.status_code in (302, 303) and sent_on.headers["Location"] == link["url"]
    code, _, err = cli("link", "create", "--ref", "no spaces allowed")
    assert code == EXIT_USAGE and "ref must be" in err


def _write_keys(directory: Path, config: dict[str, str]) -> dict[str, Path]:
    files = {}
    for name, value in config.items():
        if name in ("app_id", "gateway"):
            continue
        files[name] = directory / f"{name}.txt"
        files[name].write_text(value, encoding="utf-8")
    return files


def _secret(stack) -> dict[str, Any]:
    secrets = stack.aws.client("secretsmanager")
    return json.loads(
        secrets.get_secret_value(SecretId=stack.container.settings.alipay_secret_id)["SecretString"]
    )


def test_keys_import_refuses_a_swapped_key_set_and_writes_nothing(stack, cli, tmp_path):
    before = _secret(stack)
    new = DevCredentials.generate()
    config = new.client_config(stack.emulator.base_url)
    # The console shows 应用公钥 and 支付宝公钥 side by side; here they were pasted the wrong way round.
    app_public = new.client_config(stack.emulator.base_url)["alipay_public_key"]
    files = _write_keys(tmp_path, config)
    files["alipay_public_key"].write_text(_app_public_pem(new), encoding="utf-8")
    (tmp_path / "app_public_key.txt").write_text(app_public, encoding="utf-8")
    code, out, err = import_keys(
        cli,
        new.app_id,
        files["private_key"],
        files["alipay_public_key"],
        "--app-public-key",
        str(tmp_path / "app_public_key.txt"),
    )
    assert code == EXIT_FAILED and "refused: public-keys-swapped" in err and "ERROR" in out
    assert "not changed" in err and _secret(stack) == before
    private_body = "".join(config["private_key"].splitlines()[1:-1])
    assert private_body[:40] not in out + err

    # The private key given as Alipay's public key: refused as well.
    code, _, err = import_keys(cli, new.app_id, files["private_key"], files["private_key"])
    assert code == EXIT_FAILED and "private-key-in-public-field" in err and _secret(stack) == before


def import_keys(cli, app_id: str, private_key, alipay_public_key, *more: str):
    """``alipay-auth keys import`` in public-key mode, with ``more`` arguments."""
    return cli(
        "keys",
        "import",
        "--app-id",
        app_id,
        "--private-key",
        str(private_key),
        "--alipay-public-key",
        str(alipay_public_key),
        *more,
    )


def _app_public_pem(creds: DevCredentials) -> str:
    from cryptography.hazmat.primitives import serialization

    return (
        creds.app_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_keys_import_writes_a_good_set_that_the_stack_then_uses(stack, cli, tmp_path):
    # A new key set for the same ISV app at the emulator (e.g. the operator switched to certificates).
    config = stack.creds.client_config(stack.emulator.base_url, cert_mode=True, aes=True)
    files = _write_keys(tmp_path, config)
    files["private_key"].write_text(
        "\ufeff" + config["private_key"], encoding="utf-8"
    )  # a BOM, as on Windows
    argv = ["keys", "import", "--app-id", stack.creds.app_id, "--private-key", str(files["private_key"])]
    for flag in ("app_cert", "alipay_cert", "alipay_root_cert", "encrypt_key"):
        argv += [f"--{flag.replace('_', '-')}", str(files[flag])]

    code, report = cli.json(*argv, "--dry-run")
    assert code == EXIT_OK and report["ok"] and report["written"] is False
    assert "app_cert" not in _secret(stack)

    code, out, err = cli(*argv)
    assert code == EXIT_OK and "0 error(s)" in out and "written to" in err
    stored = _secret(stack)
    assert stored["app_cert"] == config["app_cert"].strip() and stored["gateway"] == stack.emulator.base_url
    assert config["encrypt_key"] not in out + err

    # The CLI's next container reads the new set: an exchange in certificate mode works.
    code_value = stack.emulator.issue_code(stack.creds.app_id, merchant_app_ids=[MERCHANT])
    assert cli("exchange-code", code_value)[0] == EXIT_OK


def test_keys_import_needs_one_mode(cli, tmp_path):
    key = tmp_path / "k.txt"
    key.write_text("x", encoding="utf-8")
    code, _, err = cli("keys", "import", "--app-id", "2021000000000001", "--private-key", str(key))
    assert code == EXIT_USAGE and "--alipay-public-key" in err


def test_a_stale_local_file_is_refused(local_file, capsys):
    document = json.loads(local_file.read_text(encoding="utf-8"))
    dead = subprocess.Popen(["true"])  # a process that has surely exited: its pid is free
    dead.wait()
    document["pid"] = dead.pid
    local_file.write_text(json.dumps(document), encoding="utf-8")
    assert main(["--local-file", str(local_file), "tokens", "list"], environ={}) == EXIT_USAGE
    assert "not running any more" in capsys.readouterr().err


def test_make_serve_and_the_installed_script_find_each_other(tmp_path):
    """`python -m sandbox.demo serve` (make serve) writes the file; `.venv/bin/alipay-auth --local`, a
    real process, finds the stack through it; stopping serve removes the file."""
    local_file = tmp_path / "env.json"
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDDEN_VARIABLES and not k.startswith("AWS_")}
    env[LOCAL_STACK_FILE_VARIABLE] = str(local_file)
    serve = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "sandbox.demo", "serve"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not local_file.exists() and serve.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert local_file.exists(), "serve did not write its file"

        def cli(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(ROOT / ".venv" / "bin" / "alipay-auth"), "--local", *argv],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
                cwd=tmp_path,
                check=False,
            )

        created = cli("link", "create", "--ref", "from-a-shell", "--json")
        assert created.returncode == EXIT_OK, created.stderr
        link = json.loads(created.stdout)
        assert link["ref"] == "from-a-shell" and link["authorize_url"].startswith("http://127.0.0.1:")
        listed = cli("tokens", "list", "--json")
        assert listed.returncode == EXIT_OK and json.loads(listed.stdout) == [], listed.stderr
        missing = cli("tokens", "show", "2021000000009999")
        assert missing.returncode == EXIT_NOT_FOUND and missing.stdout == ""
        assert "Traceback" not in missing.stderr and "no authorization stored" in missing.stderr
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            output, _ = serve.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()
            output, _ = serve.communicate(timeout=10)
    assert serve.returncode == 0, output[-2000:]
    assert not local_file.exists()


def test_the_local_file_holds_no_secret(stack, local_file):
    text = local_file.read_text(encoding="utf-8")
    assert "SECRET_ACCESS_KEY" not in text and "PRIVATE KEY" not in text
    assert stack.creds.client_config(stack.emulator.base_url)["private_key"][40:80] not in text
    assert json.loads(text)["environment"]["TABLE_NAME"] == stack.container.settings.table_name


def test_authorizations_with_no_reference_are_listed_and_claimed(stack, cli):
    # Given one authorization from a link (shop-7) and one that came with no reference
    authorize(stack)
    seed_tokens(stack.emulator.authority, stack.container.store, stack.creds.app_id, ["2021000000000709"])
    # When the operator lists the unclaimed  Then only that one
    code, rows = cli.json("tokens", "list", "--unclaimed")
    assert code == EXIT_OK and [r["auth_app_id"] for r in rows] == ["2021000000000709"]
    # When it is claimed  Then it is tied, announced, and cannot be re-bound by a claim
    code, claimed = cli.json("tokens", "claim", "2021000000000709", "--ref", "shop-9")
    assert code == EXIT_OK and claimed["isv_ref"] == "shop-9"
    [event] = stack.published_events()
    assert (event["detail-type"], event["detail"]["isv_ref"]) == ("Authorization Reference Changed", "shop-9")
    code, _, err = cli("tokens", "claim", "2021000000000709", "--ref", "shop-x")
    assert code == EXIT_NOT_NOW and "shop-9" in err
    assert cli.json("tokens", "list", "--unclaimed") == (EXIT_OK, [])
    # And the customer's reference finds it (through the index), and only it
    code, rows = cli.json("tokens", "list", "--ref", "shop-9")
    assert code == EXIT_OK and [r["auth_app_id"] for r in rows] == ["2021000000000709"]
    assert cli.json("tokens", "list", "--ref", "shop-none") == (EXIT_OK, [])


def test_show_live_and_verify_ask_alipay_about_the_stored_token(stack, cli):
    # Given two authorizations, one of them cancelled at Alipay with no message reaching us
    authorize(stack)
    authorize(stack, "2021000000000702", ref="shop-8")
    assert stack.emulator.revoke(stack.creds.app_id, "2021000000000702")
    # When the operator looks at the first live  Then Alipay's answer is beside what is stored
    code, shown = cli.json("tokens", "show", MERCHANT, "--live")
    assert code == EXIT_OK and shown["live_status"] == "valid" and shown["live_auth_methods"]
    assert shown["checked_status"] == "valid"  # the callback asked once the grant was stored
    # When every token is verified  Then the cancelled one is found, marked and announced
    code, report = cli.json("tokens", "verify", "--all")
    assert code == EXIT_FAILED
    assert report == {"valid": [MERCHANT], "invalid": ["2021000000000702"]}
    assert stack.container.store.get_token("2021000000000702").status == "needs_reauth"
    assert [e["detail-type"] for e in stack.published_events()] == ["Reauthorization Needed"]
    assert stack.http.get(f"{stack.url}/tokens/2021000000000702", timeout=10).status_code == 409


def _held_by_the_isv(stack, auth_app_id):
    """An authorization the ISV got before this stack existed: granted at Alipay, stored elsewhere."""
    code = stack.emulator.authority.issue_code(stack.creds.app_id, [auth_app_id])
    [issued] = stack.emulator.authority.exchange_code(stack.creds.app_id, code)
    return {
        "auth_app_id": issued.auth_app_id,
        "app_auth_token": issued.app_auth_token,
        "app_refresh_token": issued.app_refresh_token,
        "user_id": issued.user_id,
        "re_expires_in": issued.re_expires_in,
        "obtained_at": time.time() - 86400,
    }


def test_tokens_import_brings_what_the_isv_holds_checked_with_alipay(stack, cli, tmp_path):
    # Given the ISV's export: two valid rows (one twice), one Alipay has replaced since, a malformed
    # line, and a token Alipay never issued
    stack.emulator.authority.grace_seconds = 0  # a replaced token stops working at once
    valid = [_held_by_the_isv(stack, "2021000000000781"), _held_by_the_isv(stack, "2021000000000782")]
    replaced = _held_by_the_isv(stack, "2021000000000783")
    _held_by_the_isv(stack, "2021000000000783")
    made_up = {**valid[0], "auth_app_id": "2021000000000784", "app_auth_token": "202511BB" + "7" * 32}
    rows = [{**valid[0], "isv_ref": "cust-1"}, valid[1], replaced, "{not json", made_up, valid[1]]
    path = tmp_path / "tokens.jsonl"
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8"
    )
    # When it is readable by others  Then it is refused, saying how to fix it
    path.chmod(0o644)
    code, _, err = cli("tokens", "import", str(path))
    assert code == EXIT_USAGE and "chmod 600" in err
    path.chmod(0o600)
    # When it is imported
    code, report = cli.json("tokens", "import", str(path))
    # Then the valid rows are served, the others reported by line, no token printed
    assert code == EXIT_FAILED
    assert report["counts"] == {"imported": 2, "invalid": 3, "already_stored": 1}
    assert {e["line"]: e["reason"] for e in report["invalid"]} == {
        3: "Alipay says the token is invalid",
        4: "not a JSON object",
        5: "Alipay holds no such token",
    }
    read = stack.http.get(f"{stack.url}/tokens/2021000000000781", timeout=10).json()
    assert read["app_auth_token"] == valid[0]["app_auth_token"] and read["isv_ref"] == "cust-1"
    assert stack.http.get(f"{stack.url}/tokens/2021000000000784", timeout=10).status_code == 404
    events = stack.published_events()
    assert [(e["detail-type"], e["detail"]["via"]) for e in events] == [
        ("Authorization Granted", "import")
    ] * 2
    assert valid[0]["app_auth_token"] not in json.dumps(report) + json.dumps(events)
    # And a second run changes nothing and asks Alipay only about the rows not stored
    calls = stack.emulator.requests_received
    code, again = cli.json("tokens", "import", str(path))
    assert again["counts"] == {"already_stored": 3, "invalid": 3}
    assert stack.emulator.requests_received - calls == 2  # the replaced and the made-up token


def test_export_then_import_round_trips(stack, cli, tmp_path):
    # Given two authorizations
    authorize(stack)
    authorize(stack, "2021000000000702", ref="shop-8")
    tokens = {app: current_token(stack, app) for app in (MERCHANT, "2021000000000702")}
    # When they are exported without and with their tokens
    bare, full = tmp_path / "bare.jsonl", tmp_path / "full.jsonl"
    assert cli("tokens", "export", "--output", str(bare))[0] == EXIT_OK
    assert cli("tokens", "export", "--output", str(full), "--include-secrets")[0] == EXIT_OK
    # Then each file is private, and only the one asked for holds tokens
    assert bare.stat().st_mode & 0o777 == full.stat().st_mode & 0o777 == 0o600
    assert not any(t in bare.read_text() for t in tokens.values())
    assert all(t in full.read_text() for t in tokens.values())
    assert [e["detail-type"] for e in stack.published_events()] == ["Authorization Exported"] * 2
    code, _, err = cli("tokens", "export", "--output", str(full))
    assert code == EXIT_USAGE and "exists" in err  # never overwrites
    # When the authorizations are gone from the table (a new stack) and the export is imported
    dynamodb = stack.aws.client("dynamodb")
    for app in tokens:
        dynamodb.delete_item(
            TableName=stack.container.settings.table_name,
            Key={"pk": {"S": f"APP#{app}"}, "sk": {"S": "TOKEN"}},
        )
    code, report = cli.json("tokens", "import", str(full))
    # Then every one is back, served with its reference
    assert code == EXIT_OK and report["counts"] == {"imported": 2}
    for app, token in tokens.items():
        read = stack.http.get(f"{stack.url}/tokens/{app}", timeout=10).json()
        assert read["app_auth_token"] == token
    assert stack.container.store.get_token("2021000000000702").isv_ref == "shop-8"


def test_small_frictions_a_new_operator_hit(stack, cli):
    authorize(stack)
    # A revocation said twice changes nothing the second time: reason and version stay
    assert cli("tokens", "revoke", MERCHANT, "--reason", "contract ended")[0] == EXIT_OK
    before = stack.container.store.get_token(MERCHANT)
    code, out, _ = cli("tokens", "revoke", MERCHANT, "--reason", "again")
    after = stack.container.store.get_token(MERCHANT)
    assert code == EXIT_OK and "revoked already (contract ended)" in out
    assert (after.version, after.last_error) == (before.version, "contract ended")
    assert [e["detail-type"] for e in stack.published_events()] == ["Authorization Revoked"]
    # Something that is no app id is a usage mistake (2), not a missing authorization (3)
    with pytest.raises(SystemExit) as refused:  # argparse's own exit, as from a shell
        cli("tokens", "show", "abc")
    assert refused.value.code == EXIT_USAGE
    # An unknown merchant app is said before anything claims to be calling Alipay
    code, _, err = cli("tokens", "refresh", "2021000000000799")
    assert code == EXIT_NOT_FOUND and "at Alipay" not in err


def test_an_import_killed_at_random_points_ends_with_every_row_stored_once(stack, tmp_path):
    # Given 2,000 authorizations the ISV holds, and a local stack file whose pace lets them through
    # quickly (the import goes at the stack's REFRESH_MAX_CALLS_PER_SECOND)
    apps = [f"20210000{n:08d}" for n in range(2000)]
    held = []
    for first in range(0, len(apps), 500):
        code = stack.emulator.authority.issue_code(stack.creds.app_id, apps[first : first + 500])
        held += stack.emulator.authority.exchange_code(stack.creds.app_id, code)
    rows = tmp_path / "tokens.jsonl"
    with rows.open("w", encoding="utf-8") as out:
        for token in held:
            fields = {k: v for k, v in dataclasses.asdict(token).items() if k != "expires_in"}
            out.write(json.dumps({**fields, "obtained_at": time.time() - 3600}) + "\n")
    rows.chmod(0o600)
    local = write_stack_file(stack, tmp_path / "env.json", REFRESH_MAX_CALLS_PER_SECOND="1000")
    command = [
        str(ROOT / ".venv" / "bin" / "alipay-auth"),
        "--local-file",
        str(local),
        "-q",
        "tokens",
        "import",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # When the import is killed three times at random points, then run to its end
    rng = random.Random(20261202)
    for _ in range(3):
        run = subprocess.Popen(
            [*command, str(rows)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(2.0, 5.0))  # after start-up, inside the import
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
    finished = subprocess.run(
        [*command, str(rows), "--json"], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    # Then every row is stored exactly once, with the token the row brought, and nothing is invalid
    assert finished.returncode == EXIT_OK, finished.stderr[-2000:]
    report = json.loads(finished.stdout)
    assert report["counts"].get("invalid", 0) == 0 and report["failed"] == []
    assert sum(report["counts"].values()) == 2000
    # The kills did interrupt it (some rows were stored before), and the last run resumed
    assert report["counts"].get("already_stored", 0) > 0 and report["counts"].get("imported", 0) > 0
    store = stack.container.store
    records = [r for r in store.list_tokens() if r.auth_app_id.startswith("20210000")]
    assert len(records) == 2000
    assert {r.version for r in records} == {1}
    by_app = {t.auth_app_id: t.app_auth_token for t in held}
    for record in rng.sample(records, 100):
        assert (
            store.open_current(store.get_token(record.auth_app_id)).app_auth_token
            == by_app[record.auth_app_id]
        )
    granted = [e for e in stack.published_events() if e["detail-type"] == "Authorization Granted"]
    assert len(granted) <= 2000  # a killed run may lose an event; none is sent twice
