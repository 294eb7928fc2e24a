"""The configuration, in the JSON shape the Alipay console's files map onto (and Secrets Manager holds).

::

    {
      "app_id": "2021000000000001",
      "private_key": "<app private key: PEM or bare base64, PKCS#1 or PKCS#8>",
      "alipay_public_key": "<public-key mode: Alipay's public key>",
      "app_cert": "<certificate mode: appCertPublicKey_<app_id>.crt>",
      "alipay_cert": "<certificate mode: alipayCertPublicKey_RSA2.crt, one or several>",
      "alipay_root_cert": "<certificate mode: alipayRootCert.crt>",
      "encrypt_key": "<optional AES key, base64>",
      "gateway": "production | sandbox | https://...",
      "app_public_key": "<optional: the app public key, checked against private_key>"
    }

Everything is parsed and checked once, when the config is built, so that a call only signs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import rsa

from .aes import AesKey
from .errors import ConfigError, UnknownAlipayCertError
from .keys import (
    LoadedPrivateKey,
    LoadedPublicKey,
    cert_public_key,
    cert_sn,
    load_certificates,
    load_private_key,
    load_public_key,
    root_cert_sn,
    same_key,
)

if TYPE_CHECKING:
    from cryptography import x509

GATEWAYS = {
    "production": "https://openapi.alipay.com",
    "sandbox": "https://openapi-sandbox.dl.alipaydev.com",
}
_KNOWN_FIELDS = {
    "app_id",
    "private_key",
    "alipay_public_key",
    "app_cert",
    "alipay_cert",
    "alipay_root_cert",
    "encrypt_key",
    "gateway",
    "app_public_key",
}
_GATEWAY_URL = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?")  # a base URL: no spaces, query or fragment
_APP_ID = re.compile(r"[0-9]{6,32}")  # fullmatch: "$" would let a trailing newline through


def resolve_gateway(value: str | None) -> str:
    """``production`` (the default), ``sandbox``, or any http(s) base URL."""
    value = (value or "production").strip()
    if value in GATEWAYS:
        return GATEWAYS[value]
    if not _GATEWAY_URL.fullmatch(value):
        raise ConfigError(f"gateway must be 'production', 'sandbox' or an http(s) URL, not {value[:60]!r}")
    return value.rstrip("/")


@dataclass(frozen=True, repr=False)
class AlipayConfig:
    """A parsed, checked configuration. Its repr never shows key material."""

    app_id: str
    private_key: LoadedPrivateKey
    gateway: str
    alipay_public_key: LoadedPublicKey | None = None
    app_cert: x509.Certificate | None = None
    alipay_certs: tuple[x509.Certificate, ...] = ()
    root_certs: tuple[x509.Certificate, ...] = ()
    aes: AesKey | None = None
    app_cert_sn: str | None = None
    alipay_root_cert_sn: str | None = None
    # SN of each Alipay certificate -> its key; in public-key mode the one key sits under "".
    _alipay_keys: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)

    def __repr__(self) -> str:
        mode = "certificate" if self.cert_mode else "public-key"
        return f"AlipayConfig(app_id={self.app_id!r}, mode={mode}, gateway={self.gateway!r}, aes={bool(self.aes)})"

    @property
    def cert_mode(self) -> bool:
        return self.app_cert is not None

    @property
    def alipay_cert_sns(self) -> list[str]:
        return [sn for sn in self._alipay_keys if sn]

    def alipay_key_for(self, sn: str | None) -> rsa.RSAPublicKey:
        """The Alipay key that checks a response carrying ``alipay-sn: sn``.

        In public-key mode the SN is ignored (as every SDK does). In certificate mode an absent SN
        means the first configured certificate; an unknown one is an error naming it.
        """
        if not self.cert_mode:
            return self._alipay_keys[""]
        if not sn:
            return next(iter(self._alipay_keys.values()))
        try:
            return self._alipay_keys[sn]
        except KeyError:
            raise UnknownAlipayCertError(sn, self.alipay_cert_sns) from None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AlipayConfig:
        if not isinstance(data, Mapping):
            raise ConfigError("the configuration must be a JSON object")
        unknown = sorted(set(data) - _KNOWN_FIELDS)
        if unknown:
            raise ConfigError(f"unknown configuration fields: {', '.join(unknown)}")
        app_id = str(data.get("app_id") or "").strip()
        if not _APP_ID.fullmatch(app_id):
            raise ConfigError(
                "app_id must be the numeric APPID from the Alipay console (e.g. 2021000000000001)"
            )
        if not data.get("private_key"):
            raise ConfigError("private_key is required (the app private key, 应用私钥)")
        private_key = load_private_key(str(data["private_key"]))
        own_public = private_key.key.public_key()
        if data.get("app_public_key") and not same_key(
            load_public_key(str(data["app_public_key"]), "app_public_key").key, own_public
        ):
            raise ConfigError("app_public_key does not match private_key; they are not one key pair")
        gateway = resolve_gateway(data.get("gateway"))
        aes = AesKey(str(data["encrypt_key"])) if data.get("encrypt_key") else None

        cert_fields = [name for name in ("app_cert", "alipay_cert", "alipay_root_cert") if data.get(name)]
        if data.get("alipay_public_key") and cert_fields:
            raise ConfigError(
                "choose one mode: alipay_public_key (public-key mode) or app_cert/alipay_cert/alipay_root_cert "
                "(certificate mode), not both"
            )
        if data.get("alipay_public_key"):
            public = load_public_key(str(data["alipay_public_key"]))
            if same_key(public.key, own_public):
                raise ConfigError(
                    "alipay_public_key is your app's own public key (应用公钥); use the Alipay public key "
                    "(支付宝公钥) shown next to it in the console"
                )
            return cls(
                app_id, private_key, gateway, alipay_public_key=public, aes=aes, _alipay_keys={"": public.key}
            )
        if len(cert_fields) != 3:
            missing = sorted({"app_cert", "alipay_cert", "alipay_root_cert"} - set(cert_fields))
            if not cert_fields:
                raise ConfigError(
                    "give alipay_public_key (public-key mode) or the three certificates (certificate mode)"
                )
            raise ConfigError(f"certificate mode needs all three certificates; missing: {', '.join(missing)}")

        app_cert = load_certificates(str(data["app_cert"]), "app_cert")[0]
        if not same_key(cert_public_key(app_cert, "app_cert"), own_public):
            raise ConfigError(
                "app_cert does not belong to private_key: its public key differs. Use the appCertPublicKey_<APPID>.crt "
                "issued for this private key"
            )
        alipay_certs = load_certificates(str(data["alipay_cert"]), "alipay_cert")
        keys = {cert_sn(cert): cert_public_key(cert, "alipay_cert") for cert in alipay_certs}
        if any(same_key(key, own_public) for key in keys.values()):
            raise ConfigError("alipay_cert is your app certificate; use alipayCertPublicKey_RSA2.crt")
        roots = load_certificates(str(data["alipay_root_cert"]), "alipay_root_cert")
        root_sn = root_cert_sn(roots)
        if not root_sn:
            raise ConfigError("alipay_root_cert contains no RSA-signed certificate; use alipayRootCert.crt")
        return cls(
            app_id,
            private_key,
            gateway,
            app_cert=app_cert,
            alipay_certs=tuple(alipay_certs),
            root_certs=tuple(roots),
            aes=aes,
            app_cert_sn=cert_sn(app_cert),
            alipay_root_cert_sn=root_sn,
            _alipay_keys=keys,
        )

    @classmethod
    def from_json(cls, text: str) -> AlipayConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"the configuration is not valid JSON (line {exc.lineno}, column {exc.colno})"
            ) from exc
        return cls.from_mapping(data)

    @classmethod
    def from_file(cls, path: str | Path) -> AlipayConfig:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from exc
        return cls.from_json(text)
