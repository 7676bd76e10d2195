#!/usr/bin/env bash
# Installs everything Sluis needs on a Debian 12 machine, as root: the system packages of
# scripts/host-requirements' group base (SoftHSM2, OpenSC, pkcs11-provider from
# bookworm-backports, testssl.sh, PostgreSQL 15 for the storage tests, which start a private
# cluster of their own, chromium, nginx, wrk, ...), each named explicitly (no Recommends), and
# a Python virtual environment in .venv with the pinned dependencies from constraints.txt.
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# The packages, and why each is needed, are listed once in scripts/host-requirements (group
# base); scripts/preflight.sh checks the same list before the test command runs anything.
mapfile -t APT_PACKAGES < <(./scripts/preflight.sh --packages base)
mapfile -t BACKPORTS_PACKAGES < <(./scripts/preflight.sh --backports base)

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: run as root (it installs Debian packages)" >&2
        exit 1
    fi
}

missing_packages() {
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || echo "$pkg"
    done
}

install_system_packages() {
    local missing missing_bpo
    missing=$(missing_packages "${APT_PACKAGES[@]}")
    missing_bpo=$(missing_packages "${BACKPORTS_PACKAGES[@]}")
    [ -z "$missing$missing_bpo" ] && return 0
    need_root
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        cat > /etc/apt/sources.list.d/bookworm-backports.sources <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    [ -n "$missing" ] && apt-get install -y -q --no-install-recommends $missing
    # shellcheck disable=SC2086
    [ -n "$missing_bpo" ] && apt-get install -y -q --no-install-recommends -t bookworm-backports $missing_bpo
    return 0
}

install_python_env() {
    local python=${PYTHON:-python3}
    if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        echo "setup: Sluis needs Python 3.11 ($python is $("$python" --version 2>&1))" >&2
        exit 1
    fi
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    # The stamp avoids a pip run when nothing changed since the last install.
    local stamp=.venv/.sluis-installed
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
        .venv/bin/python -m pip install -q --upgrade pip
        .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
        touch "$stamp"
    fi
}

install_system_packages
install_python_env
echo "setup: done (venv: $(pwd)/.venv)"
