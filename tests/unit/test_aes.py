"""AES-CBC with a zero IV, against vectors from `openssl enc -aes-128-cbc -iv 0`."""

import pytest

from alipay_v3.aes import AesKey
from alipay_v3.errors import ConfigError, DecryptError

KEY = "AAECAwQFBgcICQoLDA0ODw=="  # bytes 00..0f
TEXT = (
    '{"grant_type":"refresh_token","refresh_token":"202511BB0123456789abcdef0123456789abcdef","备注":"中文"}'
)
OPENSSL = (
    "ERu3fi6ruMXtrLphVRws5P4+c830AFPSJXERJaFZlY4SW/U8OvYYZp0GhAbyZVWWm0ML5Ocn8ahHckWqNMa+EePy9ttizbOOBeEIFHkZdjvw7a"
    "btdL1mmqvMa8Q4Y5JwqldfaT6pGFo8apJrXb/PiA=="
)


def test_matches_openssl_both_ways():
    key = AesKey(KEY)
    assert key.encrypt(TEXT) == OPENSSL
    assert key.decrypt(OPENSSL) == TEXT


def test_empty_plaintext_is_one_padding_block_like_node():
    assert AesKey(KEY).encrypt("") == "lU9k8uTobp7ugtICFmhImQ=="
    assert AesKey(KEY).decrypt("lU9k8uTobp7ugtICFmhImQ==") == ""


@pytest.mark.parametrize("bad", ["not base64", "AAECAw==", ""])
def test_bad_keys_are_config_errors(bad):
    with pytest.raises(ConfigError):
        AesKey(bad)


@pytest.mark.parametrize("ciphertext", ["AAAA", "%%%", OPENSSL[:-8] + "AAAAAAA="])
def test_garbage_is_a_decrypt_error_without_the_key_in_it(ciphertext):
    with pytest.raises(DecryptError) as info:
        AesKey(KEY).decrypt(ciphertext)
    assert KEY not in str(info.value)


def test_repr_hides_the_key():
    assert KEY not in repr(AesKey(KEY))
