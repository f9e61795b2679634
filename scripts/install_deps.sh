#!/usr/bin/env bash
# Installs what the build needs on Debian or Ubuntu when it is missing:
# a C compiler, make, cmake and (for the tests) cmocka. Needs root or sudo
# only when something is missing.
set -euo pipefail

missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
if [ "${1:-}" = "--tests" ] && [ ! -f /usr/include/cmocka.h ]; then
    missing+=(libcmocka-dev)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing build tools: ${missing[*]}; install them with your package manager" >&2
    exit 1
fi
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
echo "installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
