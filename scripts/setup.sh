#!/usr/bin/env bash
# Installs everything the project needs, on a fresh machine or over an existing set-up.
# Idempotent: re-running it only installs what changed. Says what is missing when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

# shellcheck source=scripts/python313.sh
. scripts/python313.sh  # the working directory is the repository root (cd above)

say "Python 3.13 virtualenv (.venv)"
PY=$(find_python313) || die "no Python 3.13 found (the Lambda runtime is python3.13). Install one, e.g. 'pyenv install 3.13', or set PYTHON=/path/to/python3.13"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
  rm -rf .venv
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -e .

say "Node packages (the official Alipay SDK as test oracle)"
command -v npm >/dev/null 2>&1 || die "npm not found; install Node.js 20+ (apt-get install nodejs npm)"
npm ci --no-audit --no-fund --loglevel=error

say "Java 17+ with its compiler (DynamoDB Local, bound to 127.0.0.1 by sandbox/LoopbackDynamoDBLocal.java)"
# The launcher runs as a single-file source program, so `java` must be a JDK (module jdk.compiler).
java_ready() {
  command -v java >/dev/null 2>&1 || return 1
  local version
  version=$(java -XshowSettings:properties -version 2>&1 | awk -F' = ' '/java.specification.version/ {print $2}')
  [ "${version%%.*}" -ge 17 ] 2>/dev/null || return 1
  local modules
  modules=$(java --list-modules 2>/dev/null)
  [[ $modules == *jdk.compiler@* ]]
}
if ! java_ready; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || true
    # openjdk-17 where Debian has it (bookworm), else Debian's default JDK (17 or newer)
    apt-get install -y -qq --no-install-recommends openjdk-17-jdk-headless \
      || apt-get install -y -qq --no-install-recommends default-jdk-headless \
      || true  # the check below says what is missing
  fi
  java_ready || die "DynamoDB Local needs a JDK 17+ as \`java\` (with jdk.compiler): e.g. 'apt-get install -y --no-install-recommends openjdk-17-jdk-headless' as root"
fi

say "Headless Chromium and its driver from Debian (browser tests in tests/e2e)"
# Debian's packages only: Selenium is pointed at /usr/bin/chromedriver and never downloads a browser.
# A CJK font, so that screenshots of the bilingual pages show Chinese rather than empty boxes.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || ! fc-list :lang=zh 2>/dev/null | grep -q .; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || true
    apt-get install -y -qq chromium chromium-driver fonts-wqy-zenhei || true  # the check below says what is missing
  fi
  [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] \
    || die "the browser tests need Debian's chromium and chromium-driver: 'apt-get install -y chromium chromium-driver' as root"
fi

say "done: .venv/bin/alipay-v3 --help"
