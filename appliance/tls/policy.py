"""The NCSC TLS guidelines (version 2025-05), "Sufficient" or better, as concrete settings.

What Python's ``ssl`` can set is applied per context in ``appliance.tls.context``; the groups
and signature algorithms can only be restricted in the OpenSSL configuration
(``appliance.tls.openssl_conf``), which every Sluis process loads through ``OPENSSL_CONF``.
"""

from __future__ import annotations

# TLS 1.2 suites: ECDHE key exchange with AEAD only (no finite-field DHE, no CBC, no RSA kx).
TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-RSA-AES128-GCM-SHA256",
    ]
)

# TLS 1.3 suites (all AEAD); CCM_8 is left out (short tag).
TLS13_CIPHERSUITES = ":".join(
    ["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"]
)

# Key exchange groups: ffdhe2048 and friends are "Insufficient"; Python's default server
# would otherwise accept ffdhe2048 in TLS 1.3.
GROUPS = "X25519:P-256:P-384"

# Handshake signatures: no SHA-1, no SHA-224; RSA-PSS preferred over PKCS#1 v1.5.
SIGNATURE_ALGORITHMS = ":".join(
    [
        "ECDSA+SHA256",
        "ECDSA+SHA384",
        "ECDSA+SHA512",
        "rsa_pss_rsae_sha256",
        "rsa_pss_rsae_sha384",
        "rsa_pss_rsae_sha512",
        "rsa_pss_pss_sha256",
        "rsa_pss_pss_sha384",
        "rsa_pss_pss_sha512",
        "RSA+SHA256",
        "RSA+SHA384",
        "RSA+SHA512",
    ]
)

MIN_PROTOCOL = "TLSv1.2"
MAX_PROTOCOL = "TLSv1.3"

# Key sizes the policy accepts for certificates Sluis issues or presents.
MIN_RSA_BITS = 3072
EC_CURVES = ("secp256r1", "secp384r1")
