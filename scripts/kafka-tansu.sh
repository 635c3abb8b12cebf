#!/usr/bin/env bash
# Runs the Kafka sink's tests (crates/mqlink/tests/kafka_sink.rs) against tansu, a
# Kafka-compatible broker, instead of librdkafka's in-process mock cluster.
#
# 1. Installs tansu 0.6.0 (with `dynostore` for its memory:// storage) into
#    $HOME/.cache/tansu unless it is there: `cargo install` builds it from crates.io,
#    about 45 minutes on 2 cores, so it is not part of scripts/test.sh. When such a build
#    is already running on this machine, waits for it instead of starting a second one.
# 2. Starts `tansu broker` on a free port on 127.0.0.1 with in-memory storage.
# 3. Runs the Kafka tests with MQLINK_KAFKA_BROKERS pointing at it (the outage test still
#    uses the mock cluster: it takes brokers down and up, which tansu cannot do from a
#    test), stops tansu, and exits with the tests' status.
#
# Record the result in docs/INTEROP.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

root="$HOME/.cache/tansu"
bin="$root/bin/tansu"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mqlink-target}"

if [[ ! -x $bin ]]; then
    if pgrep -f 'cargo install tansu' >/dev/null 2>&1; then
        echo "a tansu build is already running; waiting for $bin (up to 90 minutes)"
        for _ in $(seq 1 540); do
            [[ -x $bin ]] && break
            pgrep -f 'cargo install tansu' >/dev/null 2>&1 || break
            sleep 10
        done
    fi
    if [[ ! -x $bin ]]; then
        echo "installing tansu 0.6.0 into $root (cargo install, about 45 minutes on 2 cores)"
        # Its own target dir: `cargo install` honours CARGO_TARGET_DIR, and building tansu
        # in mqlink's would hold that dir's build lock for the whole 45 minutes.
        CARGO_TARGET_DIR="$root/target" \
            cargo install tansu --version 0.6.0 --features dynostore --locked --root "$root"
        rm -rf "$root/target"
    fi
fi
[[ -x $bin ]] || { echo "error: $bin is missing after installation" >&2; exit 1; }

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp /tmp/mqlink-tansu.XXXXXX.log)
"$bin" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$log" 2>&1 &
tansu_pid=$!
trap 'kill "$tansu_pid" 2>/dev/null || true; wait "$tansu_pid" 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        break
    fi
    kill -0 "$tansu_pid" 2>/dev/null || { echo "error: tansu exited; log:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.1
done
echo "tansu $("$bin" --version 2>/dev/null || echo 0.6.0) listening on 127.0.0.1:$port (log: $log)"

status=0
if cargo nextest --version >/dev/null 2>&1; then
    MQLINK_KAFKA_BROKERS="127.0.0.1:$port" \
        cargo nextest run -p mqlink --features sink-kafka --test kafka_sink --no-fail-fast || status=$?
else
    MQLINK_KAFKA_BROKERS="127.0.0.1:$port" \
        cargo test -p mqlink --features sink-kafka --test kafka_sink --no-fail-fast || status=$?
fi
if [[ $status -ne 0 ]]; then
    echo "Kafka tests against tansu FAILED (exit status $status); tansu log: $log" >&2
fi
exit "$status"
