# The podman connection of containers.podman, made cheap enough for hundreds of tasks per
# instance on a loaded 2-core machine (docs/molecule.md, "Why the scenarios are fast enough"):
#
# - pipelining: a module is piped into the instance's python3 (the upstream plugin runs
#   `podman exec` without -i, so stdin never arrives and every module is first copied into a
#   temporary directory: about four podman calls per task instead of one);
# - no podman call at all per task: the podman CLI costs about 0.6 s per call under load.
#   Commands enter the container's namespaces with nsenter(1) (mount, UTS, IPC, network, PID,
#   cgroup; the container's root and working directory and PID 1's environment), with the
#   capability bounding set cut down to the container's own (setpriv(1) inside), so a task
#   has no capability the container lacks (never SYS_TIME, SYS_MODULE, ...). The container's
#   PID comes from podman's storage (containers.json, userdata/pidfile), read per task.
#   Not applied: the container's seccomp filter. Falls back to `podman exec -i` when the PID
#   cannot be found or a remote user is set;
# - files are copied by piping them through such a command (cat), not by `podman mount`.
from __future__ import annotations

import json
import os
import shlex
import subprocess
from typing import Any

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.connection import ConnectionBase
from ansible_collections.containers.podman.plugins.connection.podman import (
    Connection as PodmanConnection,
)

DOCUMENTATION = """
    name: sluis_podman
    short_description: podman exec with pipelining (Molecule instances of this repository)
    description:
      - The containers.podman.podman connection, with pipelining over podman exec -i and the
        container mounted only when files are copied.
    extends_documentation_fragment:
      - connection_pipelining
    options:
      remote_addr:
        description: The container name.
        default: inventory_hostname
        vars:
          - name: ansible_host
          - name: inventory_hostname
          - name: ansible_podman_host
      remote_user:
        description: User inside the container (root when not set).
        ini:
          - section: defaults
            key: remote_user
        env:
          - name: ANSIBLE_REMOTE_USER
        vars:
          - name: ansible_user
      podman_extra_args:
        description: Extra arguments to pass to the podman command line.
        default: ''
        ini:
          - section: defaults
            key: podman_extra_args
        vars:
          - name: ansible_podman_extra_args
        env:
          - name: ANSIBLE_PODMAN_EXTRA_ARGS
      podman_executable:
        description: Executable for podman command.
        default: podman
        vars:
          - name: ansible_podman_executable
        env:
          - name: ANSIBLE_PODMAN_EXECUTABLE
"""


class Connection(PodmanConnection):  # type: ignore[misc]
    transport = "sluis_podman"
    has_pipelining = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mount_tried = False

    def _connect(self) -> Connection:
        # No `podman mount` here: files go through _nsenter (or podman cp as the fallback).
        ConnectionBase._connect(self)
        self._connected = True
        return self

    # --- entering the container without podman ---------------------------------------------

    def _container_pid(self) -> int | None:
        """The host PID of the container's PID 1, from podman's storage; None if unknown."""
        name = str(self._container_id)
        try:
            with open(os.path.join(_STORAGE, "overlay-containers", "containers.json")) as f:
                containers = json.load(f)
            ids = [c["id"] for c in containers if name in c.get("names", []) or c["id"] == name]
            if len(ids) != 1:
                return None
            pidfile = os.path.join(
                _RUN_STORAGE, "overlay-containers", ids[0], "userdata", "pidfile"
            )
            with open(pidfile) as f:
                pid = int(f.read().strip())
            os.stat(f"/proc/{pid}/ns/mnt")
            return pid
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _nsenter_argv(self, argv: list[str]) -> list[str] | None:
        if self.user:
            return None
        pid = self._container_pid()
        if pid is None:
            return None
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = [e.decode() for e in f.read().split(b"\0") if e]
            with open(f"/proc/{pid}/status") as f:
                status = dict(
                    line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line
                )
            bounding = int(status["CapBnd"].strip(), 16)
        except (OSError, ValueError, KeyError, UnicodeDecodeError):
            return None
        caps = ",".join(f"+{name}" for bit, name in enumerate(_CAP_NAMES) if bounding & (1 << bit))
        return [
            "nsenter", "--target", str(pid), "--mount", "--uts", "--ipc", "--net", "--pid",
            "--cgroup", "--root", "--wd", "--",
            "/usr/bin/env", "-i", *environ,
            "setpriv", f"--bounding-set=-all,{caps}" if caps else "--bounding-set=-all",
            "--inh-caps=-all", "--ambient-caps=-all", "--",
            *argv,
        ]  # fmt: skip

    def _run(self, argv: list[str], in_data: bytes | None) -> tuple[int, bytes, bytes] | None:
        command = self._nsenter_argv(argv)
        if command is None:
            return None
        process = subprocess.run(command, input=in_data, capture_output=True, check=False)
        return process.returncode, process.stdout, process.stderr

    def exec_command(self, cmd: str, in_data: bytes | None = None, sudoable: bool = False) -> Any:
        if not self._connected:
            self._connect()
        ConnectionBase.exec_command(self, cmd, in_data=in_data, sudoable=sudoable)
        argv = shlex.split(to_native(cmd, errors="surrogate_or_strict"))
        result = self._run(argv, in_data)
        if result is not None:
            return result
        args = ["exec"]
        if in_data is not None:
            args.append("--interactive")
        if self.user:
            args.extend(("--user", self.user))
        return self._podman(args, argv, in_data)

    def put_file(self, in_path: str, out_path: str) -> None:
        if not self._connected:
            self._connect()
        ConnectionBase.put_file(self, in_path, out_path)
        with open(in_path, "rb") as f:
            data = f.read()
        script = 'umask 077 && cat > "$1"'
        result = self._run(["/bin/sh", "-c", script, "sh", out_path], data)
        if result is None:
            self._ensure_mount()
            super().put_file(in_path, out_path)
        elif result[0] != 0:
            raise AnsibleError(f"cannot write {out_path} in {self._container_id}: {result[2]!r}")

    def fetch_file(self, in_path: str, out_path: str) -> None:
        if not self._connected:
            self._connect()
        ConnectionBase.fetch_file(self, in_path, out_path)
        result = self._run(["/bin/cat", "--", in_path], None)
        if result is None:
            self._ensure_mount()
            super().fetch_file(in_path, out_path)
        elif result[0] != 0:
            raise AnsibleError(f"cannot read {in_path} in {self._container_id}: {result[2]!r}")
        else:
            with open(out_path, "wb") as f:
                f.write(result[1])

    def _ensure_mount(self) -> None:
        if self._mount_tried:
            return
        self._mount_tried = True
        rc, mount_point, _ = self._podman("mount")
        mount_point = mount_point.strip()
        self._mount_point = mount_point if rc == 0 and mount_point else None


# Rootful podman's storage (containers-storage.conf defaults).
_STORAGE = "/var/lib/containers/storage"
_RUN_STORAGE = "/run/containers/storage"
# Capability numbers (linux/capability.h) as setpriv names them.
_CAP_NAMES = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid",
    "setuid", "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin",
    "net_raw", "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace",
    "sys_pacct", "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time",
    "sys_tty_config", "mknod", "lease", "audit_write", "audit_control", "setfcap",
    "mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend", "audit_read",
    "perfmon", "bpf", "checkpoint_restore",
)  # fmt: skip
