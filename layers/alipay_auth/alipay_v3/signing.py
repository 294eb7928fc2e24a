"""The v3 signature scheme as pure steps: build the content, sign it, put it in a header.

Request::

    Authorization: ALIPAY-SHA256withRSA app_id=..[,app_cert_sn=..],nonce=..,timestamp=..,sign=<b64>

signed over ``auth string \\n METHOD \\n path?query \\n body \\n [app_auth_token \\n]``, and a
response is signed over ``alipay-timestamp \\n alipay-nonce \\n body \\n``. Bodies are the bytes
on the wire (the base64 ciphertext when AES is on). Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .errors import RequestVerificationError

SCHEME = "ALIPAY-SHA256withRSA"
_SIGN_MARKER = ",sign="


@dataclass(frozen=True)
class AuthParams:
    """The fields of the auth string, in the order every SDK writes them."""

    app_id: str
    nonce: str
    timestamp: str  # Unix time in milliseconds, as text
    app_cert_sn: str | None = None
    extra: str | None = None  # Node's additionalAuthInfo: "k=v[,k=v]" appended as is

    def auth_string(self) -> str:
        text = f"app_id={self.app_id}"
        if self.app_cert_sn:
            text += f",app_cert_sn={self.app_cert_sn}"
        text += f",nonce={self.nonce},timestamp={self.timestamp}"
        if self.extra:
            text += f",{self.extra}"
        return text


def request_sign_content(
    auth_string: str, method: str, path_and_query: str, body: bytes, app_auth_token: str | None = None
) -> bytes:
    content = f"{auth_string}\n{method.upper()}\n{path_and_query}\n".encode() + body + b"\n"
    if app_auth_token:
        content += app_auth_token.encode() + b"\n"
    return content


def response_sign_content(timestamp: str, nonce: str, body: bytes) -> bytes:
    return f"{timestamp}\n{nonce}\n".encode() + body + b"\n"


def sign(private_key: rsa.RSAPrivateKey, content: bytes) -> str:
    """SHA256withRSA, PKCS#1 v1.5, standard base64."""
    return base64.b64encode(private_key.sign(content, padding.PKCS1v15(), hashes.SHA256())).decode()


def verify(public_key: rsa.RSAPublicKey, content: bytes, signature: str) -> bool:
    try:
        public_key.verify(
            base64.b64decode(signature, validate=True), content, padding.PKCS1v15(), hashes.SHA256()
        )
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def authorization_header(auth_string: str, signature: str) -> str:
    return f"{SCHEME} {auth_string}{_SIGN_MARKER}{signature}"


@dataclass(frozen=True)
class ParsedAuthorization:
    auth_string: str
    fields: dict[str, str]
    signature: str

    @property
    def app_id(self) -> str:
        return self.fields.get("app_id", "")


def parse_authorization(header: str | None) -> ParsedAuthorization:
    """Split an Authorization header into its auth string, fields and signature (server side).

    The signature is split off at the last ``,sign=``: base64 never contains a comma.
    """
    if not header:
        raise RequestVerificationError("missing Authorization header", code="missing-signature")
    scheme, _, rest = header.partition(" ")
    if scheme != SCHEME:
        raise RequestVerificationError(f"Authorization scheme must be {SCHEME}", code="invalid-auth-type")
    auth_string, marker, signature = rest.rpartition(_SIGN_MARKER)
    if not marker or not signature:
        raise RequestVerificationError("Authorization carries no sign=", code="missing-signature")
    fields: dict[str, str] = {}
    for part in auth_string.split(","):
        key, eq, value = part.partition("=")
        if not eq:
            raise RequestVerificationError(
                f"malformed auth string element {key[:40]!r}", code="invalid-auth-string"
            )
        fields[key] = value
    for required in ("app_id", "nonce", "timestamp"):
        if not fields.get(required):
            raise RequestVerificationError(f"auth string lacks {required}", code=f"missing-{required}")
    return ParsedAuthorization(auth_string, fields, signature)
