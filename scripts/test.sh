#!/usr/bin/env bash
# From a fresh Debian/Ubuntu machine: install what is needed and run the tests.
# The distribution test builds the real system for both arches and boots it
# (about 15–25 minutes from cold caches); skip it with: scripts/test.sh -m "not distribution"
# The inner loop while changing mlbuild: scripts/test.sh -m "not distribution and not slow"
# (CI runs everything, the `slow` tests too).
# The tests run on every core (pytest-xdist, -n auto); the real-system ones all on one worker, one
# after another (tests/conftest.py groups them: they share the repository's build/). `-n 0`: one process.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest -ra -n auto --dist loadgroup "$@"
