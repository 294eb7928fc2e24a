"""Throw-away credentials shaped like the Alipay console's: keys, certificates, an AES key.

One ``DevCredentials`` holds both sides: what the ISV configures (``client_config``) and what the
emulator needs to play Alipay (its private key, the app's public key, the certificate SNs).
Everything is generated; nothing here is a real key.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.x509.oid import NameOID

KeyLike = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def new_rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_pem(key: rsa.RSAPrivateKey, pkcs8: bool = False) -> str:
    fmt = serialization.PrivateFormat.PKCS8 if pkcs8 else serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def public_pem(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def pem_body(pem: str) -> str:
    """The bare base64 the console shows: the PEM without its BEGIN/END lines and line breaks."""
    return "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _name(cn: str, ou: str = "Certification Authority", o: str = "Sandbox Test", c: str = "CN") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, c),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, o),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def make_cert(
    subject: x509.Name,
    public_key: Any,
    issuer: x509.Name,
    issuer_key: KeyLike,
    *,
    serial: int | None = None,
    ca: bool = False,
    days: int = 3650,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    hash_algorithm = (
        hashes.SHA384() if isinstance(issuer_key, ec.EllipticCurvePrivateKey) else hashes.SHA256()
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hash_algorithm)
    )


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    length = (
        bytes([n])
        if n < 0x80
        else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8)
    )
    return bytes([tag]) + length + content


def resign_with_sha1(cert: x509.Certificate, key: rsa.RSAPrivateKey) -> x509.Certificate:
    """Turn an RSA-SHA256 certificate into an RSA-SHA1 one.

    cryptography no longer signs X.509 with SHA-1, yet the real alipayRootCert.crt holds a SHA-1
    root that the root SN rule must keep. Swap the algorithm OID (same length) and sign again.
    """
    sha256_rsa, sha1_rsa = bytes.fromhex("2a864886f70d01010b"), bytes.fromhex("2a864886f70d010105")
    tbs = cert.tbs_certificate_bytes.replace(sha256_rsa, sha1_rsa, 1)
    signature = key.sign(tbs, asym_padding.PKCS1v15(), hashes.SHA1())  # noqa: S303  # nosec B303  # see docstring
    algorithm = _der(0x30, _der(0x06, sha1_rsa) + b"\x05\x00")
    return x509.load_der_x509_certificate(_der(0x30, tbs + algorithm + _der(0x03, b"\x00" + signature)))


def make_root_bundle(rsa_root_key: rsa.RSAPrivateKey) -> tuple[list[x509.Certificate], x509.Name]:
    """A bundle shaped like alipayRootCert.crt: roots of mixed signature algorithms.

    An ECDSA root (skipped by the root SN rule), the RSA-SHA256 root that issues our CA, and an
    RSA-SHA1 root with a 20-octet (159-bit) serial, the longest DER allows (PHP prints it as 0x…).
    """
    ec_key = ec.generate_private_key(ec.SECP384R1())
    ec_name = _name("Sandbox Root E1")
    ec_root = make_cert(ec_name, ec_key.public_key(), ec_name, ec_key, ca=True)
    rsa_name = _name("Sandbox Root R1")
    rsa_root = make_cert(rsa_name, rsa_root_key.public_key(), rsa_name, rsa_root_key, ca=True)
    sha1_key = new_rsa_key()
    sha1_name = _name("Sandbox Class 2 Root CA - G3", ou="Trust Services", o="Sandbox Trust")
    sha1_root = resign_with_sha1(
        make_cert(
            sha1_name,
            sha1_key.public_key(),
            sha1_name,
            sha1_key,
            ca=True,
            serial=(1 << 158) | 0x0123456789ABCDEF,
        ),
        sha1_key,
    )
    return [ec_root, rsa_root, sha1_root], rsa_name


@dataclass
class DevCredentials:
    """Both sides of one ISV app's credentials."""

    app_id: str
    app_key: rsa.RSAPrivateKey
    alipay_key: rsa.RSAPrivateKey
    encrypt_key: str
    app_cert: x509.Certificate
    alipay_cert: x509.Certificate
    root_bundle: list[x509.Certificate]
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def generate(cls, app_id: str = "2021000000000001") -> DevCredentials:
        app_key, alipay_key, root_key, ca_key = new_rsa_key(), new_rsa_key(), new_rsa_key(), new_rsa_key()
        roots, root_name = make_root_bundle(root_key)
        ca_name = _name("Sandbox Certification Authority Class 1 R1")
        ca_cert = make_cert(ca_name, ca_key.public_key(), root_name, root_key, ca=True)
        app_cert = make_cert(
            _name(app_id, ou="Alipay Open Platform", o="Sandbox ISV"),
            app_key.public_key(),
            ca_name,
            ca_key,
            serial=int.from_bytes(os.urandom(16)) >> 2,  # Alipay leaf serials are 126 bits
        )
        alipay_cert = make_cert(
            _name("Alipay Sandbox", ou="Alipay Open Platform", o="Alipay"),
            alipay_key.public_key(),
            ca_name,
            ca_key,
            serial=int.from_bytes(os.urandom(16)) >> 2,
        )
        encrypt_key = base64.b64encode(os.urandom(16)).decode()
        return cls(
            app_id, app_key, alipay_key, encrypt_key, app_cert, alipay_cert, roots, {"ca_cert": ca_cert}
        )

    def client_config(
        self,
        gateway: str,
        *,
        cert_mode: bool = False,
        aes: bool = False,
        pkcs8: bool = False,
        pem: bool = True,
    ) -> dict[str, str]:
        """The ISV's configuration JSON (the shape ``AlipayConfig.from_mapping`` reads)."""
        key = private_pem(self.app_key, pkcs8=pkcs8)
        config: dict[str, str] = {
            "app_id": self.app_id,
            "private_key": key if pem else pem_body(key),
            "gateway": gateway,
        }
        if cert_mode:
            config.update(
                app_cert=cert_pem(self.app_cert),
                alipay_cert=cert_pem(self.alipay_cert),
                alipay_root_cert="".join(cert_pem(c) for c in self.root_bundle),
            )
        else:
            config["alipay_public_key"] = (
                public_pem(self.alipay_key) if pem else pem_body(public_pem(self.alipay_key))
            )
        if aes:
            config["encrypt_key"] = self.encrypt_key
        return config
