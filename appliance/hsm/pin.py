"""Read the token PIN from the environment, a systemd credential or a root-only file.

Never from argv, never into a log. A systemd credential (``LoadCredential=`` or
``LoadCredentialEncrypted=`` in the unit, sealed to the TPM where there is one) appears as the
file ``$CREDENTIALS_DIRECTORY/<hsm.pin_credential>``, readable by this service only.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from appliance.errors import ConfigurationError
from appliance.hsm.settings import HsmSettings


class PinError(ConfigurationError):
    """No usable PIN source."""


CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"


def pin_credential_path(settings: HsmSettings) -> Path | None:
    """The systemd credential holding the PIN, if this process was given one."""
    directory = os.environ.get(CREDENTIALS_DIRECTORY)
    if not directory or not settings.pin_credential:
        return None
    path = Path(directory) / settings.pin_credential
    return path if path.exists() else None


def read_pin(settings: HsmSettings) -> str:
    """Return the user PIN: the environment variable, the systemd credential, the PIN file."""
    from_env = os.environ.get(settings.pin_env)
    if from_env:
        return from_env
    credential = pin_credential_path(settings)
    if credential is not None:
        # systemd makes the credential readable by this service only (an ACL may show group
        # bits on the file), so the mode check of PIN files does not apply.
        return read_pin_file(credential, check_mode=False)
    if settings.pin_file is None:
        raise PinError(
            f"no PIN for token {settings.token_label!r}: set the environment variable "
            f"{settings.pin_env}, give the service the systemd credential "
            f"{settings.pin_credential!r} or configure a root-only pin_file"
        )
    return read_pin_file(settings.pin_file)


def read_pin_file(path: os.PathLike[str] | str, *, check_mode: bool = True) -> str:
    """Read a PIN file, refusing one that others than its owner can read or write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise PinError(f"PIN file {os.fspath(path)} does not exist") from None
    except OSError as exc:
        raise PinError(f"PIN file {os.fspath(path)} cannot be opened: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if check_mode and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PinError(
                f"PIN file {os.fspath(path)} is readable or writable by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); make it 0400 or 0600"
            )
        if info.st_uid not in (0, os.geteuid()):
            raise PinError(f"PIN file {os.fspath(path)} must be owned by root or by this user")
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    pin = data.decode("utf-8").strip()
    if not pin:
        raise PinError(f"PIN file {os.fspath(path)} is empty")
    return pin


def write_pin_file(path: os.PathLike[str] | str, pin: str) -> None:
    """Create a PIN file readable by its owner only (used by tests and the demo setup)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pin.encode("utf-8") + b"\n")
    finally:
        os.close(fd)
