#!/usr/bin/env bash
# Builds libequivar in Release mode and runs every unit test with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install_deps.sh --tests
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DEQ_BUILD_TESTS=ON
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure --no-tests=error -j"$(nproc)"
