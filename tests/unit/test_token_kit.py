"""The ISV's services read a token knowing only the stack's name: its outputs say where."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from alipay_v3 import AppToken
from app_auth.crypto import EnvelopeCipher
from app_auth.errors import NotConfigured
from app_auth.schedule import RotationSchedule
from app_auth.table import Table
from app_auth.token_store import Replace, TokenStore
from app_auth.tokens import read_current_token, store_for_stack
from tests.fakes.dynamodb import FakeDynamoDB
from tests.fakes.kms import FakeKMS

OUTPUTS = {
    "TableName": "restored-table",
    "TokenStoreId": "shop-stack/token-store",
    "SealedTableName": "first-table",
    "KmsKeyArn": "arn:aws:kms:ap-east-1:111122223333:key/k",
}


class CloudFormation:
    def __init__(self, outputs: dict[str, str] | None) -> None:
        self.outputs = outputs

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        if self.outputs is None:
            raise ClientError({"Error": {"Code": "ValidationError", "Message": "no"}}, "DescribeStacks")
        return {
            "Stacks": [{"Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in self.outputs.items()]}]
        }


def clients(outputs: dict[str, str] | None) -> tuple[dict[str, Any], TokenStore]:
    made = {"cloudformation": CloudFormation(outputs), "dynamodb": FakeDynamoDB(), "kms": FakeKMS()}
    # the stack's own writer, sealing as the deployed functions do
    cipher = EnvelopeCipher(
        made["kms"], OUTPUTS["KmsKeyArn"], OUTPUTS["TokenStoreId"], legacy_table="first-table"
    )
    writer = TokenStore(Table(made["dynamodb"], "restored-table"), cipher, RotationSchedule())
    return made, writer


def test_the_stack_name_alone_locates_and_opens_the_tokens() -> None:
    made, writer = clients(OUTPUTS)
    token = AppToken("2021000000000042", "2088U", "tok-secret", "ref-secret", 500, 1000, 1_764_000_000.0)
    writer.save_authorization(token, isv_app_id="isv", admission=Replace("shop-1"))
    reader = store_for_stack("shop-stack", made.__getitem__)
    assert read_current_token(reader, "2021000000000042").app_auth_token == "tok-secret"
    assert [r.auth_app_id for r in reader.tokens_for_ref("shop-1")] == ["2021000000000042"]


@pytest.mark.parametrize(
    ("outputs", "said"),
    [(None, "could not be read; is the region right?"), ({"TableName": "t"}, "no output TokenStoreId")],
)
def test_a_stack_that_cannot_be_read_or_is_too_old_says_what_to_do(
    outputs: dict[str, str] | None, said: str
) -> None:
    made, _ = clients(outputs)
    with pytest.raises(NotConfigured, match=said) as caught:
        store_for_stack("shop-stack", made.__getitem__)
    assert "shop-stack" in caught.value.message
