"""Alipay's asynchronous notifications (v2 form posts): the ``sign``/``sign_type`` rule.

Sign content: every parameter but ``sign`` and ``sign_type`` with a non-empty value, sorted by
name, as ``k=v`` joined by ``&`` (the Java SDK's rsaCheckV1), signed with RSA2 by Alipay. Some
message types keep ``sign_type`` in the content (rsaCheckV2); like the Node SDK we accept either.
Values are the decoded form values.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric import rsa

from .signing import sign, verify


def notify_sign_content(params: Mapping[str, str], *, keep_sign_type: bool = False) -> bytes:
    excluded = {"sign"} if keep_sign_type else {"sign", "sign_type"}
    pairs = sorted((k, v) for k, v in params.items() if k not in excluded and k and v)
    return "&".join(f"{k}={v}" for k, v in pairs).encode()


def verify_notification(params: Mapping[str, str], alipay_public_key: rsa.RSAPublicKey) -> bool:
    signature = params.get("sign")
    if not signature or params.get("sign_type", "RSA2") != "RSA2":
        return False
    return verify(alipay_public_key, notify_sign_content(params), signature) or verify(
        alipay_public_key, notify_sign_content(params, keep_sign_type=True), signature
    )


def sign_notification(params: Mapping[str, str], private_key: rsa.RSAPrivateKey) -> dict[str, str]:
    """Return ``params`` with ``sign_type=RSA2`` and ``sign`` added (what Alipay posts)."""
    signed = {**params, "sign_type": "RSA2"}
    signed["sign"] = sign(private_key, notify_sign_content(signed))
    return signed
