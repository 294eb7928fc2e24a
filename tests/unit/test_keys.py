"""Key formats as people paste them, and the certificate SN rules."""

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509.oid import NameOID

from alipay_v3.errors import ConfigError
from alipay_v3.keys import cert_sn, issuer_principal, load_private_key, load_public_key, root_cert_sn
from sandbox.credentials import (
    make_cert,
    make_root_bundle,
    new_rsa_key,
    pem_body,
    private_pem,
    public_pem,
    resign_with_sha1,
)


@pytest.mark.parametrize("pkcs8", [False, True])
@pytest.mark.parametrize("pem", [False, True])
def test_private_key_formats_are_detected(creds, pkcs8, pem):
    text = private_pem(creds.app_key, pkcs8=pkcs8)
    loaded = load_private_key(text if pem else pem_body(text))
    assert loaded.structure == ("PKCS#8" if pkcs8 else "PKCS#1")
    assert loaded.encoding == ("PEM" if pem else "base64")
    assert loaded.key.private_numbers() == creds.app_key.private_numbers()


def test_pkcs8_body_under_pkcs1_label_is_tolerated(creds):
    body = pem_body(private_pem(creds.app_key, pkcs8=True))
    mislabelled = f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----\n"
    loaded = load_private_key(mislabelled)
    assert (loaded.structure, loaded.pem_label) == ("PKCS#8", "RSA PRIVATE KEY")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("hello world", "neither PEM nor valid base64"),
        ("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "do not match"),
        ("QUJDRA==", "could not be parsed"),
    ],
)
def test_private_key_errors_are_actionable(text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_private_key(text)


@pytest.mark.parametrize("load", [load_private_key, load_public_key])
def test_a_key_copied_in_part_is_said_to_be_cut_short(creds, load):
    pem = private_pem(creds.app_key, pkcs8=True) if load is load_private_key else public_pem(creds.app_key)
    der = base64.b64decode(pem_body(pem))
    cut = base64.b64encode(der[: len(der) // 2 // 3 * 3]).decode()  # whole base64 groups: decodes
    with pytest.raises(ConfigError, match=f"is cut short: the key says it is {len(der)} bytes") as caught:
        load(cut)
    assert cut[20:60] not in caught.value.message


def test_public_key_in_private_key_field_is_named(creds):
    with pytest.raises(ConfigError, match="public key"):
        load_private_key(public_pem(creds.app_key))


def test_private_key_in_public_key_field_is_named_and_not_echoed(creds):
    pem = private_pem(creds.app_key, pkcs8=True)
    for text in (pem, pem_body(pem)):
        with pytest.raises(ConfigError, match="private key") as info:
            load_public_key(text)
        assert pem_body(pem)[:40] not in str(info.value)


def test_public_key_pem_and_base64(creds):
    pem = public_pem(creds.alipay_key)
    assert load_public_key(pem).key.public_numbers() == creds.alipay_key.public_key().public_numbers()
    assert load_public_key(pem_body(pem)).encoding == "base64"


def _cert_with_issuer(rdns: list[tuple], serial: int) -> x509.Certificate:
    """A certificate whose issuer has the given attributes, in DER order."""
    key = new_rsa_key()
    issuer = x509.Name([x509.NameAttribute(oid, value) for oid, value in rdns])
    return make_cert(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]),
        key.public_key(),
        issuer,
        key,
        serial=serial,
    )


def test_sn_of_a_real_alipay_app_cert_issuer():
    """The official Node SDK's test suite asserts this SN for a real Alipay app certificate."""
    cert = _cert_with_issuer(
        [
            (NameOID.COUNTRY_NAME, "CN"),
            (NameOID.ORGANIZATION_NAME, "Ant Financial"),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, "Certification Authority"),
            (NameOID.COMMON_NAME, "Ant Financial Certification Authority Class 1 R1"),
        ],
        42701552708448241360226107228231049510,
    )
    assert issuer_principal(cert) == (
        "CN=Ant Financial Certification Authority Class 1 R1,OU=Certification Authority,O=Ant Financial,C=CN"
    )
    assert cert_sn(cert) == "866efef280dec9137a87d047ac446315"


def test_sn_of_the_protocol_notes_test_ca():
    cert = _cert_with_issuer(
        [
            (NameOID.COUNTRY_NAME, "CN"),
            (NameOID.ORGANIZATION_NAME, "Conformance Test"),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, "Certification Authority"),
            (NameOID.COMMON_NAME, "Conformance Test CA Class 1 R1"),
        ],
        42722321895882380670740229213547929894,
    )
    assert cert_sn(cert) == "b07f653489ea6a891676dff0d82d8d38"


def test_root_sn_keeps_rsa_roots_in_file_order():
    roots, _ = make_root_bundle(new_rsa_key())
    ecdsa, rsa_sha256, rsa_sha1 = roots
    assert rsa_sha1.signature_algorithm_oid.dotted_string == "1.2.840.113549.1.1.5"
    assert rsa_sha1.serial_number.bit_length() == 159
    assert root_cert_sn(roots) == f"{cert_sn(rsa_sha256)}_{cert_sn(rsa_sha1)}"
    assert root_cert_sn([ecdsa]) == ""


def test_sha1_resigned_certificate_verifies_under_its_key():
    key = new_rsa_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self")])
    cert = resign_with_sha1(make_cert(name, key.public_key(), name, key, ca=True), key)
    # cryptography no longer verifies SHA-1 certificates itself, so check the signature by hand.
    key.public_key().verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA1())
    assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC)


def test_multi_valued_rdn_attributes_are_reversed_too():
    """Node and PHP reverse the flat attribute list, so a multi-valued RDN reads back to front."""
    key = new_rsa_key()
    issuer = x509.Name(
        [
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "o"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "ou"),
                ]
            ),
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, "x")]),
        ]
    )
    cert = make_cert(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]),
        key.public_key(),
        issuer,
        key,
        serial=12345,
    )
    assert issuer_principal(cert) == "CN=x,OU=ou,O=o"


@pytest.mark.parametrize("pkcs1", [False, True])
@pytest.mark.parametrize("pem", [False, True])
def test_public_key_structure_is_read_from_the_der(creds, pkcs1, pem):
    """PEM or bare base64, SPKI or PKCS#1: the structure comes from the DER, not from the label."""
    from cryptography.hazmat.primitives import serialization

    form = serialization.PublicFormat.PKCS1 if pkcs1 else serialization.PublicFormat.SubjectPublicKeyInfo
    text = creds.alipay_key.public_key().public_bytes(serialization.Encoding.PEM, form).decode()
    loaded = load_public_key(text if pem else pem_body(text))
    assert loaded.structure == ("PKCS#1" if pkcs1 else "SPKI")
    assert loaded.encoding == ("PEM" if pem else "base64")
    assert loaded.key.public_numbers() == creds.alipay_key.public_key().public_numbers()
