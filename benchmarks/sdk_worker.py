"""The official Python SDK's side of the ``sdk`` benchmark: ``python -m benchmarks.sdk_worker``,
run by ``benchmarks.sdk`` inside ``.venv-bench-sdk`` and driven over ``harness.serve_worker``.

Standard library and the SDK only (with the ``rsa`` package it signs with): no ``alipay_v3``,
no ``cryptography`` here. The keys it receives are throw-away benchmark keys.

The timed ops are the SDK's own RSA2 functions as ``DefaultAlipayClient`` calls them, with the key
as the console's bare base64 text (``sign_with_rsa2(app_private_key, content, charset)``,
``verify_with_rsa(alipay_public_key, message, sign)``), plus the same signature and verification
with the key parsed once, to show what parsing the key on every call costs.
"""

from __future__ import annotations

import base64
import inspect
import os
import traceback
from collections.abc import Callable
from typing import Any

from benchmarks.harness import Op, brief_error, serve_worker

PACKAGES = ("alipay-sdk-python", "rsa", "pyasn1", "pycryptodome")
CHARSET = "utf-8"


def _count_calls(owner: Any, name: str, op: Callable[[], object], times: int) -> int:
    """How many times ``owner.name`` (a classmethod) is called while ``op`` runs ``times`` times."""
    original = getattr(owner, name)  # bound to owner; may be inherited from a base class
    own = vars(owner).get(name)  # the descriptor to put back, if the class defines it itself
    calls = 0

    def counting(_cls: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    setattr(owner, name, classmethod(counting))
    try:
        for _ in range(times):
            op()
    finally:
        if own is None:
            delattr(owner, name)
        else:
            setattr(owner, name, own)
    return calls


def _aes_finding() -> str:
    """The SDK's AES (``encrypt_type = "AES"``) on this interpreter and pycryptodome."""
    from alipay.aop.api.util.EncryptUtils import aes_encrypt_content

    key = base64.b64encode(os.urandom(16)).decode()  # a throw-away AES-128 key
    try:
        aes_encrypt_content('{"grant_type":"authorization_code"}', key, CHARSET)
    except Exception as exc:  # noqa: BLE001 - the failure is the finding
        frames = [
            f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith("EncryptUtils.py")
        ]
        where = f" at EncryptUtils.py:{frames[-1].lineno} `{frames[-1].line}`" if frames else ""
        return f"fails{where}: {brief_error(exc)}"
    return "works"


def setup(params: dict[str, Any]) -> tuple[dict[str, Op], dict[str, Any]]:
    import rsa
    from alipay.aop.api import DefaultAlipayClient as client_module
    from alipay.aop.api.util import SignatureUtils
    from alipay.aop.api.util.SignatureUtils import sign_with_rsa2, verify_with_rsa

    private_b64: str = params["app_private_key_pkcs1_b64"]
    public_b64: str = params["alipay_public_key_spki_b64"]
    sign_content: str = params["sign_content"]
    verify_message = params["verify_content"].encode(CHARSET)
    response_signature: str = params["response_signature"]

    # Checked before anything is timed: the SDK's signature of the same bytes with the same key is
    # ours (PKCS#1 v1.5 is deterministic), and it accepts the response signature we verify.
    sdk_signature = sign_with_rsa2(private_b64, sign_content, CHARSET)
    if not verify_with_rsa(public_b64, verify_message, response_signature):
        raise AssertionError("the SDK did not verify the response signature")

    private_key = rsa.PrivateKey.load_pkcs1(SignatureUtils.fill_private_key_marker(private_b64), format="PEM")
    public_key = rsa.PublicKey.load_pkcs1_openssl_pem(SignatureUtils.fill_public_key_marker(public_b64))
    raw_signature = base64.b64decode(response_signature)
    content_bytes = sign_content.encode(CHARSET)

    def sdk_sign() -> str:
        return str(sign_with_rsa2(private_b64, sign_content, CHARSET))

    def sdk_verify() -> bool:
        return bool(verify_with_rsa(public_b64, verify_message, response_signature))

    def sdk_sign_verify() -> None:
        sdk_sign()
        sdk_verify()

    ops: dict[str, Op] = {
        "sdk.sign_verify": sdk_sign_verify,
        "sdk.sign": sdk_sign,
        "sdk.verify": sdk_verify,
        "sdk.sign_key_parsed_once": lambda: rsa.sign(content_bytes, private_key, "SHA-256"),
        "sdk.verify_key_parsed_once": lambda: rsa.verify(verify_message, raw_signature, public_key),
    }
    calls = 5
    private_loads = _count_calls(rsa.PrivateKey, "load_pkcs1", sdk_sign, calls)
    public_loads = _count_calls(rsa.PublicKey, "load_pkcs1_openssl_pem", sdk_verify, calls)
    client_source = inspect.getsource(client_module)
    notes = {
        "sdk_signature_equals_ours": sdk_signature == params["our_signature"],
        "sdk_verified_response_signature": True,
        "private_key_parses_per_sign_call": private_loads / calls,
        "public_key_parses_per_verify_call": public_loads / calls,
        "client_signs_with_key_text_per_request": "sign_with_rsa2(self.__config.app_private_key"
        in client_source,
        "client_verifies_with_key_text_per_response": "verify_with_rsa(self.__config.alipay_public_key"
        in client_source,
        "rsa_implementation": f"pure-Python rsa {rsa.__version__} ({os.path.dirname(rsa.__file__)})",
        "aes": _aes_finding(),
    }
    return ops, notes


if __name__ == "__main__":
    serve_worker(setup, PACKAGES)
