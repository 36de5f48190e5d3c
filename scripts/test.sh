#!/usr/bin/env bash
# From a fresh Debian/Ubuntu machine: install what is needed and run the tests.
# The distribution test builds the real system for both arches and boots it
# (about 15–25 minutes from cold caches); skip it with: scripts/test.sh -m "not distribution"
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest -ra "$@"
