# A chroot connection for playbooks/build-image.yml: the image's root file system is converged
# offline, as a directory on the build host. community.general's chroot plugin is not in this
# repository's venv (only containers.podman and ansible.posix are, scripts/setup-molecule.sh);
# this is the part of it the build needs: every command runs under chroot(8) with pipelining
# (modules arrive on stdin), files are copied by piping them through cat inside the tree.
# /proc, /sys and /dev inside the tree are mmdebstrap's (the build runs as its customize hook).
from __future__ import annotations

import os
import subprocess
from typing import Any

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_bytes
from ansible.plugins.connection import ConnectionBase

DOCUMENTATION = """
    name: sluis_chroot
    short_description: run tasks inside a directory with chroot(8) (the image build)
    description:
      - Commands run as root under chroot(8) in the directory named by the host; modules are
        piped to the tree's python3. Nothing can be started (no init runs in a chroot).
    extends_documentation_fragment:
      - connection_pipelining
    options:
      remote_addr:
        description: The directory that is the root file system.
        default: inventory_hostname
        vars:
          - name: ansible_host
          - name: inventory_hostname
"""


class Connection(ConnectionBase):  # type: ignore[misc]
    transport = "sluis_chroot"
    has_pipelining = True
    has_tty = False
    default_user = "root"

    def _root(self) -> str:
        root = str(self.get_option("remote_addr"))
        if not os.path.isabs(root) or not os.path.isfile(os.path.join(root, "usr/bin/python3")):
            raise AnsibleError(f"sluis_chroot: {root} is not a root file system with python3")
        return root

    def _connect(self) -> Connection:
        super()._connect()
        self._connected = True
        return self

    def _run(self, argv: list[str], in_data: bytes | None) -> tuple[int, bytes, bytes]:
        argv = ["chroot", self._root(), *argv]
        process = subprocess.run(argv, input=in_data, capture_output=True, env=_ENV, check=False)
        return process.returncode, process.stdout, process.stderr

    def exec_command(self, cmd: str, in_data: bytes | None = None, sudoable: bool = False) -> Any:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        return self._run(["/bin/sh", "-c", cmd], in_data)

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        with open(to_bytes(in_path), "rb") as f:
            data = f.read()
        rc, _, err = self._run(["/bin/sh", "-c", 'umask 077 && cat > "$1"', "sh", out_path], data)
        if rc != 0:
            raise AnsibleError(f"sluis_chroot: cannot write {out_path}: {err!r}")

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        rc, out, err = self._run(["/bin/cat", "--", in_path], None)
        if rc != 0:
            raise AnsibleError(f"sluis_chroot: cannot read {in_path}: {err!r}")
        with open(to_bytes(out_path), "wb") as f:
            f.write(out)

    def close(self) -> None:
        self._connected = False


# The tree's environment, not the build host's (no SSH_CONNECTION, no venv on PATH).
_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "DEBIAN_FRONTEND": "noninteractive",
}
