"""A development TPM 2.0: swtpm with a resource manager and a tpm2-pkcs11 token, for tests and
benchmarks only (a box's real TPM has the kernel's resource manager, /dev/tpmrm0).

Steps, in the order :func:`start_software_tpm` runs them:
1. ``swtpm socket --tpm2`` with its state in ``root/state`` (TCP on two free local ports).
2. A private D-Bus session bus and ``tpm2-abrmd --session`` on it. Without a resource manager
   the TPM's three transient object slots fill up after one tool run ("out of memory for
   object contexts", TPM_RC_OBJECT_MEMORY): every tool and process must go through one.
3. ``tpm2_ptool init`` and ``addtoken``: the tpm2-pkcs11 store (SQLite, ``root/store``) with
   one token. ``tpm2_ptool`` takes the PINs only as arguments, so they are visible in
   ``/proc`` while it runs: acceptable for a throwaway software TPM, never for a real one
   (there the security officer runs ``tpm2_ptool`` by hand, docs/keys.md).

:attr:`SoftwareTpm.environment` is what every process using the token needs
(``TPM2_PKCS11_TCTI``, ``TPM2_PKCS11_STORE``, ``DBUS_SESSION_BUS_ADDRESS``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from appliance.hsm.errors import HsmError

TPM2_PKCS11_MODULE = (
    Path("/usr/lib") / str(sysconfig.get_config_var("MULTIARCH")) / "pkcs11/libtpm2_pkcs11.so"
)
TOOLS = ("swtpm", "dbus-daemon", "tpm2-abrmd", "tpm2_ptool", "tpm2_getrandom")


@dataclass
class SoftwareTpm:
    root: Path
    token_label: str
    environment: dict[str, str]
    port: int = 0
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _dbus_pid: int | None = None

    def start_tpm(self) -> None:
        """Start swtpm (its state kept in ``root/state``) and tpm2-abrmd; wait until they answer."""
        swtpm = [
            "swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.root / 'state'}",
            "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
            "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
            "--flags", "not-need-init,startup-clear",
        ]  # fmt: skip
        self._processes.append(
            subprocess.Popen(swtpm, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
        _wait_for_port(self.port, self._processes[0])
        abrmd = [
            "tpm2-abrmd",
            "--session",
            "--allow-root",
            f"--tcti=swtpm:host=127.0.0.1,port={self.port}",
        ]
        abrmd_log = self.root / "tpm2-abrmd.log"
        with abrmd_log.open("wb") as log:
            self._processes.append(
                subprocess.Popen(abrmd, env=self._env(), stdout=subprocess.DEVNULL, stderr=log)
            )
        deadline = time.monotonic() + 30
        while True:  # until tpm2-abrmd has claimed its bus name and reached the TPM
            try:
                _run(["tpm2_getrandom", "--hex", "4"], self._env(), "tpm2_getrandom")
                return
            except HsmError:
                if time.monotonic() > deadline:
                    raise
                if self._processes[1].poll() is not None:
                    log_tail = abrmd_log.read_text(errors="replace")[-500:]
                    raise HsmError(f"tpm2-abrmd stopped: {log_tail}") from None
                time.sleep(0.2)

    def stop_tpm(self) -> None:
        """Stop tpm2-abrmd and swtpm (the bus stays): the TPM is gone until :meth:`start_tpm`."""
        for process in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._processes.clear()

    def stop(self) -> None:
        """Stop the resource manager, the TPM and the bus (in that order)."""
        self.stop_tpm()
        if self._dbus_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._dbus_pid, signal.SIGTERM)
            self._dbus_pid = None

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.environment}


def _free_port_pair() -> int:
    """A free local TCP port whose successor is free too (swtpm's TCTI expects the control
    channel on the server port + 1)."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise HsmError("no two consecutive free TCP ports for swtpm")


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise HsmError(f"swtpm did not listen on port {port}") from None
            time.sleep(0.05)


def _run(argv: list[str], env: dict[str, str], what: str) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise HsmError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def start_software_tpm(root: Path, token_label: str, user_pin: str, so_pin: str) -> SoftwareTpm:
    """Start swtpm, a bus and tpm2-abrmd under ``root`` and make one tpm2-pkcs11 token."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "state").mkdir(exist_ok=True)
    (root / "store").mkdir(exist_ok=True)
    tpm = SoftwareTpm(root=root, token_label=token_label, environment={})
    try:
        tpm.port = _free_port_pair()
        bus = _run(
            ["dbus-daemon", "--session", "--fork", "--print-address=1", "--print-pid=1"],
            dict(os.environ),
            "dbus-daemon",
        ).split()
        address, tpm._dbus_pid = bus[0], int(bus[1])
        tpm.environment = {
            "DBUS_SESSION_BUS_ADDRESS": address,
            "TPM2_PKCS11_TCTI": "tabrmd:bus_type=session",
            "TPM2_PKCS11_STORE": str(root / "store"),
            "TPM2TOOLS_TCTI": "tabrmd:bus_type=session",
            # tpm2-pkcs11 logs errors to stderr by default; Sluis reports them itself.
            "TPM2_PKCS11_LOG_LEVEL": "0",
            # The TSS libraries under it write a few lines to stderr for every failed command
            # (every refused handshake while the TPM is gone); Sluis logs the failure once.
            "TSS2_LOG": "all+none",
        }
        tpm.start_tpm()
        store = str(root / "store")
        _run(["tpm2_ptool", "init", "--path", store], tpm._env(), "tpm2_ptool init")
        _run(
            ["tpm2_ptool", "addtoken", "--pid=1", f"--label={token_label}",
             f"--userpin={user_pin}", f"--sopin={so_pin}", "--path", store],
            tpm._env(),
            "tpm2_ptool addtoken",
        )  # fmt: skip
    except BaseException:
        tpm.stop()
        raise
    return tpm
