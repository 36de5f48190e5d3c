#!/usr/bin/env bash
# Install what mlbuild needs on Debian/Ubuntu: the host LLVM, QEMU, the kernel's
# build tools (apt), and mlbuild itself with its Python packages (.venv).
set -euo pipefail
cd "$(dirname "$0")/.."

# What to install: the [packages] of src/mlbuild/model/host.toml, which mlbuild reads too
# (the host's LLVM version, the package of a missing program). Read with sed: no Python needed yet.
FACTS=src/mlbuild/model/host.toml
LLVM_VERSION=$(sed -n 's/^llvm_version = "\([0-9]*\)".*/\1/p' "$FACTS")
mapfile -t PACKAGES < <(sed -n '/^\[packages\]/,/^\[/{s/^"\{0,1\}\([A-Za-z0-9.+_{}-]*\)"\{0,1\} = .*/\1/p;}' "$FACTS" \
  | sed "s/{llvm_version}/$LLVM_VERSION/")
[ -n "$LLVM_VERSION" ] && [ ${#PACKAGES[@]} -gt 10 ] || { echo "setup: cannot read the package list in $FACTS" >&2; exit 1; }

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# doit from any subfolder of the checkout (it then looks for dodo.py in the parent folders).
grep -q DOIT_SEEK_FILE .venv/bin/activate || echo 'export DOIT_SEEK_FILE=1  # added by scripts/setup.sh' >> .venv/bin/activate
echo "setup: ready (.venv/bin/doit, .venv/bin/mlbuild)"
