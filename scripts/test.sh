#!/usr/bin/env bash
# The whole test suite: setup, lint, types, pytest against real SoftHSM2 tokens, real
# gunicorn processes and real TLS handshakes, then the Molecule scenarios of the Ansible roles
# on podman instances (Debian 12, systemd as PID 1). Extra arguments go to pytest.
# SLUIS_MOLECULE=0 leaves out the Molecule scenarios (a quick run while working on Python).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# podman, the Ansible collections (ansible-lint needs them too) and, unless the scenarios are
# left out, the instance image.
if [ "${SLUIS_MOLECULE:-1}" != 0 ]; then
    ./scripts/setup-molecule.sh
else
    SLUIS_MOLECULE_IMAGE=0 ./scripts/setup-molecule.sh
fi
. .venv/bin/activate

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy (strict on appliance/)"
mypy
echo "== yamllint"
yamllint -s .
if find roles playbooks -name '*.yml' 2>/dev/null | grep -q .; then
    echo "== ansible-lint (production profile)"
    ansible-lint --profile production
fi
echo "== pytest"
pytest "$@"
if [ "${SLUIS_MOLECULE:-1}" != 0 ]; then
    # The scenarios proven green on this kind of machine; the others are still being brought up
    # (docs/molecule.md says which). smoke checks the Molecule set-up itself.
    for scenario in ${SLUIS_MOLECULE_SCENARIOS:-smoke hardening}; do
        echo "== molecule: $scenario"
        molecule test -s "$scenario"
    done
fi
