#!/usr/bin/env bash
# Builds the Sluis appliance image (docs/image.md), as root, from a fresh clone:
#
#   scripts/build-image.sh [OUTPUT_DIR]            (default var/image)
#
# 1. the Sluis wheelhouse of HEAD (roles/sluis/files/build-wheelhouse.sh: committed code only);
# 2. a Debian 12 root file system (mmdebstrap), converged offline by playbooks/build-image.yml
#    with the project's roles through a chroot connection (hardening in image-build mode, the
#    packages of hsm and logship, sluis installed from the wheelhouse), then made generic: no
#    SSH host keys, an empty machine-id, a first-boot unit that makes the host keys and grows
#    the root partition and file system to the disk;
# 3. a GPT disk without mounting anything: sfdisk lays it out, the EFI system partition is
#    filled with mtools (shim -> GRUB, Debian's signed binaries), the root ext4 is written by
#    mkfs.ext4 -d straight into the disk file at its offset;
# 4. OUTPUT_DIR/sluis-appliance.{raw,qcow2,vmdk} and SHA256SUMS; the build time per step and sizes.
# The Debian packages of a build are kept in SLUIS_IMAGE_CACHE (default var/cache/image-apt):
# the next build downloads only what changed (apt checks each file against the archive's
# hashes). An empty or removed cache only costs the download.
# Host packages: scripts/host-requirements, group image (scripts/setup-molecule.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

if [ "${1:-}" = --finish-tree ]; then
    finish=1 root=$2 out=$3
else
    finish=0 out=${1:-var/image}
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
name=sluis-appliance
# Fixed per build, written into the GPT, fstab and GRUB's configuration.
ids=$out/work/ids
# Step times of the tree (the customize hook runs in another process).
times=$out/work/times
cache=${SLUIS_IMAGE_CACHE:-$repo/var/cache/image-apt}

SUITE=bookworm
MIRROR=${SLUIS_IMAGE_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SLUIS_IMAGE_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# What the boot chain, the first boot and Ansible (site.yml, later) need; the roles add theirs.
PACKAGES=(
    systemd systemd-sysv systemd-resolved udev dbus netbase
    linux-image-amd64 initramfs-tools shim-signed grub-efi-amd64-signed mokutil
    openssh-server nftables auditd unattended-upgrades procps systemd-timesyncd
    cloud-guest-utils fdisk e2fsprogs # growpart, resize2fs: the first boot
    zstd # initramfs-tools compresses with it (Debian 12's default); without it gzip, slower
    python3 python3-apt ca-certificates # Ansible's modules (site.yml) run on python3
    iproute2 # `ip`: Ansible's facts find the box's default address with it (the monitoring role binds to it)
)
ROOT_TYPE=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709 # Linux root (x86-64), Discoverable Partitions
ESP_TYPE=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
ESP_START_MIB=1
ESP_SIZE_MIB=63 # FAT32 with 1 sector per cluster: shim, MokManager, GRUB take 3 MiB
ROOT_START_MIB=64

# --- the tree, as mmdebstrap's customize hook (mmdebstrap mounts /proc, /sys, /dev in it) ---
finish_tree() {
    local root=$1
    # shellcheck disable=SC1090
    . "$ids"
    # systemd-resolved made resolv.conf a link into /run, empty in a chroot: the roles' apt
    # steps resolve with the build host's file meanwhile.
    local resolv=$root/etc/resolv.conf link=""
    if [ -L "$resolv" ]; then
        link=$(readlink "$resolv")
        rm -f "$resolv"
        cp /etc/resolv.conf "$resolv"
    fi
    echo "build-image: converging $root with playbooks/build-image.yml"
    local converge_started initramfs_started
    converge_started=$(date +%s)
    ANSIBLE_CONFIG=$repo/ansible.cfg ANSIBLE_PIPELINING=1 ANSIBLE_NOCOLOR=1 \
        "$repo/.venv/bin/ansible-playbook" -i "$root," \
        -e "sluis_wheelhouse_dir=$out/work/wheelhouse" \
        "$repo/playbooks/build-image.yml"
    if [ -n "$link" ]; then
        rm -f "$resolv"
        ln -s "$link" "$resolv"
    fi

    cat >"$root/etc/fstab" <<EOF
# The image's disk (scripts/build-image.sh): partitions by their GPT UUIDs.
PARTUUID=$ROOT_PARTUUID / ext4 errors=remount-ro 0 1
PARTUUID=$ESP_PARTUUID /boot/efi vfat umask=0077,nofail 0 2
EOF
    mkdir -p "$root/boot/efi"
    echo sluis >"$root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tsluis\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"

    # Network: DHCP on every wired interface until site.yml configures the box.
    cat >"$root/etc/systemd/network/80-sluis-dhcp.network" <<'EOF'
# Written by scripts/build-image.sh: DHCP until the organisation configures the network.
# Not in a container (the image as a Molecule instance): there the engine sets up the network.
[Match]
Name=en* eth*
Virtualization=!container

[Network]
DHCP=yes
EOF
    chroot "$root" systemctl enable systemd-networkd.service systemd-resolved.service

    # First boot: what must be unique to the box, and the disk it was written to.
    install -m 0755 /dev/stdin "$root/usr/local/sbin/sluis-firstboot" <<'EOF'
#!/bin/sh
# The appliance image's first boot (docs/image.md): SSH host keys of this box, and the root
# partition and file system grown to the disk. Runs once: it leaves a stamp.
set -eu
stamp=/var/lib/sluis/firstboot.done
[ -e "$stamp" ] && exit 0
[ -e /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
[ -e /etc/ssh/ssh_host_rsa_key ] || ssh-keygen -q -t rsa -b 3072 -N '' -f /etc/ssh/ssh_host_rsa_key
part=$(findmnt -n -o SOURCE /)
if ! systemd-detect-virt --quiet --container; then
    disk=/dev/$(lsblk -n -o PKNAME "$part")
    number=$(cat "/sys/class/block/${part#/dev/}/partition")
fi
# growpart exits 1 with NOCHANGE when the partition fills the disk already. In a container
# (the image as a Molecule instance) the root is the engine's, not a partition.
if ! systemd-detect-virt --quiet --container && growpart "$disk" "$number"; then
    resize2fs "$part"
fi
mkdir -p "$(dirname "$stamp")"
date -u +%FT%TZ >"$stamp"
EOF
    cat >"$root/etc/systemd/system/sluis-firstboot.service" <<'EOF'
[Unit]
Description=Sluis appliance first boot: SSH host keys, root file system grown to the disk
Documentation=file:/usr/share/doc/sluis/image.md
ConditionPathExists=!/var/lib/sluis/firstboot.done
After=local-fs.target
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/sluis-firstboot
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
EOF
    chroot "$root" systemctl enable sluis-firstboot.service

    # The same image also runs as a container (scripts/image-podman.sh, Molecule): there the
    # root file system and the audit subsystem are the engine's and the host's.
    local unit
    for unit in systemd-remount-fs auditd; do
        mkdir -p "$root/etc/systemd/system/$unit.service.d"
        printf '# Written by scripts/build-image.sh: in a container this belongs to the host.\n[Unit]\nConditionVirtualization=!container\n' \
            >"$root/etc/systemd/system/$unit.service.d/sluis-image-container.conf"
    done
    mkdir -p "$root/usr/share/doc/sluis"
    cp "$repo/docs/image.md" "$root/usr/share/doc/sluis/image.md" 2>/dev/null || true

    # What to do next, on the console (agetty reads /etc/issue.d) and after login.
    mkdir -p "$root/etc/issue.d"
    cat >"$root/etc/issue.d/50-sluis-next.issue" <<'EOF'

Sluis appliance, not configured yet. Address: \4
Next: from the control node run
  ansible-playbook -i inventory/<your organisation> playbooks/site.yml
(root logs in over SSH with a key only; /usr/share/doc/sluis/image.md)

EOF
    cat >"$root/etc/motd" <<'EOF'

Sluis appliance. Configure it from the control node with the organisation's inventory:
  ansible-playbook -i inventory/<your organisation> playbooks/site.yml
See /usr/share/doc/sluis/image.md.

EOF

    # systemd imports credentials from QEMU's fw_cfg (opt/io.systemd.credentials/...) before
    # the root file system's modules load: the module must be in the initramfs.
    grep -qx qemu_fw_cfg "$root/etc/initramfs-tools/modules" || echo qemu_fw_cfg >>"$root/etc/initramfs-tools/modules"
    initramfs_started=$(date +%s)
    chroot "$root" update-initramfs -u -k all
    echo "converge=$((initramfs_started - converge_started)) initramfs=$(($(date +%s) - initramfs_started))" >>"$times"

    # GRUB's configuration on the root file system: the /vmlinuz and /initrd.img links follow
    # kernel updates (apt), so it stays right without grub-mkconfig (which cannot probe the
    # disk from a build chroot).
    mkdir -p "$root/boot/grub"
    cat >"$root/boot/grub/grub.cfg" <<EOF
# Written by scripts/build-image.sh (docs/image.md): Debian's /vmlinuz and /initrd.img links
# always point at the newest installed kernel.
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=2
menuentry "Sluis appliance (Debian 12)" {
    search --no-floppy --fs-uuid --set=root $ROOT_FSUUID
    linux /vmlinuz root=PARTUUID=$ROOT_PARTUUID ro console=tty0 console=ttyS0,115200n8
    initrd /initrd.img
}
EOF
    chmod 0400 "$root/boot/grub/grub.cfg"

    # The packages of this build (mmdebstrap's and the roles'), for the next build; the cache
    # holds exactly this build's set, so it does not grow with every point release.
    rm -rf "$cache.new"
    mkdir -p "$cache.new"
    find "$root/var/cache/apt/archives" -maxdepth 1 -name '*.deb' -exec cp -t "$cache.new" {} +
    rm -rf "$cache"
    mv "$cache.new" "$cache"

    # Nothing of the build and nothing that must be unique: host keys, machine-id, caches.
    rm -f "$root"/etc/ssh/ssh_host_*
    : >"$root/etc/machine-id"
    rm -f "$root/var/lib/dbus/machine-id" "$root/var/lib/systemd/random-seed"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
    # Empty lists must read as never fetched: Ansible's apt module (cache_valid_time) takes the
    # lists directory's time for the cache's age, and site.yml's first run on a fresh image
    # then installed nothing new ("bookworm-backports ... not available in the sources").
    touch -d @0 "$root/var/lib/apt/lists"
    rm -rf "$root/root/.ansible" "$root"/tmp/* "$root"/var/tmp/*
    find "$root/var/log" -type f -exec truncate -s 0 {} +
}

if [ "$finish" = 1 ]; then
    finish_tree "$root"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "build-image: run as root (mmdebstrap, chroot)" >&2
    exit 1
fi
./scripts/preflight.sh image
started=$(date +%s)
work=$out/work
rm -rf "$work"
mkdir -p "$work"
rootfs=$work/rootfs
disk=$work/$name.raw
cat >"$ids" <<EOF
ROOT_PARTUUID=$(cat /proc/sys/kernel/random/uuid)
ESP_PARTUUID=$(cat /proc/sys/kernel/random/uuid)
ROOT_FSUUID=$(cat /proc/sys/kernel/random/uuid)
EOF
# shellcheck disable=SC1090
. "$ids"

echo "build-image: the wheelhouse of HEAD"
roles/sluis/files/build-wheelhouse.sh "$repo" HEAD "$work/wheelhouse" "$repo/constraints.txt" \
    "$repo/.venv/bin/python" >/dev/null 2>"$work/wheelhouse.log" || { cat "$work/wheelhouse.log" >&2; exit 1; }

wheelhouse_done=$(date +%s)
echo "build-image: mmdebstrap $SUITE ($(find "$cache" -name '*.deb' 2>/dev/null | wc -l) packages cached in $cache)"
include=$(IFS=,; echo "${PACKAGES[*]}")
mkdir -p "$cache"
# The cached packages go into the tree's apt archive before the download (apt fetches only
# what is missing); essential/unlink skipped keeps the essential ones there too, for the
# customize hook, which saves them all.
mmdebstrap --mode=root --variant=apt --include="$include" \
    --skip=essential/unlink \
    --setup-hook="mkdir -p \"\$1/var/cache/apt/archives\" && cp -a '$cache/.' \"\$1/var/cache/apt/archives/\"" \
    --customize-hook="'$repo/scripts/build-image.sh' --finish-tree \"\$1\" '$out'" \
    "$SUITE" "$rootfs" \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
    "deb $SECURITY_MIRROR $SUITE-security main"
tree_done=$(date +%s)
# mmdebstrap unmounts what it mounted, but only warns when a mount is busy (it happened once
# with /sys): the disk must not get the build host's /sys or /proc.
for mnt in $(findmnt -rn -o TARGET | grep "^$rootfs/" | sort -r || true); do
    echo "build-image: $mnt still mounted after mmdebstrap: unmounting it" >&2
    umount -l "$mnt"
done

# --- the disk -------------------------------------------------------------------------------
used_mib=$(du -sxm "$rootfs" | cut -f1)
# Room for the first apt upgrade and logs until the first boot grows the file system.
root_mib=$(( (used_mib * 13 / 10 + 512 + 255) / 256 * 256 ))
disk_mib=$((ROOT_START_MIB + root_mib + 1))
truncate -s "${disk_mib}M" "$disk"
sfdisk --quiet "$disk" <<EOF
label: gpt
unit: sectors
start=$((ESP_START_MIB * 2048)), size=$((ESP_SIZE_MIB * 2048)), type=$ESP_TYPE, uuid=$ESP_PARTUUID, name="EFI system partition"
start=$((ROOT_START_MIB * 2048)), type=$ROOT_TYPE, uuid=$ROOT_PARTUUID, name="sluis-root"
EOF
root_sectors=$(sfdisk --json "$disk" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][1]["size"])')

# The EFI system partition: shim (signed by Microsoft's UEFI CA) loads grubx64.efi from its own
# folder (both Debian-signed); GRUB's built-in prefix is /EFI/debian, where a small grub.cfg
# hands over to /boot/grub/grub.cfg on the root file system.
esp=$work/esp.img
mkfs.vfat -F 32 -s 1 -n SLUIS-ESP -C "$esp" $((ESP_SIZE_MIB * 1024)) >/dev/null
cat >"$work/grub-esp.cfg" <<EOF
search --no-floppy --fs-uuid --set=root $ROOT_FSUUID
set prefix=(\$root)/boot/grub
configfile \$prefix/grub.cfg
EOF
mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/EFI/debian
for dir in BOOT debian; do
    target=BOOTX64.EFI
    [ "$dir" = debian ] && target=shimx64.efi
    mcopy -i "$esp" "$rootfs/usr/lib/shim/shimx64.efi.signed" "::/EFI/$dir/$target"
    mcopy -i "$esp" "$rootfs/usr/lib/shim/mmx64.efi.signed" "::/EFI/$dir/mmx64.efi"
    mcopy -i "$esp" "$rootfs/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed" "::/EFI/$dir/grubx64.efi"
    mcopy -i "$esp" "$work/grub-esp.cfg" "::/EFI/$dir/grub.cfg"
done
dd if="$esp" of="$disk" bs=1M seek=$ESP_START_MIB conv=notrunc,sparse status=none

# The root file system, written into the disk at its offset: no loop device, no mount.
mkfs.ext4 -q -L sluis-root -U "$ROOT_FSUUID" -d "$rootfs" \
    -E offset=$((ROOT_START_MIB * 1024 * 1024)) "$disk" "$((root_sectors / 2))k"
disk_done=$(date +%s)

# --- the outputs ----------------------------------------------------------------------------
rm -f "$out/$name".{raw,qcow2,vmdk} "$out/SHA256SUMS"
# Both at once: the vmdk's compression keeps one core busy, the qcow2 is mostly I/O.
qemu-img convert -f raw -O qcow2 "$disk" "$out/$name.qcow2" &
qcow2_pid=$!
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$disk" "$out/$name.vmdk"
wait "$qcow2_pid"
mv "$disk" "$out/$name.raw"
(cd "$out" && sha256sum "$name.raw" "$name.qcow2" "$name.vmdk" >SHA256SUMS)
rm -rf "$rootfs" "$esp"
finished=$(date +%s)

# shellcheck disable=SC1090
. "$times"
echo "build-image: done in $((finished - started)) s (wheelhouse $((wheelhouse_done - started)) s, mmdebstrap $((tree_done - wheelhouse_done - converge - initramfs)) s, converge $converge s, initramfs $initramfs s, disk $((disk_done - tree_done)) s, formats $((finished - disk_done)) s; load $(cut -d' ' -f1-3 /proc/loadavg))"
for f in "$out/$name".raw "$out/$name".qcow2 "$out/$name".vmdk; do
    printf 'build-image: %-40s %6s MiB on disk, %6s MiB virtual\n' "$(basename "$f")" \
        "$(($(du -k "$f" | cut -f1) / 1024))" "$(($(qemu-img info --output=json "$f" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])') / 1048576))"
done
echo "build-image: $out/SHA256SUMS"
