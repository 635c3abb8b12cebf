#!/usr/bin/env python3
"""The embedded broker (`mqlink broker`, the mqtt5 crate) side by side with Mosquitto.

    python3 bench/embedded_broker.py                  # writes docs/BENCHMARKS-embedded-broker.md
    python3 bench/embedded_broker.py --count 5000 --repeat 1 --out /tmp/x.md   # smoke run

The same load generator (`mqlink bench`: P publishers on their own connections, one
subscriber on PREFIX/#, the same QoS for both, every sequence number checked) runs against a
private Mosquitto and against `mqlink broker`, both on free loopback ports, alternating run
by run so that both see the same machine. Reported per QoS: the subscriber's receive rate
(median of the repetitions) and its ratio to Mosquitto's, the latency percentiles of that
run, the broker's CPU over the run and its peak RSS at the end.

Needs a release build (`cargo build --release -p mqlink-cli`; CARGO_TARGET_DIR honoured)
and Debian's mosquitto. Python 3 standard library only; every wait is bounded.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import CLK_TCK, ROOT, WINDOW, Mosquitto, cpu_ticks, free_port, log, machine, proc_kib, stop, wait_port  # noqa: E402


class Embedded:
    """`mqlink broker` on a free loopback port."""

    def __init__(self, mqlink, work):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [mqlink, "broker", "--listen", f"127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=open(work / "embedded.log", "w"),
            env={**os.environ, "RUST_LOG": "warn"})
        wait_port(self.port)
        self.url = f"mqtt://127.0.0.1:{self.port}"

    def close(self):
        stop(self.proc)


def run_load(mqlink, broker, qos, count, publishers, prefix):
    cmd = [mqlink, "bench", "--url", broker.url, "-q", str(qos), "-C", str(count),
           "--publishers", str(publishers), "--subscribers", "1", "--max-inflight", str(WINDOW),
           "-t", prefix, "--json"]
    # Broker CPU time over the whole run, per 100,000 messages sent: a rate over the run
    # would be diluted by the subscriber's final wait when messages go missing.
    ticks = cpu_ticks(broker.proc.pid)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=900)
    cpu_s = (cpu_ticks(broker.proc.pid) - ticks) / CLK_TCK
    try:
        out = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"mqlink bench printed no report (exit {r.returncode}): {r.stdout[-500:]}")
    out["broker_cpu_per_100k"] = cpu_s * 100_000 / max(1, out.get("sent", 0))
    out["cmd"] = " ".join(cmd[1:]).replace(broker.url, "URL")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=50_000, help="messages per publisher (default 50,000)")
    ap.add_argument("--publishers", type=int, default=2)
    ap.add_argument("--qos", default="0,1,2")
    ap.add_argument("--repeat", type=int, default=3, help="runs per broker and QoS; the median is shown")
    ap.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS-embedded-broker.md"))
    args = ap.parse_args()
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    mqlink = str(target / "release" / "mqlink")
    if not Path(mqlink).exists():
        sys.exit(f"embedded_broker.py: {mqlink} not found; run cargo build --release -p mqlink-cli")
    if not shutil.which("mosquitto"):
        sys.exit("embedded_broker.py: mosquitto is not installed")
    work = Path(tempfile.mkdtemp(prefix="mqlink-embedded-bench-"))
    started = time.time()
    brokers = {"Mosquitto": Mosquitto(work), "mqlink broker (embedded)": Embedded(mqlink, work)}
    results = {}  # (name, qos) -> list of runs
    cmd_shown = None
    try:
        n = 0
        for qos in [int(q) for q in args.qos.split(",") if q]:
            for rep in range(args.repeat):
                # Alternate which broker goes first, so neither always gets the warmer machine.
                order = list(brokers.items()) if rep % 2 == 0 else list(reversed(brokers.items()))
                for name, broker in order:
                    n += 1
                    log(f"== QoS {qos} run {rep + 1}/{args.repeat}: {name}")
                    r = run_load(mqlink, broker, qos, args.count, args.publishers, f"eb{n}")
                    cmd_shown = cmd_shown or r["cmd"]
                    results.setdefault((name, qos), []).append(r)
        rss = {name: proc_kib(b.proc.pid, "VmHWM") for name, b in brokers.items()}
    finally:
        for b in brokers.values():
            b.close()
    elapsed = time.time() - started
    m = machine()

    out = []
    w = out.append
    w("# Embedded broker vs Mosquitto\n")
    w("Written by `bench/embedded_broker.py` (rerun it; do not edit by hand). One run on "
      f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, {elapsed / 60:.1f} minutes, "
      f"{m['nproc']} cores, {m['mosquitto']}. Compare the **ratios**: both brokers ran alternately "
      "under the same load generator on the same machine.\n")
    shown = re.sub(r" -t eb\d+", " -t PREFIX", re.sub(r" -q \d", " -q QOS", f"mqlink {cmd_shown}"))
    w("```\n" + shown + "\n```\n")
    w(f"{args.publishers} publishers × {args.count:,} messages of ~100 B, one subscriber on the prefix; "
      f"every run repeated {args.repeat}× per broker, the median receive rate shown with that run's "
      "latency (publish → receipt) and the broker's CPU time in that run per 100,000 messages sent. "
      "`missing`: messages the subscriber never got, over all runs (a broker may drop QoS 0 under load).\n")
    w("| QoS | broker | msg/s received | × Mosquitto | p50 | p99 | broker CPU s / 100k msgs | missing | all runs (msg/s) |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for qos in sorted({q for _, q in results}):
        base = None
        for name in brokers:
            runs = sorted(results[(name, qos)], key=lambda r: r["receive_rate"])
            mid = runs[len(runs) // 2]
            rate = statistics.median(r["receive_rate"] for r in runs)
            base = base or rate
            missing = sum(r["missing"] for r in runs)
            w(f"| {qos} | {name} | {rate:,.0f} | {rate / base:.2f} | {mid['latency_us']['p50'] / 1000:.1f} ms | "
              f"{mid['latency_us']['p99'] / 1000:.1f} ms | {mid['broker_cpu_per_100k']:.2f} | {missing:,} | "
              + ", ".join(f"{r['receive_rate']:,.0f}" for r in runs) + " |")
    w("")
    w("Peak RSS of each broker process over the whole run (VmHWM): "
      + "; ".join(f"{name} {kib / 1024:.1f} MiB" for name, kib in rss.items()) + ".\n")
    w("Reading it:\n")
    w("- The publishers send as fast as each broker lets them, so the latencies are those of a "
      "saturated broker (queueing), not of an idle one.")
    w("- QoS 0 `missing` on the embedded broker: mqtt5 hands each subscriber its QoS 0 messages "
      "through a lane of 10,000 and drops what does not fit when the subscriber falls that far "
      "behind (MQTT allows a broker to drop QoS 0). Mosquitto here is configured with "
      "`max_queued_messages 1000000` and queued them instead. QoS 1 and 2 are never dropped by "
      "either. mqlink's own publisher uses QoS 1 by default, and its connectors ack only after "
      "the sink has the record.\n")
    Path(args.out).write_text("\n".join(out) + "\n")
    log(f"wrote {args.out}")
    shutil.rmtree(work, ignore_errors=True)
    incomplete = any(r["missing"] for runs in results.values() for r in runs)
    sys.exit(1 if incomplete else 0)


if __name__ == "__main__":
    main()
