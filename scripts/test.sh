#!/usr/bin/env bash
# The whole test suite: setup, lint, types, then pytest against real SoftHSM2 tokens,
# real gunicorn processes and real TLS handshakes. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
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
