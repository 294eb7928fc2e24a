"""alipay-auth without a stack: argument parsing, finding the stack, output formatting, exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from alipay_v3 import ConfigError, TransportError
from app_auth.errors import ConcurrentUpdate, EncryptionError, InvalidRequest, NotFound, StorageError
from app_auth.local_stack import find_local_stack_file, write_local_stack_file
from app_auth.operations import TokenView
from app_auth.operator_cli import (
    EXIT_AWS,
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_NOT_NOW,
    EXIT_USAGE,
    Failure,
    _explain,
    build_parser,
    format_time,
    keys_config,
    local_target,
    main,
    record_dict,
    render_details,
    render_table,
    stack_target,
    view_dict,
)
from app_auth.token_store import TokenRecord

CODE = "4f3e2d1c0b9a8f7e6d5c4b3a"


def record(**overrides: Any) -> TokenRecord:
    values: dict[str, Any] = {
        "auth_app_id": "2021000000000001",
        "status": "active",
        "version": 3,
        "isv_app_id": "2021000000000900",
        "user_id": "2088000000000001",
        "isv_ref": "shop-1",
        "obtained_at": 1_764_000_000.0,
        "re_expires_in": 31_536_000,
        "expires_in": 31_536_000,
        "due_at": 1_792_000_000.0,
        "authorized_at": 1_763_000_000.0,
        "updated_at": 1_764_000_000.5,
        "previous_valid_until": None,
        "last_error": None,
        "token_digest": "ab" * 16,
        "failures": 0,
        "refreshed_at": 1_764_000_000.0,
    }
    values.update(overrides)
    return TokenRecord(**values)


# -- parsing -------------------------------------------------------------------------------------


def test_options_go_before_or_after_the_command():
    parser = build_parser()
    before = parser.parse_args(["--local", "--json", "tokens", "show", "2021000000000099"])
    after = parser.parse_args(["tokens", "show", "2021000000000099", "--local", "--json", "-q"])
    for args in (before, after):
        assert args.local and args.json and args.app_id == "2021000000000099" and args.needs_stack
    assert after.quiet and not before.quiet
    assert parser.parse_args(["--stack", "prod", "replay"]).stack == "prod"
    assert parser.parse_args(["replay", "--stack", "prod"]).max_messages == 100


def test_a_group_without_its_command_prints_help_and_exits_2(capsys):
    assert main(["tokens"], environ={}) == EXIT_USAGE
    assert "list" in capsys.readouterr().err
    assert main([], environ={}) == EXIT_USAGE


@pytest.mark.parametrize(
    "argv",
    [
        ["tokens", "list", "--status", "gone"],
        ["tokens", "show"],
        ["replay", "--max-messages", "0"],
        ["nonsense"],
        ["keys", "import", "--private-key", "k.pem"],  # no --app-id
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv, environ={})
    assert stopped.value.code == EXIT_USAGE
    assert "usage: alipay-auth" in capsys.readouterr().err


def test_a_usage_error_never_quotes_the_code(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["exchange-code", CODE, CODE[::-1]], environ={})
    assert stopped.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err and CODE not in err and CODE[::-1] not in err


def test_without_a_stack_it_says_how_to_name_one(capsys):
    assert main(["tokens", "list"], environ={}) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--stack NAME" in err and "--local" in err and "TABLE_NAME" in err
    assert main(["--stack", "a", "--local", "tokens", "list"], environ={}) == EXIT_USAGE
    assert "not both" in capsys.readouterr().err


def test_the_exit_codes_are_documented_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for code in EXIT_CODES:
        assert f"\n{code:>3}  " in out
    assert "examples:" in out


# -- exit codes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "exit_code"),
    [
        (NotFound("no authorization stored for merchant app 1"), EXIT_NOT_FOUND),
        (InvalidRequest("merchant app 1 is revoked", code="not-active"), EXIT_NOT_NOW),
        (ConcurrentUpdate("lost"), EXIT_NOT_NOW),
        (InvalidRequest("ref must be ...", code="invalid-ref"), EXIT_USAGE),
        (StorageError("DynamoDB put_item failed"), EXIT_AWS),
        (EncryptionError("current of APP#1 failed its integrity check"), EXIT_AWS),
        (ConfigError("private_key is not an RSA key"), EXIT_USAGE),
        (TransportError("timed out", request_sent=True), EXIT_FAILED),
        (ClientError({"Error": {"Code": "AccessDeniedException"}}, "Scan"), EXIT_AWS),
        (EndpointConnectionError(endpoint_url="https://dynamodb"), EXIT_AWS),
    ],
)
def test_each_kind_of_failure_has_its_exit_code(error, exit_code):
    assert _explain(error)[0] == exit_code


def test_an_unexpected_error_names_its_type_only():
    code, message = _explain(RuntimeError(f"something with {CODE} inside"))
    assert code == EXIT_FAILED and "RuntimeError" in message and CODE not in message


def test_an_aws_error_is_one_line_without_a_stack_trace(capsys, monkeypatch):
    class Session:
        def __init__(self, **kwargs: Any) -> None:
            self.region_name = kwargs.get("region_name") or "ap-east-1"

        def client(self, service: str, **kwargs: Any) -> Any:
            return FakeCloudFormation(error="AccessDenied")

    assert main(["--stack", "prod", "tokens", "list"], environ={}, session_factory=Session) == EXIT_AWS
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "AccessDenied" in err and "Traceback" not in err  # progress + error


def test_a_stack_with_no_region_known_is_a_usage_error_that_says_how_to_give_one(capsys):
    class Session:
        region_name = None

        def __init__(self, **kwargs: Any) -> None:
            pass

        def client(self, service: str, **kwargs: Any) -> Any:
            raise AssertionError("no AWS call without a region")

    assert main(["--stack", "prod", "tokens", "list"], environ={}, session_factory=Session) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--region" in err and "AWS_REGION" in err and "Traceback" not in err


# -- finding the stack ---------------------------------------------------------------------------


class FakeCloudFormation:
    def __init__(self, *, error: str | None = None, outputs: dict[str, str] | None = None) -> None:
        self.error = error
        self.outputs = outputs or {}

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        if self.error:
            raise ClientError({"Error": {"Code": self.error, "Message": "x"}}, "DescribeStacks")
        return {
            "Stacks": [{"Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in self.outputs.items()]}]
        }

    def describe_stack_resource(self, StackName: str, LogicalResourceId: str) -> dict[str, Any]:
        assert LogicalResourceId == "CallbackFunction"
        return {"StackResourceDetail": {"PhysicalResourceId": f"{StackName}-callback"}}


class FakeLambda:
    def __init__(self, variables: dict[str, str] | None) -> None:
        self.variables = variables

    def get_function_configuration(self, FunctionName: str) -> dict[str, Any]:
        if self.variables is None:
            raise ClientError({"Error": {"Code": "AccessDeniedException"}}, "GetFunctionConfiguration")
        assert FunctionName.endswith("-callback")
        return {"Environment": {"Variables": self.variables}}


class FakeSession:
    def __init__(self, cloudformation: FakeCloudFormation, lambda_client: FakeLambda) -> None:
        self.clients = {"cloudformation": cloudformation, "lambda": lambda_client}

    def client(self, service: str, **kwargs: Any) -> Any:
        return self.clients.get(service, service)


OUTPUTS = {
    "TableName": "prod-tokens",
    "SecretArn": "arn:aws:secretsmanager:ap-east-1:1:secret:prod/alipay-AbCd",
    "StateSecretArn": "arn:aws:secretsmanager:ap-east-1:1:secret:prod/state-EfGh",
    "KmsKeyArn": "arn:aws:kms:ap-east-1:1:key/k",
    "EventBusName": "prod-events",
    "ReplayQueueUrl": "https://sqs.ap-east-1.amazonaws.com/1/prod-replay",
    "CallbackUrl": "https://abc.execute-api.ap-east-1.amazonaws.com/callback",
    "AuthorizeUrl": "https://abc.execute-api.ap-east-1.amazonaws.com/authorize",
}


def test_a_deployed_stack_is_read_from_its_outputs_and_the_functions_environment():
    said: list[str] = []
    variables = {"TABLE_NAME": "prod-tokens", "ALIPAY_ENVIRONMENT": "production", "REFRESH_LEAD_DAYS": "20"}
    target = stack_target(
        "prod", FakeSession(FakeCloudFormation(outputs=OUTPUTS), FakeLambda(variables)), said.append
    )
    settings = target.settings()
    assert settings.table_name == "prod-tokens" and settings.kms_key_id == OUTPUTS["KmsKeyArn"]
    assert settings.alipay_environment == "production" and settings.schedule.lead_seconds == 20 * 86400
    assert (
        settings.callback_url == OUTPUTS["CallbackUrl"]
        and settings.replay_queue_url == OUTPUTS["ReplayQueueUrl"]
    )
    assert target.authorize_url == OUTPUTS["AuthorizeUrl"] and said == ["reading stack prod ..."]


def test_without_access_to_the_function_the_outputs_suffice():
    said: list[str] = []
    target = stack_target(
        "prod", FakeSession(FakeCloudFormation(outputs=OUTPUTS), FakeLambda(None)), said.append
    )
    assert target.settings().table_name == "prod-tokens" and "AccessDeniedException" in said[-1]


def test_an_unknown_stack_is_not_found():
    session = FakeSession(FakeCloudFormation(error="ValidationError"), FakeLambda({}))
    with pytest.raises(Failure) as failed:
        stack_target("nope", session, lambda _: None)
    assert failed.value.exit_code == EXIT_NOT_FOUND and "no stack named nope" in failed.value.message


def test_outputs_without_the_resources_are_a_configuration_problem():
    target = stack_target("odd", FakeSession(FakeCloudFormation(outputs={}), FakeLambda({})), lambda _: None)
    with pytest.raises(Failure) as failed:
        target.settings()
    assert failed.value.exit_code == EXIT_USAGE and "TABLE_NAME" in failed.value.message


def test_the_local_stack_file_is_found_from_a_subdirectory_and_holds_no_credentials(tmp_path):
    path = tmp_path / ".local-stack" / "env.json"
    write_local_stack_file(
        path,
        environment={"TABLE_NAME": "t", "SECRET_ARN": "s", "AWS_SECRET_ACCESS_KEY": "hidden"},
        endpoints={"default": "http://127.0.0.1:1", "dynamodb": "http://127.0.0.1:2"},
        region="ap-east-1",
        api_url="http://127.0.0.1:3",
    )
    (tmp_path / "deep" / "er").mkdir(parents=True)
    assert find_local_stack_file(tmp_path / "deep" / "er") == path
    assert "hidden" not in path.read_text(encoding="utf-8")
    target = local_target(path)
    assert target.environment == {"TABLE_NAME": "t", "SECRET_ARN": "s"}
    assert target.authorize_url == "http://127.0.0.1:3/authorize"
    assert target.client("dynamodb").meta.endpoint_url == "http://127.0.0.1:2"
    assert target.client("sqs").meta.endpoint_url == "http://127.0.0.1:1"


@pytest.mark.parametrize("content", ["not json", json.dumps({"kind": "other"}), json.dumps([1])])
def test_a_broken_local_file_is_a_usage_error(tmp_path, content):
    path = tmp_path / "env.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(Failure) as failed:
        local_target(path)
    assert failed.value.exit_code == EXIT_USAGE and "not a local stack file" in failed.value.message


def test_a_missing_local_file_says_how_to_start_the_stack(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Failure) as failed:
        local_target(None)
    assert failed.value.exit_code == EXIT_USAGE and "make serve" in failed.value.message


# -- output --------------------------------------------------------------------------------------


def test_times_are_iso_utc():
    assert format_time(0) == "1970-01-01T00:00:00Z" and format_time(None) is None


def test_a_record_for_json_has_the_lifetimes_and_no_secret():
    shown = record_dict(record(last_error="REFRESH_TOKEN_TIME_OUT", failures=2))
    assert shown["obtained_at"] == format_time(1_764_000_000.0)
    assert shown["token_expires_at"] == format_time(1_764_000_000.0 + 31_536_000)
    assert shown["refreshed_at"] == format_time(1_764_000_000.0)
    assert shown["last_error"] == "REFRESH_TOKEN_TIME_OUT" and shown["failures"] == 2
    assert "token_digest" not in shown
    json.dumps(shown)  # serializable as it is


def test_a_view_carries_only_masked_tokens():
    shown = view_dict(TokenView(record(), "202…(40)", "202…(40)"))
    assert shown["app_auth_token"] == "202…(40)"
    unreadable = view_dict(TokenView(record(), None, None, unreadable="KMS refused to decrypt a data key"))
    assert unreadable["app_auth_token"] is None and unreadable["unreadable"].startswith("KMS")
    details = render_details(unreadable).splitlines()
    assert any(line.split() == ["app_auth_token", "-"] for line in details)


def test_the_table_aligns_columns_and_shows_dashes_for_nothing():
    rows = [record_dict(record()), record_dict(record(auth_app_id="7", isv_ref=None, due_at=None))]
    lines = render_table(rows).splitlines()
    assert lines[0].split() == ["AUTH_APP_ID", "STATUS", "REF", "OBTAINED", "DUE", "LAST_ERROR"]
    assert lines[2].split() == ["7", "active", "-", format_time(1_764_000_000.0), "-", "-"]
    assert (
        len({line.index("STATUS") if i == 0 else line.index("active") for i, line in enumerate(lines)}) == 1
    )


# -- keys import: the files ----------------------------------------------------------------------


def _key_args(tmp_path: Path, **files: str) -> Any:
    parser = build_parser()
    argv = ["keys", "import", "--app-id", " 2021000000000001 "]
    for name, text in files.items():
        path = tmp_path / f"{name}.txt"
        path.write_text(text, encoding="utf-8")
        argv += [f"--{name.replace('_', '-')}", str(path)]
    return parser.parse_args(argv)


def test_key_files_become_the_configuration_json(tmp_path):
    args = _key_args(
        tmp_path, private_key="\ufeffMIIEv...\n", alipay_public_key="MIIBI...\n", encrypt_key="aes==\n"
    )
    assert keys_config(args) == {
        "app_id": "2021000000000001",
        "private_key": "MIIEv...",
        "alipay_public_key": "MIIBI...",
        "encrypt_key": "aes==",
    }


def test_key_files_need_a_mode_and_must_be_readable(tmp_path):
    with pytest.raises(Failure) as failed:
        keys_config(_key_args(tmp_path, private_key="k"))
    assert failed.value.exit_code == EXIT_USAGE and "certificate mode" in failed.value.message
    args = _key_args(tmp_path, private_key="k", alipay_public_key="p")
    args.private_key = tmp_path / "missing.pem"
    with pytest.raises(Failure) as failed:
        keys_config(args)
    assert failed.value.exit_code == EXIT_USAGE and "cannot read --private-key" in failed.value.message
    binary = tmp_path / "binary.der"
    binary.write_bytes(b"\x30\x82\xff\xfe")
    args.private_key = binary
    with pytest.raises(Failure) as failed:
        keys_config(args)
    assert "is not text" in failed.value.message


def test_every_ending_of_a_refresh_has_an_answer_for_the_operator() -> None:
    from app_auth.operator_cli import _REFRESH_ANSWERS
    from app_auth.refresh import RefreshOutcome

    assert set(_REFRESH_ANSWERS) == set(RefreshOutcome)
