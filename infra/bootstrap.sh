# Sourced by infra/test and infra/studentwork: make .venv match uv.lock, from nothing.
# Needs only the machine's python3 (3.11+); uv comes from PyPI on first use.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
if ! command -v uv >/dev/null 2>&1; then
  if ! python3 -m uv --version >/dev/null 2>&1; then
    echo "installing uv (Python package manager) from PyPI..." >&2
    python3 -m pip install --quiet --disable-pip-version-check uv
  fi
  uv() { python3 -m uv "$@"; }
fi
export UV_PYTHON_DOWNLOADS=never
uv sync --frozen --quiet
export PATH="$repo/.venv/bin:$PATH"
