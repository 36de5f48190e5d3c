#!/usr/bin/env bash
# From a fresh Debian/Ubuntu machine: install what is needed, build the default
# system for every configured arch and boot each one headless with checks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/doit -n "$(nproc)" build
.venv/bin/doit boottest
echo "Done. Boot a system interactively with: .venv/bin/doit run:x86_64   (or run:arm64)"
