# Sourced by scripts/run, scripts/test and benchmarks/run: make .venv with the project in it.
# Needs only Python 3.11+ on PATH; reinstalls when pyproject.toml changes.
# VENV_EXTRAS: "" (the gateway and what it runs on: enough for the demo) or "dev" (plus the
# test and lint tools); a venv set up with dev serves both.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV_EXTRAS=${VENV_EXTRAS-dev}

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

say() { echo "  .venv: $*" >&2; }

if [ ! -x .venv/bin/python ]; then
  py=$(pick_python)
  say "creating it with $py"
  "$py" -m venv .venv
fi
sha=$(.venv/bin/python -c 'import hashlib,sys; print(hashlib.sha256(open("pyproject.toml","rb").read()).hexdigest())')
have_sha="" have_extras=""
if [ -f .venv/.installed ]; then read -r have_sha have_extras < .venv/.installed || true; fi
if [ "$have_sha" != "$sha" ] || { [ "$VENV_EXTRAS" = dev ] && [ "$have_extras" != dev ]; }; then
  extras=$VENV_EXTRAS
  [ "$have_sha" = "$sha" ] || [ "$have_extras" != dev ] || extras=dev  # keep the dev tools
  started=$SECONDS
  if [ "$extras" = dev ]; then
    target='.[dev]'
    say "installing the gateway, its dependencies and the dev tools (pytest, ruff, mypy, selenium...);"
  else
    target='.'
    say "installing the gateway and its dependencies (aiohttp, PyJWT, redis, argon2...);"
  fi
  say "about a minute the first time, log in .venv/install.log"
  if ! { .venv/bin/python -m pip install --quiet --upgrade pip &&
         .venv/bin/python -m pip install --progress-bar off -e "$target"; } >.venv/install.log 2>&1; then
    cat .venv/install.log >&2
    echo "error: installing the project into .venv failed (log above)" >&2
    exit 1
  fi
  echo "$sha $extras" > .venv/.installed
  say "ready ($((SECONDS - started)) s)"
fi
