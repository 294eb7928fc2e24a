"""``alipay-v3``: exit codes, messages without secrets, and ``call`` against the emulator."""

from __future__ import annotations

import datetime as dt
import io
import json
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from alipay_v3 import TOKEN_PATH, AlipayClient, AlipayConfig, TokenApi
from alipay_v3.cli import (
    EXIT_API,
    EXIT_CONFIG,
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_TOKEN_INVALID,
    EXIT_TRANSPORT,
    EXIT_VERIFY,
    main,
)
from sandbox.credentials import DevCredentials, private_pem, public_pem
from sandbox.emulator import Emulator, Fault

SCRIPT = Path(sys.executable).with_name("alipay-v3")  # the console script of the editable install
QUERY_PATH = TOKEN_PATH + "/query"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_config(path: Path, data: dict) -> str:
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def assert_no_secrets(creds: DevCredentials, text: str, *values: str) -> None:
    """No line of the private key (either encoding), no AES key, no code or token in the output."""
    for pkcs8 in (False, True):
        for line in private_pem(creds.app_key, pkcs8=pkcs8).splitlines():
            if "-----" not in line:
                assert line not in text
    assert creds.encrypt_key not in text
    for value in values:
        assert value not in text


def issued_tokens(emulator: Emulator) -> list[str]:
    """Every app_auth_token and app_refresh_token the emulator handed out (read from its store)."""
    authority = emulator.authority
    return [*authority._by_access_token, *authority._by_refresh_token]


def exchange_body(code: str) -> str:
    return json.dumps({"grant_type": "authorization_code", "code": code})


# --- help, version, keys check ------------------------------------------------------------------


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("alipay-v3 ")
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert "examples:" in out and "alipay-v3 keys check --config" in out
    for exit_code in range(7):
        assert f"\n  {exit_code}  " in out
    with pytest.raises(SystemExit):
        main(["call", "--help"])
    assert "exit codes:" in capsys.readouterr().out


def test_no_command_prints_usage(capsys):
    code, _, err = run(capsys)
    assert code == EXIT_CONFIG and "usage:" in err
    code, _, err = run(capsys, "keys")
    assert code == EXIT_CONFIG and "check" in err


def test_keys_check_good(creds, tmp_path, capsys):
    path = write_config(tmp_path / "alipay.json", creds.client_config("production", cert_mode=True, aes=True))
    code, out, err = run(capsys, "keys", "check", "--config", path)
    assert code == EXIT_OK and not err
    lines = out.strip().splitlines()
    assert all(line.split()[0] in ("OK", "WARN", "ERROR") for line in lines[:-1])
    assert any("[root-cert-sn]" in line for line in lines)
    assert_no_secrets(creds, out)

    code, out, _ = run(capsys, "keys", "check", "--config", path, "--json")
    report = json.loads(out)
    assert code == EXIT_OK and report["ok"] is True and report["errors"] == 0
    assert {"app-cert", "alipay-cert", "aes-key"} <= {f["code"] for f in report["findings"]}


def test_keys_check_explains_a_config_that_does_not_load(creds, tmp_path, capsys):
    data = creds.client_config("production") | {"alipay_public_key": public_pem(creds.app_key)}
    path = write_config(tmp_path / "alipay.json", data)
    code, out, _ = run(capsys, "keys", "check", "--config", path, "--json")
    codes = {f["code"] for f in json.loads(out)["findings"] if f["level"] == "ERROR"}
    assert code == EXIT_FINDINGS and {"config-rejected", "alipay-key-is-app-key"} <= codes
    assert_no_secrets(creds, out)

    code, out, _ = run(capsys, "keys", "check", "--config", path)
    assert code == EXIT_FINDINGS and "ERROR [alipay-key-is-app-key]" in out


def test_keys_check_file_problems(tmp_path, capsys):
    code, _, err = run(capsys, "keys", "check", "--config", str(tmp_path / "missing.json"))
    assert code == EXIT_CONFIG and "cannot read" in err and "Traceback" not in err
    (tmp_path / "bad.json").write_text("{not json")
    code, out, _ = run(capsys, "keys", "check", "--config", str(tmp_path / "bad.json"))
    assert code == EXIT_FINDINGS and "[config-not-json]" in out


# --- call: failures before any request ----------------------------------------------------------


@pytest.fixture
def key_config(creds, tmp_path) -> str:
    """A configuration whose gateway is a closed port: nothing in these tests may reach a server."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return write_config(tmp_path / "alipay.json", creds.client_config(f"http://127.0.0.1:{port}"))


@pytest.mark.parametrize(
    ("data", "fragment"),
    [("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object"), ("@/no/such/file", "cannot read")],
)
def test_call_bad_data(key_config, capsys, data, fragment):
    code, out, err = run(capsys, "call", "POST", TOKEN_PATH, "--config", key_config, "--data", data)
    assert code == EXIT_CONFIG and fragment in err and not out


def test_call_bad_config(creds, tmp_path, capsys):
    data = creds.client_config("production") | {"private_key": public_pem(creds.app_key)}
    path = write_config(tmp_path / "alipay.json", data)
    code, _, err = run(capsys, "call", "POST", TOKEN_PATH, "--config", path, "--data", "{}")
    assert code == EXIT_CONFIG
    assert "configuration problem" in err and "keys check" in err and "Traceback" not in err
    code, _, err = run(capsys, "call", "POST", TOKEN_PATH, "--config", str(tmp_path / "none.json"))
    assert code == EXIT_CONFIG and "cannot read configuration file" in err


def test_call_usage_problems(key_config, capsys):
    code, _, err = run(
        capsys, "call", "POST", TOKEN_PATH, "--config", key_config, "--encrypt", "--data", "{}"
    )
    assert code == EXIT_CONFIG and "encrypt_key" in err
    code, _, err = run(capsys, "call", "GET", "v3/no/slash", "--config", key_config)
    assert code == EXIT_CONFIG and "must start with '/'" in err
    code, _, err = run(capsys, "call", "GET", QUERY_PATH, "--config", key_config, "--query", "novalue")
    assert code == EXIT_CONFIG and "NAME=VALUE" in err


def test_usage_errors_never_echo_the_app_auth_token(key_config, capsys):
    token = "202611BBsecretTokenValue0123456789abcdef"
    with pytest.raises(SystemExit) as info:
        main(["call", "GET", QUERY_PATH, "--config", key_config, "--app-auth-token", token, token + "x"])
    err = capsys.readouterr().err
    assert info.value.code == EXIT_CONFIG and "unrecognized arguments" in err and token not in err


def test_call_connection_refused(creds, key_config, capsys):
    code = "CODEnotsent0123456789abcdefghijkl"
    exit_code, out, err = run(
        capsys, "call", "POST", TOKEN_PATH, "--config", key_config, "--data", exchange_body(code)
    )
    assert exit_code == EXIT_TRANSPORT and not out
    assert "the request was not sent" in err and "safe to try again" in err and "Traceback" not in err
    assert_no_secrets(creds, out + err, code)


# --- call against the emulator ------------------------------------------------------------------


@pytest.fixture
def emulator(creds):
    emu = Emulator()
    emu.register_app(creds)
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def configs(creds, emulator, tmp_path) -> dict[str, str]:
    return {
        "key": write_config(tmp_path / "key.json", creds.client_config(emulator.base_url)),
        "cert": write_config(
            tmp_path / "cert.json", creds.client_config(emulator.base_url, cert_mode=True, aes=True)
        ),
    }


def test_call_exchanges_a_code_and_masks_the_tokens(creds, emulator, configs, tmp_path, capsys):
    code = emulator.issue_code(creds.app_id)
    saved = tmp_path / "grant.json"
    saved.write_text("an older file, readable by all")
    saved.chmod(0o644)
    exit_code, out, err = run(
        capsys,
        "call",
        "POST",
        TOKEN_PATH,
        "--config",
        configs["key"],
        "--data",
        exchange_body(code),
        "--output",
        str(saved),
    )
    assert exit_code == EXIT_OK, err
    shown = json.loads(out)
    grant = json.loads(saved.read_text())
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert emulator.token_valid(grant["app_auth_token"])
    assert shown["auth_app_id"] == grant["auth_app_id"] and shown["re_expires_in"] == grant["re_expires_in"]
    assert shown["app_auth_token"].endswith(f"…({len(grant['app_auth_token'])})")
    assert_no_secrets(creds, out + err, code, grant["app_auth_token"], grant["app_refresh_token"])

    # The same code again: Alipay's signed business error, with everything needed to look it up.
    exit_code, out, err = run(
        capsys, "call", "POST", TOKEN_PATH, "--config", configs["key"], "--data", exchange_body(code)
    )
    assert exit_code == EXIT_API and not out
    assert "AUTH_CODE_NOT_VALID" in err and "HTTP 400" in err and "trace id " in err
    assert "https://open.alipay.com/api/errCheck?traceId=" in err and "signed by Alipay" in err
    assert "authorize the app again" in err
    assert_no_secrets(creds, out + err, code, grant["app_auth_token"], grant["app_refresh_token"])


def test_call_in_certificate_mode_with_aes_and_a_merchant_token(creds, emulator, configs, capsys):
    code = emulator.issue_code(creds.app_id)
    exit_code, out, err = run(
        capsys,
        "call",
        "POST",
        TOKEN_PATH,
        "--config",
        configs["cert"],
        "--encrypt",
        "--data",
        exchange_body(code),
    )
    assert exit_code == EXIT_OK, err
    assert "--output" in err  # says that the tokens were masked, and how to keep them
    assert json.loads(out)["auth_app_id"]
    tokens = issued_tokens(emulator)
    assert len(tokens) == 2
    assert_no_secrets(creds, out + err, code, *tokens)


def test_call_on_behalf_of_a_merchant(creds, emulator, configs, tmp_path, capsys):
    code = emulator.issue_code(creds.app_id)
    saved = tmp_path / "grant.json"
    assert (
        run(
            capsys,
            "call",
            "POST",
            TOKEN_PATH,
            "--config",
            configs["cert"],
            "--data",
            exchange_body(code),
            "--output",
            str(saved),
        )[0]
        == EXIT_OK
    )
    token = json.loads(saved.read_text())["app_auth_token"]
    exit_code, out, err = run(
        capsys,
        "call",
        "GET",
        QUERY_PATH,
        "--config",
        configs["cert"],
        "--encrypt",
        "--query",
        f"app_auth_token={token}",
        "--app-auth-token",
        token,
    )
    assert exit_code == EXIT_OK, err
    assert json.loads(out)["status"] == "valid"
    assert_no_secrets(creds, out + err, code, token)

    # A platform error answered to a call carrying the token: the message must not quote it.
    exit_code, out, err = run(
        capsys, "call", "GET", TOKEN_PATH + "/nowhere", "--config", configs["cert"], "--app-auth-token", token
    )
    assert exit_code == EXIT_API and "not-found" in err and "NOT signed" in err
    assert_no_secrets(creds, out + err, code, token)


def test_call_with_a_private_key_alipay_does_not_know(creds, emulator, tmp_path, capsys):
    stranger = DevCredentials.generate(creds.app_id)
    path = write_config(tmp_path / "stranger.json", stranger.client_config(emulator.base_url))
    code = emulator.issue_code(creds.app_id)
    exit_code, out, err = run(
        capsys, "call", "POST", TOKEN_PATH, "--config", path, "--data", exchange_body(code)
    )
    assert exit_code == EXIT_API and "invalid-signature" in err and "NOT signed" in err
    assert "private_key" in err
    assert_no_secrets(stranger, out + err, code)


@pytest.mark.parametrize("fault", [Fault.OTHER_KEY, Fault.TAMPER_BODY, Fault.WRONG_SN])
def test_call_response_that_fails_verification(creds, emulator, configs, capsys, fault):
    emulator.inject(fault)
    code = emulator.issue_code(creds.app_id)
    exit_code, out, err = run(
        capsys, "call", "POST", TOKEN_PATH, "--config", configs["cert"], "--data", exchange_body(code)
    )
    assert exit_code == EXIT_VERIFY and not out
    assert "alipay_cert" in err and "may have processed the request" in err
    assert_no_secrets(creds, out + err, code)


def test_call_dropped_after_processing(creds, emulator, configs, capsys):
    emulator.inject(Fault.DROP_AFTER_PROCESSING)
    code = emulator.issue_code(creds.app_id)
    exit_code, out, err = run(
        capsys, "call", "POST", TOKEN_PATH, "--config", configs["key"], "--data", exchange_body(code)
    )
    assert exit_code == EXIT_TRANSPORT and not out
    assert "may have processed it" in err and "check the outcome before repeating" in err
    assert_no_secrets(creds, out + err, code)


def test_call_timeout(creds, emulator, configs, capsys):
    emulator.inject(Fault.LATENCY, delay=1.5)
    code = emulator.issue_code(creds.app_id)
    exit_code, _, err = run(
        capsys,
        "call",
        "POST",
        TOKEN_PATH,
        "--config",
        configs["key"],
        "--timeout",
        "0.3",
        "--data",
        exchange_body(code),
    )
    assert exit_code == EXIT_TRANSPORT and "Timeout" in err and "may have processed it" in err


# --- the installed console script ---------------------------------------------------------------


def test_console_script_against_the_emulator(creds, emulator, configs):
    assert SCRIPT.exists(), "the package must be installed (pip install -e .) for the alipay-v3 script"
    version = subprocess.run(
        [str(SCRIPT), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert version.returncode == 0 and version.stdout.startswith("alipay-v3 ")

    code = emulator.issue_code(creds.app_id)
    result = subprocess.run(
        [
            str(SCRIPT),
            "call",
            "POST",
            TOKEN_PATH,
            "--config",
            configs["cert"],
            "--encrypt",
            "--data",
            exchange_body(code),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_OK, result.stderr
    assert json.loads(result.stdout)["auth_app_id"]
    assert_no_secrets(creds, result.stdout + result.stderr, code, *issued_tokens(emulator))

    again = subprocess.run(
        [str(SCRIPT), "call", "POST", TOKEN_PATH, "--config", configs["cert"], "--data", exchange_body(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == EXIT_API and "AUTH_CODE_NOT_VALID" in again.stderr
    assert "Traceback" not in again.stderr
    assert_no_secrets(creds, again.stdout + again.stderr, code)


# --- tokens query -------------------------------------------------------------------------------


def exchanged_token(creds, emulator, merchant_app_id="2021000000000301") -> str:
    code = emulator.issue_code(creds.app_id, [merchant_app_id], "2088000000000301")
    return (
        TokenApi(AlipayClient(AlipayConfig.from_mapping(creds.client_config(emulator.base_url))))
        .exchange_code(code)
        .primary.app_auth_token
    )


def test_tokens_query_of_a_valid_token_as_a_table_and_as_json(creds, emulator, configs, capsys):
    token = exchanged_token(creds, emulator)
    exit_code, out, err = run(
        capsys, "tokens", "query", "--config", configs["key"], "--app-auth-token", token
    )
    assert exit_code == EXIT_OK, err
    lines = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert lines["status"] == "valid" and lines["auth_app_id"] == "2021000000000301"
    assert lines["is_by_app_auth"] == "true" and "alipay.trade.pay" in lines["auth_methods"]
    assert lines["auth_start"].endswith("+08:00")
    assert_no_secrets(creds, out + err, token)

    exit_code, out, err = run(
        capsys,
        "tokens",
        "query",
        "--config",
        configs["cert"],
        "--encrypt",
        "--app-auth-token",
        token,
        "--json",
    )
    assert exit_code == EXIT_OK, err
    shown = json.loads(out)
    assert (shown["status"], shown["valid"], shown["user_id"]) == ("valid", True, "2088000000000301")
    assert shown["app_auth_token"] == f"{token[:4]}…({len(token)})"
    start = dt.datetime.fromisoformat(shown["auth_start"])
    assert start.utcoffset() == dt.timedelta(hours=8)
    assert dt.datetime.fromisoformat(shown["auth_end"]) - start == dt.timedelta(days=365)
    assert_no_secrets(creds, out + err, token)


def test_tokens_query_of_an_invalid_token_exits_with_its_own_code(creds, emulator, configs, capsys):
    token = exchanged_token(creds, emulator)
    assert emulator.revoke(creds.app_id, "2021000000000301")
    exit_code, out, err = run(
        capsys, "tokens", "query", "--config", configs["key"], "--app-auth-token", token, "--json"
    )
    assert exit_code == EXIT_TOKEN_INVALID != EXIT_VERIFY
    assert json.loads(out)["status"] == "invalid" and not err
    assert_no_secrets(creds, out + err, token)


def test_tokens_query_reads_the_token_from_stdin(creds, emulator, configs, capsys, monkeypatch):
    token = exchanged_token(creds, emulator)
    monkeypatch.setattr(sys, "stdin", io.StringIO(token + "\n"))
    exit_code, out, err = run(capsys, "tokens", "query", "--config", configs["key"], "--app-auth-token", "-")
    assert exit_code == EXIT_OK, err
    assert_no_secrets(creds, out + err, token)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    exit_code, _, err = run(capsys, "tokens", "query", "--config", configs["key"], "--app-auth-token", "-")
    assert exit_code == EXIT_CONFIG and "stdin" in err


def test_tokens_query_of_a_token_alipay_never_issued(creds, emulator, configs, capsys):
    token = "202511BB" + "0" * 32
    exit_code, out, err = run(
        capsys, "tokens", "query", "--config", configs["key"], "--app-auth-token", token
    )
    assert exit_code == EXIT_API and not out
    assert "AUTH_TOKEN_NOT_EXISTED" in err and "signed by Alipay" in err and "authorize the app again" in err
    assert token not in err


def test_tokens_query_failures_before_and_without_an_answer(creds, key_config, capsys):
    token = "202511BBsecretTokenValue0123456789abcdef"
    exit_code, out, err = run(capsys, "tokens", "query", "--config", key_config, "--app-auth-token", token)
    assert exit_code == EXIT_TRANSPORT and not out and "Traceback" not in err
    assert token not in err
    exit_code, _, err = run(
        capsys, "tokens", "query", "--config", key_config, "--app-auth-token", "bad token!"
    )
    assert exit_code == EXIT_CONFIG and "nothing was sent" in err and "bad token!" not in err
    exit_code, _, err = run(
        capsys, "tokens", "query", "--config", key_config, "--encrypt", "--app-auth-token", token
    )
    assert exit_code == EXIT_CONFIG and "encrypt_key" in err
    code, _, err = run(capsys, "tokens")
    assert code == EXIT_CONFIG and "query" in err
