#!/usr/bin/env bash
# From a fresh Debian/Ubuntu machine: install what is needed, build the default
# system for every configured arch and boot each one headless with checks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ -n "${MLBUILD_TARGET_LLVM:-}" ]; then
  # Kept in this tree (mlbuild.local.toml, git-ignored): the hint below and every later doit and
  # mlbuild command then build this same system, without the variable in the next shell.
  env -u MLBUILD_TARGET_LLVM .venv/bin/mlbuild set "target_llvm=$MLBUILD_TARGET_LLVM"
  echo "Your choice target_llvm=$MLBUILD_TARGET_LLVM is kept in mlbuild.local.toml for every doit and mlbuild command of this tree (mlbuild unset target_llvm undoes it)."
fi
.venv/bin/doit -n "$(nproc)" build
.venv/bin/doit boottest
echo "Done. Boot a system interactively with: .venv/bin/doit run:x86_64   (or run:arm64)"
