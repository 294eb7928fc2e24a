"""Alipay's AES content encryption: AES-CBC with a zero IV and PKCS#7 padding, base64 outside.

The zero IV is Alipay's protocol, not our choice: identical plaintexts give identical
ciphertexts. It protects request and response bodies in transit beyond TLS; what we store at
rest is encrypted separately, with a proper AEAD.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import ConfigError, DecryptError

_ZERO_IV = bytes(16)


class AesKey:
    """An ``encrypt_key`` as the console shows it (base64 of 16, 24 or 32 bytes)."""

    __slots__ = ("_cipher",)

    def __init__(self, encoded: str) -> None:
        try:
            raw = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError("encrypt_key is not valid base64") from exc
        if len(raw) not in (16, 24, 32):
            raise ConfigError(f"encrypt_key decodes to {len(raw)} bytes; AES needs 16, 24 or 32")
        self._cipher = Cipher(algorithms.AES(raw), modes.CBC(_ZERO_IV))

    def __repr__(self) -> str:
        return "AesKey(<redacted>)"

    def encrypt(self, plaintext: str) -> str:
        padder = padding.PKCS7(128).padder()
        data = padder.update(plaintext.encode()) + padder.finalize()
        encryptor = self._cipher.encryptor()
        return base64.b64encode(encryptor.update(data) + encryptor.finalize()).decode()

    def decrypt(self, ciphertext: str | bytes) -> str:
        try:
            data = base64.b64decode(ciphertext, validate=True)
            decryptor = self._cipher.decryptor()
            padded = decryptor.update(data) + decryptor.finalize()
            unpadder = padding.PKCS7(128).unpadder()
            return (unpadder.update(padded) + unpadder.finalize()).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
            raise DecryptError(
                "the content could not be decrypted; check that encrypt_key is current"
            ) from exc
