"""Explain an Alipay configuration, even one that does not load: the checks behind ``alipay-v3 keys check``.

``diagnose(mapping)`` is pure (no I/O besides the clock, which can be injected) and returns a
``Report`` of findings, each with a level (OK, WARN, ERROR), a stable code and a message that
says what was found and how to fix it. Whether the configuration loads is decided by
``AlipayConfig.from_mapping`` alone; its refusal becomes one finding, and the analysis here adds
what it cannot say: formats, sizes, certificate details and expiry, and the mistakes people make
when they copy keys out of the console.

Messages never contain key material: keys are named by ``public_key_fingerprint``, certificates
by subject, issuer and SN.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from .config import _KNOWN_FIELDS, GATEWAYS, AlipayConfig, resolve_gateway
from .errors import ConfigError
from .keys import (
    LoadedPrivateKey,
    cert_public_key,
    cert_sn,
    is_rsa_signed,
    issuer_principal,
    load_certificates,
    load_private_key,
    load_public_key,
    public_key_fingerprint,
    root_cert_sn,
    same_key,
)

Level = Literal["OK", "WARN", "ERROR"]

EXPIRY_WARNING_DAYS = 30
SANDBOX_APP_ID_PREFIX = "9021"  # Alipay sandbox apps; production apps start with 2021 (or older 20xx)
PRODUCTION_APP_ID_PREFIX = "2021"
_CERT_FIELDS = ("app_cert", "alipay_cert", "alipay_root_cert")
_PUBLIC_KEY_FIELDS = ("alipay_public_key", "app_public_key")
# The algorithms found in alipayRootCert.crt, by name; anything else is shown as its OID.
_SIGNATURE_ALGORITHMS = {
    "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
    "1.2.840.113549.1.1.11": "sha256WithRSAEncryption",
    "1.2.840.113549.1.1.12": "sha384WithRSAEncryption",
    "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
    "1.2.840.10045.4.3.3": "ecdsa-with-SHA384",
    "1.2.156.10197.1.501": "SM2-with-SM3",
}


@dataclass(frozen=True)
class Finding:
    level: Level
    code: str
    message: str

    def line(self) -> str:
        return f"{self.level:<5} [{self.code}] {self.message}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "ERROR"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "WARN"]

    @property
    def ok(self) -> bool:
        """True when nothing is an ERROR (warnings do not stop a configuration from working here)."""
        return not self.errors

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def add(self, level: Level, code: str, message: str) -> None:
        self.findings.append(Finding(level, code, message))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [{"level": f.level, "code": f.code, "message": f.message} for f in self.findings],
        }

    def render(self) -> str:
        lines = [f.line() for f in self.findings]
        lines.append(f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        return "\n".join(lines)


def diagnose_json(text: str, *, now: dt.datetime | None = None) -> Report:
    """``diagnose`` for the text of a configuration file, explaining why it is not JSON if it is not."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        report = Report()
        hint = ""
        if exc.msg.startswith("Invalid control character"):
            hint = (
                "; a PEM pasted into a JSON string must have its line breaks written as \\n "
                "(or use the bare base64 body on one line)"
            )
        report.add(
            "ERROR",
            "config-not-json",
            f"the configuration is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}){hint}",
        )
        return report
    return diagnose(data, now=now)


def diagnose(data: Any, *, now: dt.datetime | None = None) -> Report:
    """Every finding about one configuration mapping (the shape ``AlipayConfig.from_mapping`` reads)."""
    return _Diagnosis(now or dt.datetime.now(dt.UTC)).run(data)


def _text(data: Mapping[str, Any], name: str) -> str | None:
    """The field as AlipayConfig reads it: absent or empty means not given."""
    value = data.get(name)
    return str(value) if value else None


def _pem_labels(text: str) -> list[str]:
    return [
        line.strip()[len("-----BEGIN ") : -len("-----")]
        for line in text.splitlines()
        if "-----BEGIN " in line
    ]


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


class _Diagnosis:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now
        self.report = Report()
        self.rejected_field: str | None = None  # the field AlipayConfig refused: said once, not twice

    def add(self, level: Level, code: str, message: str) -> None:
        self.report.add(level, code, message)

    def unreadable(self, code: str, exc: ConfigError) -> None:
        """A field that does not parse: say so, unless AlipayConfig's finding already said it of that field."""
        if exc.field is None or exc.field != self.rejected_field:
            self.add("ERROR", code, exc.message)

    def run(self, data: Any) -> Report:
        if not isinstance(data, Mapping):
            self.add("ERROR", "config-not-object", "the configuration must be a JSON object of fields")
            return self.report
        self.check_loads(data)
        self.check_unknown_fields(data)
        private = self.check_private_key(data)
        own = private.key.public_key() if private else None
        public_keys = {name: self.check_public_key_field(data, name) for name in _PUBLIC_KEY_FIELDS}
        self.check_key_pairs(own, public_keys["alipay_public_key"], public_keys["app_public_key"])
        self.check_modes(data)
        self.check_certificates(data, own)
        self.check_gateway(data)
        self.check_aes(data)
        return self.report

    # --- does it load ---------------------------------------------------------------------------

    def check_loads(self, data: Mapping[str, Any]) -> None:
        try:
            config = AlipayConfig.from_mapping(data)
        except ConfigError as exc:
            self.rejected_field = exc.field
            self.add("ERROR", "config-rejected", f"the configuration does not load: {exc.message}")
            return
        mode = "certificate mode" if config.cert_mode else "public-key mode"
        aes = "AES on" if config.aes else "no AES key"
        self.add("OK", "config-loads", f"the configuration loads: app {config.app_id}, {mode}, {aes}")

    def check_unknown_fields(self, data: Mapping[str, Any]) -> None:
        for name in sorted(str(key) for key in data if key not in _KNOWN_FIELDS):
            shown = name[:40]
            close = difflib.get_close_matches(name.lower().replace("-", "_"), sorted(_KNOWN_FIELDS), n=1)
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else f"; known fields: {', '.join(sorted(_KNOWN_FIELDS))}"
            )
            self.add("ERROR", "unknown-field", f"unknown field {shown!r}{hint}")

    # --- keys -----------------------------------------------------------------------------------

    def check_private_key(self, data: Mapping[str, Any]) -> LoadedPrivateKey | None:
        text = _text(data, "private_key")
        if text is None:
            return None
        labels = _pem_labels(text)
        if any("CERTIFICATE" in label for label in labels):
            self.add(
                "ERROR",
                "certificate-in-key-field",
                "private_key holds a certificate; it needs the app private key (应用私钥) made with the "
                "Alipay key tool. Certificates go to app_cert / alipay_cert / alipay_root_cert",
            )
            return None
        if any("PUBLIC" in label for label in labels) or self._is_public_key(text):
            self.add(
                "ERROR",
                "public-key-in-private-field",
                "private_key holds a public key; it needs the app private key (应用私钥) that was generated "
                "together with the app public key uploaded to the console",
            )
            return None
        try:
            loaded = load_private_key(text)
        except ConfigError as exc:
            self.unreadable("private-key-unreadable", exc)
            return None
        size = loaded.key.key_size
        fingerprint = public_key_fingerprint(loaded.key.public_key())
        label = f", label {loaded.pem_label!r}" if loaded.pem_label else ""
        self.add(
            "OK",
            "private-key",
            f"private_key: RSA {size}-bit, {loaded.structure}, {loaded.encoding}{label}; "
            f"its public key has fingerprint {fingerprint}",
        )
        if size < 2048:
            self.add("ERROR", "weak-private-key", f"private_key is {size}-bit; RSA2 needs a 2048-bit key")
        expected_label = {"PKCS#1": "RSA PRIVATE KEY", "PKCS#8": "PRIVATE KEY"}.get(loaded.structure)
        if loaded.pem_label and expected_label and loaded.pem_label != expected_label:
            self.add(
                "WARN",
                "pem-label-mismatch",
                f"private_key is {loaded.structure} but labelled {loaded.pem_label!r}; this library and "
                f"OpenSSL 3 accept it, other SDKs may not. Relabel it 'BEGIN/END {expected_label}', or "
                "give the bare base64 body",
            )
        self.add("OK", "private-key-sdks", _sdk_advice(loaded))
        return loaded

    @staticmethod
    def _is_public_key(text: str) -> bool:
        try:
            load_public_key(text, "private_key")
        except ConfigError:
            return False
        return True

    def check_public_key_field(self, data: Mapping[str, Any], name: str) -> rsa.RSAPublicKey | None:
        text = _text(data, name)
        if text is None:
            return None
        labels = _pem_labels(text)
        if any("CERTIFICATE" in label for label in labels):
            self.add(
                "ERROR",
                "certificate-in-key-field",
                f"{name} holds a certificate; in certificate mode put certificates in app_cert / alipay_cert "
                f"/ alipay_root_cert and remove {name}, otherwise paste the public key from the console",
            )
            return None
        if any("PRIVATE" in label for label in labels) or self._is_private_key(text):
            self.add(
                "ERROR",
                "private-key-in-public-field",
                f"{name} holds a private key; a public key belongs here. Take the public key from the "
                "console, and if this private key was shared anywhere, treat it as leaked and replace it",
            )
            return None
        try:
            loaded = load_public_key(text, name)
        except ConfigError as exc:
            self.unreadable("public-key-unreadable", exc)
            return None
        self.add(
            "OK",
            name.replace("_", "-"),
            f"{name}: RSA {loaded.key.key_size}-bit, {loaded.structure}, {loaded.encoding}; "
            f"fingerprint {public_key_fingerprint(loaded.key)}",
        )
        if loaded.structure == "PKCS#1":
            self.add(
                "WARN",
                "pkcs1-public-key",
                f"{name} is a PKCS#1 'RSA PUBLIC KEY'; this library reads it but the Node and Java SDKs need "
                "X.509 SubjectPublicKeyInfo ('BEGIN PUBLIC KEY', as the console shows it). Convert with "
                "`openssl rsa -RSAPublicKey_in -pubout`",
            )
        return loaded.key

    @staticmethod
    def _is_private_key(text: str) -> bool:
        try:
            load_private_key(text)
        except ConfigError:
            return False
        return True

    def check_key_pairs(
        self,
        own: rsa.RSAPublicKey | None,
        alipay_public: rsa.RSAPublicKey | None,
        app_public: rsa.RSAPublicKey | None,
    ) -> None:
        if own is None:
            return
        if alipay_public is not None and same_key(alipay_public, own):
            if app_public is not None and not same_key(app_public, own):
                self.add(
                    "ERROR",
                    "public-keys-swapped",
                    "alipay_public_key and app_public_key are swapped: alipay_public_key is your app's public "
                    "key (it matches private_key). Exchange the two values",
                )
                return
            self.add(
                "ERROR",
                "alipay-key-is-app-key",
                "alipay_public_key is your app's own public key (应用公钥, it matches private_key); use the "
                "Alipay public key (支付宝公钥) shown next to it in the console",
            )
        if app_public is None:
            return
        if same_key(app_public, own):
            self.add("OK", "app-key-pair", "private_key and app_public_key are one key pair")
        else:
            self.add(
                "ERROR",
                "app-key-mismatch",
                f"private_key does not match app_public_key (fingerprints {public_key_fingerprint(own)} and "
                f"{public_key_fingerprint(app_public)}); the private key must be the one generated with the "
                "public key uploaded to the console",
            )

    def check_modes(self, data: Mapping[str, Any]) -> None:
        cert_fields = [name for name in _CERT_FIELDS if data.get(name)]
        if data.get("alipay_public_key") and cert_fields:
            self.add(
                "ERROR",
                "both-modes",
                f"both modes are configured: alipay_public_key and {', '.join(cert_fields)}. An app uses "
                "public-key mode or certificate mode, as chosen in the console; remove the other fields",
            )

    # --- certificates ---------------------------------------------------------------------------

    def load_certs(self, data: Mapping[str, Any], name: str) -> list[x509.Certificate]:
        text = _text(data, name)
        if text is None:
            return []
        labels = _pem_labels(text)
        if labels and not any("CERTIFICATE" in label for label in labels):
            self.add(
                "ERROR",
                "key-in-certificate-field",
                f"{name} holds a key ({labels[0]}), not a certificate; download the .crt file from the console",
            )
            return []
        try:
            return load_certificates(text, name)
        except ConfigError as exc:
            self.unreadable("certificate-unreadable", exc)
            return []

    def check_certificates(self, data: Mapping[str, Any], own: rsa.RSAPublicKey | None) -> None:
        app_certs = self.load_certs(data, "app_cert")
        alipay_certs = self.load_certs(data, "alipay_cert")
        roots = self.load_certs(data, "alipay_root_cert")
        app_cert = app_certs[0] if app_certs else None
        app_cert_key = self.rsa_key(app_cert, "app_cert") if app_cert else None
        if app_cert is not None:
            self.describe_cert("app_cert", "app-cert", app_cert, app_cert_key)
            self.check_app_cert_owner(data, app_cert)
        alipay_keys = []
        for cert in alipay_certs:
            key = self.rsa_key(cert, "alipay_cert")
            self.describe_cert("alipay_cert", "alipay-cert", cert, key)
            if key is not None:
                alipay_keys.append(key)
        if own is not None:
            self.check_cert_pairs(own, app_cert_key, alipay_keys)
        if roots:
            self.check_roots(roots)

    def rsa_key(self, cert: x509.Certificate, name: str) -> rsa.RSAPublicKey | None:
        try:
            return cert_public_key(cert, name)
        except ConfigError as exc:
            self.unreadable("certificate-not-rsa", exc)
            return None

    def describe_cert(
        self, name: str, code: str, cert: x509.Certificate, key: rsa.RSAPublicKey | None
    ) -> None:
        fingerprint = f", key fingerprint {public_key_fingerprint(key)}" if key else ""
        self.add(
            "OK",
            code,
            f"{name}: subject {_subject(cert)}; issuer {issuer_principal(cert)}; SN {cert_sn(cert)}"
            f"{fingerprint}; {self.validity(cert)}",
        )
        self.check_expiry(name, cert, expired_level="ERROR")

    def validity(self, cert: x509.Certificate) -> str:
        end = cert.not_valid_after_utc
        days = (end - self.now).days
        when = end.date().isoformat()
        return f"expired on {when}" if end < self.now else f"valid until {when} ({days} days left)"

    def check_expiry(self, name: str, cert: x509.Certificate, *, expired_level: Level) -> None:
        end, start = cert.not_valid_after_utc, cert.not_valid_before_utc
        subject = _subject(cert)
        if end < self.now:
            self.add(
                expired_level,
                "certificate-expired",
                f"{name} ({subject}) expired on {end.date().isoformat()}; download the current certificate "
                "from the console",
            )
        elif start > self.now:
            self.add(
                "ERROR",
                "certificate-not-yet-valid",
                f"{name} ({subject}) is valid only from {start.date().isoformat()}; check the system clock",
            )
        elif (end - self.now).days < EXPIRY_WARNING_DAYS:
            self.add(
                "WARN",
                "certificate-expires-soon",
                f"{name} ({subject}) expires on {end.date().isoformat()}, in {(end - self.now).days} days; "
                "renew it in the console and deploy the new file before then",
            )

    def check_app_cert_owner(self, data: Mapping[str, Any], app_cert: x509.Certificate) -> None:
        """Alipay issues app certificates with the APPID as common name: a numeric CN names the app."""
        app_id = str(data.get("app_id") or "").strip()
        names = app_cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        common_name = str(names[0].value) if names else ""
        if app_id and common_name.isdigit() and common_name != app_id:
            self.add(
                "WARN",
                "app-cert-other-app",
                f"app_cert was issued to app {common_name}, but app_id is {app_id}; use the "
                f"appCertPublicKey_{app_id}.crt of this app",
            )

    def check_cert_pairs(
        self,
        own: rsa.RSAPublicKey,
        app_cert_key: rsa.RSAPublicKey | None,
        alipay_keys: list[rsa.RSAPublicKey],
    ) -> None:
        alipay_holds_app_cert = any(same_key(key, own) for key in alipay_keys)
        app_cert_matches = app_cert_key is not None and same_key(app_cert_key, own)
        if alipay_holds_app_cert and app_cert_key is not None and not app_cert_matches:
            self.add(
                "ERROR",
                "certificates-swapped",
                "app_cert and alipay_cert are swapped: alipay_cert holds your app certificate (it matches "
                "private_key). app_cert takes appCertPublicKey_<APPID>.crt, alipay_cert takes "
                "alipayCertPublicKey_RSA2.crt",
            )
            return
        if alipay_holds_app_cert:
            self.add(
                "ERROR",
                "alipay-cert-is-app-cert",
                "alipay_cert holds your app certificate (it matches private_key); use "
                "alipayCertPublicKey_RSA2.crt downloaded from the console",
            )
        if app_cert_key is None:
            return
        if app_cert_matches:
            self.add("OK", "app-cert-pair", "private_key matches the public key in app_cert")
        else:
            self.add(
                "ERROR",
                "app-cert-key-mismatch",
                f"app_cert was not issued for this private key (certificate key {public_key_fingerprint(app_cert_key)}, "
                f"private key {public_key_fingerprint(own)}); use the appCertPublicKey_<APPID>.crt issued when "
                "this private key's CSR was uploaded, or the private key that went with that CSR",
            )

    def check_roots(self, roots: list[x509.Certificate]) -> None:
        for cert in roots:
            oid = cert.signature_algorithm_oid.dotted_string
            algorithm = _SIGNATURE_ALGORITHMS.get(oid, f"signature algorithm {oid}")
            use = (
                "counts for the root SN"
                if is_rsa_signed(cert)
                else "skipped for the root SN (not RSA-signed)"
            )
            self.add(
                "OK",
                "root-cert",
                f"alipay_root_cert: {_subject(cert)}; {algorithm}; {use}; SN {cert_sn(cert)}; {self.validity(cert)}",
            )
            # The root SN is all Alipay uses the bundle for; an expired root means an outdated file.
            self.check_expiry("alipay_root_cert", cert, expired_level="WARN")
        if any(cert.issuer != cert.subject for cert in roots):
            self.add(
                "WARN",
                "root-bundle-not-roots",
                "alipay_root_cert contains certificates that are not self-signed roots; it should be "
                "alipayRootCert.crt exactly as downloaded",
            )
        root_sn = root_cert_sn(roots)
        if root_sn:
            self.add("OK", "root-cert-sn", f"alipay-root-cert-sn: {root_sn}")
        else:
            self.add(
                "ERROR",
                "root-bundle-no-rsa",
                "alipay_root_cert contains no RSA-signed certificate, so no root SN can be computed; use "
                "alipayRootCert.crt exactly as downloaded (it holds several roots, some RSA-signed)",
            )

    # --- gateway and AES ------------------------------------------------------------------------

    def check_gateway(self, data: Mapping[str, Any]) -> None:
        try:
            gateway = resolve_gateway(data.get("gateway"))
        except ConfigError:
            return  # AlipayConfig's finding says it
        app_id = str(data.get("app_id") or "").strip()
        self.add("OK", "gateway", f"gateway: {gateway}")
        if gateway == GATEWAYS["production"] and app_id.startswith(SANDBOX_APP_ID_PREFIX):
            self.add(
                "WARN",
                "sandbox-app-on-production",
                f"app_id {app_id} looks like a sandbox app (sandbox APPIDs start with {SANDBOX_APP_ID_PREFIX}) "
                'but the gateway is production; set "gateway": "sandbox" and use the sandbox keys',
            )
        if gateway == GATEWAYS["sandbox"] and app_id.startswith(PRODUCTION_APP_ID_PREFIX):
            self.add(
                "WARN",
                "production-app-on-sandbox",
                f"app_id {app_id} looks like a production app but the gateway is the sandbox; sandbox apps "
                f"have their own APPID (starting {SANDBOX_APP_ID_PREFIX}) and keys",
            )
        parts = urlsplit(gateway)
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            self.add(
                "WARN",
                "insecure-gateway",
                "the gateway uses plain http to a host that is not local; requests and tokens would cross "
                "the network unencrypted",
            )

    def check_aes(self, data: Mapping[str, Any]) -> None:
        text = _text(data, "encrypt_key")
        if text is None:
            return
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            self.add(
                "ERROR",
                "aes-key-not-base64",
                "encrypt_key is not base64; copy the AES key (接口内容加密密钥) exactly as the console shows it",
            )
            return
        if len(raw) not in (16, 24, 32):
            self.add(
                "ERROR",
                "aes-key-length",
                f"encrypt_key decodes to {len(raw)} bytes; AES needs 16, 24 or 32 (the console issues 16: "
                "24 base64 characters)",
            )
            return
        self.add("OK", "aes-key", f"encrypt_key: AES-{len(raw) * 8}")
        if len(raw) != 16:
            self.add(
                "WARN",
                "aes-key-unusual",
                f"encrypt_key is AES-{len(raw) * 8}, but the console issues AES-128 keys (24 base64 characters) "
                "and the PHP SDK only uses AES-128; check that this is the console's key and not, say, hex",
            )


def _sdk_advice(loaded: LoadedPrivateKey) -> str:
    """What each official SDK expects of this private key (protocol notes, section 1.3)."""
    if loaded.structure == "PKCS#1":
        node = "Node alipay-sdk: fine with the default keyType 'PKCS1'"
        java = (
            "Java SDK: needs bare base64 PKCS#8 (convert: `openssl pkcs8 -topk8 -nocrypt`, then drop the "
            "BEGIN/END lines)"
        )
        php = "PHP SDK: give the bare base64 body"
    else:
        node = "Node alipay-sdk: set keyType 'PKCS8'" + (
            " (a PKCS#8 PEM fails with the default keyType)" if loaded.encoding == "PEM" else ""
        )
        java = "Java SDK: fine as bare base64 PKCS#8" + (
            " (drop the BEGIN/END lines)" if loaded.encoding == "PEM" else ""
        )
        php = "PHP SDK: expects PKCS#1 (works with OpenSSL 3 only; convert: `openssl rsa -traditional`)"
    return f"private_key in other SDKs: {node}; {java}; {php}"
