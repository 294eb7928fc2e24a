#!/usr/bin/env bash
# Builds the shared layer as Lambda loads it: ARTIFACTS_DIR/python/ holds the layer's pinned
# requirements (wheels for the target architecture), our packages, and bytecode for every module.
#
#   scripts/build-layer.sh SOURCE_DIR ARTIFACTS_DIR [arm64|x86_64] [CONSTRAINTS_FILE]
#
# `sam build` runs it through the Makefile's build-AlipayAuthLayer target (BuildMethod: makefile),
# with SOURCE_DIR its copy of layers/alipay_auth; the cold-start benchmark runs it for the host's
# architecture, so that it measures the tree that ships.
#
# Why bytecode: /opt is read-only on Lambda, so a layer without __pycache__ is compiled again on
# every cold start. The .pyc files use unchecked hashes: zip packaging does not keep the sources'
# timestamps, and an unchecked .pyc is used without looking at the source at all.
set -euo pipefail

die() { printf 'build-layer: %s\n' "$*" >&2; exit 1; }

[ $# -ge 2 ] || die "usage: $0 SOURCE_DIR ARTIFACTS_DIR [arm64|x86_64] [CONSTRAINTS_FILE]"
source_dir=$(cd "$1" && pwd) || die "no source directory $1"
artifacts_dir=$2
architecture=${3:-arm64}
constraints=${4:-}
[ -n "$artifacts_dir" ] || die "ARTIFACTS_DIR is empty"
[ -f "$source_dir/requirements.txt" ] || die "$source_dir has no requirements.txt"

# The wheel platforms lambda-builders accepts for python3.13, whose runtime has glibc 2.34.
case "$architecture" in
  arm64) machine=aarch64 ;;
  x86_64) machine=x86_64 ;;
  *) die "architecture must be arm64 or x86_64, not $architecture" ;;
esac
platforms=(manylinux2014_$machine manylinux_2_17_$machine manylinux_2_28_$machine manylinux_2_34_$machine)

# shellcheck source=scripts/python313.sh
. "$(dirname "$0")/python313.sh"
PY=$(find_python313) || die "no Python 3.13 found (the layer's bytecode must be 3.13's). Set PYTHON=/path/to/python3.13"

target="$artifacts_dir/python"
rm -rf -- "$target"
mkdir -p -- "$target"

platform_args=()
for platform in "${platforms[@]}"; do platform_args+=(--platform "$platform"); done
constraint_args=()
[ -z "$constraints" ] || constraint_args=(--constraint "$constraints")

# Binary wheels only, for the target and not for this machine: nothing is compiled from source here.
"$PY" -m pip install --quiet --disable-pip-version-check --no-compile \
  --target "$target" --only-binary=:all: \
  --implementation cp --python-version 3.13 --abi cp313 "${platform_args[@]}" \
  -r "$source_dir/requirements.txt" "${constraint_args[@]}"
rm -rf -- "$target/bin"  # console scripts of the dependencies: nothing on Lambda runs them

# Our packages, as sam's python3.13 build copies them (no caches, no packaging metadata).
for package in "$source_dir"/*/__init__.py; do
  package_dir=$(dirname "$package")
  cp -R -- "$package_dir" "$target/"
done
find "$target" -name __pycache__ -type d -prune -exec rm -rf -- {} +

# Every module, for the interpreter Lambda runs (no -O), into __pycache__ where imports look.
"$PY" -m compileall -q -f --invalidation-mode unchecked-hash "$target" \
  || die "compileall failed in $target"
