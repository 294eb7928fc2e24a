"""Field-level envelope encryption for tokens at rest: an AES-256-GCM data key from KMS per seal.

The KMS encryption context and the GCM associated data both carry the item's key and the field
name, so a sealed value copied to another item or field does not open. This is on top of the
table's own encryption: a table dump, a backup or an over-broad IAM read shows ciphertext only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import EncryptionError, StorageError

_VERSION = "1"


def _context(table: str, pk: str, field: str) -> dict[str, str]:
    return {"app": "alipay-app-auth", "table": table, "pk": pk, "field": field}


class EnvelopeCipher:
    def __init__(self, kms: Any, key_id: str, table: str) -> None:
        self._kms = kms
        self._key_id = key_id
        self._table = table

    def seal(self, value: Mapping[str, Any], *, pk: str, field: str) -> dict[str, Any]:
        """Encrypt a small JSON object; returns a DynamoDB map attribute value (low-level format)."""
        context = _context(self._table, pk, field)
        try:
            data_key = self._kms.generate_data_key(
                KeyId=self._key_id, KeySpec="AES_256", EncryptionContext=context
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError("KMS refused to issue a data key for token encryption") from exc
        nonce = os.urandom(12)
        aad = json.dumps(context, sort_keys=True).encode()
        ciphertext = AESGCM(data_key["Plaintext"]).encrypt(nonce, json.dumps(value).encode(), aad)
        return {
            "M": {
                "v": {"S": _VERSION},
                "edk": {"B": data_key["CiphertextBlob"]},
                "n": {"B": nonce},
                "ct": {"B": ciphertext},
            }
        }

    def open(self, sealed: Mapping[str, Any], *, pk: str, field: str) -> dict[str, Any]:
        context = _context(self._table, pk, field)
        try:
            parts = sealed["M"]
            edk, nonce, ciphertext = parts["edk"]["B"], parts["n"]["B"], parts["ct"]["B"]
        except (KeyError, TypeError) as exc:
            raise EncryptionError(f"{field} of {pk} is not a sealed value") from exc
        try:
            data_key = self._kms.decrypt(CiphertextBlob=edk, EncryptionContext=context, KeyId=self._key_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in (
                "InvalidCiphertextException",
                "IncorrectKeyException",
            ):
                raise EncryptionError(f"{field} of {pk} does not open under this item's context") from exc
            raise StorageError("KMS refused to decrypt a data key") from exc
        except BotoCoreError as exc:
            raise StorageError("KMS could not be reached to decrypt a data key") from exc
        try:
            plaintext = AESGCM(data_key["Plaintext"]).decrypt(
                nonce, ciphertext, json.dumps(context, sort_keys=True).encode()
            )
        except InvalidTag as exc:
            raise EncryptionError(f"{field} of {pk} failed its integrity check") from exc
        result: dict[str, Any] = json.loads(plaintext)
        return result
