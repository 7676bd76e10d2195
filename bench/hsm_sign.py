"""P-256 signatures per second through Pkcs11Signer on a fresh SoftHSM2 token.

    .venv/bin/python bench/hsm_sign.py [--seconds 3] [--threads 1] [--algorithm ec-p256]
        [--p11kit | --tpm2]

Creates a throwaway SoftHSM2 configuration and token in a temporary directory (SOFTHSM2_CONF
is set before the module loads), generates the key inside the token and signs JWS-style
(SHA-256 here, CKM_ECDSA in the token) for a fixed time. With ``--threads N`` every thread has
its own Pkcs11Signer (own session); one signer serialises its callers. With ``--p11kit`` the
token is served by ``p11-kit server`` in another process and signed with through
``p11-kit-client.so`` (the network-HSM stand-in, docs/keys.md): every signature is a round
trip over a Unix socket. With ``--tpm2`` the key is in a software TPM 2.0 (swtpm, reached
through tpm2-abrmd and tpm2-pkcs11; appliance/hsm/swtpm.py): a real TPM chip is slower still.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sysconfig
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

P11KIT_CLIENT = Path("/usr/lib") / str(sysconfig.get_config_var("MULTIARCH")) / "pkcs11"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--algorithm", default="ec-p256", choices=["ec-p256", "ec-p384", "rsa-3072"]
    )
    parser.add_argument("--p11kit", action="store_true", help="through p11-kit's remoting")
    parser.add_argument("--tpm2", action="store_true", help="in a software TPM (swtpm)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sluis-bench-") as tmp:
        root = Path(tmp)
        token_dir = root / "tokens"
        token_dir.mkdir(mode=0o700)
        conf = root / "softhsm2.conf"
        conf.write_text(
            f"directories.tokendir = {token_dir}\nobjectstore.backend = file\nlog.level = ERROR\n"
        )
        os.environ["SOFTHSM2_CONF"] = str(conf)

        from appliance.hsm.keys import generate_key
        from appliance.hsm.pin import write_pin_file
        from appliance.hsm.settings import HsmSettings
        from appliance.hsm.signer import Pkcs11Signer
        from appliance.hsm.softhsm import init_softhsm_token
        from appliance.hsm.token import logout_all

        user_pin = secrets.token_hex(8)
        pin_file = root / "user.pin"
        write_pin_file(pin_file, user_pin)
        lock = root / "login.lock"
        settings = HsmSettings(token_label="bench", pin_file=pin_file, login_lock=lock)  # noqa: S106
        server = tpm = None
        via = "SoftHSM2"
        if args.tpm2:
            from appliance.hsm.swtpm import TPM2_PKCS11_MODULE, start_software_tpm

            tpm = start_software_tpm(root / "tpm", "bench", user_pin, secrets.token_hex(8))
            os.environ.update(tpm.environment)
            settings = replace(settings, module=TPM2_PKCS11_MODULE)
            via = "swtpm through tpm2-abrmd and tpm2-pkcs11"
        else:
            init_softhsm_token("bench", secrets.token_hex(8), user_pin, login_lock=lock)
        generate_key(settings, args.algorithm)
        if args.p11kit:
            socket = root / "p11-kit.sock"
            server = subprocess.Popen(
                ["p11-kit", "server", "-f", "--provider", str(settings.module), "--name",
                 str(socket), "pkcs11:token=bench"],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            while not socket.exists():
                if server.poll() is not None:
                    raise SystemExit("p11-kit server did not start")
                time.sleep(0.05)
            os.environ["P11_KIT_SERVER_ADDRESS"] = f"unix:path={socket}"
            settings = replace(settings, module=P11KIT_CLIENT / "p11-kit-client.so")
            via = "SoftHSM2 behind p11-kit server (p11-kit-client.so)"

        signers = [Pkcs11Signer(settings) for _ in range(args.threads)]
        for signer in signers:  # warm up
            for i in range(200):
                signer.sign(b"warm-up %d" % i)
        counts = [0] * args.threads
        deadline = time.perf_counter() + args.seconds

        def run(index: int) -> None:
            signer, n = signers[index], 0
            payload = b'{"alg":"ES256"}.eyJzdWIiOiJiZW5jaCJ9'
            while time.perf_counter() < deadline:
                for _ in range(100):
                    signer.sign(payload)
                n += 100
            counts[index] = n

        start = time.perf_counter()
        threads = [threading.Thread(target=run, args=(i,)) for i in range(args.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        for signer in signers:
            signer.close()
        logout_all()
        if server is not None:
            server.terminate()
            server.wait()
        if tpm is not None:
            tpm.stop()
        total = sum(counts)
        print(
            f"{signers[0].algorithm} ({args.algorithm}) via Pkcs11Signer on {via}, "
            f"{args.threads} thread(s): {total / elapsed:,.0f} signatures/s "
            f"({total} in {elapsed:.2f} s)"
        )


if __name__ == "__main__":
    main()
