#!/usr/bin/env bash
# CI's short randomized fault-injection campaign against mqlink's publish path.
#
# Builds the daemon (cargo build -p mqlink-cli, debug), then runs campaign/run.py for a few
# minutes with a seed taken from $CAMPAIGN_SEED or today's date (so a day's CI runs agree
# and a failure replays with the same seed). The seed is printed first. Exits non-zero on
# any violation; each violation prints its episode's schedule and a one-line replay command.
#
#   scripts/campaign.sh                       # CI: ~3 minutes of episodes (~4.5 min in all)
#   CAMPAIGN_SEED=42 scripts/campaign.sh      # replay a run
#   scripts/campaign.sh --minutes 30 --long --table docs/CAMPAIGN-RESULTS.md   # on demand
#
# Needs: mosquitto (/usr/sbin/mosquitto), python3 with paho-mqtt, root for the small-disk
# fault (mount -t tmpfs; skipped with a message when mounting is not allowed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seed="${CAMPAIGN_SEED:-$(date -u +%Y%m%d)}"
echo "campaign seed: $seed"

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mqlink-target}"
if ! python3 -c 'import paho.mqtt' >/dev/null 2>&1; then
    echo "error: python3 cannot import paho.mqtt (pip install paho-mqtt, or Debian python3-paho-mqtt)" >&2
    exit 1
fi
command -v mosquitto >/dev/null || { echo "error: mosquitto is not installed" >&2; exit 1; }

python3 -m unittest campaign/test_checker.py
cargo build -p mqlink-cli
if [[ $# -eq 0 ]]; then
    set -- --minutes "${CAMPAIGN_MINUTES:-3}"
fi
exec python3 campaign/run.py --seed "$seed" --mqlink "$CARGO_TARGET_DIR/debug/mqlink" "$@"
