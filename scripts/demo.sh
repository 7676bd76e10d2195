#!/usr/bin/env bash
# Sets up and runs the demo Group on this machine: a demo CA, organisations whose keys live in
# their own SoftHSM2 tokens, and Sluis listeners that talk to each other over mutual TLS.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/preflight.sh base
exec .venv/bin/sluis demo "$@"
