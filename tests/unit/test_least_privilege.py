"""Least privilege, read from template.yaml as IAM would evaluate it: who may open a token.

A small evaluator of the template's identity policies and the token key's policy (Allow statements,
action and resource patterns, StringEquals/StringLike/ArnLike conditions; a condition key the
request lacks fails, as in IAM) answers whether a function's role may make one request. The
deny-nothing model is enough here because the template writes no Deny.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from sandbox.table import TEMPLATE, load_template

STACK = "isv-auth"
FIRST_TABLE = "isv-auth-TokenTable-1A2B3C"  # what !Ref TokenTable resolves to
KEY_ARN = "arn:aws:kms:ap-east-1:111122223333:key/TokenKey"
PSEUDO = {
    "AWS::StackName": STACK,
    "AWS::Region": "ap-east-1",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::Partition": "aws",
    "AWS::AccountId": "111122223333",
    "TokenTable": FIRST_TABLE,
    "TokenKey.Arn": KEY_ARN,
}
CONDITIONS = {"UseRestoredTable": False, "CreateAlipaySecret": True, "HasAlarmEmail": False}

STORE = f"{STACK}/token-store"
TOKEN_CONTEXT = {"kms:EncryptionContext:app": "alipay-app-auth", "kms:EncryptionContext:table": STORE}
LEGACY_CONTEXT = {**TOKEN_CONTEXT, "kms:EncryptionContext:table": FIRST_TABLE}
VIA_SECRETS_MANAGER = {"kms:ViaService": "secretsmanager.ap-east-1.amazonaws.com"}
ROLES = ("CallbackRole", "RefresherRole", "TokenReaderRole")


def resolve(value: Any) -> Any:
    if isinstance(value, list):
        return [resolve(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "Ref" in value:
        return PSEUDO.get(value["Ref"], f"<{value['Ref']}>")
    if "Fn::GetAtt" in value:
        name = ".".join(value["Fn::GetAtt"])
        return PSEUDO.get(name, f"arn:{name}")
    if "Fn::If" in value:
        condition, yes, no = value["Fn::If"]
        return resolve(yes if CONDITIONS[condition] else no)
    if "Fn::Sub" in value:
        text, variables = (value["Fn::Sub"], {}) if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"]
        names = {k: resolve(v) for k, v in variables.items()}
        return re.sub(r"\$\{([^}]+)\}", lambda m: names.get(m[1]) or resolve({"Ref": m[1]}), text)
    return {k: resolve(v) for k, v in value.items()}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def statements_for(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    """The role's own policies, and the key policy's statements that name the role."""
    found = []
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::IAM::RolePolicy" and resource["Properties"]["RoleName"] == {"Ref": role}:
            found += resolve(resource["Properties"]["PolicyDocument"]["Statement"])
    key_policy = template["Resources"]["TokenKey"]["Properties"]["KeyPolicy"]["Statement"]
    for statement in key_policy:
        principals = statement["Principal"].get("AWS", []) if isinstance(statement["Principal"], dict) else []
        if {"Fn::GetAtt": [role, "Arn"]} in (principals if isinstance(principals, list) else [principals]):
            found.append({**resolve(statement), "Resource": KEY_ARN})
    return found


def _matches(patterns: Any, value: str) -> bool:
    return any(fnmatchcase(value, p) for p in (patterns if isinstance(patterns, list) else [patterns]))


def _conditions_hold(conditions: dict[str, dict[str, Any]], context: dict[str, str]) -> bool:
    for operator, tests in conditions.items():
        for key, expected in tests.items():
            actual = context.get(key)
            wanted = expected if isinstance(expected, list) else [expected]
            if actual is None:
                return False
            if operator == "StringEquals" and actual not in wanted:
                return False
            if operator in ("StringLike", "ArnLike") and not _matches(wanted, actual):
                return False
            if operator not in ("StringEquals", "StringLike", "ArnLike"):
                raise AssertionError(f"the evaluator does not know {operator}")
    return True


def allowed(
    template: dict[str, Any], role: str, action: str, resource: str, context: dict[str, str] | None = None
) -> bool:
    return any(
        s["Effect"] == "Allow"
        and _matches(s["Action"], action)
        and _matches(s["Resource"], resource)
        and _conditions_hold(s.get("Condition", {}), context or {})
        for s in statements_for(template, role)
    )


def may_decrypt(template: dict[str, Any], role: str, context: dict[str, str]) -> bool:
    return allowed(template, role, "kms:Decrypt", KEY_ARN, context)


def may_seal(template: dict[str, Any], role: str, context: dict[str, str]) -> bool:
    return allowed(template, role, "kms:GenerateDataKey", KEY_ARN, context)


def test_the_public_callback_may_seal_a_token_but_never_open_one(template: dict[str, Any]) -> None:
    assert may_seal(template, "CallbackRole", TOKEN_CONTEXT)
    assert not may_decrypt(template, "CallbackRole", TOKEN_CONTEXT)
    assert not may_decrypt(template, "CallbackRole", LEGACY_CONTEXT)  # values sealed before the store id
    # It reads its secrets through Secrets Manager, which decrypts them with the same key
    assert may_decrypt(template, "CallbackRole", VIA_SECRETS_MANAGER)


@pytest.mark.parametrize("role", ["RefresherRole", "TokenReaderRole"])
def test_only_the_readers_open_tokens_under_the_store_and_the_first_tables_name(
    template: dict[str, Any], role: str
) -> None:
    assert may_decrypt(template, role, TOKEN_CONTEXT)
    assert may_decrypt(template, role, LEGACY_CONTEXT)
    other = {**TOKEN_CONTEXT, "kms:EncryptionContext:table": "another-stack/token-store"}
    assert not may_decrypt(template, role, other)
    assert not may_decrypt(template, role, {"kms:EncryptionContext:table": STORE})  # the app is named too


def test_the_token_reader_reads_by_key_and_nothing_else(template: dict[str, Any]) -> None:
    table = f"arn:aws:dynamodb:ap-east-1:111122223333:table/{FIRST_TABLE}"
    assert allowed(template, "TokenReaderRole", "dynamodb:GetItem", table)
    assert allowed(template, "TokenReaderRole", "dynamodb:Query", f"{table}/index/ref")
    assert not allowed(template, "TokenReaderRole", "dynamodb:Query", f"{table}/index/due")
    for action in ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query", "dynamodb:Scan"):
        assert not allowed(template, "TokenReaderRole", action, table), action
    assert not may_seal(template, "TokenReaderRole", TOKEN_CONTEXT)
    for action in ("secretsmanager:GetSecretValue", "events:PutEvents", "sqs:SendMessage"):
        assert not any(_matches(s["Action"], action) for s in statements_for(template, "TokenReaderRole")), (
            action
        )


def test_the_services_read_policy_reads_as_the_token_reader_does(template: dict[str, Any]) -> None:
    # The ISV's services attach one managed policy: the reader function's table and key statements,
    # the stack's outputs, and the two read routes; nothing that writes, seals or reads a secret.
    shared = ("TokenItems", "FindByReference", "OpenTokens")
    policy = template["Resources"]["TokenReadAccessPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    reader = template["Resources"]["TokenReaderPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert [s for s in policy if s["Sid"] in shared] == [s for s in reader if s["Sid"] in shared]
    actions = {s["Sid"]: s["Action"] for s in policy}
    assert actions == {
        "TokenItems": "dynamodb:GetItem",
        "FindByReference": "dynamodb:Query",
        "OpenTokens": "kms:Decrypt",
        "FindTheStack": "cloudformation:DescribeStacks",
        "ReadRoutes": "execute-api:Invoke",
    }
    outputs = template["Outputs"]
    assert outputs["TokenReadPolicyArn"]["Value"] == {"Ref": "TokenReadAccessPolicy"}
    assert outputs["LayerArn"]["Value"] == {"Ref": "AlipayAuthLayer"}


def test_every_table_action_granted_is_one_the_code_makes(template: dict[str, Any]) -> None:
    layer = Path(__file__).resolve().parents[2] / "layers/alipay_auth/app_auth"
    used = {
        "dynamodb:" + "".join(part.title() for part in op.split("_"))
        for path in layer.glob("*.py")
        for op in re.findall(r'call\(\s*"([a-z_]+)"', path.read_text(encoding="utf-8"))
    }
    assert {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"} <= used
    for role in ROLES:
        for statement in statements_for(template, role):
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            granted = {a for a in actions if a.startswith("dynamodb:")}
            assert granted <= used, (role, granted - used)


def test_service_principals_and_log_groups_are_named_for_any_partition(template: dict[str, Any]) -> None:
    text = TEMPLATE.read_text(encoding="utf-8")
    assert "amazonaws.com" not in text.replace("${AWS::URLSuffix}", "")  # China regions end .com.cn
    (logs,) = [
        s
        for s in template["Resources"]["TokenKey"]["Properties"]["KeyPolicy"]["Statement"]
        if s["Sid"] == "CloudWatchLogsEncryptsThisStacksLogs"
    ]
    arns = resolve(logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"])
    log_groups = [
        resolve(r["Properties"]["LogGroupName"])
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Logs::LogGroup"
    ]
    prefix = "arn:aws:logs:ap-east-1:111122223333:log-group:"
    assert all(_matches(arns, prefix + name) for name in log_groups), log_groups
    assert not _matches(arns, prefix + "/aws/lambda/someone-else")


def test_the_key_policy_leaves_the_functions_to_their_roles_policies(template: dict[str, Any]) -> None:
    # A grant in the key policy would add to the roles' (KMS allows what either allows): the
    # narrowing by encryption context would have to be written, and kept, twice.
    for statement in template["Resources"]["TokenKey"]["Properties"]["KeyPolicy"]["Statement"]:
        principal = resolve(statement["Principal"])
        assert principal in (
            {"AWS": "arn:aws:iam::111122223333:root"},
            {"Service": "logs.ap-east-1.amazonaws.com"},
        ), statement["Sid"]
