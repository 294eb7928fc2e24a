"""The configuration: both modes, gateways, and the mistakes that must be refused at load time."""

import json

import pytest

from alipay_v3 import AlipayConfig, ConfigError, UnknownAlipayCertError
from alipay_v3.config import GATEWAYS
from alipay_v3.keys import cert_sn
from sandbox.credentials import cert_pem, private_pem, public_pem


def test_key_mode(creds):
    config = AlipayConfig.from_mapping(creds.client_config("sandbox"))
    assert not config.cert_mode
    assert config.gateway == GATEWAYS["sandbox"]
    assert config.app_cert_sn is None and config.alipay_root_cert_sn is None
    # public-key mode ignores alipay-sn, as every SDK does
    assert (
        config.alipay_key_for("whatever").public_numbers() == creds.alipay_key.public_key().public_numbers()
    )


def test_cert_mode_sns_and_key_lookup(creds):
    config = AlipayConfig.from_mapping(creds.client_config("production", cert_mode=True, aes=True))
    assert config.cert_mode and config.aes is not None
    assert config.app_cert_sn == cert_sn(creds.app_cert)
    assert config.alipay_cert_sns == [cert_sn(creds.alipay_cert)]
    assert config.alipay_root_cert_sn.count("_") == 1  # the ECDSA root is skipped
    assert config.alipay_key_for(None).public_numbers() == creds.alipay_key.public_key().public_numbers()
    with pytest.raises(UnknownAlipayCertError) as info:
        config.alipay_key_for("0" * 32)
    assert info.value.sn == "0" * 32 and "0" * 32 in str(info.value)


def test_several_alipay_certs_for_rotation(creds):
    data = creds.client_config("production", cert_mode=True)
    other = creds.extra["ca_cert"]
    data["alipay_cert"] += cert_pem(other)
    config = AlipayConfig.from_mapping(data)
    assert set(config.alipay_cert_sns) == {cert_sn(creds.alipay_cert), cert_sn(other)}


def test_repr_shows_no_key_material(creds):
    config = AlipayConfig.from_mapping(creds.client_config("sandbox", aes=True))
    text = repr(config)
    assert "BEGIN" not in text and creds.encrypt_key not in text and "2021000000000001" in text


def _mutated(creds, **changes):
    data = creds.client_config("production", cert_mode="app_cert" in changes or "alipay_cert" in changes)
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"app_id": "abc"}, "numeric APPID"),
        ({"private_key": None}, "private_key is required"),
        ({"gateway": "ftp://x"}, "gateway must be"),
        ({"gateway": "https://openapi.example.com/a path"}, "gateway must be"),  # the whole URL is checked
        ({"gateway": "https://openapi.example.com/?x=1"}, "gateway must be"),
        ({"alipay_public_key": None}, "give alipay_public_key"),
        ({"colour": "blue"}, "unknown configuration fields: colour"),
        ({"encrypt_key": "short"}, "encrypt_key"),
    ],
)
def test_refused_configs_say_why(creds, change, fragment):
    with pytest.raises(ConfigError, match=fragment):
        AlipayConfig.from_mapping(_mutated(creds, **change))


def test_swapped_public_key_is_caught(creds):
    with pytest.raises(ConfigError, match="own public key"):
        AlipayConfig.from_mapping(_mutated(creds, alipay_public_key=public_pem(creds.app_key)))


def test_app_public_key_must_pair_with_private_key(creds):
    AlipayConfig.from_mapping(_mutated(creds, app_public_key=public_pem(creds.app_key)))
    with pytest.raises(ConfigError, match="not one key pair"):
        AlipayConfig.from_mapping(_mutated(creds, app_public_key=public_pem(creds.alipay_key)))


def test_cert_mode_mistakes(creds):
    with pytest.raises(ConfigError, match="app_cert does not belong"):
        AlipayConfig.from_mapping(_mutated(creds, app_cert=cert_pem(creds.alipay_cert)))
    with pytest.raises(ConfigError, match="alipay_cert is your app certificate"):
        AlipayConfig.from_mapping(_mutated(creds, alipay_cert=cert_pem(creds.app_cert)))
    with pytest.raises(ConfigError, match="no RSA-signed"):
        AlipayConfig.from_mapping(
            _mutated(
                creds,
                alipay_cert=cert_pem(creds.alipay_cert),
                alipay_root_cert=cert_pem(creds.root_bundle[0]),
            )
        )
    with pytest.raises(ConfigError, match="missing: alipay_root_cert"):
        data = creds.client_config("production", cert_mode=True)
        del data["alipay_root_cert"]
        AlipayConfig.from_mapping(data)
    with pytest.raises(ConfigError, match="choose one mode"):
        AlipayConfig.from_mapping(
            {
                **creds.client_config("production", cert_mode=True),
                "alipay_public_key": public_pem(creds.alipay_key),
            }
        )


def test_from_json_and_file(creds, tmp_path):
    with pytest.raises(ConfigError, match="not valid JSON"):
        AlipayConfig.from_json("{")
    with pytest.raises(ConfigError, match="cannot read"):
        AlipayConfig.from_file(tmp_path / "missing.json")
    path = tmp_path / "alipay.json"
    path.write_text(json.dumps(creds.client_config("http://127.0.0.1:9/")))
    assert AlipayConfig.from_file(path).gateway == "http://127.0.0.1:9"


def test_private_key_in_message_never(creds):
    data = _mutated(creds, alipay_public_key=private_pem(creds.app_key))
    with pytest.raises(ConfigError) as info:
        AlipayConfig.from_mapping(data)
    assert "MII" not in str(info.value)
