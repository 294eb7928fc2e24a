"""``FakeKMS``: generate_data_key and decrypt as ``EnvelopeCipher`` calls them, encryption context honoured.

A data key's CiphertextBlob is an opaque handle; decrypt with another key id or another encryption
context fails as KMS does: ``ClientError`` InvalidCiphertextException.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError


class FakeKMS:
    def __init__(self) -> None:
        self._keys: dict[bytes, tuple[str, dict[str, str], bytes]] = {}
        self.calls: list[str] = []

    def generate_data_key(
        self,
        *,
        KeyId: str,
        KeySpec: str = "AES_256",
        EncryptionContext: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        self.calls.append("generate_data_key")
        if KeySpec != "AES_256":
            raise ClientError(
                {"Error": {"Code": "ValidationException", "Message": KeySpec}}, "GenerateDataKey"
            )
        plaintext, blob = os.urandom(32), b"fake-kms:" + os.urandom(24)
        self._keys[blob] = (KeyId, dict(EncryptionContext or {}), plaintext)
        return {"Plaintext": plaintext, "CiphertextBlob": blob, "KeyId": KeyId}

    def decrypt(
        self,
        *,
        CiphertextBlob: bytes,
        EncryptionContext: Mapping[str, str] | None = None,
        KeyId: str | None = None,
    ) -> dict[str, Any]:
        self.calls.append("decrypt")
        known = self._keys.get(CiphertextBlob)
        if known is None or known[1] != dict(EncryptionContext or {}):
            raise ClientError({"Error": {"Code": "InvalidCiphertextException", "Message": ""}}, "Decrypt")
        if KeyId is not None and KeyId != known[0]:
            raise ClientError({"Error": {"Code": "IncorrectKeyException", "Message": ""}}, "Decrypt")
        return {"Plaintext": known[2], "KeyId": known[0]}
