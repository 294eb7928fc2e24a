#!/usr/bin/env bash
# Installs the template toolchain: AWS SAM CLI and cfn-lint in .venv-sam, checkov in .venv-checkov.
# Own virtualenvs because their pins clash with the app's .venv, and with each other
# (aws-sam-cli 1.170.0 pins boto3==1.43.108, checkov 3.3.30 pins boto3==1.35.49).
# Idempotent: a re-run only checks that the pinned versions are installed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned on purpose: a new cfn-lint or checkov release adds rules, and the template check must not
# turn red on its own. Bump them deliberately and re-run `make template-check`.
SAM_PINS="aws-sam-cli==1.170.0 cfn-lint==1.58.0"
CHECKOV_PINS="checkov==3.3.30"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'setup-sam: %s\n' "$*" >&2; exit 1; }

# Found the same way scripts/setup.sh finds it: sam builds the python3.13 layer with the
# interpreter it runs on, so the toolchain lives on 3.13 as well.
# shellcheck source=scripts/python313.sh
. scripts/python313.sh  # the working directory is the repository root (cd above)

is_py313() { [ -x "$1/bin/python" ] && "$1/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; }

has_pins() {  # has_pins VENV PIN...: every pin installed at exactly that version
  local venv=$1; shift
  "$venv/bin/python" - "$@" <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, _, wanted = pin.partition("==")
    assert version(name) == wanted, pin
PYEOF
}

install_into() {  # install_into VENV PIN...
  local venv=$1; shift
  if is_py313 "$venv" && has_pins "$venv" "$@"; then
    say "$venv already has $*"
    return 0
  fi
  say "$venv: $*"
  if ! is_py313 "$venv"; then
    rm -rf "$venv"
    "$PY" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
  "$venv/bin/python" -m pip check >/dev/null || { "$venv/bin/python" -m pip check; die "conflicting pins in $venv"; }
}

PY=$(find_python313) || die "no Python 3.13 found (sam builds the python3.13 layer with it). Install one, e.g. 'pyenv install 3.13', or set PYTHON=/path/to/python3.13"
# shellcheck disable=SC2086  # the pin lists are word lists
install_into .venv-sam $SAM_PINS
# shellcheck disable=SC2086
install_into .venv-checkov $CHECKOV_PINS

say "done: make template-check"
