"""Where the organisation key lives: the PKCS#11 module, token, key label and PIN source."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
DEFAULT_KEY_LABEL = "sluis-organisation"
DEFAULT_PIN_ENV = "SLUIS_HSM_PIN"
DEFAULT_PIN_CREDENTIAL = "sluis-hsm-pin"


@dataclass(frozen=True)
class HsmSettings:
    """How to reach the organisation key.

    ``module`` is the vendor's PKCS#11 library (SoftHSM2 in development). The PIN comes from
    the environment variable ``pin_env``, the systemd credential ``pin_credential``
    (``$CREDENTIALS_DIRECTORY/<name>``) or ``pin_file`` (a root-only file), in that order,
    never from the command line. ``login_lock`` is a file used to serialise C_Login across
    processes: SoftHSM rewrites its token file on every login, and concurrent logins can
    corrupt it. The token lookup (C_GetSlotList/C_GetTokenInfo) must hold it too, and SoftHSM
    reads *every* token of its token directory there: all processes using one SoftHSM token
    directory must share one lock file, whatever token they use (a lock per token does not
    protect).
    """

    token_label: str
    module: Path = SOFTHSM_MODULE
    key_label: str = DEFAULT_KEY_LABEL
    pin_file: Path | None = None
    pin_env: str = DEFAULT_PIN_ENV
    pin_credential: str = DEFAULT_PIN_CREDENTIAL
    login_lock: Path = field(default_factory=lambda: Path("/run/lock/sluis-hsm.lock"))
    # SoftHSM2 only: the configuration (token directory) of this appliance's own token.
    # One token per module instance: pkcs11-provider 1.0 runs operations that name no key
    # (importing a peer's public key to verify a signature, random bytes) on the module's
    # first slot, and logs in there with this appliance's PIN. See docs/keys.md.
    softhsm_conf: Path | None = None

    def environment(self) -> dict[str, str]:
        """Environment variables a process needs to reach this token."""
        return {"SOFTHSM2_CONF": str(self.softhsm_conf)} if self.softhsm_conf else {}

    def pkcs11_uri(self, object_type: str = "private") -> str:
        """RFC 7512 URI of the organisation key (or its certificate/public key)."""
        return (
            f"pkcs11:token={_pct(self.token_label)};object={_pct(self.key_label)};"
            f"type={object_type}"
        )


def _pct(value: str) -> str:
    """Percent-encode a PKCS#11 URI path attribute value (RFC 7512 section 2.3)."""
    safe = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:[]@!$'()*+,=&")
    return "".join(ch if ch in safe else "".join(f"%{b:02X}" for b in ch.encode()) for ch in value)
