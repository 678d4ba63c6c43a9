# Sourced by scripts/run and scripts/test: make .venv with the project and its dev tools.
# Needs only Python 3.11+ on PATH; reinstalls when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pick_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3 python; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

if [ ! -x .venv/bin/python ]; then
  py=$(pick_python)
  "$py" -m venv .venv
fi
stamp=$(cat pyproject.toml | .venv/bin/python -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
if [ "$(cat .venv/.installed 2>/dev/null)" != "$stamp" ]; then
  echo "setting up .venv (once; again when pyproject.toml changes)..." >&2
  if ! { .venv/bin/python -m pip install --upgrade pip &&
         .venv/bin/python -m pip install -e '.[dev]'; } >.venv/install.log 2>&1; then
    cat .venv/install.log >&2
    echo "error: installing the project into .venv failed (log above)" >&2
    exit 1
  fi
  echo "$stamp" > .venv/.installed
fi
