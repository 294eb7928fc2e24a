"""template.yaml: the deployed shape matches what the code and the local stack assume.

These read the template only; `make template-check` runs sam, cfn-lint and checkov on it.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alipay_v3.config import AlipayConfig
from alipay_v3.errors import ConfigError
from app_auth.outcomes import CallbackOutcome
from app_auth.refresh import RefreshPolicy
from app_auth.settings import Settings
from app_auth.token_store import DUE_INDEX, EXPIRY_INDEX, REF_INDEX
from sandbox.front import load_function
from sandbox.table import (
    TEMPLATE,
    load_template,
    table_definition_from_template,
    ttl_attribute_from_template,
)

ROOT = Path(__file__).resolve().parents[2]
STORE_ID = {"Fn::Sub": "${AWS::StackName}/token-store"}

# Identity-policy statements that may name Resource "*", each with the reason it cannot be narrower.
WILDCARD_RESOURCE_ALLOWED: dict[str, str] = {}

PUBLIC_ROUTES = {("GET", "/authorize"), ("GET", "/callback"), ("POST", "/notify")}
IAM_ROUTES = {("GET", "/tokens/{auth_app_id}"), ("GET", "/tokens"), ("POST", "/links")}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def resources_of(template: dict[str, Any], *types: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] in types}


def functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return resources_of(template, "AWS::Serverless::Function")


def function_setting(template: dict[str, Any], function: dict[str, Any], key: str) -> Any:
    """A function's own setting, else the one from Globals (as SAM resolves it)."""
    own = function["Properties"].get(key)
    return own if own is not None else template["Globals"]["Function"].get(key)


def function_environment(template: dict[str, Any], function: dict[str, Any]) -> dict[str, Any]:
    merged = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    merged.update(function["Properties"].get("Environment", {}).get("Variables", {}))
    return merged


def identity_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every statement of every identity policy in the template (not key or resource policies)."""
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] in ("AWS::IAM::RolePolicy", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents = [props["PolicyDocument"]]
        elif resource["Type"] == "AWS::IAM::Role":
            documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
        elif resource["Type"] == "AWS::Serverless::Function":
            documents = [p for p in props.get("Policies", []) if isinstance(p, dict) and "Statement" in p]
        else:
            continue
        for document in documents:
            for statement in document["Statement"]:
                yield name, statement


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def routes(template: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for function in functions(template).values():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] == "HttpApi":
                found[(event["Properties"]["Method"], event["Properties"]["Path"])] = event["Properties"]
    return found


# --- the table -------------------------------------------------------------------------------------


def test_table_definition_is_the_one_the_store_and_the_local_stack_use() -> None:
    assert table_definition_from_template() == {
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "due_shard", "AttributeType": "S"},
            {"AttributeName": "due_at", "AttributeType": "N"},
            {"AttributeName": "expiry_shard", "AttributeType": "S"},
            {"AttributeName": "refresh_expires_at", "AttributeType": "N"},
            {"AttributeName": "isv_ref", "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": DUE_INDEX,
                "KeySchema": [
                    {"AttributeName": "due_shard", "KeyType": "HASH"},
                    {"AttributeName": "due_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            },
            {
                "IndexName": EXPIRY_INDEX,
                "KeySchema": [
                    {"AttributeName": "expiry_shard", "KeyType": "HASH"},
                    {"AttributeName": "refresh_expires_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            },
            {
                "IndexName": REF_INDEX,
                "KeySchema": [
                    {"AttributeName": "isv_ref", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            },
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
    assert ttl_attribute_from_template() == "expires_at"


def test_table_is_recoverable_encrypted_with_the_stack_key_and_retained(template: dict[str, Any]) -> None:
    table = template["Resources"]["TokenTable"]
    props = table["Properties"]
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"] == {
        "SSEEnabled": True,
        "SSEType": "KMS",
        "KMSMasterKeyId": {"Ref": "TokenKey"},
    }
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
    assert template["Resources"]["TokenKey"]["Properties"]["EnableKeyRotation"] is True


def test_table_definition_refuses_values_computed_at_deploy_time(tmp_path: Path) -> None:
    text = TEMPLATE.read_text(encoding="utf-8").replace(
        "BillingMode: PAY_PER_REQUEST", "BillingMode: !Ref Mode"
    )
    computed = tmp_path / "template.yaml"
    computed.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match="BillingMode is computed"):
        table_definition_from_template(computed)


def test_loader_reads_short_form_intrinsics_as_long_form(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "Resources:\n  R:\n    Type: X\n    Properties:\n"
        "      A: !GetAtt Key.Arn\n      B: !Sub 'x-${AWS::Region}'\n      C: !If [Cond, !Ref P, !Ref AWS::NoValue]\n",
        encoding="utf-8",
    )
    props = load_template(path)["Resources"]["R"]["Properties"]
    assert props == {
        "A": {"Fn::GetAtt": ["Key", "Arn"]},
        "B": {"Fn::Sub": "x-${AWS::Region}"},
        "C": {"Fn::If": ["Cond", {"Ref": "P"}, {"Ref": "AWS::NoValue"}]},
    }


# --- functions -------------------------------------------------------------------------------------


def test_every_function_runs_python313_on_arm64_with_the_shared_layer(template: dict[str, Any]) -> None:
    assert set(functions(template)) == {"CallbackFunction", "RefresherFunction", "TokenReaderFunction"}
    for function in functions(template).values():
        assert function_setting(template, function, "Runtime") == "python3.13"
        assert function_setting(template, function, "Architectures") == ["arm64"]
        assert function_setting(template, function, "Handler") == "app.lambda_handler"
        assert function_setting(template, function, "Layers") == [{"Ref": "AlipayAuthLayer"}]
        # Tracing is off: no Tracer instruments the calls, so Active would trace nothing of use
        assert function_setting(template, function, "Tracing") in (None, "PassThrough")
    layer = template["Resources"]["AlipayAuthLayer"]
    assert layer["Properties"]["ContentUri"] == "layers/alipay_auth/"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    # A makefile build, so that the layer ships bytecode; the target is in the repository's Makefile.
    assert layer["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": "arm64", "ContextPath": "./"}
    assert "\nbuild-AlipayAuthLayer:" in (ROOT / "Makefile").read_text(encoding="utf-8")
    assert (ROOT / "layers/alipay_auth/requirements.txt").is_file()


def test_functions_point_at_their_code_and_have_the_agreed_limits(template: dict[str, Any]) -> None:
    callback = template["Resources"]["CallbackFunction"]["Properties"]
    refresher = template["Resources"]["RefresherFunction"]["Properties"]
    assert callback["CodeUri"] == "functions/callback/"
    assert refresher["CodeUri"] == "functions/refresher/"
    assert (callback["Timeout"], callback["MemorySize"]) == (29, 512)  # HTTP API waits 30 s at most
    assert (refresher["Timeout"], refresher["MemorySize"]) == (300, 512)
    # One run at a time is the run lease's job: reserved concurrency fails to deploy on accounts
    # with the default limit of 10, so none is reserved.
    assert "ReservedConcurrentExecutions" not in refresher
    # A run is never retried whole, and an invocation that cannot start within a schedule interval
    # is dropped rather than queued behind the next ones.
    assert refresher["EventInvokeConfig"] == {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 900}
    pace = {k: v for k, v in refresher["Environment"]["Variables"].items() if k.startswith("REFRESH_")}
    policy = RefreshPolicy.from_env(
        {name: str(template["Parameters"][value["Ref"]]["Default"]) for name, value in pace.items()}
    )
    assert (policy.concurrency, policy.max_calls_per_second) == (16, 20.0)
    # Verification slices follow the schedule: one slice a run, the whole table once a week
    assert (policy.run_interval_minutes, policy.verify_every_days) == (15.0, 7.0)
    # A rotation Alipay made that the table refused is parked on the replay queue, never dropped
    assert refresher["Environment"]["Variables"]["REPLAY_QUEUE_URL"] == {"Ref": "ReplayQueue"}


def test_environment_gives_settings_everything_it_requires(template: dict[str, Any]) -> None:
    for name, function in functions(template).items():
        env = function_environment(template, function)
        # Settings.from_env raises on a missing required variable; values here are placeholders.
        settings = Settings.from_env(
            {k: f"<{k}>" for k in env} | {"REFRESH_LEAD_DAYS": "30", "REFRESH_MAX_AGE_DAYS": "0"}
        )
        assert settings.table_name == "<TABLE_NAME>", name
        assert (settings.token_store_id, settings.sealed_table_name) == (
            "<TOKEN_STORE_ID>",
            "<SEALED_TABLE_NAME>",
        )
        # A restored table is used under its own name; what it holds is bound to names that stay
        assert env["TABLE_NAME"] == {
            "Fn::If": ["UseRestoredTable", {"Ref": "RestoredTableName"}, {"Ref": "TokenTable"}]
        }
        assert env["TOKEN_STORE_ID"] == STORE_ID
        assert env["SEALED_TABLE_NAME"] == {"Ref": "TokenTable"}
        assert env["STATE_SECRET_ARN"] == {"Ref": "StateSecret"}
        assert env["TOKEN_KMS_KEY_ID"] == {"Fn::GetAtt": ["TokenKey", "Arn"]}
        assert env["EVENT_BUS_NAME"] == {"Ref": "TokenEventBus"}
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == "AlipayAppAuth"
    callback_env = function_environment(template, template["Resources"]["CallbackFunction"])
    assert callback_env["REPLAY_QUEUE_URL"] == {"Ref": "ReplayQueue"}


def test_refresher_schedule_retries_and_dead_letters(template: dict[str, Any]) -> None:
    (schedule,) = template["Resources"]["RefresherFunction"]["Properties"]["Events"].values()
    assert schedule["Type"] == "ScheduleV2"
    props = schedule["Properties"]
    assert props["ScheduleExpression"] == {"Fn::Sub": "rate(${RefreshIntervalMinutes} minutes)"}
    assert props["GroupName"] == {"Ref": "RefreshScheduleGroup"}  # the Scheduler's metrics are per group
    assert props["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    assert props["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["RefresherDeadLetterQueue", "Arn"]}}


# --- HTTP API --------------------------------------------------------------------------------------


def test_routes_and_their_authorization(template: dict[str, Any]) -> None:
    found = routes(template)
    assert set(found) == PUBLIC_ROUTES | IAM_ROUTES
    for route in IAM_ROUTES:
        assert found[route].get("Auth") == {"Authorizer": "AWS_IAM"}, route
    for route in PUBLIC_ROUTES:
        assert "Auth" not in found[route], route
    # The callback function finds its route by API Gateway's routeKey: the same set, spelled alike.
    # The token read is another function's: the public one never opens a token.
    callback_routes = {
        f"{event['Properties']['Method']} {event['Properties']['Path']}"
        for event in template["Resources"]["CallbackFunction"]["Properties"]["Events"].values()
    }
    assert set(load_function("callback").ROUTES) == callback_routes
    reads = {"GET /tokens/{auth_app_id}", "GET /tokens"}
    assert callback_routes == {f"{method} {path}" for method, path in found} - reads
    reader = template["Resources"]["TokenReaderFunction"]["Properties"]["Events"].values()
    assert {f"{e['Properties']['Method']} {e['Properties']['Path']}" for e in reader} == reads
    api = template["Resources"]["HttpApi"]["Properties"]
    assert api["Auth"]["EnableIamAuthorizer"] is True
    assert "DefaultAuthorizer" not in api["Auth"]


def test_access_log_never_records_query_strings(template: dict[str, Any]) -> None:
    # /callback's query string carries app_auth_code (a secret); the log format must not include it.
    api = template["Resources"]["HttpApi"]["Properties"]
    log_format = api["AccessLogSettings"]["Format"]
    json.loads(log_format)  # one JSON object per line
    assert "$context.path" in log_format
    for leaky in ("querystring", "rawQueryString", "$request.", "$context.requestOverride"):
        assert leaky.lower() not in log_format.lower()
    assert {"ThrottlingRateLimit", "ThrottlingBurstLimit"} <= set(api["DefaultRouteSettings"])


# --- least privilege -------------------------------------------------------------------------------


def test_no_identity_policy_grants_a_wildcard_resource_it_could_name(template: dict[str, Any]) -> None:
    statements = list(identity_statements(template))
    assert statements, "the function roles' policies were not found"
    for owner, statement in statements:
        assert statement["Effect"] == "Allow"
        resources = as_list(statement["Resource"])
        actions = as_list(statement["Action"])
        assert not any("*" in a.split(":", 1)[1] for a in actions), (owner, actions)
        if "*" in resources:
            unexplained = set(actions) - set(WILDCARD_RESOURCE_ALLOWED)
            assert not unexplained, f"{owner} grants {sorted(unexplained)} on '*'"


def test_secrets_keys_events_and_queues_are_named_not_wildcarded(template: dict[str, Any]) -> None:
    alipay_secret = {"Fn::If": ["CreateAlipaySecret", {"Ref": "AlipaySecret"}, {"Ref": "ExistingSecretArn"}]}
    expected = {
        "secretsmanager:GetSecretValue": [[alipay_secret, {"Ref": "StateSecret"}]],
        "kms:GenerateDataKey": [{"Fn::GetAtt": ["TokenKey", "Arn"]}],
        "kms:Decrypt": [{"Fn::GetAtt": ["TokenKey", "Arn"]}],
        "events:PutEvents": [{"Fn::GetAtt": ["TokenEventBus", "Arn"]}],
    }
    seen = set()
    for owner, statement in identity_statements(template):
        for action in as_list(statement["Action"]):
            if action in expected:
                seen.add(action)
                assert statement["Resource"] in expected[action], (owner, action, statement["Resource"])
            if action == "dynamodb:Scan":  # only the refresher, for its verification slice
                assert owner == "RefresherPolicy", owner
    assert seen == set(expected)


def test_token_data_keys_are_bound_to_this_app_and_store(template: dict[str, Any]) -> None:
    for owner, statement in identity_statements(template):
        if "kms:GenerateDataKey" in as_list(statement["Action"]):
            assert statement["Condition"]["StringEquals"] == {
                "kms:EncryptionContext:app": "alipay-app-auth",
                "kms:EncryptionContext:table": STORE_ID,
            }, owner


def test_key_policy_has_no_wildcard_principal(template: dict[str, Any]) -> None:
    # In a key policy Resource "*" means the key itself; the principal is what must be named.
    for statement in template["Resources"]["TokenKey"]["Properties"]["KeyPolicy"]["Statement"]:
        principal = statement["Principal"]
        assert principal != "*" and "*" not in as_list(principal.get("AWS", [])), statement["Sid"]


# --- secrets, alarms, outputs ----------------------------------------------------------------------


def test_placeholder_secret_names_only_known_fields_and_is_rejected_until_filled_in(
    template: dict[str, Any],
) -> None:
    body = template["Resources"]["AlipaySecret"]["Properties"]["SecretString"]["Fn::Sub"]
    placeholder = json.loads(body.replace("${AlipayEnvironment}", "sandbox"))
    with pytest.raises(ConfigError) as refused:
        AlipayConfig.from_mapping(placeholder)
    assert "unknown" not in str(refused.value)  # every placeholder field is one the config reads
    assert "app_id" in str(refused.value)
    state = template["Resources"]["StateSecret"]["Properties"]["GenerateSecretString"]
    assert state["PasswordLength"] >= 32  # SecretSource.state_key refuses shorter keys


def alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: a["Properties"] for name, a in resources_of(template, "AWS::CloudWatch::Alarm").items()}


def watched_metrics(alarm: dict[str, Any]) -> set[tuple[str, str]]:
    stats = (
        [alarm]
        if "MetricName" in alarm
        else [m["MetricStat"]["Metric"] for m in alarm["Metrics"] if "MetricStat" in m]
    )
    return {(m["Namespace"], m["MetricName"]) for m in stats}


def test_alarms_cover_the_failures_an_operator_must_act_on(template: dict[str, Any]) -> None:
    watched = set().union(*(watched_metrics(a) for a in alarms(template).values()))
    assert watched >= {
        ("AWS/Lambda", "Errors"),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/ApiGateway", "5xx"),
        ("AlipayAppAuth", "ConfigurationErrors"),
        ("AlipayAppAuth", "RefreshTokenDaysLeft"),
        ("AlipayAppAuth", "RunsCompleted"),
        ("AlipayAppAuth", "AlipayThrottled"),
        ("AWS/Scheduler", "TargetErrorCount"),
        ("AWS/Scheduler", "InvocationDroppedCount"),
        ("AWS/DynamoDB", "WriteThrottleEvents"),
    }
    # A merchant who must authorize again is business for the ISV (an event, a metric), not a page
    assert ("AlipayAppAuth", "TokensNeedingReauthorization") not in watched
    queues = {
        a["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for a in alarms(template).values()
        if a.get("Namespace") == "AWS/SQS"
    }
    assert queues == {"RefresherDeadLetterQueue", "ReplayQueue"}


def test_the_heartbeat_alarm_waits_twice_the_refresh_interval_then_fires_on_silence(
    template: dict[str, Any],
) -> None:
    heartbeat = alarms(template)["RefresherHeartbeatAlarm"]
    assert heartbeat["TreatMissingData"] == "breaching"
    assert heartbeat["Period"] == {
        "Fn::FindInMap": ["RefreshInterval", {"Ref": "RefreshIntervalMinutes"}, "TwiceSeconds"]
    }
    interval = template["Parameters"]["RefreshIntervalMinutes"]
    mapping = template["Mappings"]["RefreshInterval"]
    assert {int(k) for k in mapping} == set(interval["AllowedValues"])
    assert all(v["TwiceSeconds"] == 2 * 60 * int(k) for k, v in mapping.items())
    assert max(v["TwiceSeconds"] for v in mapping.values()) <= 86400  # CloudWatch's longest period
    expiry = alarms(template)["RefreshTokenExpiryAlarm"]
    assert (expiry["Statistic"], expiry["Threshold"]) == ("Minimum", {"Ref": "ExpiryAlarmDays"})


def _dashboard(template: dict[str, Any]) -> dict[str, Any]:
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    return json.loads(
        re.sub(r"\$\{([^}]+)\}", lambda m: "7" if m[1] == "ExpiryAlarmDays" else f"<{m[1]}>", body)
    )


def dashboard_metrics(template: dict[str, Any]) -> set[tuple[str, str]]:
    """(namespace, metric) of every graphed row, with CloudWatch's shorthand expanded: "..." takes
    the previous row and replaces its last values with the ones given; "." repeats one value."""
    shown = set()
    for widget in _dashboard(template)["widgets"]:
        previous: list[str] = []
        for row in widget["properties"].get("metrics", []):
            values = [v for v in row if not isinstance(v, dict)]  # a trailing dict holds options
            if values[0] == "...":
                values = previous[: len(previous) - len(values) + 1] + values[1:]
            values = [previous[i] if v == "." else v for i, v in enumerate(values)]
            shown.add((values[0], values[1]))
            previous = values
    return shown


def test_the_dashboard_shows_every_alarm_and_the_lifecycle(template: dict[str, Any]) -> None:
    widgets = _dashboard(template)["widgets"]
    (alarm_widget,) = [w for w in widgets if w["type"] == "alarm"]
    assert set(alarm_widget["properties"]["alarms"]) == {f"<{name}.Arn>" for name in alarms(template)}
    assert dashboard_metrics(template) >= {
        ("AlipayAppAuth", "Callback_authorized"),
        ("AlipayAppAuth", "TokensRefreshed"),
        ("AlipayAppAuth", "TokensFailed"),
        ("AlipayAppAuth", "TokensQuarantined"),
        ("AlipayAppAuth", "TokensNeedingReauthorization"),
        ("AlipayAppAuth", "RefreshTokenDaysLeft"),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
    }


def test_every_metric_of_ours_an_alarm_or_the_dashboard_reads_is_one_a_function_emits(
    template: dict[str, Any],
) -> None:
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "functions").glob("*/app.py"))
    emitted = set(re.findall(r'"([A-Z][A-Za-z]+)"', sources)) | {f"Callback_{o}" for o in CallbackOutcome}
    read = {
        name
        for ns, name in dashboard_metrics(template).union(
            *(watched_metrics(a) for a in alarms(template).values())
        )
        if ns == "AlipayAppAuth"
    }
    assert read and read <= emitted, read - emitted


def test_outputs(template: dict[str, Any]) -> None:
    assert set(template["Outputs"]) >= {
        "CallbackUrl",
        "AuthorizeUrl",
        "NotifyUrl",
        "TokenReadUrl",
        "TableName",
        "SecretArn",
        "EventBusName",
        "ReplayQueueUrl",
        "KmsKeyArn",
    }
    # Each URL is the custom domain's when one is set, else the API's own; both end alike.
    for name, path in (
        ("CallbackUrl", "/callback"),
        ("NotifyUrl", "/notify"),
        ("AuthorizeUrl", "/authorize"),
    ):
        condition, custom, own = template["Outputs"][name]["Value"]["Fn::If"]
        assert condition == "HasCustomDomain" and custom == {"Fn::Sub": f"https://${{DomainName}}{path}"}
        assert own["Fn::Sub"].startswith("https://${HttpApi}.execute-api.") and own["Fn::Sub"].endswith(path)


def test_a_custom_domain_maps_the_api_and_becomes_the_callback_url(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    assert (
        resources["ApiDomain"]["Condition"] == resources["ApiDomainMapping"]["Condition"] == "HasCustomDomain"
    )
    assert resources["ApiDomainMapping"]["Properties"]["ApiId"] == {"Ref": "HttpApi"}
    [config] = resources["ApiDomain"]["Properties"]["DomainNameConfigurations"]
    assert (
        config["CertificateArn"] == {"Ref": "DomainCertificateArn"} and config["SecurityPolicy"] == "TLS_1_2"
    )
    rule = template["Rules"]["CustomDomainNeedsCertificate"]
    assert rule["Assertions"][0]["Assert"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "DomainCertificateArn"}, ""]}]
    }
    # The callback function redirects to the URL the console has: the given one, else the domain's
    callback_url = resources["CallbackFunction"]["Properties"]["Environment"]["Variables"]["CALLBACK_URL"]
    assert callback_url == {
        "Fn::If": [
            "HasCallbackUrl",
            {"Ref": "CallbackUrl"},
            {"Fn::If": ["HasCustomDomain", {"Fn::Sub": "https://${DomainName}/callback"}, ""]},
        ]
    }


def test_the_stack_named_in_the_readme_and_the_cli_is_one_samconfig_deploys() -> None:
    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "samconfig.toml").read_text(encoding="utf-8"))
    deployed = {env["global"]["parameters"]["stack_name"] for env in config.values() if isinstance(env, dict)}
    texts = [root / "README.md", root / "layers/alipay_auth/app_auth/operator_cli.py"]
    named = {m for path in texts for m in re.findall(r"--stack (alipay-[a-z0-9-]+)", path.read_text("utf-8"))}
    assert named and named <= deployed, named - deployed
