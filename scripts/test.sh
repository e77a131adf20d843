#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs (a virtualenv with
# the project and its dev tools, PostgreSQL's server binaries from Debian's packages,
# Chromium for the browser test), then runs ruff, mypy and pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k ledger).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'

# PostgreSQL: the ledger tests start a throwaway cluster from these binaries.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "installing PostgreSQL from Debian's packages" >&2
    apt_install postgresql
fi
if ! id postgres >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    useradd --system --no-create-home --shell /usr/sbin/nologin postgres
fi

# systemd-analyze verifies the deploy unit.
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "installing systemd (for systemd-analyze) from Debian's packages" >&2
    apt_install systemd
fi

# Chromium for the dashboard's browser test (Debian's package, never a downloaded build).
if [ ! -x /usr/bin/chromium ]; then
    echo "installing Chromium from Debian's packages" >&2
    apt_install chromium
fi

echo "== ruff" >&2
.venv/bin/ruff check .
echo "== mypy" >&2
.venv/bin/mypy
echo "== pytest" >&2
export KANVOICE_REQUIRE_POSTGRES=1
export KANVOICE_CHROMIUM=/usr/bin/chromium
export KANVOICE_REQUIRE_BROWSER=1
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
