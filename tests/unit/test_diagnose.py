"""``diagnose``: good configurations pass, and each copy-and-paste mistake gets its own finding code."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives import serialization

from alipay_v3 import AlipayConfig
from alipay_v3.diagnose import Report, diagnose, diagnose_json
from alipay_v3.keys import public_key_fingerprint
from sandbox.credentials import DevCredentials, cert_pem, new_rsa_key, pem_body, private_pem, public_pem


@pytest.fixture(scope="module")
def other() -> DevCredentials:
    """A second app: its keys and certificates are the wrong ones for ``creds``."""
    return DevCredentials.generate("2021000000000002")


def secret_fragments(creds: DevCredentials) -> list[str]:
    """Pieces of key material that must never appear in a report: PEM lines of the private keys, the AES key."""
    lines = []
    for pkcs8 in (False, True):
        lines += [
            line for line in private_pem(creds.app_key, pkcs8=pkcs8).splitlines() if "-----" not in line
        ]
    lines += [line for line in private_pem(creds.alipay_key).splitlines() if "-----" not in line]
    return [*lines, creds.encrypt_key]


def check(data, creds, **kwargs) -> Report:
    """diagnose, and prove that neither the text nor the JSON form of the report leaks a secret."""
    report = diagnose(data, **kwargs)
    text = report.render() + json.dumps(report.to_dict(), ensure_ascii=False)
    for fragment in secret_fragments(creds):
        assert fragment not in text
    for finding in report.findings:
        assert finding.level in ("OK", "WARN", "ERROR")
        assert "\n" not in finding.message
    return report


def test_good_public_key_mode(creds):
    report = check(creds.client_config("production"), creds)
    assert report.ok and not report.warnings, report.render()
    assert {
        "config-loads",
        "private-key",
        "private-key-sdks",
        "alipay-public-key",
        "gateway",
    } <= report.codes()
    fingerprint = public_key_fingerprint(creds.app_key.public_key())
    assert fingerprint in next(f.message for f in report.findings if f.code == "private-key")
    assert "PKCS#1" in report.render()


def test_good_certificate_mode_shows_sns_and_expiry(creds):
    data = creds.client_config("production", cert_mode=True, aes=True, pkcs8=True, pem=False)
    config = AlipayConfig.from_mapping(data)
    report = check(data, creds)
    assert report.ok and not report.warnings, report.render()
    assert {
        "app-cert",
        "alipay-cert",
        "app-cert-pair",
        "root-cert",
        "root-cert-sn",
        "aes-key",
    } <= report.codes()
    text = report.render()
    assert config.app_cert_sn in text and config.alipay_cert_sns[0] in text
    assert f"alipay-root-cert-sn: {config.alipay_root_cert_sn}" in text
    assert "days left" in text and "AES-128" in text and "PKCS#8" in text
    roots = [f.message for f in report.findings if f.code == "root-cert"]
    assert len(roots) == 3 and sum("skipped" in message for message in roots) == 1


def test_app_public_key_that_matches(creds):
    data = creds.client_config("production") | {"app_public_key": public_pem(creds.app_key)}
    report = check(data, creds)
    assert report.ok and "app-key-pair" in report.codes()


def test_report_forms(creds):
    data = creds.client_config("production") | {"alipay_public_key": public_pem(creds.app_key)}
    report = check(data, creds)
    as_dict = report.to_dict()
    assert as_dict["ok"] is False and as_dict["errors"] == len(report.errors) >= 1
    assert {"level", "code", "message"} == set(as_dict["findings"][0])
    lines = report.render().splitlines()
    assert all(line.split()[0] in ("OK", "WARN", "ERROR") for line in lines[:-1])
    assert lines[-1].startswith(f"{len(report.errors)} error(s)")


def pkcs1_public_pem(key) -> str:
    return (
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1).decode()
    )


def relabel(pem: str, label: str) -> str:
    return f"-----BEGIN {label}-----\n" + pem_body(pem) + f"\n-----END {label}-----\n"


# Each mistake: how to make it from good credentials, its finding code, its level.
MISTAKES = {
    "alipay key is the app key": (
        lambda c, o: c.client_config("production") | {"alipay_public_key": public_pem(c.app_key)},
        "alipay-key-is-app-key",
        "ERROR",
    ),
    "public keys swapped": (
        lambda c, o: (
            c.client_config("production")
            | {"alipay_public_key": public_pem(c.app_key), "app_public_key": public_pem(c.alipay_key)}
        ),
        "public-keys-swapped",
        "ERROR",
    ),
    "app public key of another key": (
        lambda c, o: c.client_config("production") | {"app_public_key": public_pem(o.app_key)},
        "app-key-mismatch",
        "ERROR",
    ),
    "PKCS#1 RSA PUBLIC KEY": (
        lambda c, o: c.client_config("production") | {"alipay_public_key": pkcs1_public_pem(c.alipay_key)},
        "pkcs1-public-key",
        "WARN",
    ),
    "PKCS#1 public key as bare base64": (
        lambda c, o: (
            c.client_config("production") | {"alipay_public_key": pem_body(pkcs1_public_pem(c.alipay_key))}
        ),
        "pkcs1-public-key",
        "WARN",
    ),
    "private key as alipay_public_key": (
        lambda c, o: c.client_config("production") | {"alipay_public_key": private_pem(c.alipay_key)},
        "private-key-in-public-field",
        "ERROR",
    ),
    "bare base64 private key as app_public_key": (
        lambda c, o: (
            c.client_config("production") | {"app_public_key": pem_body(private_pem(c.app_key, pkcs8=True))}
        ),
        "private-key-in-public-field",
        "ERROR",
    ),
    "public key as private_key": (
        lambda c, o: c.client_config("production") | {"private_key": public_pem(c.app_key)},
        "public-key-in-private-field",
        "ERROR",
    ),
    "bare base64 public key as private_key": (
        lambda c, o: c.client_config("production") | {"private_key": pem_body(public_pem(c.app_key))},
        "public-key-in-private-field",
        "ERROR",
    ),
    "certificate as alipay_public_key": (
        lambda c, o: c.client_config("production") | {"alipay_public_key": cert_pem(c.alipay_cert)},
        "certificate-in-key-field",
        "ERROR",
    ),
    "certificate as private_key": (
        lambda c, o: c.client_config("production") | {"private_key": cert_pem(c.app_cert)},
        "certificate-in-key-field",
        "ERROR",
    ),
    "key as alipay_cert": (
        lambda c, o: (
            c.client_config("production", cert_mode=True) | {"alipay_cert": public_pem(c.alipay_key)}
        ),
        "key-in-certificate-field",
        "ERROR",
    ),
    "PKCS#8 body under RSA PRIVATE KEY": (
        lambda c, o: (
            c.client_config("production")
            | {"private_key": relabel(private_pem(c.app_key, pkcs8=True), "RSA PRIVATE KEY")}
        ),
        "pem-label-mismatch",
        "WARN",
    ),
    "PKCS#1 body under PRIVATE KEY": (
        lambda c, o: (
            c.client_config("production") | {"private_key": relabel(private_pem(c.app_key), "PRIVATE KEY")}
        ),
        "pem-label-mismatch",
        "WARN",
    ),
    "sandbox app id, production gateway": (
        lambda c, o: c.client_config("production") | {"app_id": "9021000000000001"},
        "sandbox-app-on-production",
        "WARN",
    ),
    "production app id, sandbox gateway": (
        lambda c, o: c.client_config("sandbox"),
        "production-app-on-sandbox",
        "WARN",
    ),
    "plain http to a remote host": (
        lambda c, o: c.client_config("http://openapi.example.com"),
        "insecure-gateway",
        "WARN",
    ),
    "root bundle without an RSA-signed root": (
        lambda c, o: (
            c.client_config("production", cert_mode=True) | {"alipay_root_cert": cert_pem(c.root_bundle[0])}
        ),
        "root-bundle-no-rsa",
        "ERROR",
    ),
    "leaf certificate in the root bundle": (
        lambda c, o: (
            c.client_config("production", cert_mode=True)
            | {"alipay_root_cert": "".join(cert_pem(x) for x in c.root_bundle) + cert_pem(c.alipay_cert)}
        ),
        "root-bundle-not-roots",
        "WARN",
    ),
    "app cert of another key": (
        lambda c, o: c.client_config("production", cert_mode=True) | {"app_cert": cert_pem(o.app_cert)},
        "app-cert-key-mismatch",
        "ERROR",
    ),
    "app cert of another app id": (
        lambda c, o: c.client_config("production", cert_mode=True) | {"app_id": "2021000000000009"},
        "app-cert-other-app",
        "WARN",
    ),
    "certificates swapped": (
        lambda c, o: (
            c.client_config("production", cert_mode=True)
            | {"app_cert": cert_pem(c.alipay_cert), "alipay_cert": cert_pem(c.app_cert)}
        ),
        "certificates-swapped",
        "ERROR",
    ),
    "app cert as alipay_cert": (
        lambda c, o: c.client_config("production", cert_mode=True) | {"alipay_cert": cert_pem(c.app_cert)},
        "alipay-cert-is-app-cert",
        "ERROR",
    ),
    "both modes": (
        lambda c, o: (
            c.client_config("production", cert_mode=True) | {"alipay_public_key": public_pem(c.alipay_key)}
        ),
        "both-modes",
        "ERROR",
    ),
    "AES key of 10 bytes": (
        lambda c, o: c.client_config("production") | {"encrypt_key": base64.b64encode(bytes(10)).decode()},
        "aes-key-length",
        "ERROR",
    ),
    "AES key not base64": (
        lambda c, o: c.client_config("production") | {"encrypt_key": "not base64!"},
        "aes-key-not-base64",
        "ERROR",
    ),
    "AES key given as hex": (
        lambda c, o: c.client_config("production") | {"encrypt_key": bytes(range(16)).hex()},
        "aes-key-unusual",
        "WARN",
    ),
    "unknown field": (
        lambda c, o: c.client_config("production") | {"alipayPublicKey": "x"},
        "unknown-field",
        "ERROR",
    ),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_each_mistake_has_its_finding(mistake, creds, other):
    make, code, level = MISTAKES[mistake]
    report = check(make(creds, other), creds)
    found = [f for f in report.findings if f.code == code]
    assert found, report.render()
    assert found[0].level == level
    # ERROR findings make the report fail; a WARN alone does not.
    assert report.ok is (level != "ERROR" and not report.errors)
    if level == "WARN":
        assert report.ok, report.render()


def test_config_error_becomes_one_finding_without_repeating_it(creds):
    data = creds.client_config("production") | {"private_key": base64.b64encode(b"\x30\x03garbage").decode()}
    report = check(data, creds)
    rejected = [f for f in report.findings if f.code == "config-rejected"]
    assert len(rejected) == 1 and rejected[0].level == "ERROR"
    assert "private_key" in rejected[0].message
    assert "private-key-unreadable" not in report.codes()  # the same field's fault, said once


def test_a_second_unreadable_field_is_still_reported(creds):
    garbage = base64.b64encode(b"\x30\x03garbage").decode()
    data = creds.client_config("production") | {"private_key": garbage, "alipay_public_key": garbage}
    report = check(data, creds)
    assert [f.code for f in report.findings if f.level == "ERROR"].count("config-rejected") == 1
    assert "public-key-unreadable" in report.codes()  # another field: its own finding


def test_unknown_field_suggests_the_known_one(creds):
    report = check(creds.client_config("production") | {"privateKey": "x"}, creds)
    message = next(f.message for f in report.findings if f.code == "unknown-field")
    assert "'private_key'" in message


def test_weak_private_key(creds):
    weak = new_rsa_key(1024)
    report = check(creds.client_config("production") | {"private_key": private_pem(weak)}, creds)
    assert "weak-private-key" in {f.code for f in report.errors}


@pytest.mark.parametrize(
    ("days_after_expiry", "code", "level"),
    [(1, "certificate-expired", "ERROR"), (-10, "certificate-expires-soon", "WARN")],
)
def test_certificate_expiry(creds, days_after_expiry, code, level):
    expiry = creds.app_cert.not_valid_after_utc
    now = expiry + dt.timedelta(days=days_after_expiry)
    report = check(creds.client_config("production", cert_mode=True), creds, now=now)
    found = [f for f in report.findings if f.code == code and f.message.startswith("app_cert")]
    assert found and found[0].level == level, report.render()
    # An expired root only means an outdated file: a warning, not an error.
    assert all(f.level == "WARN" for f in report.findings if f.message.startswith("alipay_root_cert ("))


def test_certificate_not_yet_valid(creds):
    now = creds.app_cert.not_valid_before_utc - dt.timedelta(days=2)
    report = check(creds.client_config("production", cert_mode=True), creds, now=now)
    assert "certificate-not-yet-valid" in {f.code for f in report.errors}


def test_sandbox_app_on_sandbox_is_fine():
    sandbox_creds = DevCredentials.generate("9021000000000001")
    report = check(sandbox_creds.client_config("sandbox", cert_mode=True), sandbox_creds)
    assert report.ok and not report.warnings, report.render()


def test_not_json_and_not_an_object():
    pem_with_raw_newlines = '{"app_id": "2021000000000001", "private_key": "-----BEGIN\nabc"}'
    report = diagnose_json(pem_with_raw_newlines)
    assert report.codes() == {"config-not-json"} and not report.ok
    assert "\\n" in report.findings[0].message
    assert diagnose_json("[1, 2]").codes() == {"config-not-object"}
    assert diagnose(None).codes() == {"config-not-object"}


def test_empty_configuration_is_explained():
    report = diagnose({})
    assert not report.ok and "config-rejected" in report.codes()
