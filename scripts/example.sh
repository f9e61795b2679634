#!/usr/bin/env bash
# Builds libequivar and runs the MNIST example (train, then evaluate) on the
# bundled data. Arguments are passed to mnist_equivar, e.g. --group none.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DEQ_BUILD_TESTS=OFF
cmake --build build -j"$(nproc)" --target mnist_equivar
./build/mnist_equivar "$@"
