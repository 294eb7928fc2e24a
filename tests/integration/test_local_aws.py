"""The local AWS stand-ins (sandbox/aws_standins.py) behave as the app needs: DynamoDB Local and moto on
127.0.0.1, reachable through the standard endpoint variables, and gone once stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

import sandbox.aws_standins
from sandbox.aws_standins import MOTO_SERVICES, REGION, ROOT, LocalAws, LocalAwsError
from tests.integration.aws_fixtures import aws, aws_env, local_aws

__all__ = ["aws", "aws_env", "local_aws"]  # fixtures, used by name

TABLE = "app-auth-test"


def _error_code(error: ClientError) -> str:
    return str(error.response["Error"]["Code"])


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a reaped or exited process is not running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z"


def _wait_until_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if _running(pid)]
        if not alive:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if _running(pid)]


def _accepts_connections(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def _listening_addresses(port: int) -> set[str]:
    """The local addresses some socket is listening on with ``port`` (from /proc/net/tcp{,6})."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


# -- wiring ------------------------------------------------------------------------------------


def test_endpoint_variables_are_the_ones_boto3_reads(aws_env: LocalAws) -> None:
    for service in ["dynamodb", *MOTO_SERVICES]:
        client = boto3.client(service)
        assert client.meta.endpoint_url == aws_env.endpoints.url_for(service), service
        assert client.meta.region_name == REGION
    # A service not named still goes to moto (through AWS_ENDPOINT_URL), never to real AWS.
    assert boto3.client("s3").meta.endpoint_url == aws_env.endpoints.moto
    assert aws_env.endpoints.dynamodb != aws_env.endpoints.moto


def test_both_listen_on_loopback_only(local_aws: LocalAws) -> None:
    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, and as IPv4-mapped IPv6
    for url in (local_aws.endpoints.dynamodb, local_aws.endpoints.moto):
        addresses = _listening_addresses(int(url.rsplit(":", 1)[1]))
        assert addresses, url
        assert addresses <= loopback, (url, addresses)


def test_another_process_reaches_the_stand_ins_through_process_env(aws: LocalAws) -> None:
    aws.client("dynamodb").create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    aws.client("secretsmanager").create_secret(Name="from-parent", SecretString="visible")
    script = (
        "import boto3, json; print(json.dumps([boto3.client('dynamodb').list_tables()['TableNames'],"
        " boto3.client('secretsmanager').get_secret_value(SecretId='from-parent')['SecretString']]))"
    )
    # A profile that does not exist would make boto3 fail: process_env() must drop it.
    env = aws.process_env({**os.environ, "AWS_PROFILE": "no-such-profile"})
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [[TABLE], "visible"]


# -- DynamoDB Local ----------------------------------------------------------------------------


def _create_app_table(dynamodb: Any) -> None:
    """The shape the app uses: generic pk/sk, a sparse GSI on (due_shard, due_at), TTL on ``expires_at``."""
    dynamodb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "due_shard", "AttributeType": "S"},
            {"AttributeName": "due_at", "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "due",
                "KeySchema": [
                    {"AttributeName": "due_shard", "KeyType": "HASH"},
                    {"AttributeName": "due_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.get_waiter("table_exists").wait(TableName=TABLE, WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    dynamodb.update_time_to_live(
        TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )


def test_dynamodb_table_with_sparse_gsi_ttl_and_conditional_writes(aws: LocalAws) -> None:
    dynamodb = aws.client("dynamodb")
    _create_app_table(dynamodb)

    ttl = dynamodb.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    indexes = dynamodb.describe_table(TableName=TABLE)["Table"]["GlobalSecondaryIndexes"]
    assert [index["IndexName"] for index in indexes] == ["due"]

    token = {
        "pk": {"S": "token#2088000000000001"},
        "sk": {"S": "app#2021000000000001"},
        "version": {"N": "1"},
        "due_shard": {"S": "3"},
        "due_at": {"N": "1700000000"},
    }
    state = {"pk": {"S": "state#abc"}, "sk": {"S": "state"}, "expires_at": {"N": "1700000000"}}
    new_item = "attribute_not_exists(pk)"
    dynamodb.put_item(TableName=TABLE, Item=token, ConditionExpression=new_item)
    dynamodb.put_item(TableName=TABLE, Item=state, ConditionExpression=new_item)

    # The sparse index holds only items that have its keys: the token, not the state item.
    due = dynamodb.query(
        TableName=TABLE,
        IndexName="due",
        KeyConditionExpression="due_shard = :shard AND due_at <= :now",
        ExpressionAttributeValues={":shard": {"S": "3"}, ":now": {"N": "1800000000"}},
    )
    assert [item["pk"]["S"] for item in due["Items"]] == ["token#2088000000000001"]

    # A second insert of the same key fails, and returns the item it collided with.
    with pytest.raises(ClientError) as raised:
        dynamodb.put_item(
            TableName=TABLE,
            Item={**token, "version": {"N": "99"}},
            ConditionExpression=new_item,
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    assert _error_code(raised.value) == "ConditionalCheckFailedException"
    assert raised.value.response["Item"]["version"] == {"N": "1"}

    # Optimistic locking: an update that expects a stale version fails; the right one succeeds.
    key = {"pk": token["pk"], "sk": token["sk"]}
    bump = {
        "TableName": TABLE,
        "Key": key,
        "UpdateExpression": "SET version = :next",
        "ConditionExpression": "version = :expected",
    }
    with pytest.raises(dynamodb.exceptions.ConditionalCheckFailedException):
        dynamodb.update_item(**bump, ExpressionAttributeValues={":expected": {"N": "0"}, ":next": {"N": "1"}})
    dynamodb.update_item(**bump, ExpressionAttributeValues={":expected": {"N": "1"}, ":next": {"N": "2"}})
    assert dynamodb.get_item(TableName=TABLE, Key=key)["Item"]["version"] == {"N": "2"}


# -- moto --------------------------------------------------------------------------------------


def test_kms_data_key_round_trip_is_bound_to_its_encryption_context(aws: LocalAws) -> None:
    kms = aws.client("kms")
    key_id = kms.create_key(Description="token envelope key")["KeyMetadata"]["KeyId"]
    context = {"app_id": "2021000000000001", "user_id": "2088000000000001"}

    data_key = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext=context)
    assert len(data_key["Plaintext"]) == 32
    assert data_key["CiphertextBlob"] != data_key["Plaintext"]

    opened = kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext=context)
    assert opened["Plaintext"] == data_key["Plaintext"]
    assert opened["KeyId"].endswith(key_id)

    for wrong in ({**context, "user_id": "2088000000000002"}, {}):
        with pytest.raises(kms.exceptions.InvalidCiphertextException):
            kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext=wrong)


def test_secrets_manager_put_and_get(aws: LocalAws) -> None:
    secrets = aws.client("secretsmanager")
    arn = secrets.create_secret(Name="alipay/app", SecretString=json.dumps({"appId": "1"}))["ARN"]
    assert f":{REGION}:" in arn
    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"appId": "2"}))

    current = secrets.get_secret_value(SecretId=arn)
    assert json.loads(current["SecretString"]) == {"appId": "2"}
    previous = secrets.get_secret_value(SecretId=arn, VersionStage="AWSPREVIOUS")
    assert json.loads(previous["SecretString"]) == {"appId": "1"}
    with pytest.raises(secrets.exceptions.ResourceNotFoundException):
        secrets.get_secret_value(SecretId="alipay/other")


def test_eventbridge_custom_bus_delivers_to_an_sqs_target(aws: LocalAws) -> None:
    events, sqs = aws.client("events"), aws.client("sqs")
    bus_arn = events.create_event_bus(Name="app-auth")["EventBusArn"]
    queue_url = sqs.create_queue(QueueName="token-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(
        Name="token-granted",
        EventBusName="app-auth",
        EventPattern=json.dumps({"source": ["alipay.app-auth"], "detail-type": ["TokenGranted"]}),
    )
    events.put_targets(
        Rule="token-granted", EventBusName="app-auth", Targets=[{"Id": "queue", "Arn": queue_arn}]
    )

    entry = {
        "Source": "alipay.app-auth",
        "DetailType": "TokenGranted",
        "Detail": json.dumps({"app_id": "2021000000000001"}),
        "EventBusName": bus_arn,
    }
    unmatched = {**entry, "DetailType": "SomethingElse"}
    sent = events.put_events(Entries=[entry, unmatched])
    assert sent["FailedEntryCount"] == 0
    assert all("EventId" in result for result in sent["Entries"])

    received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    envelopes = [json.loads(message["Body"]) for message in received.get("Messages", [])]
    assert [(e["detail-type"], e["detail"]) for e in envelopes] == [
        ("TokenGranted", {"app_id": "2021000000000001"})
    ]


def test_sqs_send_receive_delete(aws: LocalAws) -> None:
    sqs = aws.client("sqs")
    queue_url = sqs.create_queue(QueueName="replay", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    assert queue_url.startswith(aws.endpoints.moto)  # moto names queues by the address it was asked on
    sqs.send_message(
        QueueUrl=queue_url,
        MessageBody='{"code_hash": "x"}',
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "callback"}},
    )
    messages = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1
    )["Messages"]
    assert [(m["Body"], m["MessageAttributes"]["kind"]["StringValue"]) for m in messages] == [
        ('{"code_hash": "x"}', "callback")
    ]
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=messages[0]["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=queue_url, VisibilityTimeout=0, WaitTimeSeconds=0)


def test_cloudwatch_metrics(aws: LocalAws) -> None:
    cloudwatch = aws.client("cloudwatch")
    cloudwatch.put_metric_data(
        Namespace="AlipayAppAuth",
        MetricData=[{"MetricName": "RefreshFailures", "Value": 1, "Unit": "Count"}],
    )
    metrics = cloudwatch.list_metrics(Namespace="AlipayAppAuth")["Metrics"]
    assert [metric["MetricName"] for metric in metrics] == ["RefreshFailures"]


def test_reset_forgets_everything(aws: LocalAws) -> None:
    _create_app_table(aws.client("dynamodb"))
    aws.client("secretsmanager").create_secret(Name="to-forget", SecretString="x")
    aws.reset()
    assert aws.client("dynamodb").list_tables()["TableNames"] == []
    assert aws.client("secretsmanager").list_secrets()["SecretList"] == []


# -- lifecycle ---------------------------------------------------------------------------------


def test_stop_leaves_no_process_and_no_listener() -> None:
    local = LocalAws().start()
    pids, endpoints = local.pids, local.endpoints
    assert len(pids) == 2
    assert all(_running(pid) for pid in pids)
    local.stop()
    assert _wait_until_gone(pids, seconds=0) == []
    for pid in pids:  # nothing is left in their process groups either
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    assert not _accepts_connections(endpoints.dynamodb)
    assert not _accepts_connections(endpoints.moto)
    with pytest.raises(LocalAwsError, match="not started"):
        local.env()
    local.stop()  # a second stop is harmless


def test_stand_ins_exit_when_their_parent_is_killed_hard(tmp_path: Path) -> None:
    script = (
        "import json, time; from sandbox.aws_standins import LocalAws; aws = LocalAws().start();"
        " print(json.dumps(aws.pids), flush=True); time.sleep(120)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)},  # its files land in tmp_path
        stdout=subprocess.PIPE,
        text=True,
    )
    pids: list[int] = []
    try:
        assert parent.stdout is not None
        pids = json.loads(parent.stdout.readline())  # LocalAws.start() gives up within 30 s
        assert len(pids) == 2
        parent.send_signal(signal.SIGKILL)  # no atexit, no stop(): only the closed stdin tells them
        parent.wait(timeout=10)
        assert _wait_until_gone(pids, seconds=15) == []
    finally:
        parent.kill()
        parent.wait(timeout=10)
        for pid in pids:
            if _running(pid):
                os.killpg(pid, signal.SIGKILL)


def test_missing_java_is_reported_with_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalAwsError, match="openjdk-17-jdk-headless"):
        LocalAws().start()


def test_a_stand_in_that_fails_to_start_is_reported_with_its_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox.aws_standins, "LAUNCHER", ROOT / "no-such-launcher.java")
    local = LocalAws()
    with pytest.raises(LocalAwsError, match=r"dynamodb stand-in exited with status [1-9]") as raised:
        local.start()
    assert "no-such-launcher.java" in str(raised.value)  # the end of java's own output
    assert local.pids == []
