#!/usr/bin/env python3
"""mqlink side by side with what users would pick instead, in ONE run, on this machine.

    python3 bench/run.py                 # full: 200,000 messages per run, writes docs/BENCHMARKS.md
    python3 bench/run.py --count 20000   # smoke run
    python3 bench/run.py --sections 1,3 --qos 1 --no-criterion

Starts its own Mosquitto (and nats-server -js) on free ports. Every publish run is counted
end to end by a subscriber (`mqlink bench --publishers 0`, same QoS) that checks every
sequence number arrived; a run with anything missing is marked as such. Rates are messages
per second between the subscriber's first and last receipt, so process start-up and
connection set-up are left out for every tool alike. Every result is also shown as a
RATIO to the bare-client baseline (a rumqttc loop with TCP_NODELAY) measured in the same
run: absolute numbers move with whatever else the machine is doing, ratios much less.

Python 3 standard library only. Every wait is bounded.
"""
import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
WINDOW = 100  # in-flight window for every client that has one, and the broker's


# ---------------------------------------------------------------- processes and probes


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def cpu_ticks(pid):
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def proc_kib(pid, key):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class CpuWindow:
    """CPU% of one process between start() and stop() (100% = one core)."""

    def __init__(self, pid):
        self.pid = pid
        self.t0 = time.monotonic()
        self.c0 = cpu_ticks(pid)

    def stop(self):
        dt = time.monotonic() - self.t0
        return 100.0 * (cpu_ticks(self.pid) - self.c0) / CLK_TCK / dt if dt > 0 else 0.0


def timed(cmd):
    """Wrap a command so its peak RSS (KiB) lands in a file."""
    f = tempfile.NamedTemporaryFile(prefix="rss-", suffix=".txt", delete=False)
    f.close()
    return ["/usr/bin/time", "-f", "%M", "-o", f.name] + cmd, f.name


def read_rss(path):
    try:
        return int(Path(path).read_text().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return 0
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def stop(proc, timeout=10):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return 0


def distinct_seqs(path, total=None):
    """Distinct bench sequence numbers in a file of records (with `total`: lines with one)."""
    seen = set()
    lines = 0
    try:
        with open(path, "rb") as f:
            for line in f:
                at = line.find(b'"seq":')
                if at >= 0:
                    lines += 1
                    end = at + 6
                    while end < len(line) and line[end:end + 1].isdigit():
                        end += 1
                    seen.add(line[at + 6:end])
    except OSError:
        pass
    return lines if total else len(seen)


def wait_until(what, cond, timeout, every=0.02):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(every)
    log(f"  timed out after {timeout}s waiting for {what}")
    return False


# ---------------------------------------------------------------- peers


class Mosquitto:
    def __init__(self, work):
        self.port = free_port()
        conf = work / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            # The default (1000) silently drops messages queued for a slow subscriber;
            # 0 made 2.0.11 disconnect QoS 2 publishers.
            "max_queued_messages 1000000",
            f"max_inflight_messages {WINDOW}",
            f"log_dest file {work / 'mosquitto.log'}",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        self.url = f"mqtt://127.0.0.1:{self.port}"

    def close(self):
        stop(self.proc)


class Nats:
    def __init__(self, work):
        self.port = free_port()
        store = work / "jetstream"
        self.proc = subprocess.Popen(
            ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(store)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        self.url = f"nats://127.0.0.1:{self.port}"

    def request(self, subject, payload=b"", timeout=5):
        """One request/reply over the raw NATS protocol (enough for the JetStream API)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            f = s.makefile("rb")
            f.readline()  # INFO
            inbox = f"_INBOX.bench{time.time_ns()}"
            s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n')
            s.sendall(f"SUB {inbox} 1\r\n".encode())
            s.sendall(f"PUB {subject} {inbox} {len(payload)}\r\n".encode() + payload + b"\r\n")
            s.sendall(b"PING\r\n")
            while True:
                line = f.readline()
                if not line:
                    raise RuntimeError("nats closed the connection")
                if line.startswith(b"MSG"):
                    n = int(line.split()[-1])
                    body = f.read(n + 2)[:n]
                    return json.loads(body)
                if line.startswith(b"PING"):
                    s.sendall(b"PONG\r\n")
                if line.startswith(b"-ERR"):
                    raise RuntimeError(line.decode().strip())

    def stream_messages(self, name):
        try:
            return self.request(f"$JS.API.STREAM.INFO.{name}").get("state", {}).get("messages", 0)
        except (OSError, RuntimeError, ValueError):
            return -1

    def close(self):
        stop(self.proc)


# ---------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args):
        self.args = args
        self.n = args.count
        self.work = Path(tempfile.mkdtemp(prefix="mqlink-bench-"))
        target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        self.release = target / "release"
        self.mqlink = str(self.release / "mqlink")
        self.baseline = str(self.release / "baseline-rumqttc")
        self.http_load = str(self.release / "http-load")
        self.emit = str(self.release / "examples" / "emit_bench")
        self.runs = 0
        self.commands = {}
        self.skipped = []
        self.lines_cache = {}

    # ---- setup

    def build(self):
        cmd = ["cargo", "build", "--release", "-p", "mqlink-cli", "-p", "mqlink-bench-tools",
               "-p", "mqlink", "--example", "emit_bench"]
        log("$ " + " ".join(cmd))
        subprocess.run(cmd, cwd=ROOT, check=True, timeout=3600)

    def setup_clients(self):
        self.python = sys.executable
        self.pythonpath = None
        try:
            import paho.mqtt  # noqa: F401
        except ImportError:
            site = BENCH / ".venv" / "site"
            if not (site / "paho").exists():
                log("installing paho-mqtt into bench/.venv/site")
                r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(site), "paho-mqtt"], timeout=300)
                if r.returncode != 0:
                    self.skipped.append("Python paho-mqtt: pip install failed")
            self.pythonpath = str(site)
        self.paho_version = subprocess.run(
            [self.python, "-c", "import paho.mqtt; print(paho.mqtt.__version__)"],
            capture_output=True, text=True, env=self.env_py(), timeout=30).stdout.strip() or None
        self.node_dir = BENCH / "node_modules"
        self.mqttjs_version = None
        if shutil.which("node") and shutil.which("npm"):
            if not (self.node_dir / "mqtt").exists():
                log("installing mqtt (MQTT.js) into bench/node_modules")
                subprocess.run(["npm", "install", "--silent", "--no-save", "--no-package-lock", "--prefix", str(BENCH), "mqtt@5"],
                               timeout=300, stdout=subprocess.DEVNULL)
            try:
                self.mqttjs_version = json.loads((self.node_dir / "mqtt" / "package.json").read_text())["version"]
            except (OSError, ValueError, KeyError):
                self.skipped.append("MQTT.js: npm install failed")
        else:
            self.skipped.append("MQTT.js: node/npm not installed")

    def env_py(self):
        env = dict(os.environ)
        if self.pythonpath:
            env["PYTHONPATH"] = self.pythonpath
        return env

    def lines(self, n):
        """A file of n bench payloads (ts 0: generated ahead, so no latency)."""
        if n in self.lines_cache:
            return self.lines_cache[n]
        path = self.work / f"lines-{n}.txt"
        pad = "x" * 60
        with open(path, "w") as f:
            for i in range(n):
                head = f'{{"pub":0,"seq":{i},"ts":0,"pad":"'
                f.write(head + pad[: max(0, 100 - len(head) - 2)] + '"}\n')
        self.lines_cache[n] = path
        return path

    def topic(self):
        self.runs += 1
        return f"b/{self.runs}"

    # ---- the counting subscriber

    def counter(self, broker, prefix, qos, n, timeout):
        cmd = [self.mqlink, "bench", "--publishers", "0", "--subscribers", "1", "-q", str(qos),
               "--count", str(n), "-t", prefix, "--json", "-W", "10", "--max-wait", str(timeout),
               "--url", broker.url, "--max-inflight", str(WINDOW)]
        self.commands.setdefault("counter", " ".join(cmd[:1] + ["bench"] + cmd[2:]).replace(self.mqlink, "mqlink"))
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready = threading.Event()
        err = []

        def drain():
            for line in p.stderr:
                if line.strip() == "ready":
                    ready.set()
                else:
                    err.append(line)
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(30) or p.poll() is not None:
            stop(p)
            raise RuntimeError("counter did not subscribe: " + "".join(err))
        return p, err

    def finish_counter(self, p, err, timeout):
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(p)
            out, _ = p.communicate(timeout=10)
        try:
            return json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            log("  counter output unreadable: " + out + "".join(err))
            return None

    def measure(self, broker, name, qos, n, start_publisher, extra=None):
        """Count one publisher run end to end. `start_publisher(prefix)` returns
        (Popen, rss_file_or_None, finish) where finish() returns extra fields."""
        prefix = self.topic()
        budget = max(120, n / 500)
        p, err = self.counter(broker, prefix, qos, n, budget)
        cpu = CpuWindow(broker.proc.pid)
        pub, rss_file, finish = start_publisher(prefix)
        res = self.finish_counter(p, err, budget + 30)
        broker_cpu = cpu.stop()
        try:
            pub.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stop(pub)
        fields = finish() if finish else {}
        row = {"name": name, "qos": qos, "n": n, "broker_cpu": broker_cpu,
               "publisher_ok": pub.returncode == 0, **(extra or {}), **fields}
        if rss_file:
            row.setdefault("rss_kib", read_rss(rss_file))
        if res:
            span = (res["last_receipt_ns"] - res["first_receipt_ns"]) / 1e9
            row.update(received=res["received"], missing=res["missing"], duplicates=res["duplicates"],
                       rate=(res["received"] - 1) / span if span > 0 and res["received"] > 1 else 0.0,
                       latency=res.get("latency_us"))
        else:
            row.update(received=0, missing=n, duplicates=0, rate=0.0)
        ok = "ok" if row["missing"] == 0 and row["publisher_ok"] else f"MISSING {row['missing']}"
        log(f"  {name:<34} QoS {qos}: {row['rate']:>9,.0f} msg/s  rss {row.get('rss_kib', 0)/1024:.1f} MiB  broker {broker_cpu:.0f}%  {ok}")
        return row

    # ---- publishers (each returns a start function for measure())

    def simple(self, cmd, stdin_path=None, label=None):
        def start(prefix):
            c = [a.replace("{topic}", prefix + "/0") for a in cmd]
            if label:
                self.commands.setdefault(label, " ".join(c).replace(str(self.release) + "/", "").replace(str(self.work), "$WORK"))
            wrapped, rss = timed(c)
            stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
            p = subprocess.Popen(wrapped, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env_py())
            return p, rss, None
        return start

    def mosquitto_pub(self, broker, qos, n):
        """mosquitto_pub -l stops early past 65,535 messages at QoS >= 1: chunks of 50,000."""
        chunk = 50_000
        files = []
        src = self.lines(n)
        with open(src, "rb") as f:
            data = f.readlines()
        for i in range(0, n, chunk):
            path = self.work / f"mp-{n}-{i}.txt"
            if not path.exists():
                path.write_bytes(b"".join(data[i:i + chunk]))
            files.append(path)

        def start(prefix):
            rss = []
            cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", str(qos), "-t", prefix + "/0", "-l", "-M", str(WINDOW)]
            self.commands.setdefault("mosquitto_pub", " ".join(cmd).replace(prefix + "/0", "TOPIC") + f" < chunk   # {chunk:,} lines per process")
            result = {"ok": True}

            def run_all():
                for path in files:
                    wrapped, rf = timed(cmd)
                    with open(path, "rb") as stdin:
                        r = subprocess.run(wrapped, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
                    rss.append(read_rss(rf))
                    result["ok"] &= r.returncode == 0

            t = threading.Thread(target=run_all, daemon=True)
            t.start()
            return ThreadProc(t, result), None, lambda: {"rss_kib": max(rss or [0])}
        return start

    def daemon_config(self, broker, qos, prefix, spool_dir, extra=""):
        return (f"broker: {{url: '{broker.url}', max_inflight: {WINDOW}, client_id: 'mqlink-bench-{prefix.replace('/', '-')}'}}\n"
                f"spool: {{dir: '{spool_dir}', fsync: always}}\n"
                f"routes:\n  - {{match: [bench], topic: '{prefix}/0', qos: {qos}}}\n" + extra)

    def start_daemon(self, config_text, name):
        d = self.work / name
        d.mkdir(parents=True, exist_ok=True)
        cfg = d / "mqlink.yaml"
        cfg.write_text(config_text)
        http = free_port()
        cmd = [self.mqlink, "run", "-c", str(cfg), "--http-listen", f"127.0.0.1:{http}"]
        self.commands.setdefault("daemon", " ".join(cmd).replace(self.mqlink, "mqlink").replace(str(self.work), "$WORK"))
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(d / "mqlink.log", "w"), env={**os.environ, "RUST_LOG": "warn"})
        wait_port(http)
        return proc, http

    def daemon_http(self, broker, qos, mode, connections=32, rate=0.0):
        holder = {}

        def start(prefix):
            spool = self.work / f"spool-{prefix.replace('/', '-')}"
            proc, http = self.start_daemon(self.daemon_config(broker, qos, prefix, spool), f"d-{prefix.replace('/', '-')}")
            holder["daemon"] = proc
            holder["cpu"] = CpuWindow(proc.pid)
            cmd = [self.http_load, f"127.0.0.1:{http}", mode, "bench", str(self.n_current), str(connections), "100", "100", str(rate)]
            self.commands.setdefault(f"http-{mode}", " ".join(cmd).replace(str(self.release) + "/", "").replace(f"127.0.0.1:{http}", "127.0.0.1:HTTP"))
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            holder["load"] = p

            def finish():
                out, errout = p.communicate(timeout=30)
                daemon = holder["daemon"]
                fields = {"rss_kib": proc_kib(daemon.pid, "VmHWM"), "daemon_cpu": holder["cpu"].stop()}
                stop(daemon)
                try:
                    load = json.loads(out.strip().splitlines()[-1])
                    fields["accept_rate"] = load["rate"]
                    fields["request_us"] = load["request_us"]
                except (ValueError, IndexError, KeyError):
                    log("  http-load: " + out + errout)
                return fields
            return p, None, finish
        return start

    def library_emit(self, broker, qos):
        def start(prefix):
            spool = self.work / f"spool-{prefix.replace('/', '-')}"
            cfg = self.work / f"emit-{prefix.replace('/', '-')}.yaml"
            cfg.write_text(self.daemon_config(broker, qos, prefix, spool))
            cmd = [self.emit, str(cfg), "bench", str(self.n_current), "64", "100"]
            self.commands.setdefault("emit", " ".join(cmd).replace(str(self.release) + "/", "").replace(str(self.work), "$WORK"))
            wrapped, rss = timed(cmd)
            p = subprocess.Popen(wrapped, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

            def finish():
                try:
                    out = json.loads(p.stdout.read().strip().splitlines()[-1])
                    return {"accept_rate": out["accept_rate"]}
                except (ValueError, IndexError, KeyError, OSError):
                    return {}
            return p, rss, finish
        return start

    # ---- sections

    def section_publish(self, broker):
        rows = []
        n = self.n
        self.n_current = n
        lines = self.lines(n)
        for qos in self.args.qos:
            log(f"== publish {n:,} messages at QoS {qos}")
            jobs = [
                ("bare rumqttc loop, TCP_NODELAY", self.simple([self.baseline, "127.0.0.1", str(broker.port), str(qos), str(n), "100", "{topic}", "nodelay", str(WINDOW)], label="baseline")),
                ("bare rumqttc loop, Nagle on", self.simple([self.baseline, "127.0.0.1", str(broker.port), str(qos), str(n), "100", "{topic}", "delay", str(WINDOW)])),
                ("mqlink pub -l", self.simple([self.mqlink, "pub", "-l", "-q", str(qos), "-t", "{topic}", "--url", broker.url, "--max-inflight", str(WINDOW)], lines, label="mqlink pub")),
                ("mqlink library emit (spool, fsync)", self.library_emit(broker, qos)),
                ("mqlink daemon HTTP batch 100 (spool, fsync)", self.daemon_http(broker, qos, "batch", connections=4)),
                ("mqlink daemon HTTP single (spool, fsync)", self.daemon_http(broker, qos, "single", connections=32)),
                ("mosquitto_pub -l", self.mosquitto_pub(broker, qos, n)),
            ]
            if self.paho_version:
                jobs.append((f"Python paho-mqtt {self.paho_version}", self.simple([self.python, str(BENCH / "clients" / "paho_pub.py"), "127.0.0.1", str(broker.port), str(qos), "{topic}", str(lines), "1000"], label="paho")))
            if self.mqttjs_version:
                jobs.append((f"MQTT.js {self.mqttjs_version}", self.simple(["node", str(BENCH / "clients" / "mqttjs_pub.js"), "127.0.0.1", str(broker.port), str(qos), "{topic}", str(lines), "1000"], label="mqttjs")))
            for name, start in jobs:
                if self.args.only and not any(o in name for o in self.args.only):
                    continue
                reps = [self.measure(broker, name, qos, n, start) for _ in range(self.args.repeat)]
                reps.sort(key=lambda r: r["rate"])
                row = reps[len(reps) // 2]
                row["reps"] = [r["rate"] for r in reps]
                rows.append(row)
        return rows

    def section_connectors(self, broker, nats):
        rows = []
        n = self.n
        qos = 1
        log(f"== connectors: drain a {n:,}-message persistent-session backlog at QoS 1")

        def backlog(prefix):
            p = subprocess.run([self.baseline, "127.0.0.1", str(broker.port), "1", str(n), "100", prefix + "/0", "nodelay", str(WINDOW)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
            if p.returncode != 0:
                raise RuntimeError("could not publish the backlog")

        def probe(prefix, until, timeout=20):
            def once():
                subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", prefix + "/probe", "-m", "probe"],
                               timeout=10, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                return until()
            return wait_until("probe", once, timeout, every=0.2)

        # mosquitto_sub > file
        prefix = self.topic()
        out = self.work / "mosquitto_sub.out"
        sub_cmd = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-c", "-i", f"msub-{self.runs}", "-q", "1", "-t", prefix + "/#"]
        self.commands["mosquitto_sub"] = " ".join(sub_cmd).replace(prefix, "PREFIX") + " -C N > file"
        reg = subprocess.Popen(sub_cmd, stdout=open(out, "wb"), stderr=subprocess.DEVNULL)
        probe(prefix, lambda: count_lines(out) >= 1)
        stop(reg)
        backlog(prefix)
        cpu = CpuWindow(broker.proc.pid)
        t0 = time.monotonic()
        wrapped, rf = timed(sub_cmd + ["-C", str(n)])
        r = subprocess.run(wrapped, stdout=open(out, "wb"), stderr=subprocess.DEVNULL, timeout=600)
        secs = time.monotonic() - t0
        got = count_lines(out)
        rows.append({"name": "mosquitto_sub -c -q 1 > file", "rate": got / secs, "n": n, "received": got, "missing": n - got,
                     "rss_kib": read_rss(rf), "broker_cpu": cpu.stop(), "ok": r.returncode == 0 and got == n})
        log(f"  mosquitto_sub > file: {got / secs:,.0f} msg/s")

        def connector(name, sink, done, label, setup=None, distinct=None, count_lines_total=None):
            prefix = self.topic()
            extra = (f"connectors:\n  - {{name: bench, subscribe: ['{prefix}/#'], qos: 1, session: persistent, "
                     f"client_id: 'conn-bench-{self.runs}', format: raw, sink: {sink}}}\n")
            cfg = (f"broker: {{url: '{broker.url}', max_inflight: {WINDOW}}}\n"
                   f"spool: {{dir: '{self.work / ('cspool-' + str(self.runs))}'}}\n" + extra)
            if setup:
                setup()
            proc, _ = self.start_daemon(cfg, f"c-{self.runs}")
            self.commands.setdefault(label, extra.strip().replace(str(self.work), "$WORK").replace(prefix, "PREFIX"))
            probe(prefix, lambda: done(1))
            stop(proc)
            backlog(prefix)
            cpu = CpuWindow(broker.proc.pid)
            t0 = time.monotonic()
            proc, _ = self.start_daemon(cfg, f"c-{self.runs}")
            ok = wait_until(name, lambda: done(n + 1), max(120, n / 500), every=0.01)
            secs = time.monotonic() - t0
            total = max(0, done(None) - 1)
            got, dups = total, 0
            if distinct:
                # At-least-once: a redelivered record is a duplicate line, not progress.
                end = time.time() + 30
                got = distinct()
                while got < n and time.time() < end:
                    time.sleep(0.2)
                    got = distinct()
                secs = time.monotonic() - t0 if got < n else secs
                dups = max(0, count_lines_total() - got) if count_lines_total else 0
            rss = proc_kib(proc.pid, "VmHWM")
            stop(proc)
            rows.append({"name": name, "rate": got / secs, "n": n, "received": got, "missing": n - got, "duplicates": dups,
                         "rss_kib": rss, "broker_cpu": cpu.stop(), "ok": ok})
            log(f"  {name}: {got / secs:,.0f} msg/s")

        for fsync in ("always", "never"):
            path = self.work / f"connector-{fsync}.out"
            connector(f"mqlink connector → file (fsync {fsync})", f"{{file: {{path: '{path}', fsync: {fsync}}}}}",
                      lambda k, path=path: count_lines(path) if k is None else count_lines(path) >= k, f"connector-file-{fsync}",
                      distinct=lambda path=path: distinct_seqs(path), count_lines_total=lambda path=path: distinct_seqs(path, total=True))
        if nats:
            stream = f"BENCH{self.runs}"
            subj = f"js{self.runs}"

            def create():
                cfg = json.dumps({"name": stream, "subjects": [subj + ".>"], "storage": "file"}).encode()
                self.nats_answer = nats.request(f"$JS.API.STREAM.CREATE.{stream}", cfg)

            connector("mqlink connector → JetStream", f"{{nats: {{url: '{nats.url}', subject: '{subj}.bench', jetstream: true, stream: {stream}}}}}",
                      lambda k: nats.stream_messages(stream) if k is None else nats.stream_messages(stream) >= k, "connector-jetstream", setup=create)
        base = rows[0]["rate"]
        for r in rows:
            r["ratio"] = r["rate"] / base if base else 0
        return rows

    def section_latency(self, broker):
        rows = []
        secs = self.args.latency_secs
        for rate in (1000, 10000):
            n = int(rate * secs)
            self.n_current = n
            qos = 1
            log(f"== latency through the daemon at {rate:,}/s for {secs}s, QoS {qos}")
            samples = []
            holder = {}
            base = self.daemon_http(broker, qos, "single", connections=32, rate=rate)

            def start(prefix, base=base):
                p, rss, finish = base(prefix)
                # Sample the daemon's RSS while the load runs: is memory flat?
                daemon = max((c for c in self._children()), default=None)
                holder["pid"] = daemon

                def sample():
                    while p.poll() is None and daemon:
                        samples.append(proc_kib(daemon, "VmRSS"))
                        time.sleep(0.5)
                threading.Thread(target=sample, daemon=True).start()
                return p, rss, finish

            row = self.measure(broker, f"daemon HTTP single @ {rate:,}/s", qos, n, start, {"target_rate": rate})
            samples = [s for s in samples if s > 0]
            row["rss_samples"] = samples
            rows.append(row)
        return rows

    def _children(self):
        """Pids of running `mqlink run` children (the daemon under test)."""
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if Path(d / "stat").read_text().split()[3] == str(os.getpid()) and (d / "cmdline").read_bytes().split(b"\0")[1:2] == [b"run"]:
                        pids.append(int(d.name))
                except (OSError, IndexError):
                    pass
        return pids

    def criterion(self):
        results = []
        env = dict(os.environ)
        for pkg, bench in (("mqlink", "hot_paths"), ("mqlink-spool", "append")):
            cmd = ["cargo", "bench", "-p", pkg, "--bench", bench, "--", "--warm-up-time", "1", "--measurement-time", "3", "--noplot"]
            log("$ " + " ".join(cmd))
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
            name = None
            for line in r.stdout.splitlines():
                s = line.strip()
                if s and not s.startswith(("time:", "thrpt:", "change:", "Found", "Benchmarking", "Warning")) and "time:" not in s and not s[0].isdigit() and not line.startswith(" "):
                    name = s.split()[0]
                if "time:" in s:
                    if s.split("time:")[0].strip():
                        name = s.split("time:")[0].strip()
                    if "[" not in s:
                        continue
                    mid = s.split("[")[1].split("]")[0].split()
                    if len(mid) < 4:
                        # "change:" lines and other shapes carry no [low mid high] triple.
                        continue
                    results.append({"bench": f"{bench}/{name}", "time": f"{mid[2]} {mid[3]}"})
                if s.startswith("thrpt:") and results and "[" in s:
                    mid = s.split("[")[1].split("]")[0].split()
                    if len(mid) >= 4:
                        results[-1]["thrpt"] = f"{mid[2]} {mid[3]}"
            if r.returncode != 0:
                log(r.stderr[-2000:])
        return results


class ThreadProc:
    """A thread that looks enough like a Popen for measure()."""

    def __init__(self, thread, result):
        self.thread, self.result = thread, result

    def wait(self, timeout=None):
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise subprocess.TimeoutExpired("mosquitto_pub chunks", timeout)

    def poll(self):
        return None if self.thread.is_alive() else self.returncode

    @property
    def returncode(self):
        return 0 if self.result["ok"] else 1

    def send_signal(self, _sig):
        pass

    def kill(self):
        pass


# ---------------------------------------------------------------- report


def machine():
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[:1]
    nats = subprocess.run(["nats-server", "--version"], capture_output=True, text=True).stdout.strip()
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(), "mosquitto": (mosq or ["?"])[0],
            "nats": nats, "rustc": rustc, "python": platform.python_version(), "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip() if shutil.which("node") else "-",
            "load": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"}


def fmt_rate(r):
    return f"{r:,.0f}"


def mib(kib):
    return f"{kib / 1024:.1f}" if kib else "-"


def write_report(path, b, m, publish, connectors, latency, crit, started, elapsed):
    out = []
    w = out.append
    w("# Benchmarks\n")
    w("Written by `bench/run.py` (do not edit by hand; rerun it). Everything below comes from ONE run "
      f"on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, {elapsed / 60:.1f} minutes.\n")
    w("Absolute numbers move with whatever else the machine is doing (this one is shared with builds "
      "and tests); compare the **ratios**, each to the bare-client baseline measured in the same run.\n")
    w("## Machine\n")
    w("| | |\n|---|---|")
    w(f"| cores (nproc) | {m['nproc']} |")
    w(f"| CPU | {m['cpu']} |")
    w(f"| kernel | {m['kernel']} |")
    w(f"| load average at the end (1/5/15 min) | {m['load']} |")
    w(f"| broker | {m['mosquitto']}, loopback, `max_queued_messages 1000000`, `max_inflight_messages {WINDOW}`, no persistence |")
    w(f"| NATS | {m['nats']} with JetStream (file storage) |")
    w(f"| toolchain | {m['rustc']}, release profile; Python {m['python']} (paho-mqtt {b.paho_version or '-'}), node {m['node']} (MQTT.js {b.mqttjs_version or '-'}) |")
    w("")
    w("## How it was measured\n")
    w(f"```\npython3 bench/run.py --count {b.n} --repeat {b.args.repeat}\n```\n")
    w(f"- Each row publishes {b.n:,} JSON messages of ~100 B to its own topic; a separate subscriber at the same QoS "
      f"(`mqlink bench --publishers 0`) checks that every sequence number arrived, once. **msg/s** is counted "
      f"by that subscriber from its first to its last receipt, so process start-up and connection set-up are "
      f"left out for every tool alike. With `--repeat` > 1 the median run is shown.")
    w(f"- In-flight window {WINDOW} for every client that has one (rumqttc `set_inflight`, `--max-inflight`, "
      f"`broker.max_inflight`, `mosquitto_pub -M`, paho `max_inflight_messages_set`) and for the broker. "
      f"paho and MQTT.js keep at most 1,000 publishes unconfirmed in the script (paho stalls past 65,535).")
    w("- `mosquitto_pub -l` is fed 50,000 lines per process (it stops early past 65,535 at QoS ≥ 1); the "
      "processes run back to back and are counted as one run.")
    w("- The daemon rows: a fresh `mqlink run` per row with a durable spool (`fsync: always`, group commit); "
      "`http-load` (bench/tools, a minimal keep-alive HTTP/1.1 client in Rust) posts single events from 32 "
      "connections, or NDJSON batches of 100 from 4 connections. *accepted/s* is what the daemon answered 202 "
      "for (durably spooled), msg/s is what reached the subscriber.")
    w("- The library row: `crates/mqlink/examples/emit_bench.rs`, `Link::emit` from 64 tasks "
      "(each emit returns once its event is fsynced in the spool).")
    w("- **RSS** is the peak resident set (VmHWM, or `/usr/bin/time -f %M`) of the publishing process (the "
      "interpreter for paho and MQTT.js; the largest of the mosquitto_pub processes). **broker CPU** is "
      "Mosquitto's CPU over the run (100 % = one core): near 100 % the broker is the limit.")
    w("\nCommands (TOPIC, PREFIX, $WORK and ports are filled in by the script):\n")
    w("```")
    for k, v in b.commands.items():
        w(f"# {k}\n{v}")
    w("```\n")
    if b.skipped:
        w("Skipped: " + "; ".join(b.skipped) + "\n")

    baseline = {r["qos"]: r["rate"] for r in publish if r["name"].startswith("bare rumqttc loop, TCP_NODELAY")}
    best_bare = {}
    for r in publish:
        if r["name"].startswith("bare rumqttc"):
            best_bare[r["qos"]] = max(best_bare.get(r["qos"], 0), r["rate"])
    paho = {r["qos"]: r["rate"] for r in publish if r["name"].startswith("Python paho")}
    mpub = {r["qos"]: r["rate"] for r in publish if r["name"].startswith("mosquitto_pub")}

    if publish:
        w(f"## 1. Publish {b.n:,} messages\n")
        for qos in sorted({r["qos"] for r in publish}):
            w(f"### QoS {qos}\n")
            w("| publisher | msg/s (end to end) | × bare client | × paho | × mosquitto_pub | accepted/s | RSS MiB | broker CPU | complete |")
            w("|---|---:|---:|---:|---:|---:|---:|---:|---|")
            for r in [r for r in publish if r["qos"] == qos]:
                base = baseline.get(qos)
                ratio = lambda d: f"{r['rate'] / d[qos]:.2f}" if d.get(qos) else "-"
                complete = "yes" if r["missing"] == 0 and r["publisher_ok"] else f"**no: {r['missing']:,} missing**"
                if r.get("duplicates"):
                    complete += f", {r['duplicates']:,} duplicates"
                w(f"| {r['name']} | {fmt_rate(r['rate'])} | {r['rate'] / base:.2f} | {ratio(paho)} | {ratio(mpub)} | "
                  f"{fmt_rate(r['accept_rate']) if r.get('accept_rate') else '-'} | {mib(r.get('rss_kib', 0))} | {r['broker_cpu']:.0f} % | {complete} |"
                  if base else f"| {r['name']} | {fmt_rate(r['rate'])} | - | - | - | - | {mib(r.get('rss_kib', 0))} | {r['broker_cpu']:.0f} % | {complete} |")
            w("")

    if connectors:
        w(f"## 2. Connectors: drain a {b.n:,}-message backlog (QoS 1, persistent session)\n")
        w("The backlog is published while the subscriber is away; timing runs from starting the subscriber "
          "(process start included, for both) until the last record is in the file / the stream.\n")
        w("| subscriber → sink | msg/s | × mosquitto_sub > file | RSS MiB | broker CPU | complete |")
        w("|---|---:|---:|---:|---:|---|")
        for r in connectors:
            w(f"| {r['name']} | {fmt_rate(r['rate'])} | {r['ratio']:.2f} | {mib(r['rss_kib'])} | {r['broker_cpu']:.0f} % | "
              f"{'yes' if r['missing'] == 0 and r['ok'] else '**no: ' + format(r['missing'], ',') + ' missing**'}"
              f"{', ' + format(r['duplicates'], ',') + ' duplicate lines' if r.get('duplicates') else ''} |")
        w("")

    if latency:
        w("## 3. Latency through the daemon (HTTP request sent → subscriber receipt, QoS 1, fsync always)\n")
        w("| offered rate | msg/s received | p50 | p90 | p99 | max | HTTP 202 p50 / p99 | daemon peak RSS MiB | daemon RSS first → last sample | complete |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in latency:
            l = r.get("latency") or {}
            ms = lambda v: f"{v / 1000:.2f} ms" if v is not None else "-"
            s = r.get("rss_samples") or []
            req = r.get("request_us") or {}
            w(f"| {r['target_rate']:,}/s for {b.args.latency_secs}s | {fmt_rate(r['rate'])} | {ms(l.get('p50'))} | {ms(l.get('p90'))} | {ms(l.get('p99'))} | {ms(l.get('max'))} | "
              f"{ms(req.get('p50'))} / {ms(req.get('p99'))} | {mib(r.get('rss_kib', 0))} | {mib(s[0]) if s else '-'} → {mib(s[-1]) if s else '-'} | "
              f"{'yes' if r['missing'] == 0 else '**no: ' + format(r['missing'], ',') + ' missing**'} |")
        w("")

    w("## Targets (issue 7; ratios from this run)\n")
    w("| target | measured | |")
    w("|---|---|---|")

    def target(name, value, ok):
        w(f"| {name} | {value} | {'met' if ok else '**missed**'} |")

    by = lambda prefix, q: next((r for r in publish if r["name"].startswith(prefix) and r["qos"] == q), None)
    for qos in sorted({r["qos"] for r in publish}):
        bb = best_bare.get(qos)
        for label, prefix in (("library emit", "mqlink library emit"), ("daemon HTTP batch", "mqlink daemon HTTP batch"), ("daemon HTTP single", "mqlink daemon HTTP single")):
            r = by(prefix, qos)
            if r and bb:
                target(f"QoS {qos}: publish path through the durable spool ({label}) ≥ 0.95× best bare client",
                       f"{r['rate'] / bb:.2f}×", r["rate"] >= 0.95 * bb and r["missing"] == 0)
        for label, prefix in (("mqlink pub -l", "mqlink pub -l"), ("library emit", "mqlink library emit")):
            r = by(prefix, qos)
            if r and paho.get(qos):
                target(f"QoS {qos}: {label} ≥ 2.5× paho-mqtt", f"{r['rate'] / paho[qos]:.2f}×", r["rate"] >= 2.5 * paho[qos])
            if r and mpub.get(qos):
                target(f"QoS {qos}: {label} ≥ 1.0× mosquitto_pub", f"{r['rate'] / mpub[qos]:.2f}×", r["rate"] >= mpub[qos])
    batch = [r for r in publish if r["name"].startswith("mqlink daemon HTTP batch")]
    single = [r for r in publish if r["name"].startswith("mqlink daemon HTTP single")]
    for rows, goal, label in ((batch, 30000, "HTTP ingest, NDJSON batches, durable ≥ 30,000 events/s"), (single, 10000, "HTTP ingest, single events, durable ≥ 10,000 events/s")):
        for r in rows:
            acc = r.get("accept_rate") or 0
            target(f"QoS {r['qos']}: {label}", f"{acc:,.0f} accepted/s, {r['rate']:,.0f} delivered/s", min(acc, r["rate"]) >= goal)
    for r in connectors[1:]:
        if "file" in r["name"]:
            target(f"{r['name']} ≥ 0.9× mosquitto_sub > file", f"{r['ratio']:.2f}×", r["ratio"] >= 0.9 and r["missing"] == 0)
    for r in latency:
        if r["target_rate"] == 10000:
            target("daemon peak RSS ≤ 30 MiB at 10k msg/s steady", f"{mib(r.get('rss_kib', 0))} MiB", 0 < r.get("rss_kib", 0) <= 30 * 1024)
    w("| memory flat over a 5-minute soak | not measured by this script (the 10k/s row shows RSS at its first and last sample) | - |")
    w("")

    if crit:
        w("## Hot paths (criterion, `cargo bench -p mqlink --bench hot_paths`, `-p mqlink-spool --bench append`)\n")
        w("Short runs (1 s warm-up, 3 s measurement) on the same shared machine: read them as orders of magnitude.\n")
        w("| bench | time per iteration (median estimate) | throughput |")
        w("|---|---:|---:|")
        for c in crit:
            w(f"| {c['bench']} | {c['time']} | {c.get('thrpt', '-')} |")
        w("")
    notes = BENCH / "NOTES.md"
    if notes.exists():
        w(notes.read_text())
    Path(path).write_text("\n".join(out) + "\n")


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=200_000, help="messages per publish run (default 200,000)")
    ap.add_argument("--qos", default="0,1,2", help="QoS levels for section 1")
    ap.add_argument("--sections", default="1,2,3", help="1 publish, 2 connectors, 3 latency")
    ap.add_argument("--repeat", type=int, default=1, help="runs per row; the median is shown")
    ap.add_argument("--latency-secs", type=float, default=10.0, help="seconds per fixed-rate latency run")
    ap.add_argument("--only", action="append", help="only publish rows whose name contains this (repeatable)")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--no-criterion", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    ap.add_argument("--json-out", default=str(BENCH / "results" / "last.json"))
    args = ap.parse_args()
    args.qos = [int(q) for q in args.qos.split(",") if q != ""]
    sections = {int(s) for s in args.sections.split(",") if s}
    for tool in ("mosquitto", "mosquitto_pub", "mosquitto_sub", "cargo"):
        if not shutil.which(tool):
            sys.exit(f"run.py: {tool} is not installed")
    started = time.time()
    b = Bench(args)
    if not args.skip_build:
        b.build()
    b.setup_clients()
    broker = Mosquitto(b.work)
    nats = None
    if 2 in sections:
        if shutil.which("nats-server"):
            nats = Nats(b.work)
        else:
            b.skipped.append("JetStream connector: nats-server not installed")
    publish = connectors = latency = crit = []
    try:
        if 1 in sections:
            publish = b.section_publish(broker)
        if 2 in sections:
            connectors = b.section_connectors(broker, nats)
        if 3 in sections:
            latency = b.section_latency(broker)
    finally:
        broker.close()
        if nats:
            nats.close()
    if not args.no_criterion:
        crit = b.criterion()
    elapsed = time.time() - started
    m = machine()
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps({"machine": m, "count": b.n, "publish": publish, "connectors": connectors,
                                               "latency": latency, "criterion": crit}, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_report(args.out, b, m, publish, connectors, latency, crit, started, elapsed)
    log(f"wrote {args.out} and {args.json_out} in {elapsed / 60:.1f} min")
    shutil.rmtree(b.work, ignore_errors=True)
    incomplete = [r for r in publish + connectors + latency if r.get("missing")]
    sys.exit(1 if incomplete else 0)


if __name__ == "__main__":
    main()
