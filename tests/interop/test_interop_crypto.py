"""AES content encryption and the SHA256withRSA primitive, against the SDK's util.js.

AES: identical ciphertexts for the same key and text, and each side decrypts the other's, for
128-, 192- and 256-bit keys and empty, ASCII, Chinese, emoji and block-aligned texts.
Signatures: the SDK's ``signatureV3`` and ours give the same bytes for the app key in every format
the console hands out (PKCS#1/PKCS#8, PEM/bare base64), and each side verifies the other's and
rejects a tampered one.
"""

from __future__ import annotations

import base64
import os
import random

import pytest

from alipay_v3 import AesKey, DecryptError
from alipay_v3.keys import load_private_key, load_public_key
from alipay_v3.signing import sign, verify
from sandbox.credentials import DevCredentials, pem_body, private_pem, public_pem
from tests.interop.nodesdk import Oracle

pytestmark = pytest.mark.interop

TEXTS = [
    "",
    "a",
    "0123456789abcdef",  # exactly one block: a whole padding block follows
    '{"grant_type":"authorization_code","code":"1cc19911172e4f8aaa509c8fb5d12f56"}',
    "支付宝开放平台",
    '{"msg":"授权成功","emoji":"😀🇨🇳"}',
    " leading and trailing spaces ",  # the PHP SDK trims these; Node and we keep them
    "line\nbreaks\r\nand\ttabs",
    "长" * 1000,
]
KEYS = {
    "aes-128": base64.b64encode(os.urandom(16)).decode(),
    "aes-192": base64.b64encode(os.urandom(24)).decode(),
    "aes-256": base64.b64encode(os.urandom(32)).decode(),
}


@pytest.mark.parametrize("key_name", sorted(KEYS))
@pytest.mark.parametrize("text", TEXTS, ids=lambda t: f"len{len(t)}")
def test_aes_equal_both_ways(oracle: Oracle, key_name: str, text: str) -> None:
    key = KEYS[key_name]
    ours = AesKey(key).encrypt(text)
    assert ours == oracle.call("aes_encrypt", text=text, key=key)
    assert oracle.call("aes_decrypt", ciphertext=ours, key=key) == {"ok": True, "text": text}
    assert AesKey(key).decrypt(oracle.call("aes_encrypt", text=text, key=key)) == text


def test_aes_with_the_dev_credentials_key(oracle: Oracle, credential_sets: list[DevCredentials]) -> None:
    """The console issues 128-bit keys; the sandbox does too."""
    for creds in credential_sets:
        assert len(base64.b64decode(creds.encrypt_key)) == 16
        text = '{"app_auth_token":"202506BB00000000","中文":"值"}'
        assert AesKey(creds.encrypt_key).encrypt(text) == oracle.call(
            "aes_encrypt", text=text, key=creds.encrypt_key
        )


def test_aes_wrong_key_fails_on_both_sides(oracle: Oracle) -> None:
    text = '{"app_auth_token":"202506BB00000000000000000000000000000000"}'
    ciphertext = AesKey(KEYS["aes-128"]).encrypt(text)
    other = base64.b64encode(bytes(16)).decode()
    with pytest.raises(DecryptError):
        AesKey(other).decrypt(ciphertext)
    sdk = oracle.call("aes_decrypt", ciphertext=ciphertext, key=other)
    assert sdk != {"ok": True, "text": text}


def _key_variants(creds: DevCredentials) -> dict[str, tuple[str, str | None]]:
    """The app key as the console may hand it out, with the keyType the SDK needs (protocol doc 1.3)."""
    pkcs1, pkcs8 = private_pem(creds.app_key), private_pem(creds.app_key, pkcs8=True)
    return {
        "PKCS1-PEM": (pkcs1, None),
        "PKCS1-base64": (pem_body(pkcs1), None),
        "PKCS8-PEM": (pkcs8, "PKCS8"),
        "PKCS8-base64": (pem_body(pkcs8), "PKCS8"),
        "PKCS8-base64-default-keyType": (pem_body(pkcs8), None),  # works through OpenSSL 3 leniency
    }


def _contents(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = 'abcXYZ019 ,=\n\t/?&%+授权支付宝😀é\u2028"\\'
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))) for _ in range(count)] + [
        "app_id=2021000000000001,nonce=n,timestamp=1\nPOST\n/v3/alipay/open/auth/token/app\n{}\n"
    ]


@pytest.mark.parametrize(
    "variant",
    ["PKCS1-PEM", "PKCS1-base64", "PKCS8-PEM", "PKCS8-base64", "PKCS8-base64-default-keyType"],
)
def test_signatures_equal_and_cross_verify(
    oracle: Oracle, credential_sets: list[DevCredentials], variant: str
) -> None:
    creds = credential_sets[0]
    key_text, key_type = _key_variants(creds)[variant]
    ours_key = load_private_key(key_text).key
    public = public_pem(creds.app_key)
    for index, content in enumerate(_contents(len(variant), 12)):
        ours = sign(ours_key, content.encode())
        sdk = oracle.call("sign", content=content, privateKey=key_text, keyType=key_type)
        assert ours == sdk, f"{variant} content #{index}"
        # The SDK verifies ours (public key as PEM and as bare base64), we verify the SDK's.
        for public_text in (public, pem_body(public)):
            assert oracle.call(
                "verify",
                content=content,
                signature=ours,
                publicKey=public_text,
                anyPrivateKey=private_pem(creds.app_key),
            )
        assert verify(load_public_key(public).key, content.encode(), sdk)
        # Tampered content or signature: both reject.
        tampered = content + "x"
        assert not oracle.call(
            "verify",
            content=tampered,
            signature=ours,
            publicKey=public,
            anyPrivateKey=private_pem(creds.app_key),
        )
        assert not verify(load_public_key(public).key, tampered.encode(), sdk)
        other = sign(load_private_key(private_pem(credential_sets[1].app_key)).key, content.encode())
        assert not oracle.call(
            "verify",
            content=content,
            signature=other,
            publicKey=public,
            anyPrivateKey=private_pem(creds.app_key),
        )
        assert not verify(load_public_key(public).key, content.encode(), other)
