"""``sluis hsm change-pin`` on a TPM 2.0 token (tpm2-pkcs11 against swtpm), and what differs
from SoftHSM2: the TPM takes a PIN of any length (Sluis refuses fewer than 4 characters), and
wrong PINs count towards the TPM's dictionary-attack lockout, which stops *every* key of the
TPM, a running gateway's signatures included, until the lockout is over or cleared.

Everything runs in fresh processes against the test's own software TPM: tpm2-pkcs11 reads its
store and TPM from the environment once per process, and the lockout must not reach the other
TPM tests' token.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hosttools import require

from appliance.hsm.pin import write_pin_file
from appliance.hsm.swtpm import TOOLS, TPM2_PKCS11_MODULE, start_software_tpm

TOKEN = "tpm-pin"
KEY = "sluis-organisation"

# A running component: one login, then a signature per line on stdin ("ok" or the error).
SIGNER = """
import sys
from pathlib import Path
from appliance.hsm.settings import HsmSettings
from appliance.hsm.signer import Pkcs11Signer
module, token, key, pin_file, lock = sys.argv[1:]
settings = HsmSettings(module=Path(module), token_label=token, key_label=key,
                       pin_file=Path(pin_file), login_lock=Path(lock))
with Pkcs11Signer(settings) as signer:
    for line in sys.stdin:
        try:
            signer.sign(line.encode())
            print("ok", flush=True)
        except Exception as exc:
            print(f"error: {exc}", flush=True)
"""


class Tpm:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.lock = root / "hsm.lock"

    def sluis(self, *argv: str, pin_file: Path, **extra: str) -> subprocess.CompletedProcess[str]:
        token = ["--module", str(TPM2_PKCS11_MODULE), "--token", TOKEN, "--key-label", KEY]
        token += ["--pin-file", str(pin_file), "--login-lock", str(self.lock)]
        return subprocess.run(
            [sys.executable, "-m", "appliance", "hsm", *argv, *token],
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def pin_file(self, name: str, pin: str) -> Path:
        path = self.root / name
        write_pin_file(path, pin)
        return path

    def tool(self, *argv: str) -> str:
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture
def tpm(tmp_path: Path) -> Iterator[Tpm]:
    for tool in TOOLS:  # tpm2_getcap and tpm2_dictionarylockout come with tpm2_getrandom
        require(tool)
    require(str(TPM2_PKCS11_MODULE))
    user_pin = "tpm-user-1357"
    software = start_software_tpm(tmp_path / "tpm", TOKEN, user_pin, secrets.token_hex(8))
    try:
        env = {**os.environ, **software.environment}
        env.pop("SLUIS_HSM_PIN", None)
        yield Tpm(tmp_path, env)
    finally:
        software.stop()


def test_change_pin_in_the_tpm_and_its_lockout(tpm: Tpm) -> None:
    old = tpm.pin_file("old.pin", "tpm-user-1357")
    new = tpm.pin_file("new.pin", "tpm-user-8642")
    done = tpm.sluis("generate-key", pin_file=old)
    assert done.returncode == 0, done.stderr

    argv = [str(TPM2_PKCS11_MODULE), TOKEN, KEY, str(old), str(tpm.lock)]
    signer = subprocess.Popen(
        [sys.executable, "-c", SIGNER, *argv],
        env=tpm.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    stdin, stdout = signer.stdin, signer.stdout
    assert stdin is not None
    assert stdout is not None

    def sign() -> str:
        stdin.write("x\n")
        stdin.flush()
        return stdout.readline().strip()

    try:
        assert sign() == "ok"

        # The change itself works as on SoftHSM2: only the new PIN logs in afterwards, and a
        # running component keeps its login (it needs the new PIN at its next start).
        done = tpm.sluis("change-pin", "--new-pin-file", str(new), pin_file=old)
        assert done.returncode == 0, done.stderr
        assert f"changed the user PIN of token '{TOKEN}'" in done.stdout
        assert tpm.sluis("list", pin_file=old).returncode != 0
        assert tpm.sluis("list", pin_file=new).returncode == 0
        assert sign() == "ok"

        # tpm2-pkcs11 would take "12" (its minimum is 0); Sluis refuses it before the token.
        short = tpm.pin_file("short.pin", "12")
        done = tpm.sluis("change-pin", "--new-pin-file", str(short), pin_file=new)
        assert done.returncode != 0
        assert "refused the new PIN: fewer than 4 characters" in done.stderr
        assert tpm.sluis("list", pin_file=new).returncode == 0

        # Wrong current PINs count towards the TPM's dictionary-attack lockout (swtpm: 3).
        # In lockout the TPM refuses the right PIN, and the running component's signatures.
        caps = tpm.tool("tpm2_getcap", "properties-variable")
        match = re.search(r"TPM2_PT_MAX_AUTH_FAIL:\s*(0x[0-9a-fA-F]+|\d+)", caps)
        assert match, caps
        max_tries = int(match.group(1), 0)
        assert 0 < max_tries <= 10, f"this TPM allows {max_tries} failures; the test expects few"
        wrong = tpm.pin_file("wrong.pin", "not-the-pin-0000")
        for _ in range(max_tries):
            done = tpm.sluis("change-pin", "--new-pin-file", str(old), pin_file=wrong)
            assert done.returncode != 0
            assert "refused the user PIN" in done.stderr or "is locked" in done.stderr
        done = tpm.sluis("list", pin_file=new)
        assert done.returncode != 0
        assert "is locked after too many wrong PINs" in done.stderr
        assert "TPM 2.0 locks all its keys" in done.stderr
        assert sign().startswith("error:")

        # The TPM's owner ends the lockout (lockout hierarchy; its password is empty on swtpm,
        # set on a real box); then the right PIN and the running component work again.
        tpm.tool("tpm2_dictionarylockout", "--clear-lockout")
        assert tpm.sluis("list", pin_file=new).returncode == 0
        assert sign() == "ok"
    finally:
        signer.kill()
        signer.wait()
