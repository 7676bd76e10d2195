#!/usr/bin/env bash
# Builds the container image that Molecule's instances run: a real Debian 12 (bookworm)
# system with systemd as PID 1, made here from a debootstrap root file system and imported
# into the local (rootful) podman storage. Nothing is pulled from a container registry.
#
#   localhost/sluis-debian12-systemd:<recipe hash>   and   :latest
#
# Cached: the recipe hash covers the recipe below (the code of the recipe_* functions, the
# package and unit lists, suite and mirror; comments do not count) and the host's local CA
# certificates. When an image with that hash exists the script only re-points :latest.
# Downloaded .debs stay in /var/cache/sluis-molecule/debs for the next build.
#
# Usage (as root): scripts/build-molecule-image.sh [--force] [--print-image]
#   --force        rebuild even when the image of this recipe exists (newer Debian packages)
#   --print-image  print the image name of this recipe (localhost/...:<hash>) and exit
# Environment:
#   SLUIS_MOLECULE_MIRROR    Debian mirror (default http://deb.debian.org/debian)
#   SLUIS_MOLECULE_HOST_CAS  1 (default): the host's /usr/local/share/ca-certificates/*.crt are
#                            trusted in the image too (an HTTPS proxy that re-signs); 0: not
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE_REPO=localhost/sluis-debian12-systemd
SUITE=bookworm
MIRROR=${SLUIS_MOLECULE_MIRROR:-http://deb.debian.org/debian}
HOST_CAS=${SLUIS_MOLECULE_HOST_CAS:-1}
CACHE_DIR=/var/cache/sluis-molecule
# Ansible needs python3 on a target and sudo for become_user; procps gives ps and sysctl.
PACKAGES=(systemd systemd-sysv dbus python3 sudo iproute2 ca-certificates procps)
# The Debian packages the roles install (keep in step with roles/*/tasks and defaults),
# preinstalled so that a converge does not spend minutes in apt and dpkg in every instance:
# the roles still ask for them (state: present), which is then a no-op. Installed in the
# image only when installing has no effect a scenario could notice beyond the files: no keys
# that a test looks for, no server that listens. bookworm-backports: pkcs11-provider.
ROLE_PACKAGES=(openssh-server openssh-client nftables unattended-upgrades systemd-timesyncd
    logrotate opensc softhsm2 rsyslog rsyslog-relp rsyslog-openssl rsyslog-gnutls openssl
    python3-venv)
ROLE_BACKPORTS_PACKAGES=(pkcs11-provider)
# Only downloaded into /var/cache/apt/archives (installed by the role from there, no
# download): PostgreSQL would create and start a cluster and ssl-cert a snakeoil key in
# every instance; etcd-server starts a lone member (which can never join a cluster after),
# keepalived would claim addresses.
ROLE_CACHED_PACKAGES=(postgresql-15 postgresql-client-15 ssl-cert patroni etcd-server etcd-client
    keepalived)
# Timers that would start apt or disk jobs in the middle of a converge, and units that have
# nothing to do in a container.
MASK_UNITS=(apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer
    e2scrub_reap.service fstrim.timer systemd-pstore.service getty@tty1.service)

recipe_debootstrap() {
    local rootfs=$1 include
    include=$(IFS=,; echo "${PACKAGES[*]}")
    # dpkg without fsync after every file (like Debian's old docker-apt-speedup): a fifth
    # faster here, in the build and in every converge's package installs; only a crash of
    # the host in the middle of an install could tell the difference.
    mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
    echo force-unsafe-io >"$rootfs/etc/dpkg/dpkg.cfg.d/00-sluis-molecule-unsafe-io"
    debootstrap --variant=minbase --include="$include" --cache-dir="$CACHE_DIR/debs" \
        "$SUITE" "$rootfs" "$MIRROR"
}

recipe_configure() {
    local rootfs=$1 unit f
    # The sources of a stock Debian 12 installation (backports is the roles' business).
    printf 'deb %s %s main\n' "$MIRROR" "$SUITE" "$MIRROR" "$SUITE-updates" \
        "${MIRROR%/debian}/debian-security" "$SUITE-security" >"$rootfs/etc/apt/sources.list"
    # Smaller image, faster installs in converge: no manual pages, info or translations.
    printf 'path-exclude=%s\n' '/usr/share/man/*' '/usr/share/info/*' '/usr/share/locale/*' \
        >"$rootfs/etc/dpkg/dpkg.cfg.d/01-sluis-molecule-nodoc"
    rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
    # Every container gets its own machine id at boot (systemd derives it from podman's
    # container_uuid); the one the build wrote would be shared by all instances.
    : >"$rootfs/etc/machine-id"
    rm -f "$rootfs/var/lib/dbus/machine-id"
    ln -sf /lib/systemd/system/multi-user.target "$rootfs/etc/systemd/system/default.target"
    for unit in "${MASK_UNITS[@]}"; do
        ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
    done
    # The host's local CAs (an egress proxy that re-signs HTTPS, a company CA).
    while IFS= read -r f; do
        install -m 0644 "$f" "$rootfs/usr/local/share/ca-certificates/"
    done < <(host_ca_files)
    chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs/debootstrap"
}

recipe_packages() {
    local rootfs=$1 rc=0
    # No service may start in the chroot (it would run on the build host).
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
    mount -t proc proc "$rootfs/proc"
    printf 'deb %s %s-backports main\n' "$MIRROR" "$SUITE" >"$rootfs/etc/apt/sources.list.d/build-backports.list"
    {
        chroot "$rootfs" apt-get update -q &&
        DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get install -y -q --no-install-recommends \
            "${ROLE_PACKAGES[@]}" &&
        DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get install -y -q --no-install-recommends \
            -t "$SUITE-backports" "${ROLE_BACKPORTS_PACKAGES[@]}" &&
        chroot "$rootfs" apt-get clean &&
        rm -f "$rootfs/etc/apt/sources.list.d/build-backports.list" &&
        chroot "$rootfs" apt-get update -q &&
        chroot "$rootfs" apt-get install -y -q -d --no-install-recommends "${ROLE_CACHED_PACKAGES[@]}"
    } || rc=$?
    umount "$rootfs/proc"
    rm -f "$rootfs/usr/sbin/policy-rc.d"
    [ "$rc" = 0 ] || return "$rc"
    # The package lists stay (the roles' apt-get update then fetches only what changed), and
    # so do the downloaded ROLE_CACHED_PACKAGES; logs and backups go.
    rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* \
        "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old
    rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
}

recipe_import() {
    local rootfs=$1 image=$2 hash=$3
    tar -C "$rootfs" --numeric-owner --xattrs -c . | podman import \
        --change 'CMD ["/sbin/init"]' \
        --change 'STOPSIGNAL SIGRTMIN+3' \
        --change 'LABEL org.opencontainers.image.title=sluis-debian12-systemd' \
        --change "LABEL sluis.molecule.recipe=$hash" \
        --message "debootstrap $SUITE minbase + ${PACKAGES[*]} + roles' packages" \
        - "$image" >/dev/null
}

host_ca_files() {
    [ "$HOST_CAS" = 1 ] || return 0
    find /usr/local/share/ca-certificates -maxdepth 1 -type f -name '*.crt' 2>/dev/null | sort
}

recipe_hash() {
    {
        declare -f recipe_debootstrap recipe_configure recipe_packages recipe_import
        declare -p SUITE MIRROR PACKAGES MASK_UNITS ROLE_PACKAGES ROLE_BACKPORTS_PACKAGES \
            ROLE_CACHED_PACKAGES
        local f
        while IFS= read -r f; do
            sha256sum <"$f"
        done < <(host_ca_files)
    } | sha256sum | cut -c1-12
}

force=0
print_only=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        --print-image) print_only=1 ;;
        *) echo "build-molecule-image: unknown argument $arg" >&2; exit 2 ;;
    esac
done

HASH=$(recipe_hash)
IMAGE="$IMAGE_REPO:$HASH"
if [ "$print_only" = 1 ]; then
    echo "$IMAGE"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "build-molecule-image: run as root (debootstrap and rootful podman)" >&2
    exit 1
fi
for tool in debootstrap podman; do
    command -v "$tool" >/dev/null || {
        echo "build-molecule-image: $tool is missing: run scripts/setup-molecule.sh" >&2
        exit 1
    }
done

# One build at a time (several scenarios may start at once).
mkdir -p "$CACHE_DIR/debs"
exec 9>"$CACHE_DIR/build.lock"
flock 9

if [ "$force" = 0 ] && podman image exists "$IMAGE"; then
    podman tag "$IMAGE" "$IMAGE_REPO:latest"
    echo "build-molecule-image: $IMAGE exists (cached), tagged :latest"
    exit 0
fi

# Seconds since boot: the wall clock may jump while we build.
uptime_seconds() { cut -d. -f1 /proc/uptime; }
started=$(uptime_seconds)
workdir=$(mktemp -d /var/tmp/sluis-molecule-image.XXXXXX)
cleanup() {
    # debootstrap unmounts what it mounted on success; after a failure /proc or /sys may stay.
    local m
    for m in proc sys dev/pts dev; do
        if mountpoint -q "$workdir/rootfs/$m" 2>/dev/null; then
            umount -l "$workdir/rootfs/$m"
        fi
    done
    rm -rf --one-file-system "$workdir"
}
trap cleanup EXIT
rootfs=$workdir/rootfs

echo "build-molecule-image: debootstrap $SUITE (minbase + ${PACKAGES[*]}) from $MIRROR"
if ! recipe_debootstrap "$rootfs" >"$workdir/debootstrap.log" 2>&1; then
    tail -n 30 "$workdir/debootstrap.log" >&2
    if [ -f "$rootfs/debootstrap/debootstrap.log" ]; then
        tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
    fi
    echo "build-molecule-image: debootstrap failed" >&2
    exit 1
fi
echo "build-molecule-image: configuring the root file system"
recipe_configure "$rootfs"
echo "build-molecule-image: the roles' packages (${ROLE_PACKAGES[*]} ${ROLE_BACKPORTS_PACKAGES[*]})"
if ! recipe_packages "$rootfs" >"$workdir/packages.log" 2>&1; then
    tail -n 30 "$workdir/packages.log" >&2
    echo "build-molecule-image: installing the roles' packages failed" >&2
    exit 1
fi
echo "build-molecule-image: importing $IMAGE"
recipe_import "$rootfs" "$IMAGE" "$HASH"
podman tag "$IMAGE" "$IMAGE_REPO:latest"

# Older recipes of this image, unless a container still uses them.
podman images --format '{{.Repository}}:{{.Tag}}' "$IMAGE_REPO" | while IFS= read -r old; do
    case "$old" in
        "$IMAGE" | "$IMAGE_REPO:latest") ;;
        *) podman rmi "$old" >/dev/null 2>&1 || true ;;
    esac
done

size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "build-molecule-image: built $IMAGE ($((size / 1024 / 1024)) MiB) in $(($(uptime_seconds) - started)) s"
