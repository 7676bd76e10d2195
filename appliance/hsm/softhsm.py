"""Development tokens in SoftHSM2. Never used with a real HSM (its vendor tools do this).

Why not ``softhsm2-util --init-token``: it takes the SO and user PIN only as command-line
arguments (visible to every local user in ``/proc/<pid>/cmdline``) or from an interactive
terminal prompt; it does not read them from stdin or the environment. python-pkcs11 exposes
``C_InitPIN`` (``Session.init_pin``) but not ``C_InitToken``, so this module calls
``C_InitToken`` itself through ``ctypes`` on the module python-pkcs11 has already loaded and
initialised (one shared library instance, so SoftHSM sees the new token at once), then sets the
user PIN with python-pkcs11. No PIN ever appears on a command line.

SoftHSM reads ``SOFTHSM2_CONF`` when the module is initialised, once per process.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import replace
from pathlib import Path

from pkcs11 import TokenFlag

from appliance.hsm.errors import HsmError, Pkcs11ModuleError, TokenExistsError, translated
from appliance.hsm.settings import SOFTHSM_MODULE, HsmSettings
from appliance.hsm.token import (
    PKCS11_LOCK,
    hold_login_lock,
    load_module,
    softhsm_conf_at_load,
)

DEFAULT_SOFTHSM_CONF = Path("/etc/softhsm/softhsm2.conf")
_LABEL_BYTES = 32  # CK_TOKEN_INFO.label is 32 bytes, blank padded
_MIN_PIN, _MAX_PIN = 4, 255  # SoftHSM's limits

_CKR_NAMES = {
    0xA0: "CKR_PIN_INCORRECT",
    0xA1: "CKR_PIN_INVALID",
    0xA2: "CKR_PIN_LEN_RANGE",
    0xA4: "CKR_PIN_LOCKED",
    0xB6: "CKR_SESSION_EXISTS",
    0x03: "CKR_SLOT_ID_INVALID",
    0xE0: "CKR_TOKEN_NOT_PRESENT",
    0x05: "CKR_GENERAL_ERROR",
}


class _CkVersion(ctypes.Structure):
    _fields_ = (("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte))


# CK_FUNCTION_LIST up to and including C_InitToken (the 10th function pointer). No struct
# packing on Unix, so ctypes' natural alignment matches the C layout.
class _CkFunctionListHead(ctypes.Structure):
    _fields_ = (
        ("version", _CkVersion),
        ("C_Initialize", ctypes.c_void_p),
        ("C_Finalize", ctypes.c_void_p),
        ("C_GetInfo", ctypes.c_void_p),
        ("C_GetFunctionList", ctypes.c_void_p),
        ("C_GetSlotList", ctypes.c_void_p),
        ("C_GetSlotInfo", ctypes.c_void_p),
        ("C_GetTokenInfo", ctypes.c_void_p),
        ("C_GetMechanismList", ctypes.c_void_p),
        ("C_GetMechanismInfo", ctypes.c_void_p),
        ("C_InitToken", ctypes.c_void_p),
    )


# CK_RV C_InitToken(CK_SLOT_ID, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen, CK_UTF8CHAR_PTR label)
_C_InitToken = ctypes.CFUNCTYPE(
    ctypes.c_ulong, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p
)


def softhsm_conf_path() -> Path:
    """The SoftHSM2 configuration this process uses (``SOFTHSM2_CONF`` or the default)."""
    return Path(os.environ.get("SOFTHSM2_CONF") or DEFAULT_SOFTHSM_CONF)


def softhsm_token_dir(conf: Path | None = None) -> Path | None:
    """``directories.tokendir`` from a SoftHSM2 configuration file, if it names one."""
    conf = conf or softhsm_conf_path()
    try:
        text = conf.read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == "directories.tokendir" and not line.lstrip().startswith("#"):
            return Path(value.strip())
    return None


def _c_init_token(module: Path, slot_id: int, so_pin: bytes, label: bytes) -> int:
    """Call C_InitToken of the (already initialised) module; return the CK_RV."""
    dll = ctypes.CDLL(str(module))
    flist = ctypes.POINTER(_CkFunctionListHead)()
    rv = int(dll.C_GetFunctionList(ctypes.byref(flist)))
    if rv != 0 or not flist or not flist.contents.C_InitToken:
        return rv or 0x05
    init_token = _C_InitToken(flist.contents.C_InitToken)
    return int(init_token(slot_id, so_pin, len(so_pin), label))


def init_softhsm_token(
    label: str,
    so_pin: str,
    user_pin: str,
    *,
    module: Path = SOFTHSM_MODULE,
    login_lock: Path | None = None,
) -> None:
    """Initialise a free SoftHSM2 slot as token ``label`` with the given SO and user PIN.

    Refuses if a token with that label exists. Honours ``SOFTHSM2_CONF`` (creating its token
    directory if missing). The SO and user logins happen under ``login_lock`` (default: the
    lock of :class:`HsmSettings`).

    SoftHSM scans its token directory once, in C_Initialize: a process that loaded the module
    earlier does not see tokens other processes created since (nor would it refuse their
    labels here). Tokens created by this function are visible in this process at once.
    """
    settings = HsmSettings(token_label=label, module=module)
    if login_lock is not None:
        settings = replace(settings, login_lock=login_lock)
    label_bytes = label.encode("utf-8")
    if not label.strip() or len(label_bytes) > _LABEL_BYTES or label != label.strip():
        raise HsmError(
            f"token label {label!r} must be 1 to {_LABEL_BYTES} bytes without leading or "
            "trailing blanks"
        )
    for name, pin in (("SO PIN", so_pin), ("user PIN", user_pin)):
        if not _MIN_PIN <= len(pin) <= _MAX_PIN:
            raise HsmError(f"the {name} must be {_MIN_PIN} to {_MAX_PIN} characters long")

    current_conf = os.environ.get("SOFTHSM2_CONF")
    loaded, conf_at_load = softhsm_conf_at_load(module)
    if loaded and conf_at_load != current_conf:
        raise HsmError(
            f"SoftHSM was initialised in this process with SOFTHSM2_CONF={conf_at_load}; it "
            f"cannot switch to {current_conf} (start a new process)"
        )
    if not loaded:
        token_dir = softhsm_token_dir()
        if token_dir is not None and not token_dir.exists():
            token_dir.mkdir(mode=0o700, parents=True)

    with (
        PKCS11_LOCK,
        hold_login_lock(settings),  # C_Initialize and the slot scan read every token file
        translated(settings, "initialising the token"),
    ):
        lib = load_module(module)
        if "softhsm" not in lib.manufacturer_id.lower():
            raise Pkcs11ModuleError(
                f"PKCS#11 module {module} is {lib.manufacturer_id!r}, not SoftHSM; initialise "
                "tokens of a real HSM with its vendor's tools"
            )
        free_slot = None
        for slot in lib.get_slots(token_present=True):
            token = slot.get_token()
            if not token.flags & TokenFlag.TOKEN_INITIALIZED:
                free_slot = free_slot or slot
            elif token.label == label:
                raise TokenExistsError(
                    f"a token labelled {label!r} already exists in {module} "
                    f"(configuration {softhsm_conf_path()})"
                )
        if free_slot is None:
            raise HsmError(f"SoftHSM module {module} has no free slot")
        rv = _c_init_token(
            module,
            free_slot.slot_id,
            so_pin.encode("utf-8"),
            label_bytes.ljust(_LABEL_BYTES, b" "),
        )
        if rv != 0:
            raise HsmError(
                f"C_InitToken for token {label!r} failed with "
                f"{_CKR_NAMES.get(rv, f'CK_RV {rv:#x}')}"
            )
        token = free_slot.get_token()
        with token.open(rw=True, so_pin=so_pin) as so_session:
            so_session.init_pin(user_pin)
