#!/usr/bin/env bash
# The appliance image as a podman image (docs/image.md, "The image as a container"), as root:
#
#   scripts/image-podman.sh [IMAGE_DIR] [NAME]    (default var/image, localhost/sluis-appliance:latest)
#
# The root partition of IMAGE_DIR/sluis-appliance.raw, mounted read-only (a loop device at its
# offset), is imported as NAME with /sbin/init as its command: the same files the image boots
# from, so a Molecule scenario whose platform names NAME converges the image itself. Then one
# container of it boots with systemd as PID 1, the way molecule/_shared/create.yml starts
# instances, and the script waits until systemd has finished starting; it prints the units
# that failed and fails if any did. The container is removed; the podman image stays.
set -euo pipefail
cd "$(dirname "$0")/.."
images=${1:-var/image}
name=${2:-localhost/sluis-appliance:latest}
raw=$images/sluis-appliance.raw
[ -f "$raw" ] || { echo "image-podman: no $raw: run scripts/build-image.sh first" >&2; exit 1; }
started=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/sluis-image-podman.XXXXXX")
container=sluis-image-podman-$$
cleanup() {
    podman rm -f -t 5 "$container" >/dev/null 2>&1 || true
    umount "$work/root" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/root"
start=$(sfdisk --json "$raw" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][1]["start"])')
mount -o loop,ro,noload,offset=$((start * 512)) "$raw" "$work/root"
# Numeric owners: the image's users and groups, not the build host's names for their ids.
tar -C "$work/root" --numeric-owner --xattrs -cf - . |
    podman import --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$name" >/dev/null
umount "$work/root"
imported=$(date +%s)
echo "image-podman: imported $name in $((imported - started)) s"

podman run -d --name "$container" --systemd=always --cap-add SYS_ADMIN --cap-add NET_ADMIN \
    --tmpfs /run:rw,nosuid,nodev,mode=755,shared --tmpfs /tmp:rw,nosuid,nodev,mode=1777 \
    "$name" >/dev/null
# systemctl answers only once systemd's bus is up; --wait then waits for the start-up to end.
state=""
for _ in $(seq 1 90); do
    state=$(podman exec "$container" systemctl is-system-running --wait 2>/dev/null || true)
    case $state in running | degraded | maintenance | stopping) break ;; esac
    sleep 2
done
echo "image-podman: systemd in the container: ${state:-no answer} after $(($(date +%s) - imported)) s"
failed=$(podman exec "$container" systemctl list-units --failed --plain --no-legend 2>/dev/null || true)
if [ "$state" != running ]; then
    echo "$failed" >&2
    podman exec "$container" journalctl -b --no-pager -p warning 2>/dev/null | tail -40 >&2 || true
    echo "image-podman: the image did not boot cleanly as a container" >&2
    exit 1
fi
podman exec "$container" /opt/sluis/venv/bin/sluis -h >/dev/null
echo "image-podman: passed in $(($(date +%s) - started)) s (load $(cut -d' ' -f1-3 /proc/loadavg))"
