"""Token envelope encryption (app_auth/crypto.py) against KMS in moto: what it costs in KMS calls,
what it refuses to open, and that values sealed the earlier way (a data key each) still open."""

from __future__ import annotations

import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app_auth import crypto
from app_auth.crypto import EnvelopeCipher
from app_auth.errors import EncryptionError
from sandbox.aws_standins import LocalAws
from tests.integration.aws_fixtures import aws, local_aws

__all__ = ["aws", "local_aws"]  # fixtures, used by name

TABLE = "tokens"
PAIR = {"app_auth_token": "202511BBtoken", "app_refresh_token": "202511BBrefresh"}


class Kms:
    """A KMS client in moto whose calls are counted by operation (through botocore's own events)."""

    def __init__(self, aws: LocalAws) -> None:
        self.client = aws.client("kms")
        self.key_id = self.client.create_key(Description="token key")["KeyMetadata"]["KeyId"]
        self.calls: Counter[str] = Counter()
        self.client.meta.events.register("before-call.kms.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def cipher(self, table: str = TABLE, **kw: Any) -> EnvelopeCipher:
        return EnvelopeCipher(self.client, self.key_id, table, **kw)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def kms(aws: LocalAws) -> Kms:
    kms = Kms(aws)
    kms.calls.clear()  # CreateKey
    return kms


def test_a_thousand_seals_take_one_data_key_and_another_process_opens_them_with_one_decrypt(kms: Kms) -> None:
    sealer = kms.cipher()
    sealed = {f"APP#{n}": sealer.seal({**PAIR, "n": n}, pk=f"APP#{n}", field="current") for n in range(1000)}
    assert kms.calls == {"GenerateDataKey": 1}
    assert all(s["M"]["v"] == {"S": "3"} for s in sealed.values())
    assert len({s["M"]["s"]["B"] for s in sealed.values()}) == 1000  # a key of its own each (salt)

    assert sealer.open(sealed["APP#7"], pk="APP#7", field="current") == {**PAIR, "n": 7}
    assert kms.calls == {"GenerateDataKey": 1}  # the sealer knows its own key

    reader = kms.cipher()  # another Lambda container: nothing cached
    with ThreadPoolExecutor(16) as pool:
        opened = list(pool.map(lambda pk: reader.open(sealed[pk], pk=pk, field="current"), sealed))
    assert opened == [{**PAIR, "n": n} for n in range(1000)]
    assert kms.calls == {"GenerateDataKey": 1, "Decrypt": 1}  # sixteen workers, one key, one call


def test_concurrent_sealers_share_one_data_key(kms: Kms) -> None:
    sealer = kms.cipher()
    with ThreadPoolExecutor(16) as pool:
        sealed = list(pool.map(lambda n: sealer.seal(PAIR, pk=f"APP#{n}", field="current"), range(200)))
    assert kms.calls == {"GenerateDataKey": 1}
    assert len({s["M"]["edk"]["B"] for s in sealed}) == 1


@pytest.mark.parametrize("pk, field", [("APP#2", "current"), ("APP#1", "previous"), ("APP#1", "parked")])
def test_a_value_copied_to_another_item_or_field_does_not_open(kms: Kms, pk: str, field: str) -> None:
    sealer = kms.cipher()
    sealed = sealer.seal(PAIR, pk="APP#1", field="current")
    for cipher in (sealer, kms.cipher()):  # the key cached or not
        with pytest.raises(EncryptionError, match=f"{field} of {pk} failed its integrity check") as caught:
            cipher.open(sealed, pk=pk, field=field)
        assert "202511BB" not in str(caught.value)


def test_a_value_from_another_table_does_not_open(kms: Kms) -> None:
    sealed = kms.cipher(table="staging-tokens").seal(PAIR, pk="APP#1", field="current")
    with pytest.raises(EncryptionError, match="KMS refused its data key"):
        kms.cipher().open(sealed, pk="APP#1", field="current")


def test_tampered_or_malformed_values_are_refused(kms: Kms) -> None:
    cipher = kms.cipher()
    sealed = cipher.seal(PAIR, pk="APP#1", field="current")
    flipped = bytearray(sealed["M"]["ct"]["B"])
    flipped[0] ^= 1
    other_salt = cipher.seal(PAIR, pk="APP#1", field="current")["M"]["s"]
    for tampered in ({**sealed["M"], "ct": {"B": bytes(flipped)}}, {**sealed["M"], "s": other_salt}):
        with pytest.raises(EncryptionError, match="failed its integrity check"):
            cipher.open({"M": tampered}, pk="APP#1", field="current")
    with pytest.raises(EncryptionError, match="unknown format"):
        cipher.open({"M": {**sealed["M"], "v": {"S": "9"}}}, pk="APP#1", field="current")
    for garbage in ({}, {"M": {"v": {"S": "2"}}}, {"S": "plaintext"}):
        with pytest.raises(EncryptionError, match="is not a sealed value"):
            cipher.open(garbage, pk="APP#1", field="current")


def test_the_sealing_key_is_replaced_after_its_uses_or_its_age(
    kms: Kms, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(crypto, "KEY_MAX_USES", 3)
    clock = Clock()
    cipher = kms.cipher(clock=clock)
    sealed = [cipher.seal(PAIR, pk=f"APP#{n}", field="current") for n in range(7)]
    assert kms.calls == {"GenerateDataKey": 3}  # 3 + 3 + 1
    clock.now += crypto.KEY_MAX_AGE_SECONDS
    sealed.append(cipher.seal(PAIR, pk="APP#7", field="current"))
    assert kms.calls == {"GenerateDataKey": 4}  # the last key had uses left, but not time
    assert len({s["M"]["edk"]["B"] for s in sealed}) == 4
    assert all(kms.cipher().open(s, pk=f"APP#{n}", field="current") == PAIR for n, s in enumerate(sealed))


def test_an_opened_key_is_asked_for_again_once_its_age_is_up(kms: Kms) -> None:
    sealed = kms.cipher().seal(PAIR, pk="APP#1", field="current")
    kms.calls.clear()
    clock = Clock()
    reader = kms.cipher(clock=clock)
    for _ in range(3):
        reader.open(sealed, pk="APP#1", field="current")
    assert kms.calls == {"Decrypt": 1}
    clock.now += crypto.KEY_MAX_AGE_SECONDS
    reader.open(sealed, pk="APP#1", field="current")
    assert kms.calls == {"Decrypt": 2}


def _sealed_as_version_1(kms: Kms, value: dict[str, str], *, pk: str, field: str) -> dict[str, Any]:
    """What the cipher wrote before data keys were shared: a data key per value, bound in KMS to
    the item and field."""
    context = {"app": "alipay-app-auth", "table": TABLE, "pk": pk, "field": field}
    key = kms.client.generate_data_key(KeyId=kms.key_id, KeySpec="AES_256", EncryptionContext=context)
    nonce = os.urandom(12)
    aad = json.dumps(context, sort_keys=True).encode()
    ciphertext = AESGCM(key["Plaintext"]).encrypt(nonce, json.dumps(value).encode(), aad)
    return {
        "M": {
            "v": {"S": "1"},
            "edk": {"B": key["CiphertextBlob"]},
            "n": {"B": nonce},
            "ct": {"B": ciphertext},
        }
    }


def test_values_sealed_with_a_key_each_still_open_and_stay_bound_to_their_item(kms: Kms) -> None:
    old = _sealed_as_version_1(kms, PAIR, pk="APP#1", field="current")
    cipher = kms.cipher()
    assert cipher.open(old, pk="APP#1", field="current") == PAIR
    with pytest.raises(EncryptionError, match="current of APP#2 does not open: KMS refused its data key"):
        cipher.open(old, pk="APP#2", field="current")
    resealed = cipher.seal(cipher.open(old, pk="APP#1", field="current"), pk="APP#1", field="current")
    assert resealed["M"]["v"] == {"S": "3"}


def test_values_are_bound_to_the_store_and_older_ones_to_the_table_that_sealed_them(kms: Kms) -> None:
    first_table, store = "isv-TokenTable-1A2B", "isv-tokens"
    deployed = kms.cipher(store, legacy_table=first_table)
    sealed = deployed.seal(PAIR, pk="APP#1", field="current")
    # The functions of a restored stack name the same store: what the backup holds opens
    assert kms.cipher(store, legacy_table=first_table).open(sealed, pk="APP#1", field="current") == PAIR
    with pytest.raises(EncryptionError, match="does not open"):
        kms.cipher(first_table).open(sealed, pk="APP#1", field="current")  # bound to the store, not the table

    # Format 2 was the same derivation under the physical table name
    old = kms.cipher(first_table).seal(PAIR, pk="APP#1", field="current")
    old["M"]["v"] = {"S": "2"}
    assert deployed.open(old, pk="APP#1", field="current") == PAIR
    with pytest.raises(EncryptionError, match="does not open"):
        kms.cipher(store, legacy_table="another-table").open(old, pk="APP#1", field="current")
