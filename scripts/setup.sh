#!/usr/bin/env bash
# Install what mlbuild needs on Debian/Ubuntu: the host LLVM, QEMU, the kernel's
# build tools (apt), and mlbuild itself with its Python packages (.venv).
set -euo pipefail
cd "$(dirname "$0")/.."

LLVM_VERSION=19
PACKAGES=(
  "clang-$LLVM_VERSION" "lld-$LLVM_VERSION" "llvm-$LLVM_VERSION"  # the cross compiler for both arches
  ccache make patch bc flex bison libelf-dev libssl-dev rsync    # kernel, musl, busybox builds
  libncurses-dev                                                 # menuconfig
  cmake ninja-build                                              # compiler-rt and LLVM
  xz-utils bzip2 cpio e2fsprogs file zstd                        # sources and images (zstd: the initramfs)
  qemu-system-x86 qemu-system-arm qemu-user-static               # booting the targets, running their programs
  graphviz                                                       # mlbuild graph → SVG
  diffoscope-minimal faketime                                    # scripts/reproducibility.py: why two builds differ; a shifted clock
  bubblewrap                                                     # sandbox = auto|on: build steps without network or undeclared paths
  nginx-light redis-server distcc                                # artifact cache (WebDAV), ccache remote storage, distcc: tests start them on loopback
  python3-venv
)

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
