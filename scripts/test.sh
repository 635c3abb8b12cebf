#!/usr/bin/env bash
# Runs every test in the workspace against real peers.
#
# 1. Installs the build dependencies (scripts/build-deps.sh) and the peers the tests start
#    privately (Mosquitto, its CLI clients, NATS, Redis, PostgreSQL) with apt-get when
#    they are missing, paho-mqtt for Python-driven tests, and for the
#    dashboard's browser test Debian's chromium, Node.js/npm and playwright-core (npm ci in
#    crates/cli/tests/browser; it drives /usr/bin/chromium and downloads no browser), and
#    for the interop suite (crates/cli/tests/interop.rs) RabbitMQ (Debian), amqtt (pip)
#    and Aedes (npm ci in tests/interop, versions pinned by its package-lock.json).
# 2. Fails loudly if any of them is still missing: tests never skip for a missing peer.
# 3. Runs all tests (cargo-nextest when installed, else cargo test), the lean library's
#    unit tests (`-p mqlink --no-default-features --lib`), then the doctests,
#    which nextest does not run, then a short fault-injection campaign (scripts/campaign.sh,
#    about 3 minutes). All always run; the exit status is non-zero if any failed.
# 4. Renders the broker matrix of docs/INTEROP.md from the interop suite's results and
#    fails if the committed one differs (the matrix's expectations are fixed in the suite, so it only changes
#    when the suite or a broker's version does).
#
# The tests start their own brokers on free ports in temporary directories, so a
# system-wide Mosquitto on 1883 or NATS on 4222 neither helps nor disturbs them.
set -euo pipefail

if [[ $# -gt 0 ]]; then
    echo "usage: scripts/test.sh   (takes no arguments; it runs the whole workspace)" >&2
    exit 2
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian installs mosquitto and nats-server in /usr/sbin, often not on a user's PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# binary:Debian package
required=(
    mosquitto:mosquitto
    mosquitto_passwd:mosquitto
    mosquitto_sub:mosquitto-clients
    mosquitto_pub:mosquitto-clients
    openssl:openssl
    nats-server:nats-server
    redis-server:redis-server
    redis-cli:redis-tools
    psql:postgresql-client
    rabbitmq-server:rabbitmq-server
    python3:python3
    chromium:chromium
    node:nodejs
    npm:npm
)

missing_packages() {
    local entry bin pkg
    local -a pkgs=()
    for entry in "${required[@]}"; do
        bin=${entry%%:*}
        pkg=${entry#*:}
        if ! command -v "$bin" >/dev/null 2>&1 && [[ " ${pkgs[*]} " != *" $pkg "* ]]; then
            pkgs+=("$pkg")
        fi
    done
    echo "${pkgs[*]}"
}

apt_updated=false
apt_install() {
    if [[ $EUID -ne 0 ]]; then
        echo "error: missing Debian package(s): $*" >&2
        echo "       run scripts/test.sh as root, or install them first:" >&2
        echo "       sudo apt-get install -y --no-install-recommends $*" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: missing package(s) $* and apt-get is not available to install them" >&2
        exit 1
    fi
    if [[ $apt_updated == false ]]; then
        apt-get update
        apt_updated=true
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

# 1. Build dependencies, then peers.
scripts/build-deps.sh

# PostgreSQL's server binaries live in /usr/lib/postgresql/<version>/bin, off PATH.
postgres_server() {
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1
}

read -r -a to_install <<<"$(missing_packages)"
if ! postgres_server && [[ " ${to_install[*]} " != *" postgresql "* ]]; then
    to_install+=(postgresql)
fi
if [[ ${#to_install[@]} -gt 0 ]]; then
    echo "installing missing peers: ${to_install[*]}"
    apt_install "${to_install[@]}"
fi

if ! python3 -c 'import paho.mqtt' >/dev/null 2>&1; then
    echo "installing paho-mqtt for python3"
    if ! python3 -m pip install --quiet paho-mqtt; then
        # pip may be absent, or refuse a system Python (PEP 668): use Debian's package.
        echo "pip could not install paho-mqtt; trying Debian package python3-paho-mqtt" >&2
        apt_install python3-paho-mqtt
    fi
fi

browser_dir=crates/cli/tests/browser
if command -v npm >/dev/null 2>&1 && [[ ! -f $browser_dir/node_modules/playwright-core/package.json ]]; then
    echo "installing playwright-core for the dashboard browser test (npm ci in $browser_dir)"
    (cd "$browser_dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
fi

if ! command -v amqtt >/dev/null 2>&1; then
    echo "installing amqtt (pip) for the interop suite"
    python3 -m pip install --quiet 'amqtt==0.12.1' || echo "error: pip install amqtt failed" >&2
fi

interop_dir=tests/interop
if command -v npm >/dev/null 2>&1 && [[ ! -f $interop_dir/node_modules/aedes/package.json ]]; then
    echo "installing aedes for the interop suite (npm ci in $interop_dir)"
    (cd "$interop_dir" && npm ci --no-audit --no-fund)
fi

# 2. Verify, loudly.
status=0
for entry in "${required[@]}"; do
    bin=${entry%%:*}
    pkg=${entry#*:}
    if ! command -v "$bin" >/dev/null 2>&1; then
        echo "error: $bin not found on PATH after installation (Debian package '$pkg')" >&2
        status=1
    fi
done
if ! postgres_server; then
    echo "error: PostgreSQL server binaries (initdb) not found after installation (Debian package 'postgresql')" >&2
    status=1
fi
if ! python3 -c 'import paho.mqtt' >/dev/null 2>&1; then
    echo "error: python3 cannot import paho.mqtt (pip package 'paho-mqtt')" >&2
    status=1
fi
if [[ ! -f $browser_dir/node_modules/playwright-core/package.json ]]; then
    echo "error: playwright-core is not installed in $browser_dir (npm ci failed?)" >&2
    status=1
fi
if ! command -v amqtt >/dev/null 2>&1; then
    echo "error: amqtt not found on PATH (pip package 'amqtt')" >&2
    status=1
fi
if [[ ! -f $interop_dir/node_modules/aedes/package.json ]]; then
    echo "error: aedes is not installed in $interop_dir (npm ci failed?)" >&2
    status=1
fi
if [[ $status -ne 0 ]]; then
    exit "$status"
fi

# 3. Tests.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mqlink-target}"

# The interop suite writes one result file per broker here; none may be left from an
# earlier run (step 5 renders docs/INTEROP.md from them).
rm -rf "$CARGO_TARGET_DIR/tmp/interop"

status=0
if cargo nextest --version >/dev/null 2>&1; then
    echo "==> cargo nextest run --workspace --no-fail-fast"
    cargo nextest run --workspace --no-fail-fast || status=$?
else
    echo "==> cargo test --workspace --no-fail-fast (cargo-nextest not installed)"
    cargo test --workspace --no-fail-fast || status=$?
fi

# The lean library (no HTTP source, no poll source, only the built-in sinks) is a build of
# its own: its unit tests run too, with a short simulation (the full one ran above).
echo "==> cargo nextest run -p mqlink --no-default-features --lib (the lean library)"
if cargo nextest --version >/dev/null 2>&1; then
    MQLINK_SIM_SEEDS=50 cargo nextest run -p mqlink --no-default-features --lib || status=$?
else
    MQLINK_SIM_SEEDS=50 cargo test -p mqlink --no-default-features --lib || status=$?
fi

echo "==> cargo test --workspace --doc"
cargo test --workspace --doc --no-fail-fast || status=$?

# 4. A short seeded fault-injection campaign against the publish path (docs/CAMPAIGN.md):
#    the seed is printed first; a violation prints a one-line replay command.
echo "==> scripts/campaign.sh"
scripts/campaign.sh || status=$?

# 5. The broker matrix in docs/INTEROP.md must be what this run's interop suite rendered.
echo "==> scripts/interop-table.py --check docs/INTEROP.md"
if ! python3 scripts/interop-table.py "$CARGO_TARGET_DIR/tmp/interop" --check docs/INTEROP.md; then
    echo "       (scripts/interop-table.py $CARGO_TARGET_DIR/tmp/interop --write docs/INTEROP.md" >&2
    echo "       updates it, if the change is intended)" >&2
    status=1
fi

if [[ $status -ne 0 ]]; then
    echo "tests FAILED (exit status $status)" >&2
fi
exit "$status"
