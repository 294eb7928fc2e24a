#!/usr/bin/env bash
# Static security checks: bandit over our code, pip-audit over our pinned dependencies.
#
#   scripts/security.sh            both (what `make security` runs)
#   scripts/security.sh bandit     only bandit
#   scripts/security.sh audit      only pip-audit
#
# The tools live in their own virtualenv (.venv-security), pinned, like scripts/setup-sam.sh does
# for sam: their dependencies must not move the app's .venv, and a new release must not turn the
# check red on its own. Bump the pins deliberately.
#
# bandit: every finding is fixed or justified where it is (`# nosec BXXX - why`); any finding fails.
# pip-audit: needs its vulnerability service (PyPI's per-version JSON pages, or OSV). Pins it could
# not ask about are listed as NOT AUDITED (exit 0); a known vulnerability in a pin fails (exit 1).
set -euo pipefail
cd "$(dirname "$0")/.."

PINS="bandit==1.9.4 pip-audit==2.10.1"
VENV=.venv-security
# bandit's scope: the code that ships (the layer, the functions) and the local stack (sandbox).
# Tests are left out: fixed test keys and asserts are their job.
BANDIT_TARGETS="layers functions sandbox"
REQUIREMENTS="layers/alipay_auth/requirements.txt requirements-dev.txt"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'security: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/python313.sh
. scripts/python313.sh  # the working directory is the repository root (cd above)

has_pins() {
  "$VENV/bin/python" - "$@" <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, _, wanted = pin.partition("==")
    assert version(name) == wanted, pin
PYEOF
}

install_tools() {
  # shellcheck disable=SC2086  # PINS is a word list
  if [ -x "$VENV/bin/python" ] && has_pins $PINS; then
    return 0
  fi
  say "$VENV: $PINS"
  local py
  py=$(find_python313) || die "no Python 3.13 found; set PYTHON=/path/to/python3.13"
  rm -rf "$VENV"
  "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $PINS
}

run_bandit() {
  say "bandit: $BANDIT_TARGETS"
  # Medium severity and up is a finding. The low-severity notes were each read and accepted
  # (see them with: .venv-security/bin/bandit -r -l layers functions sandbox):
  #   B311 random for retry jitter and fault draws - timing, not secrets (secrets come from `secrets`);
  #   B105 "hardcoded password" - a URL path, and the fixed names of the local stand-ins;
  #   B404/B603 subprocess - the sandbox starts DynamoDB Local with a fixed argv, no shell.
  # shellcheck disable=SC2086
  "$VENV/bin/bandit" --quiet --recursive --severity-level medium --confidence-level medium \
    --exclude '*/.aws-sam/*,*/__pycache__/*' $BANDIT_TARGETS
}

run_audit() {
  say "pip-audit: $REQUIREMENTS"
  local args=() report rc=0
  for file in $REQUIREMENTS; do args+=(--requirement "$file"); done
  report=$(mktemp)
  # --no-deps --disable-pip: audit exactly the pins in the files, resolve nothing.
  # Exit 1 means a known vulnerability in a pin: that fails the check.
  "$VENV/bin/pip-audit" --progress-spinner off --no-deps --disable-pip --format json --output "$report" \
    "${args[@]}" 2>/dev/null || rc=$?
  "$VENV/bin/python" - "$report" <<'PYEOF' || rc=1
import json
import sys
import urllib.request

report = json.load(open(sys.argv[1]))
found, skipped = [], []
for dep in report["dependencies"]:
    if "skip_reason" in dep:  # skipped entries carry the version only in the reason: "... (1.2.3)"
        dep.setdefault("version", dep["skip_reason"].rstrip(")").rpartition("(")[2])
        skipped.append(dep)
    for vuln in dep.get("vulns", []):
        found.append(f"{dep['name']}=={dep['version']}: {vuln['id']} (fixed in {', '.join(vuln['fix_versions']) or '-'})")
for line in found:
    print(f"  VULNERABLE {line}")
audited = len(report["dependencies"]) - len(skipped)
print(f"  {audited} pins audited by pip-audit, {len(found)} known vulnerabilities, {len(skipped)} not audited")
if not skipped:
    sys.exit(1 if found else 0)

# pip-audit asks PyPI for /pypi/<name>/<version>/json. Where only the registry's project pages
# answer (this workplace: the versioned pages are 404, OSV does not resolve), every pin is
# "not found on PyPI". The project page lists the vulnerabilities of the *latest* release: for a
# pin that is the latest, that is an audit; for any other pin, say plainly that it was not audited.
late = []
for dep in skipped:
    try:
        url = f"https://pypi.org/pypi/{dep['name']}/json"
        with urllib.request.urlopen(url, timeout=15) as answer:  # noqa: S310  # nosec B310  # fixed https URL
            page = json.load(answer)
    except Exception as exc:  # noqa: BLE001 - unreachable means: not audited, said below
        late.append(f"{dep['name']}=={dep['version']} (PyPI unreachable: {type(exc).__name__})")
        continue
    latest = page["info"]["version"]
    if latest != dep["version"]:
        late.append(f"{dep['name']}=={dep['version']} (latest is {latest}; no per-version data here)")
        continue
    for vuln in page.get("vulnerabilities") or []:
        if not vuln.get("withdrawn"):
            found.append(f"{dep['name']}=={dep['version']}: {vuln['id']}")
            print(f"  VULNERABLE {found[-1]} (from PyPI's project page)")
print(f"  {len(skipped) - len(late)} more pins audited from PyPI's project pages (they are the latest release)")
if late:
    print("  NOT AUDITED - the vulnerability service could not be asked about these pins:", file=sys.stderr)
    for line in late:
        print(f"    {line}", file=sys.stderr)
sys.exit(1 if found else 0)
PYEOF
  rm -f "$report"
  return "$rc"
}

install_tools
case "${1:-all}" in
  bandit) run_bandit ;;
  audit) run_audit ;;
  all) run_bandit; run_audit ;;
  *) die "usage: scripts/security.sh [bandit|audit]" ;;
esac
say "security checks done"
