#!/usr/bin/env bash
# Prints the path of a Python 3.10 interpreter, or fails naming what is missing.
# Order: $PYTHON, python3.10 on PATH, pyenv installs (~/.pyenv or $PYENV_ROOT), /usr/bin.
set -uo pipefail

is_py310() {
  [ -n "$1" ] && [ -x "$1" ] || command -v "$1" >/dev/null 2>&1 || return 1
  "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)' >/dev/null 2>&1
}

candidates=()
[ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
command -v python3.10 >/dev/null 2>&1 && candidates+=("$(command -v python3.10)")
for root in "${PYENV_ROOT:-}" "$HOME/.pyenv"; do
  [ -n "$root" ] || continue
  for p in "$root"/versions/3.10.*/bin/python3.10; do
    [ -e "$p" ] && candidates+=("$p")
  done
done
candidates+=(/usr/bin/python3.10 /usr/local/bin/python3.10)

for c in "${candidates[@]}"; do
  if is_py310 "$c"; then
    command -v "$c"
    exit 0
  fi
done

if [ -n "${PYTHON:-}" ]; then
  echo "error: PYTHON=$PYTHON is not a working Python 3.10 interpreter." >&2
fi
echo "error: Python 3.10 not found (looked for \$PYTHON, python3.10 on PATH," \
  "~/.pyenv/versions/3.10.*, /usr/bin/python3.10)." >&2
echo "Install it (e.g. 'pyenv install 3.10.13' or your distribution's python3.10)" \
  "or set PYTHON=/path/to/python3.10." >&2
exit 1
