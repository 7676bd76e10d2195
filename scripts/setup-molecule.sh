#!/usr/bin/env bash
# Installs what the Molecule scenarios (molecule/) need on a Debian 12 machine, as root:
#   - podman with the runc runtime, the netavark network backend with iptables (its firewall
#     driver in bookworm; without it an instance's network fails with "netavark: No such file
#     or directory"), aardvark-dns, and debootstrap: scripts/host-requirements, group molecule,
#     each named explicitly (no Recommends);
#   - /etc/containers/containers.conf.d/50-sluis-molecule.conf: runc (crun refuses this
#     kind of host's hybrid cgroups), netavark (DNS between instances), ulimits the host
#     allows (see docs/molecule.md);
#   - Molecule in .venv when it is not there yet, and the Ansible collections
#     containers.podman and ansible.posix taken from the `ansible` package on PyPI (only those
#     two folders of its wheel go into .venv: Galaxy is not reachable here);
#   - the instance image localhost/sluis-debian12-systemd (scripts/build-molecule-image.sh,
#     cached by recipe hash). SLUIS_MOLECULE_IMAGE=0 skips it (create.yml builds it anyway).
# Safe to run again: it skips what is already there. Called by scripts/setup.sh after the
# virtual environment exists; standalone it installs the system part and says what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# scripts/host-requirements, groups molecule and image (the appliance image's build and boot
# proof, docs/image.md): the same list scripts/preflight.sh checks.
mapfile -t APT_PACKAGES < <(./scripts/preflight.sh --packages molecule; ./scripts/preflight.sh --packages image)
CONTAINERS_CONF=/etc/containers/containers.conf.d/50-sluis-molecule.conf
MOLECULE_VERSION=26.10.0
# The `ansible` release whose bundled collections we take (the last one for ansible-core
# 2.19 and Python 3.11): containers.podman 1.18.0, ansible.posix 2.1.0.
ANSIBLE_BUNDLE=ansible==12.3.0
ANSIBLE_BUNDLE_SHA256=cd156f82fa87f7a899212b0efa9f7ca3a24d609212de9f78428a572eb01e5414
COLLECTIONS=(containers/podman ansible/posix)

tmp=""
trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-molecule: run as root (Debian packages, rootful podman)" >&2
    exit 1
fi

install_system_packages() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    export DEBIAN_FRONTEND=noninteractive
    # Wait for another apt run (a parallel setup) instead of failing on its lock.
    apt-get -o DPkg::Lock::Timeout=300 update -q
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}"
}

configure_podman() {
    local want
    want=$(cat <<'EOF'
# Written by scripts/setup-molecule.sh for the Molecule scenarios (docs/molecule.md).
[containers]
# podman's defaults (nofile 1048576, nproc 4194304) exceed what may be raised here without
# CAP_SYS_RESOURCE: the runtime's setrlimit fails with EPERM.
default_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]

[network]
# netavark + aardvark-dns: instances on one network find each other by name.
network_backend = "netavark"

[engine]
# crun 1.8 refuses hybrid cgroup hosts ("cgroups in hybrid mode not supported"); runc works
# on hybrid and on pure cgroups v2.
runtime = "runc"
EOF
)
    if [ ! -f "$CONTAINERS_CONF" ] || [ "$(cat "$CONTAINERS_CONF")" != "$want" ]; then
        mkdir -p "$(dirname "$CONTAINERS_CONF")"
        printf '%s\n' "$want" >"$CONTAINERS_CONF"
        echo "setup-molecule: wrote $CONTAINERS_CONF"
    fi
    local backend
    backend=$(podman info --format '{{.Host.NetworkBackend}}')
    if [ "$backend" != netavark ]; then
        echo "setup-molecule: podman still uses the $backend network backend" >&2
        exit 1
    fi
}

install_python_part() {
    if [ ! -x .venv/bin/python ]; then
        echo "setup-molecule: no .venv yet: run scripts/setup.sh for Molecule and the collections" >&2
        return 0
    fi
    if [ ! -x .venv/bin/molecule ]; then
        .venv/bin/python -m pip install -q -c constraints.txt "molecule==$MOLECULE_VERSION"
    fi
    local site
    site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    local stamp="$site/ansible_collections/.sluis-molecule-${ANSIBLE_BUNDLE#ansible==}"
    [ -f "$stamp" ] && return 0
    tmp=$(mktemp -d)
    echo "$ANSIBLE_BUNDLE --hash=sha256:$ANSIBLE_BUNDLE_SHA256" >"$tmp/requirements.txt"
    .venv/bin/python -m pip download -q --no-deps --require-hashes -r "$tmp/requirements.txt" -d "$tmp"
    .venv/bin/python - "$tmp"/ansible-*.whl "$site" "${COLLECTIONS[@]}" <<'EOF'
import shutil
import sys
import zipfile
from pathlib import Path

wheel, site, *collections = sys.argv[1:]
root = Path(site) / "ansible_collections"
with zipfile.ZipFile(wheel) as zf:
    for collection in collections:
        prefix = f"ansible_collections/{collection}/"
        shutil.rmtree(root / collection, ignore_errors=True)
        members = [m for m in zf.namelist() if m.startswith(prefix)]
        zf.extractall(site, members)
        print(f"setup-molecule: {collection.replace('/', '.')} ({len(members)} files) into {root}")
EOF
    touch "$stamp"
}

install_system_packages
configure_podman
install_python_part
if [ "${SLUIS_MOLECULE_IMAGE:-1}" != 0 ]; then
    ./scripts/build-molecule-image.sh
fi
echo "setup-molecule: done"
