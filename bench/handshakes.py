"""Mutual-TLS handshake rate of a Sluis listener, HSM key versus a software key, side by side.

Builds a two-organisation Group in a temporary directory (demo CA, each organisation with its
own SoftHSM token), runs organisation B's whoami listener under gunicorn and lets
organisation A open a new mutual-TLS connection per request (a full handshake each, both keys
in SoftHSM). The same run repeats with throwaway software keys (in the temporary directory,
deleted at exit) as the baseline, so the ratio shows what the HSM costs.

    .venv/bin/python bench/handshakes.py [--requests 2000] [--concurrency 50] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from benchorgs import SERVER_NAME, two_organisations
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from appliance.config import SluisConfig, TlsSettings
from appliance.demo.processes import run_with_identity, start_component
from appliance.demo.provision import config_text
from appliance.pki.ca import DemoCA
from appliance.tls.openssl_conf import write_openssl_config


def software_twin(ca: DemoCA, hsm_config: SluisConfig, root: Path) -> Path:
    """The same organisation with a software key: the baseline without an HSM."""
    root.mkdir(parents=True)
    leaf = x509.load_pem_x509_certificate(hsm_config.tls.certificate_chain.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(leaf.subject)
        .add_extension(
            leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value, False
        )
        .sign(key, hashes.SHA256())
    )
    cert = ca.issue(csr.public_bytes(serialization.Encoding.PEM))
    (root / "chain.pem").write_bytes(ca.chain_pem(cert))
    key_path = root / "key.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    tls = TlsSettings(
        certificate_chain=root / "chain.pem",
        key_reference=key_path,
        trust_anchors=hsm_config.tls.trust_anchors,
        crls=hsm_config.tls.crls,
        openssl_conf=root / "openssl.cnf",
    )
    write_openssl_config(tls.openssl_conf, None)
    config = root / "sluis.toml"
    config.write_text(config_text(hsm_config.hsm, tls))
    return config


def measure(client: Path, server: Path, fqdn: str, args: argparse.Namespace, logs: Path) -> dict:  # type: ignore[type-arg]
    listener = start_component("bench", server, "whoami", workers=args.workers, log_dir=logs)
    try:
        # Warm-up: workers load their keys, connections pools settle.
        run_with_identity(client, probe_argv(listener.host, listener.port, fqdn, 50, 10))
        result = run_with_identity(
            client, probe_argv(listener.host, listener.port, fqdn, args.requests, args.concurrency)
        )
        return json.loads(result.stdout)  # type: ignore[no-any-return]
    finally:
        listener.stop()


def probe_argv(host: str, port: int, fqdn: str, count: int, concurrency: int) -> list[str]:
    return [
        "tls",
        "probe",
        "--connect",
        f"{host}:{port}",
        "--server-name",
        fqdn,
        "--count",
        str(count),
        "--concurrency",
        str(concurrency),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="sluis-bench-"))
    try:
        ca, orgs = two_organisations(root)
        soft = {name: software_twin(ca, cfg, root / f"{name}-soft") for name, cfg in orgs.items()}

        print(
            f"# {args.requests} requests, each a new mutual-TLS connection, concurrency "
            f"{args.concurrency}; server: gunicorn, {args.workers} workers; client: one "
            f"asyncio process; {os.cpu_count()} cores shared by both"
        )
        rows = []
        for label, client, server in (
            ("keys in SoftHSM (pkcs11-provider)", orgs["a"].source, orgs["b"].source),
            ("software keys (baseline)", soft["a"], soft["b"]),
        ):
            assert client is not None
            assert server is not None
            report = measure(client, server, SERVER_NAME, args, root / "logs")
            rows.append((label, report))
            print(
                f"{label:38s} {report['per_second']:8.1f} handshakes/s   "
                f"ok {report['ok']}/{report['requests']}   failed {report['failed']}"
            )
        ratio = rows[0][1]["per_second"] / rows[1][1]["per_second"]
        print(f"HSM / software ratio: {ratio:.2f}")
        return 0 if all(r["failed"] == 0 for _, r in rows) else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
