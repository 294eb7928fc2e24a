"""A point-in-time restore, as the README's runbook does it: DynamoDB restores into a table of
another name, and the stack is pointed at it (``RestoredTableName``). The sealed values name the
token store, not the table, so every token opens through the restored name; values sealed before
the store had a name (format 2, bound to the first table's physical name) open as well.

DynamoDB Local has no point-in-time restore: the restore is modelled by what it produces, every
item copied as it is into a new table (KMS and the table's own encryption are unchanged by it).
"""

from __future__ import annotations

import dataclasses

import pytest

from app_auth.container import build_container, set_container
from app_auth.crypto import EnvelopeCipher
from app_auth.errors import EncryptionError
from app_auth.token_store import token_pk
from app_auth.tokens import read_current_token
from sandbox.seed import merchant_app_ids, seed_tokens
from sandbox.table import table_definition_from_template
from tests.integration.stack_fixtures import Stack

pytestmark = pytest.mark.integration

MERCHANTS = 20


def _seal_as_format_2(stack: Stack, auth_app_id: str) -> None:
    """Rewrite one token's current pair the way the cipher sealed it before the store had a name:
    the same derivation, bound to the first table's physical name, version "2"."""
    settings = stack.container.settings
    store = stack.container.store
    pair = store.open_current(store.get_token(auth_app_id))
    old = EnvelopeCipher(stack.aws.client("kms"), settings.kms_key_id, settings.sealed_table_name)
    sealed = old.seal(
        {"app_auth_token": pair.app_auth_token, "app_refresh_token": pair.app_refresh_token},
        pk=token_pk(auth_app_id),
        field="current",
    )
    sealed["M"]["v"] = {"S": "2"}
    stack.aws.client("dynamodb").update_item(
        TableName=settings.table_name,
        Key={"pk": {"S": token_pk(auth_app_id)}, "sk": {"S": "TOKEN"}},
        UpdateExpression="SET #c = :c",
        ExpressionAttributeNames={"#c": "current"},
        ExpressionAttributeValues={":c": sealed},
    )


def _restore(stack: Stack, target: str) -> int:
    dynamodb = stack.aws.client("dynamodb")
    dynamodb.create_table(TableName=target, **table_definition_from_template())
    copied = 0
    for item in stack.table_items():
        dynamodb.put_item(TableName=target, Item=item)
        copied += 1
    return copied


def test_every_token_reads_and_rotates_through_the_restored_table(stack: Stack) -> None:
    apps = merchant_app_ids(MERCHANTS, prefix="2077")
    seed_tokens(stack.emulator.authority, stack.container.store, stack.creds.app_id, apps)
    _seal_as_format_2(stack, apps[0])
    before = {app: read_current_token(stack.container.store, app) for app in apps}
    settings = stack.container.settings
    assert settings.token_store_id != settings.table_name  # as deployed: the store has its own name

    restored = f"{settings.table_name}-restored"
    assert _restore(stack, restored) >= MERCHANTS
    # What the template gives the functions with RestoredTableName set: the new table, same names
    moved = dataclasses.replace(settings, table_name=restored)
    container = build_container(moved, client=stack.aws.client, sleep=lambda _: None)
    set_container(container)

    for app in apps:  # through the token function, as the ISV's services read them
        read = stack.http.get(f"{stack.url}/tokens/{app}", timeout=10)
        assert read.status_code == 200, (app, read.text)
        assert read.json()["app_auth_token"] == before[app].app_auth_token, app

    # The refresher rotates on the restored table, and the first table is left as it was
    summary = container.refresher.run(remaining_seconds=lambda: 300.0)
    assert summary.count("refreshed") == MERCHANTS, summary
    for app in apps:
        assert read_current_token(container.store, app).version == before[app].version + 1
        assert read_current_token(stack.container.store, app).version == before[app].version

    # Bound to the table's physical name instead, as before, the restored values would not open
    by_table_name = dataclasses.replace(moved, token_store_id=restored, sealed_table_name=restored)
    blind = build_container(by_table_name, client=stack.aws.client, sleep=lambda _: None)
    with pytest.raises(EncryptionError):
        read_current_token(blind.store, apps[1])
    with pytest.raises(EncryptionError):
        read_current_token(blind.store, apps[0])
