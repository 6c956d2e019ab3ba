# Sourced by infra/test and infra/studentwork: make .venv match uv.lock, from nothing, and
# install the Debian packages the local services need when they are missing.
# Needs only the machine's python3 (3.11+); uv comes from PyPI on first use.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# debian_package PACKAGE WHY TEST...: install PACKAGE (as root, with apt-get) unless the
# command TEST succeeds; say so, and go on without it if it cannot be installed.
debian_package() {
  local package="$1" why="$2"
  shift 2
  if "$@" >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing Debian package $package ($why); install it, or see README.md" >&2
    return 0
  fi
  echo "installing $package ($why)..." >&2
  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" \
      >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
              "$package" >/dev/null; }) \
    || echo "could not install $package" >&2
}

postgres_server() { compgen -G "/usr/lib/postgresql/*/bin/initdb" || command -v initdb; }
# PostgreSQL is started from Debian's package unless DATABASE_URL names a server.
if [ -z "${DATABASE_URL:-}" ]; then
  debian_package postgresql "the local PostgreSQL server" postgres_server
fi

# WeasyPrint subsets the attestation's fonts with HarfBuzz when libharfbuzz-subset is
# there, else with fontTools in Python: 0.18 against 0.024 s a PDF (measured side by side).
harfbuzz_subset() { compgen -G "/usr/lib/*/libharfbuzz-subset.so.0*" || compgen -G "/lib/*/libharfbuzz-subset.so.0*"; }
debian_package libharfbuzz-subset0 "HarfBuzz font subsetting for the attestation PDFs" harfbuzz_subset

# uv comes from PyPI into a virtualenv of its own outside the repository: Debian's python3
# refuses packages installed into it (PEP 668, "externally-managed-environment").
if ! command -v uv >/dev/null 2>&1; then
  if python3 -m uv --version >/dev/null 2>&1; then
    uv() { python3 -m uv "$@"; }
  else
    uv_home="${XDG_CACHE_HOME:-$HOME/.cache}/studentwork/uv"
    if [ ! -x "$uv_home/bin/uv" ]; then
      echo "installing uv (Python package manager) from PyPI into $uv_home..." >&2
      debian_package python3-venv "virtual environments for Debian's python3" \
        python3 -c "import ensurepip"
      python3 -m venv --clear "$uv_home"
      "$uv_home/bin/python" -m pip install --quiet --disable-pip-version-check uv
    fi
    uv() { "$uv_home/bin/uv" "$@"; }
  fi
fi
export UV_PYTHON_DOWNLOADS=never
uv sync --frozen --quiet
export PATH="$repo/.venv/bin:$PATH"
