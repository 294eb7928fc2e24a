"""Field-level envelope encryption for tokens at rest, on top of the table's own encryption: a table
dump, a backup or an over-broad IAM read shows ciphertext only.

Each sealed value has its own AES-256-GCM key, derived (HKDF-SHA256, a random salt per value) from a
KMS data key with the value's encryption context as the derivation's info: application, token store,
item key and field. The same context is the GCM associated data, so a value copied to another item or
field does not open. This is the shape of the AWS Database Encryption SDK's hierarchical keyring.

One KMS data key serves many values: KMS is asked for a new one after ``KEY_MAX_USES`` seals or
``KEY_MAX_AGE_SECONDS``, whichever comes first, and an opened data key is kept as long. A refresher
run that rotates a thousand tokens asks KMS a couple of times instead of two thousand. The data
key's KMS encryption context names the application and the token store, as the functions' IAM
policies require; KMS's audit trail shows a data key per run, not a decryption per item.

The token store is named by its logical identity (``TOKEN_STORE_ID``), not by the table's physical
name, so that a table restored from a backup under another name still opens what it holds. Values
sealed before (format 2 under the table's physical name, format 1 with a data key each, bound in KMS
to the item and field) still open under the name they were sealed with (``legacy_table``), and their
next write seals them in format 3.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import EncryptionError, StorageError

KEY_MAX_USES = 1000
KEY_MAX_AGE_SECONDS = 300.0
_OPENED_KEYS_KEPT = 256  # a run opens values sealed by a few earlier runs: a few keys, not hundreds

_STORE_DERIVED_KEY = "3"
_TABLE_DERIVED_KEY = "2"
_KEY_PER_VALUE = "1"


class DataKey:
    __slots__ = ("expires", "plaintext", "wrapped")

    def __init__(self, plaintext: bytes, wrapped: bytes, expires: float) -> None:
        self.plaintext, self.wrapped, self.expires = plaintext, wrapped, expires


def _kms_context(store: str) -> dict[str, str]:
    return {"app": "alipay-app-auth", "table": store}


def _value_context(store: str, pk: str, field: str) -> bytes:
    return json.dumps({**_kms_context(store), "pk": pk, "field": field}, sort_keys=True).encode()


def _value_key(data_key: bytes, salt: bytes, context: bytes) -> AESGCM:
    return AESGCM(HKDF(algorithm=SHA256(), length=32, salt=salt, info=context).derive(data_key))


class EnvelopeCipher:
    def __init__(
        self,
        kms: Any,
        key_id: str,
        store: str,
        *,
        legacy_table: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kms = kms
        self._key_id = key_id
        self._store = store
        self._legacy_table = legacy_table or store
        self._clock = clock
        # One lock for both caches, and KMS is asked under it: a run's workers all want the same
        # key at once, and one call serves them all. Misses are rare, so the wait is short.
        self._lock = threading.Lock()
        self._sealing: DataKey | None = None
        self._seals_left = 0
        self._opened: OrderedDict[bytes, DataKey] = OrderedDict()

    def reserve(self) -> DataKey:
        """A data key taken now for a seal to come (``seal(key=...)``): a rotation takes one before
        Alipay rotates, so that sealing the new pair then needs no KMS."""
        return self._sealing_key()

    def seal(
        self, value: Mapping[str, Any], *, pk: str, field: str, key: DataKey | None = None
    ) -> dict[str, Any]:
        """Encrypt a small JSON object; returns a DynamoDB map attribute value (low-level format)."""
        data_key = key or self._sealing_key()
        context = _value_context(self._store, pk, field)
        salt, nonce = os.urandom(16), os.urandom(12)
        ciphertext = _value_key(data_key.plaintext, salt, context).encrypt(
            nonce, json.dumps(value).encode(), context
        )
        return {
            "M": {
                "v": {"S": _STORE_DERIVED_KEY},
                "edk": {"B": data_key.wrapped},
                "s": {"B": salt},
                "n": {"B": nonce},
                "ct": {"B": ciphertext},
            }
        }

    def open(self, sealed: Mapping[str, Any], *, pk: str, field: str) -> dict[str, Any]:
        what = f"{field} of {pk}"
        try:
            parts = sealed["M"]
            version = parts["v"]["S"]
            wrapped, nonce, ciphertext = parts["edk"]["B"], parts["n"]["B"], parts["ct"]["B"]
            store = self._store if version == _STORE_DERIVED_KEY else self._legacy_table
            context = _value_context(store, pk, field)
            if version in (_STORE_DERIVED_KEY, _TABLE_DERIVED_KEY):
                data_key = self._opened_key(wrapped, _kms_context(store), what)
                aead = _value_key(data_key.plaintext, parts["s"]["B"], context)
            elif version == _KEY_PER_VALUE:
                item_context = {**_kms_context(store), "pk": pk, "field": field}  # bound in KMS
                aead = AESGCM(self._decrypt(wrapped, item_context, what))
            else:
                raise EncryptionError(f"{what} was sealed in an unknown format ({version!r})")
        except (KeyError, TypeError) as exc:
            raise EncryptionError(f"{what} is not a sealed value") from exc
        try:
            plaintext = aead.decrypt(nonce, ciphertext, context)
        except InvalidTag as exc:
            raise EncryptionError(f"{what} failed its integrity check") from exc
        result: dict[str, Any] = json.loads(plaintext)
        return result

    def _sealing_key(self) -> DataKey:
        with self._lock:
            now = self._clock()
            if self._sealing is None or self._seals_left <= 0 or self._sealing.expires <= now:
                try:
                    issued = self._kms.generate_data_key(
                        KeyId=self._key_id, KeySpec="AES_256", EncryptionContext=_kms_context(self._store)
                    )
                except (BotoCoreError, ClientError) as exc:
                    raise StorageError("KMS refused to issue a data key for token encryption") from exc
                self._sealing = DataKey(
                    issued["Plaintext"], issued["CiphertextBlob"], now + KEY_MAX_AGE_SECONDS
                )
                self._seals_left = KEY_MAX_USES
                self._keep(self._sealing)
            self._seals_left -= 1
            return self._sealing

    def _opened_key(self, wrapped: bytes, kms_context: Mapping[str, str], what: str) -> DataKey:
        with self._lock:
            key = self._opened.get(wrapped)
            if key is None or key.expires <= self._clock():
                plaintext = self._decrypt(wrapped, kms_context, what)
                key = DataKey(plaintext, wrapped, self._clock() + KEY_MAX_AGE_SECONDS)
                self._keep(key)
            return key

    def _keep(self, key: DataKey) -> None:
        self._opened[key.wrapped] = key
        self._opened.move_to_end(key.wrapped)
        while len(self._opened) > _OPENED_KEYS_KEPT:
            self._opened.popitem(last=False)

    def _decrypt(self, wrapped: bytes, context: Mapping[str, str], what: str) -> bytes:
        try:
            answer = self._kms.decrypt(CiphertextBlob=wrapped, EncryptionContext=context, KeyId=self._key_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in (
                "InvalidCiphertextException",
                "IncorrectKeyException",
            ):
                raise EncryptionError(f"{what} does not open: KMS refused its data key") from exc
            raise StorageError("KMS refused to decrypt a data key") from exc
        except BotoCoreError as exc:
            raise StorageError("KMS could not be reached to decrypt a data key") from exc
        plaintext: bytes = answer["Plaintext"]
        return plaintext
