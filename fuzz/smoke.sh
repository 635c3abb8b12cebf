#!/usr/bin/env bash
# Fuzz smoke run: every target for FUZZ_SECONDS (default 20) on one core, one after another,
# starting from the committed seeds. Needs cargo-fuzz; nightly features via RUSTC_BOOTSTRAP.
# Fails on the first crash (libFuzzer writes the input to fuzz/artifacts/<target>/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
secs="${FUZZ_SECONDS:-20}"
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/mqlink-target}/fuzz"
export RUSTC_BOOTSTRAP=1
targets=(mqtt_decode mqtt_session topic_template config_parse http_batch jq_compile)
cargo fuzz build --target-dir "$target_dir"
for t in "${targets[@]}"; do
    echo "== fuzz $t for ${secs}s"
    # A scratch corpus, so a smoke run never dirties the committed seeds.
    work="$(mktemp -d)"
    cargo fuzz run --target-dir "$target_dir" "$t" "$work" "corpus/$t" -- \
        -max_total_time="$secs" -jobs=1 -workers=1 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        2>&1 | grep -E "^(stat::number_of_executed_units|Done|==|SUMMARY|ERROR)|panicked" || true
    rm -rf "$work"
    if ls "artifacts/$t"/crash-* "artifacts/$t"/oom-* "artifacts/$t"/timeout-* >/dev/null 2>&1; then
        echo "fuzz $t: crash found, see fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
