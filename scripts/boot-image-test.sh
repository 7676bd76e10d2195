#!/usr/bin/env bash
# Boot proof of the appliance image (docs/image.md): boots the image scripts/build-image.sh
# made under QEMU (TCG: this machine has no usable KVM) with OVMF in Secure Boot mode (Debian's
# OVMF_CODE_4M.ms.fd with OVMF_VARS_4M.ms.fd: Microsoft's keys enrolled, the ones Debian's shim
# is signed with), and checks over SSH through a loopback port forward:
#   Secure Boot on (mokutil and the EFI variable); sshd, nftables and auditd active, the
#   firewall's input policy drop; sysctl and audit rules in place; the first boot's work (host
#   keys, machine-id, root file system grown); the sluis CLI and its version; no failed unit.
#
#   scripts/boot-image-test.sh [IMAGE_DIR]     (default var/image; as root or with /dev access)
#
# The shipped image is never booted: the VM runs on a qcow2 overlay (4 GiB, larger than the
# image, so the first boot has something to grow into). The test's SSH key reaches root only
# in this VM: QEMU hands it to systemd as the credential ssh.authorized_keys.root (fw_cfg
# opt/io.systemd.credentials/, which systemd 252 imports; tmpfiles' provision.conf writes it
# to /root/.ssh/authorized_keys). The image holds no key.
# SLUIS_BOOT_TIMEOUT (seconds, default 420): until SSH answers; then the serial log is printed
# and the test fails. Prints the boot time.
set -euo pipefail
cd "$(dirname "$0")/.."
images=${1:-var/image}
image=$images/sluis-appliance.qcow2
timeout=${SLUIS_BOOT_TIMEOUT:-420}
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.ms.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.ms.fd

./scripts/preflight.sh image >/dev/null
if [ ! -f "$image" ]; then
    echo "boot-image-test: no $image: run scripts/build-image.sh first" >&2
    exit 1
fi
(cd "$images" && sha256sum --quiet -c SHA256SUMS)

work=$(mktemp -d "${TMPDIR:-/tmp}/sluis-boot.XXXXXX")
qemu_pid=""
cleanup() {
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "boot-image-test: FAILED: $*" >&2
    echo "----- serial console ($work/serial.log, last 150 lines) -----" >&2
    tail -n 150 "$work/serial.log" >&2 || true
    echo "----- end of serial console -----" >&2
    exit 1
}

qemu-img create -q -f qcow2 -b "$(realpath "$image")" -F qcow2 "$work/disk.qcow2" 4G
cp "$OVMF_VARS" "$work/vars.fd"
ssh-keygen -q -t ed25519 -N '' -C sluis-boot-test -f "$work/id"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

started=$(date +%s)
# q35 with SMM: the Secure Boot build of OVMF keeps its variables in SMM-protected flash.
qemu-system-x86_64 \
    -machine q35,smm=on,accel=tcg -cpu max -smp 2 -m 1536 \
    -global driver=cfi.pflash01,property=secure,value=on \
    -drive if=pflash,format=raw,unit=0,readonly=on,file="$OVMF_CODE" \
    -drive if=pflash,format=raw,unit=1,file="$work/vars.fd" \
    -drive if=virtio,format=qcow2,file="$work/disk.qcow2" \
    -netdev user,id=net0,hostfwd=tcp:127.0.0.1:"$port"-:22 \
    -device virtio-net-pci,netdev=net0 \
    -fw_cfg name=opt/io.systemd.credentials/ssh.authorized_keys.root,file="$work/id.pub" \
    -display none -monitor none -serial file:"$work/serial.log" &
qemu_pid=$!

ssh_vm() {
    ssh -q -i "$work/id" -p "$port" -o BatchMode=yes -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10 root@127.0.0.1 "$@"
}

until ssh_vm true 2>/dev/null; do
    kill -0 "$qemu_pid" 2>/dev/null || fail "QEMU exited before SSH answered"
    [ $(($(date +%s) - started)) -lt "$timeout" ] || fail "no SSH login within $timeout s"
    sleep 5
done
booted=$(date +%s)
echo "boot-image-test: SSH answered $((booted - started)) s after QEMU started (TCG; load $(cut -d' ' -f1-3 /proc/loadavg))"

# Each check prints "ok: ..." or "FAIL: ..."; the remote script exits with the failures' count.
set +e
ssh_vm bash -s <<'EOF' | tee "$work/checks.log"
failures=0
check() {
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then echo "ok: $what"; else echo "FAIL: $what"; failures=$((failures + 1)); fi
}
# systemd may still be starting units when sshd answers.
systemctl is-system-running --wait >/dev/null 2>&1
sb_var=/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c
check "Secure Boot enabled (mokutil)" sh -c 'mokutil --sb-state | grep -qx "SecureBoot enabled"'
check "Secure Boot enabled (EFI variable)" sh -c "[ \"\$(od -An -t u1 -j 4 -N 1 $sb_var | tr -d ' ')\" = 1 ]"
check "kernel lockdown (Secure Boot)" grep -q '\[integrity\]\|\[confidentiality\]' /sys/kernel/security/lockdown
for unit in ssh nftables auditd systemd-timesyncd unattended-upgrades apt-daily-upgrade.timer sluis-firstboot; do
    check "$unit active" systemctl is-active --quiet "$unit"
done
check "firewall input policy drop" sh -c 'nft list chain inet sluis_filter input | grep -q "policy drop"'
check "sshd: no passwords" sh -c 'sshd -T | grep -qx "passwordauthentication no"'
check "sysctl kernel.kptr_restrict = 2" sh -c '[ "$(sysctl -n kernel.kptr_restrict)" = 2 ]'
check "sysctl net.ipv4.conf.all.accept_redirects = 0" sh -c '[ "$(sysctl -n net.ipv4.conf.all.accept_redirects)" = 0 ]'
check "sysctl kernel.yama.ptrace_scope = 2" sh -c '[ "$(sysctl -n kernel.yama.ptrace_scope)" = 2 ]'
check "audit rules loaded (sluis-config)" sh -c 'auditctl -l | grep -q sluis-config'
check "modules refused (usb-storage)" sh -c 'modprobe -n -v usb-storage | grep -q "install /bin/false"'
check "modules refused (firewire-ohci)" sh -c 'modprobe -n -v firewire-ohci | grep -q "install /bin/false"'
check "sshd: at most 2 sessions per connection" sh -c 'sshd -T | grep -qx "maxsessions 2"'
check "idle shells end (read-only TMOUT)" bash -lc 'readonly -p | grep -q "TMOUT=\"900\""'
check "no core dumps (hard limit 0 in an SSH session)" bash -c '[ "$(ulimit -Hc)" = 0 ]'
check "SSH host keys made at first boot" test -s /etc/ssh/ssh_host_ed25519_key
check "machine-id made at first boot" sh -c '[ "$(wc -c </etc/machine-id)" = 33 ]'
check "root grown to the disk (> 3 GiB)" sh -c '[ "$(findmnt -bno SIZE /)" -gt 3221225472 ]'
check "root by PARTUUID" grep -q 'root=PARTUUID=' /proc/cmdline
check "serial console" grep -q 'console=ttyS0' /proc/cmdline
# The CLI has no --version: its help proves it starts, the venv's metadata names the version.
check "sluis CLI runs (sluis -h)" /opt/sluis/venv/bin/sluis -h
check "sluis installed" /opt/sluis/venv/bin/python -c 'import importlib.metadata as m; print(m.version("sluis"))'
echo "sluis $(/opt/sluis/venv/bin/python -c 'import importlib.metadata as m; print(m.version("sluis"))')"
check "no failed units" sh -c '[ -z "$(systemctl list-units --failed --plain --no-legend)" ]'
systemctl list-units --failed --plain --no-legend
exit "$failures"
EOF
status=${PIPESTATUS[0]}
set -e
finished=$(date +%s)
ssh_vm systemctl poweroff >/dev/null 2>&1 || true
[ "$status" = 0 ] || fail "$status check(s) failed over SSH (see above)"
echo "boot-image-test: passed: boot $((booted - started)) s, checks $((finished - booted)) s"
