#!/usr/bin/env bash
# Installs what building mqlink needs beyond Rust, when missing: the Kafka sink's bundled
# librdkafka is compiled from source (a C compiler, make) and links the system's OpenSSL
# for TLS and SASL/SCRAM (libssl-dev, found through pkg-config) and zlib (zlib1g-dev).
# Run by .ci/run before the first cargo command and by scripts/test.sh; fails loudly.
set -euo pipefail

missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
if ! pkg-config --exists openssl 2>/dev/null; then missing+=(libssl-dev); fi
if ! pkg-config --exists zlib 2>/dev/null; then missing+=(zlib1g-dev); fi

if [[ ${#missing[@]} -gt 0 ]]; then
    echo "installing build dependencies: ${missing[*]}"
    if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "error: missing build dependencies: ${missing[*]}" >&2
        echo "       install them (Debian: apt-get install -y ${missing[*]})" >&2
        exit 1
    fi
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
if ! pkg-config --exists openssl zlib; then
    echo "error: OpenSSL or zlib development files still not found by pkg-config" >&2
    exit 1
fi
