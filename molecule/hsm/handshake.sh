#!/bin/bash
# The key ceremony after the hsm role, through whichever module the environment file names:
# a CSR signed in the token, a certificate from a throwaway demo CA, the certificate stored
# in the token, the key reference, then `sluis tls check`: server and client contexts with the
# key in the token (pkcs11-provider, the role's OpenSSL configuration) and a mutual TLS
# handshake between them.
# usage: handshake.sh WORKDIR ENVFILE MODULE TOKEN KEYLABEL PINFILE LOCK OPENSSL_CONF
set -euo pipefail
work=$1 envfile=$2 module=$3 token=$4 label=$5 pin=$6 lock=$7 openssl_conf=$8
sluis=/opt/sluis/venv/bin/sluis
set -a
# shellcheck disable=SC1090
. "$envfile"
set +a
rm -rf "$work"
mkdir -p "$work"
cd "$work"
# The throwaway CA's keys go when the script ends: verify.yml's first play finds no private
# key in any file, and a second verify run must not find these.
trap 'rm -rf "$work/ca/private"' EXIT
tok=(--module "$module" --token "$token" --key-label "$label" --pin-file "$pin" --login-lock "$lock")
"$sluis" pki init --ca-dir ca --crl-base-url http://127.0.0.1:1/crl >/dev/null
"$sluis" hsm csr "${tok[@]}" --organisation "Molecule $token" --oin 00000001001234567001 \
    --fqdn "$token.sluis.test" --out org.csr
"$sluis" pki issue --ca-dir ca --csr org.csr --out chain.pem
"$sluis" hsm import-cert "${tok[@]}" --chain chain.pem --cert-dir certs
"$sluis" hsm key-reference "${tok[@]}" --out key.pem
cat > sluis.toml <<TOML
[hsm]
module = "$module"
token_label = "$token"
key_label = "$label"
pin_file = "$pin"
login_lock = "$lock"
${SOFTHSM2_CONF:+softhsm_conf = \"$SOFTHSM2_CONF\"}

[tls]
certificate_chain = "$work/certs/organisation.pem"
key_reference = "$work/key.pem"
trust_anchors = "$work/ca/public/root.pem"
crls = "$work/ca/public/crls.pem"
openssl_conf = "$openssl_conf"
TOML
OPENSSL_CONF=$openssl_conf "$sluis" tls check --config sluis.toml
"$sluis" hsm list "${tok[@]}"
