"""Keys and certificates as the Alipay console hands them out.

Keys come as PEM or as the bare base64 body the console shows; private keys as PKCS#1 or
PKCS#8. The format is detected from the DER structure, never declared, and a PEM label that
disagrees with its content (a PKCS#8 body under ``RSA PRIVATE KEY``) is tolerated, because
OpenSSL-based SDKs accept it and people paste such files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .errors import ConfigError

if TYPE_CHECKING:
    from cryptography import x509

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
_RSA_SIGNATURE_OID_PREFIX = "1.2.840.113549.1.1."

# The attribute names the SDKs print in an issuer DN (Node's @fidm/x509, Java's RFC 2253).
_SHORT_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "1.2.840.113549.1.9.1": "E",
}


@dataclass(frozen=True)
class LoadedPrivateKey:
    key: rsa.RSAPrivateKey
    encoding: str  # "PEM" or "base64"
    structure: str  # "PKCS#1" or "PKCS#8"
    pem_label: str | None


@dataclass(frozen=True)
class LoadedPublicKey:
    key: rsa.RSAPublicKey
    encoding: str
    structure: str  # "SPKI" or "PKCS#1", read from the DER whatever the encoding


def _der_from_text(text: str, what: str) -> tuple[bytes, str, str | None]:
    """Return (DER bytes, "PEM" | "base64", PEM label) for a PEM block or a bare base64 body."""
    text = text.strip()
    if not text:
        raise ConfigError(f"{what} is empty", field=what)
    match = _PEM_BLOCK.search(text)
    if match:
        label, body, encoding = match.group(1), match.group(2), "PEM"
        if "ENCRYPTED" in label or "Proc-Type:" in body:
            raise ConfigError(f"{what} is encrypted with a passphrase; export it without one", field=what)
    elif text.startswith("-----"):
        raise ConfigError(f"{what} looks like PEM but its BEGIN/END lines do not match", field=what)
    else:
        label, body, encoding = None, text, "base64"
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{what} is neither PEM nor valid base64", field=what) from exc
    if not der:
        raise ConfigError(f"{what} is empty", field=what)
    return der, encoding, label


def _der_header(der: bytes, pos: int) -> tuple[int, int] | None:
    """Where the content of the DER element at ``pos`` starts, and the length its header declares
    (X.690 8.1.3: one byte, or a byte giving the size of the length, then the length); None when
    the bytes end inside the header."""
    if pos + 1 >= len(der):
        return None
    first = der[pos + 1]
    if not first & 0x80:
        return pos + 2, first
    start = pos + 2 + (first & 0x7F)
    return None if start > len(der) else (start, int.from_bytes(der[pos + 2 : start], "big"))


def _element_tags(der: bytes, count: int = 2) -> list[int]:
    """The tags of the first ``count`` elements inside the outer SEQUENCE, as far as the bytes go."""
    if len(der) < 2 or der[0] != 0x30:
        return []
    pos = 2 + (der[1] & 0x7F if der[1] & 0x80 else 0)
    tags: list[int] = []
    while len(tags) < count and pos + 1 < len(der):
        tags.append(der[pos])
        header = _der_header(der, pos)
        if header is None:
            break
        start, length = header
        pos = start + length
    return tags


def der_structure(der: bytes) -> str:
    """The key structure of a DER body: "SPKI", "PKCS#1", "PKCS#8" or "unknown".

    SubjectPublicKeyInfo is SEQUENCE { SEQUENCE algorithm, BIT STRING }; PrivateKeyInfo (PKCS#8)
    is SEQUENCE { INTEGER version, SEQUENCE algorithm, ... }; PKCS#1 keys, RSAPublicKey and
    RSAPrivateKey alike, are SEQUENCE { INTEGER, INTEGER, ... }.
    """
    tags = _element_tags(der)
    if tags[:1] == [0x30]:
        return "SPKI"
    structures: dict[tuple[int, ...], str] = {(0x02, 0x30): "PKCS#8", (0x02, 0x02): "PKCS#1"}
    return structures.get(tuple(tags), "unknown")


def _cut_short(der: bytes, what: str) -> str | None:
    """What to say of a key whose outer DER SEQUENCE claims more bytes than the text holds: the
    usual copy-and-paste mistake of a key copied in part (None: not that)."""
    header = _der_header(der, 0) if der[:1] == b"\x30" else None
    if header is None or header[0] > 6:  # a key's length takes at most 4 bytes
        return None
    declared = sum(header)
    if declared <= len(der):
        return None
    return (
        f"{what} is cut short: the key says it is {declared} bytes, the text holds {len(der)}; copy the "
        "whole key, from -----BEGIN to -----END (or the whole base64 line)"
    )


def same_key(a: rsa.RSAPublicKey, b: rsa.RSAPublicKey) -> bool:
    """Whether two RSA public keys are one key, however each was encoded."""
    return a.public_numbers() == b.public_numbers()


def load_private_key(text: str) -> LoadedPrivateKey:
    """Load the app private key from PEM or bare base64, PKCS#1 or PKCS#8."""
    if _PEM_BLOCK.search(text.strip()) and "CERTIFICATE" in text:
        raise ConfigError("private_key holds a certificate, not a private key", field="private_key")
    der, encoding, label = _der_from_text(text, "private_key")
    if label and "PUBLIC" in label:
        raise ConfigError(
            "private_key holds a public key; use the app private key (应用私钥)", field="private_key"
        )
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            _cut_short(der, "private_key")
            or "private_key could not be parsed as an RSA private key (PKCS#1 or PKCS#8)",
            field="private_key",
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(
            f"private_key is a {type(key).__name__}; Alipay v3 signs with RSA2 (RSA-SHA256) only",
            field="private_key",
        )
    return LoadedPrivateKey(key, encoding, der_structure(der), label)


def load_public_key(text: str, what: str = "alipay_public_key") -> LoadedPublicKey:
    """Load an RSA public key (SubjectPublicKeyInfo or PKCS#1) from PEM or bare base64."""
    der, encoding, label = _der_from_text(text, what)
    if label and "PRIVATE" in label:
        raise ConfigError(
            f"{what} holds a private key; never share it, and use the public key here", field=what
        )
    if label == "CERTIFICATE":
        raise ConfigError(
            f"{what} holds a certificate; put certificates in app_cert/alipay_cert (certificate mode)",
            field=what,
        )
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError) as exc:
        if der_structure(der) in ("PKCS#1", "PKCS#8"):  # a private key structure
            raise ConfigError(
                f"{what} holds a private key; never share it, and use the public key here", field=what
            ) from None
        raise ConfigError(
            _cut_short(der, what) or f"{what} could not be parsed as an RSA public key", field=what
        ) from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError(f"{what} is not an RSA key", field=what)
    # From the DER, not the label: a bare base64 body has none, and a label can be wrong.
    return LoadedPublicKey(key, encoding, "PKCS#1" if der_structure(der) == "PKCS#1" else "SPKI")


def load_certificates(text: str, what: str) -> list[x509.Certificate]:
    """Every certificate in a PEM text, in file order (a bare base64 DER certificate is accepted too)."""
    # Imported here: cryptography.x509 lengthens the cold start, and public-key mode never needs it.
    from cryptography import x509

    text = text.strip()
    if not text:
        raise ConfigError(f"{what} is empty", field=what)
    try:
        if "-----BEGIN" in text:
            certs = x509.load_pem_x509_certificates(text.encode())
        else:
            certs = [x509.load_der_x509_certificate(base64.b64decode("".join(text.split()), validate=True))]
    except (ValueError, binascii.Error) as exc:
        raise ConfigError(f"{what} does not contain a readable X.509 certificate", field=what) from exc
    return certs


def issuer_principal(cert: x509.Certificate) -> str:
    """The issuer DN as the SDKs print it: most specific attribute first, no spaces."""
    parts = []
    # Every attribute in reverse DER order, inside a multi-valued RDN too: Node reverses the flat
    # attribute list (reduceRight), PHP does array_reverse on it.
    for rdn in reversed(list(cert.issuer.rdns)):
        for attr in reversed(list(rdn)):
            name = _SHORT_NAMES.get(attr.oid.dotted_string, attr.oid.dotted_string)
            value = attr.value if isinstance(attr.value, str) else attr.value.decode()
            parts.append(f"{name}={value}")
    return ",".join(parts)


def cert_sn(cert: x509.Certificate) -> str:
    """Alipay's certificate SN: md5(issuer DN + decimal serial)."""
    principal = issuer_principal(cert) + str(cert.serial_number)
    return hashlib.md5(principal.encode(), usedforsecurity=False).hexdigest()


def is_rsa_signed(cert: x509.Certificate) -> bool:
    return cert.signature_algorithm_oid.dotted_string.startswith(_RSA_SIGNATURE_OID_PREFIX)


def root_cert_sn(certs: list[x509.Certificate]) -> str:
    """The SNs of the RSA-signed roots of the bundle, in file order, joined with ``_``."""
    return "_".join(cert_sn(cert) for cert in certs if is_rsa_signed(cert))


def cert_public_key(cert: x509.Certificate, what: str) -> rsa.RSAPublicKey:
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError(f"{what} does not carry an RSA public key", field=what)
    return key


def public_key_fingerprint(key: rsa.RSAPublicKey) -> str:
    """A short, non-secret identifier of a public key, for diagnostics."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return digest.finalize().hex()[:16]
