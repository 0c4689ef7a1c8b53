#!/usr/bin/env bash
# Gathers, on this (CPU, Debian) machine, the dependencies that a bare offline GPU machine lacks, into the
# git-ignored folder .deps/: the header-only libraries (CLI11, nlohmann-json, fmt, spdlog, used there in
# header-only mode) and the sources of yaml-cpp and GoogleTest, which scripts/gpu.sh builds there.
# yaml-cpp's source comes from a local git mirror (YAML_CPP_MIRROR, a bare repository of jbeder/yaml-cpp).
set -euo pipefail
cd "$(dirname "$0")/.."
YAML_CPP_MIRROR=${YAML_CPP_MIRROR:-/work/.mirror/jbeder+yaml-cpp/repo}
YAML_CPP_TAG=${YAML_CPP_TAG:-yaml-cpp-0.7.0}   # the version Debian 12 ships
rm -rf .deps.tmp && mkdir -p .deps.tmp/include .deps.tmp/src
for d in CLI nlohmann fmt spdlog; do cp -r "/usr/include/$d" .deps.tmp/include/; done
cp -r /usr/src/googletest .deps.tmp/src/googletest
[ -d "$YAML_CPP_MIRROR" ] || { echo "gpu_deps: no yaml-cpp mirror at $YAML_CPP_MIRROR" >&2; exit 1; }
mkdir -p .deps.tmp/src/yaml-cpp
git --git-dir="$YAML_CPP_MIRROR" archive "$YAML_CPP_TAG" | tar x -C .deps.tmp/src/yaml-cpp
rm -rf .deps && mv .deps.tmp .deps
du -sh .deps
