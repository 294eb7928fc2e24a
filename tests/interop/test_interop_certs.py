"""Certificate SNs (``app_cert_sn``, ``alipay-sn``) and the root SN, against the SDK's antcertutil.getSN.

Generated CA chains mix RSA-SHA256, RSA-SHA1 (re-signed, as in the real alipayRootCert.crt),
RSA-SHA384/512, ECDSA and Ed25519 roots, serials from 1 to 20 octets (159 bits, the DER maximum),
and issuer DNs with ST, L, emailAddress, repeated and multi-valued RDNs, non-ASCII and
punctuation in values.
"""

from __future__ import annotations

import base64
import datetime as dt
import random
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from alipay_v3.keys import cert_sn, issuer_principal, root_cert_sn
from sandbox.credentials import DevCredentials, cert_pem, make_root_bundle, new_rsa_key, resign_with_sha1
from tests.interop.nodesdk import Oracle

pytestmark = pytest.mark.interop

SEED = 4242
CHAIN_COUNT = 12
ROOT_KINDS = ("rsa-sha256", "rsa-sha1", "rsa-sha384", "rsa-sha512", "ecdsa", "ed25519")
ATTRIBUTES = [
    (NameOID.COUNTRY_NAME, ["CN", "US", "HK"]),
    (NameOID.STATE_OR_PROVINCE_NAME, ["Zhejiang", "浙江省", "Shanghai"]),
    (NameOID.LOCALITY_NAME, ["Hangzhou", "杭州市", "Pudong, New Area"]),
    (
        NameOID.ORGANIZATION_NAME,
        ["Ant Financial", "蚂蚁科技集团股份有限公司", "Sandbox Trust, Inc.", "A+B=C"],
    ),
    (NameOID.ORGANIZATIONAL_UNIT_NAME, ["Certification Authority", "Alipay Open Platform", "信任服务"]),
    (
        NameOID.COMMON_NAME,
        ["Sandbox Root R1", "Ant Financial Certification Authority Class 1 R1", "根证书 G3"],
    ),
    (NameOID.EMAIL_ADDRESS, ["ca@example.com", "pki+root@alipay.example"]),
]


@dataclass
class Keys:
    rsa: rsa.RSAPrivateKey
    ecdsa: ec.EllipticCurvePrivateKey
    ed25519: ed25519.Ed25519PrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    # The SN depends on the issuer name and the serial only, so a few keys serve every certificate.
    return Keys(new_rsa_key(), ec.generate_private_key(ec.SECP384R1()), ed25519.Ed25519PrivateKey.generate())


def random_name(rng: random.Random) -> x509.Name:
    chosen = [item for item in ATTRIBUTES if item[0] == NameOID.COMMON_NAME or rng.random() < 0.6]
    rng.shuffle(chosen)
    rdns = [
        x509.RelativeDistinguishedName([x509.NameAttribute(oid, rng.choice(values))])
        for oid, values in chosen
    ]
    if rng.random() < 0.3:  # a repeated attribute type in its own RDN
        rdns.insert(
            rng.randrange(len(rdns) + 1),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Second OU")]
            ),
        )
    if rng.random() < 0.2:  # a multi-valued RDN
        rdns.insert(
            rng.randrange(len(rdns) + 1),
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Multi O"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Multi OU"),
                ]
            ),
        )
    return x509.Name(rdns)


def random_serial(rng: random.Random) -> int:
    kind = rng.choice(["small", "64", "126", "159", "max", "high-bit"])
    if kind == "small":
        return rng.randint(1, 255)
    if kind == "64":
        return rng.getrandbits(64) | 1
    if kind == "126":  # Alipay's leaf serials
        return rng.getrandbits(126) | (1 << 125)
    if kind == "159":  # 20 octets, like the iTrusChina root
        return (1 << 158) | rng.getrandbits(158)
    if kind == "max":
        return (1 << 159) - 1
    return (0x80 << 112) | rng.getrandbits(112)  # needs a leading zero octet in DER


def build_cert(
    subject: x509.Name,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey,
    issuer: x509.Name,
    signing_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
    serial: int,
    algorithm: hashes.SHA256 | hashes.SHA384 | hashes.SHA512 | None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(signing_key, algorithm)
    )


def make_root(keys: Keys, kind: str, name: x509.Name, serial: int) -> x509.Certificate:
    if kind == "ecdsa":
        return build_cert(name, keys.ecdsa.public_key(), name, keys.ecdsa, serial, hashes.SHA384())
    if kind == "ed25519":
        return build_cert(name, keys.ed25519.public_key(), name, keys.ed25519, serial, None)
    algorithm: hashes.SHA256 | hashes.SHA384 | hashes.SHA512 = hashes.SHA256()
    if kind == "rsa-sha384":
        algorithm = hashes.SHA384()
    elif kind == "rsa-sha512":
        algorithm = hashes.SHA512()
    cert = build_cert(name, keys.rsa.public_key(), name, keys.rsa, serial, algorithm)
    return resign_with_sha1(cert, keys.rsa) if kind == "rsa-sha1" else cert


@dataclass
class Chain:
    roots: list[x509.Certificate]
    root_kinds: list[str]
    others: list[x509.Certificate]  # an intermediate CA and leaves under it


def make_chain(keys: Keys, index: int) -> Chain:
    rng = random.Random(SEED * 100 + index)
    kinds = [rng.choice(ROOT_KINDS) for _ in range(rng.randint(1, 5))]
    if index % 3 == 0:  # the real bundle's shape: an ECDSA root, an RSA-SHA256 root, a SHA-1 root
        kinds = ["ecdsa", "rsa-sha256", "rsa-sha1"]
    roots = [make_root(keys, kind, random_name(rng), random_serial(rng)) for kind in kinds]
    issuer_root = rng.choice(roots)
    root_key = issuer_root.public_key()
    issuer_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey = keys.rsa
    if isinstance(root_key, ec.EllipticCurvePublicKey):
        issuer_key = keys.ecdsa
    elif isinstance(root_key, ed25519.Ed25519PublicKey):
        issuer_key = keys.ed25519
    algorithm = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    ca_name = random_name(rng)
    ca = build_cert(
        ca_name, keys.rsa.public_key(), issuer_root.subject, issuer_key, random_serial(rng), algorithm
    )
    leaves = [
        build_cert(
            random_name(rng), keys.rsa.public_key(), ca_name, keys.rsa, random_serial(rng), hashes.SHA256()
        )
        for _ in range(2)
    ]
    return Chain(roots, kinds, [ca, *leaves])


@pytest.mark.parametrize("index", range(CHAIN_COUNT))
def test_cert_sn_and_root_sn_equal_the_sdks(oracle: Oracle, keys: Keys, index: int) -> None:
    chain = make_chain(keys, index)
    for cert in chain.roots + chain.others:
        node_sn = oracle.call("sn", pem=cert_pem(cert))
        assert cert_sn(cert) == node_sn, (
            f"chain {index}: issuer {issuer_principal(cert)!r} serial {cert.serial_number}"
        )
    bundle = "".join(cert_pem(cert) for cert in chain.roots)
    expected_count = sum(kind.startswith("rsa") for kind in chain.root_kinds)
    ours = root_cert_sn(chain.roots)
    assert ours == oracle.call("root_sn", pem=bundle), f"chain {index}: roots {chain.root_kinds}"
    assert (len(ours.split("_")) if ours else 0) == expected_count


def test_dev_credentials_sns_equal_the_sdks(oracle: Oracle, credential_sets: list[DevCredentials]) -> None:
    """The sandbox's own credentials (what the emulator and the local stack use)."""
    for creds in credential_sets:
        assert cert_sn(creds.app_cert) == oracle.call("sn", pem=cert_pem(creds.app_cert))
        assert cert_sn(creds.alipay_cert) == oracle.call("sn", pem=cert_pem(creds.alipay_cert))
        bundle = "".join(cert_pem(c) for c in creds.root_bundle)
        assert root_cert_sn(creds.root_bundle) == oracle.call("root_sn", pem=bundle)
        assert root_cert_sn(creds.root_bundle).count("_") == 1  # the ECDSA root is left out


def test_make_root_bundle_sn_equals_the_sdks(oracle: Oracle, keys: Keys) -> None:
    roots, _ = make_root_bundle(keys.rsa)
    assert root_cert_sn(roots) == oracle.call("root_sn", pem="".join(cert_pem(c) for c in roots))


def test_public_key_from_alipay_cert_equals_the_sdks(
    oracle: Oracle, credential_sets: list[DevCredentials]
) -> None:
    """Certificate mode verifies responses with the key inside alipayCertPublicKey_RSA2.crt."""
    for creds in credential_sets:
        spki = creds.alipay_cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert (
            oracle.call("cert_public_key", pem=cert_pem(creds.alipay_cert)) == base64.b64encode(spki).decode()
        )


def test_generated_chains_cover_the_variety(keys: Keys) -> None:
    """Guards the generator: every root kind, multi-valued RDNs and 20-octet serials do occur."""
    chains = [make_chain(keys, index) for index in range(CHAIN_COUNT)]
    assert {kind for chain in chains for kind in chain.root_kinds} == set(ROOT_KINDS)
    certs = [cert for chain in chains for cert in chain.roots + chain.others]
    assert any(len(rdn) > 1 for cert in certs for rdn in cert.issuer.rdns)
    assert any(cert.serial_number.bit_length() == 159 for cert in certs)
    issuers = {oid for cert in certs for oid in (attr.oid for attr in cert.issuer)}
    assert {NameOID.STATE_OR_PROVINCE_NAME, NameOID.LOCALITY_NAME, NameOID.EMAIL_ADDRESS} <= issuers
