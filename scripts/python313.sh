# Sourced by the set-up scripts: prints the path of a Python 3.13 (the Lambda runtime's version),
# trying $PYTHON first, then the usual places and pyenv's; fails when there is none.
find_python313() {
  for candidate in "${PYTHON:-}" python3.13 "$HOME/.pyenv/versions/3.13"*/bin/python3.13 /usr/local/bin/python3.13 /usr/bin/python3.13; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}
