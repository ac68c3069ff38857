#!/usr/bin/env bash
# Creates .venv from Python 3.10 (TFX 1.16 supports >=3.9,<3.11) and installs Loopline with the
# exact, tested versions in constraints.txt. Safe to run again: it only reinstalls when
# constraints.txt or setup.py changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
STAMP=$VENV/.loopline-installed

find_python310() {
  local candidate
  # pyenv's shim for python3.10 refuses to run while the global version is 3.11, so look at the
  # interpreters themselves first, newest patch release first.
  if command -v pyenv >/dev/null 2>&1; then
    for candidate in $(ls -d "$(pyenv root)"/versions/3.10.*/bin/python3.10 2>/dev/null | sort -V -r); do
      "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null && { echo "$candidate"; return 0; }
    done
  fi
  for candidate in python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10 python3; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  if ! PYTHON=$(find_python310); then
    echo "bootstrap: no working Python 3.10 found (TFX 1.16 needs Python >=3.9,<3.11)." >&2
    echo "bootstrap: install one (e.g. 'pyenv install 3.10.13') and run this again." >&2
    exit 1
  fi
  echo "bootstrap: creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi

if [ -f "$STAMP" ] && [ "$STAMP" -nt constraints.txt ] && [ "$STAMP" -nt setup.py ]; then
  exit 0
fi
echo "bootstrap: installing Loopline and its pinned dependencies (first time: several minutes, ~3.5 GB)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt pip setuptools wheel
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
"$VENV/bin/python" -m pip check >/dev/null || { "$VENV/bin/python" -m pip check; exit 1; }
touch "$STAMP"
echo "bootstrap: ready ($VENV)"
