#!/usr/bin/env bash
# Builds .venv-bench-sdk: the official Alipay Python SDK (alipay-sdk-python), the competitor in
# `make bench`'s sdk benchmark. Its own virtualenv because it is not a dependency of the app and
# must never become one: it signs with the pure-Python `rsa` package and encrypts with pycryptodome.
#
# The interpreter is the one .venv was made from (Python 3.13) when the SDK works there, else the
# newest pyenv Python on which it does; "works" means the smoke test below passes, not just pip.
# Idempotent: a re-run only checks the pins and the smoke test. Prints the reason when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: the benchmark compares against one release. alipay-sdk-python declares `rsa` and
# `pycryptodome` unpinned; these are the versions it resolved to when the pins were written.
PINS="alipay-sdk-python==3.7.1411 rsa==4.9.1 pyasn1==0.6.5 pycryptodome==4.4.0"
VENV=.venv-bench-sdk

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'bench-sdk-venv: %s\n' "$*" >&2; exit 1; }

# Signs and verifies with the SDK's own RSA2 functions, using a throw-away key made with the `rsa`
# package (nothing here is a real key). Not AES: the SDK's AES passes a str IV to pycryptodome,
# which every pycryptodome on Python 3 refuses; the benchmark records that as a finding.
smoke_test() {
  "$1/bin/python" - <<'PYEOF'
import base64, rsa
from alipay.aop.api.DefaultAlipayClient import DefaultAlipayClient  # noqa: F401 (must import)
from alipay.aop.api.util.SignatureUtils import sign_with_rsa2, verify_with_rsa

def der(tag, content):
    n = len(content)
    size = bytes([n]) if n < 128 else bytes([0x80 | (n.bit_length() + 7) // 8]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + size + content

public, private = rsa.newkeys(1024)
private_b64 = base64.b64encode(private.save_pkcs1("DER")).decode()  # the console's bare base64
# SubjectPublicKeyInfo, the form the SDK's verify_with_rsa reads: rsaEncryption OID, NULL, the key
public_b64 = base64.b64encode(
    der(0x30, bytes.fromhex("300d06092a864886f70d0101010500") + der(0x03, b"\0" + public.save_pkcs1("DER")))
).decode()
signature = sign_with_rsa2(private_b64, "a=1&b=2", "utf-8")
assert verify_with_rsa(public_b64, b"a=1&b=2", signature)
try:  # a changed message must fail (rsa raises rather than returning False)
    verify_with_rsa(public_b64, b"a=1&b=3", signature)
    raise SystemExit("the SDK verified a changed message")
except rsa.VerificationError:
    pass
print("smoke test passed: RSA2 sign and verify")
PYEOF
}

has_pins() {
  "$1/bin/python" - $PINS <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, _, wanted = pin.partition("==")
    assert version(name) == wanted, pin
PYEOF
}

candidates() {
  # First the interpreter behind .venv, then pyenv's, newest first.
  if [ -x .venv/bin/python ]; then .venv/bin/python -c 'import sys; print(sys._base_executable)'; fi
  # Each try installs a 33 MB wheel, so only the three newest minor versions are worth it.
  for version in $(ls -d "$HOME"/.pyenv/versions/3.* 2>/dev/null | sort -t. -k2,2nr -k3,3nr | head -n 3); do
    if [ -x "$version/bin/python3" ]; then echo "$version/bin/python3"; fi
  done
}

if [ -x "$VENV/bin/python" ] && has_pins "$VENV" && smoke_test "$VENV" >/dev/null 2>&1; then
  say "$VENV ready ($("$VENV/bin/python" -V), $PINS)"
  exit 0
fi

failures=""
for python in $(for c in $(candidates); do readlink -f "$c"; done | awk '!seen[$0]++'); do
  say "$VENV on $("$python" -V 2>&1) ($python)"
  rm -rf "$VENV"
  if ! "$python" -m venv "$VENV" >&2; then failures+="$python: venv failed; "; continue; fi
  # shellcheck disable=SC2086  # PINS is a word list
  if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile $PINS >&2; then
    failures+="$python: pip install failed; "; continue
  fi
  if smoke_test "$VENV" >&2; then
    say "$VENV ready ($("$VENV/bin/python" -V), $PINS)"
    exit 0
  fi
  failures+="$python: the SDK's sign/verify smoke test failed; "
done
rm -rf "$VENV"
die "could not build $VENV: ${failures:-no Python found}"
