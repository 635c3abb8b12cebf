#!/usr/bin/env python3
"""A seeded fault-injection campaign against mqlink's publish path.

A run is a sequence of episodes. Each episode, chosen by a seeded RNG, is a matrix cell
(QoS 0/1/2 x clean/persistent session x MQTT 5/3.1.1), an optional environment fault
(broker limits, filtering route, small disk, memory-bound outage) and a schedule of timed
faults (proxy cuts/blackhole/delay/reset/half-open, broker SIGSTOP/SIGKILL/restart, SIGKILL
of mqlink, flipped spool bytes). The episode starts a private Mosquitto, the nemesis proxy
and mqlink, drives 8+ concurrent HTTP clients, runs the schedule, heals, waits for
quiescence and hands everything to the checker (checker.py). A violation prints the seed,
the schedule and a one-line replay command; the exit status is 1.

    campaign/run.py --seed 42 --minutes 4
    campaign/run.py --episode-seed 1234567 --cell 1,persistent,5 ...   (replay, printed)
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import checker  # noqa: E402
import faults  # noqa: E402
from load import Answers, Client, Sampler, Subscriber  # noqa: E402
from nemesis import Proxy  # noqa: E402
from procs import Mosquitto, Mqlink  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEEPALIVE = 4
CONNECT_TIMEOUT = 3
RECONNECT_MAX = 2
# A heal is noticed within 1.5 keepalives (a black-holed link), then one connect timeout
# and one backoff; a few seconds more for the spool to resume.
STALL_BOUND = 1.5 * KEEPALIVE + CONNECT_TIMEOUT + RECONNECT_MAX + 5
READY_BOUND = 1.5 * KEEPALIVE + CONNECT_TIMEOUT + 3
# Limits a 3.1.1 client can only learn of by being disconnected (see the load below).
REFUSED_BY_CLOSE = {"limits_packet", "limits_retain", "limits_maxqos"}
CLIENTS = 8

MATRIX = [(q, s, p) for q in (0, 1, 2) for s in ("clean", "persistent") for p in ("5", "3.1.1")]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def mqlink_config(ep, proxy_port, client_id):
    c = ep["cell"]
    q = c["qos"]
    persistent = c["session"] == "persistent"
    # Only episodes that damage the spool set spool.on_corruption; which policy follows from
    # the load seed so older episode seeds replay unchanged.
    corruption = ""
    if any(a == "flip_restart" for _, a, _ in ep["steps"]):
        policy = "discard" if ep["load_seed"] % 2 else "fail"
        corruption = f"  on_corruption: {policy}\n"
    return f"""broker:
  url: mqtt://127.0.0.1:{proxy_port}
  client_id: {client_id}
  protocol: "{c['protocol']}"
  session: {c['session']}
  keepalive: {KEEPALIVE}s
  connect_timeout: {CONNECT_TIMEOUT}s
  reconnect: {{min: 100ms, max: {RECONNECT_MAX}s}}
{"  session_expiry: 1h" if persistent and c['protocol'] == '5' else ""}
spool:
  max_bytes: 1GiB
  on_full: reject
{corruption}routes:
  - {{match: ['c*'], topic: 'cp/{{event}}', qos: {q}}}
  - {{match: [xbig], topic: 'cp/xbig', qos: {q}}}
  - {{match: [xret], topic: 'cp/xret', qos: {q}, retain: true}}
  - {{match: [xq2], topic: 'cp/xq2', qos: 2}}
  - {{match: [xdeny], topic: 'deny/x', qos: {q}}}
  - {{match: [xfilt], topic: 'cp/xfilt', qos: {q}, payload: {{transform: 'if .skip then empty else . end'}}}}
"""


class Episode:
    def __init__(self, ep, binary, keep, index):
        self.ep = ep
        self.binary = binary
        self.keep = keep
        self.index = index
        self.dir = tempfile.mkdtemp(prefix="mqlink-campaign-")
        self.heals = []
        self.broker_kills = []
        self.extra = []
        self.refused_start = False
        self.outage_peak = 0
        self.outage_mib = 0.0
        self.outage_on = False
        self.tmpfs = None
        self.conns_at_heal = 0

    # --- actions -----------------------------------------------------------------------

    def act(self, action, args):
        p, b, d = self.proxy, self.broker, self.daemon
        if action == "cut":
            p.arm_cut(args["dir"], args["after"], args["rst"])
        elif action == "cut_connack":
            p.arm_cut("s2c", args["after"], args["rst"])
            p.reset_all()
        elif action == "blackhole":
            p.set_blackhole()
        elif action == "delay":
            p.set_delay(args["seconds"])
        elif action == "reset":
            p.reset_all()
        elif action == "halfopen":
            p.set_halfopen(args["dir"])
        elif action == "outage":
            self.outage_on = True
            p.set_refusing(True)
            p.reset_all()
        elif action == "heal":
            if b.paused:
                b.resume()
            p.heal()
            if self.outage_on:
                self.outage_on = False
            self.heals.append(time.monotonic())
            self.conns_at_heal = p.connections_total
        elif action == "broker_pause":
            b.pause()
        elif action == "broker_resume":
            b.resume()
            self.heals.append(time.monotonic())
        elif action in ("broker_kill", "broker_restart"):
            if action == "broker_kill":
                self.broker_kills.append(time.monotonic())
                b.kill()
            else:
                b.stop()
            # Hold mqlink off the new broker until the subscriber is back on it, so the
            # broker-loss window is only what the dead broker held.
            p.set_refusing(True)
            p.reset_all()
            time.sleep(args["down"])  # the outage's length is the fault itself
            b.start()
            if not self.sub.subscribed.wait(15):
                self.extra.append("harness: subscriber did not resubscribe after broker restart")
            p.set_refusing(False)
            self.heals.append(time.monotonic())
        elif action == "mqlink_kill":
            if self.refused_start:
                # mqlink is down on purpose: it refused to start on a damaged spool, and
                # would refuse again (the episode found it, long runs drew both faults).
                return
            d.kill()
            self.restart_mqlink()
        elif action == "flip_restart":
            d.kill()
            self.flip(args["pick"])
            self.restart_mqlink(expect_refusal_ok=True)
        elif action == "until_accepted_mib":
            want = args["mib"] * 1024 * 1024
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:
                n = len(self.answers.accepted())
                self.outage_mib = n * faults.ENV_FAULTS["outage_rss"]["pad"] / 2**20
                if n * faults.ENV_FAULTS["outage_rss"]["pad"] >= want:
                    break
                if not d.alive():
                    break
                time.sleep(0.2)
        else:
            raise ValueError(action)

    def restart_mqlink(self, expect_refusal_ok=False):
        d = self.daemon
        self.dead_at_start = len(d.dead_letters())
        ok = d.start()
        self.last_start = time.monotonic()
        if not ok:
            if expect_refusal_ok and d.proc.poll() is not None:
                text = d.log().rsplit("=== campaign: incarnation", 1)[-1]
                if self.flipped and os.path.basename(self.flipped) in text:
                    log(f"  mqlink refused to start on the damaged spool, naming "
                        f"{os.path.basename(self.flipped)} (exit {d.proc.returncode}): accepted")
                    d.exits.append((d.incarnation, d.proc.returncode, True))
                    self.refused_start = True
                    return
                self.extra.append(f"honesty: mqlink refused to start on a damaged spool "
                                  f"without naming the file (exit {d.proc.returncode})")
                d.exits.append((d.incarnation, d.proc.returncode, True))
                self.refused_start = True
                return
            self.extra.append(f"harness: mqlink did not become healthy after restart "
                              f"(exit {d.proc.poll()})")

    def flip(self, pick):
        """Flip one byte inside one stored record's payload, in the newest segment that has
        records; remember the event id that record carries."""
        self.flipped = None
        segs = sorted(f for f in os.listdir(self.spool_dir) if f.endswith(".seg"))
        for name in reversed(segs):
            path = os.path.join(self.spool_dir, name)
            data = bytearray(open(path, "rb").read())
            recs = []
            off = 16
            while off + 16 <= len(data):
                ln = int.from_bytes(data[off:off + 4], "little")
                if off + 16 + ln > len(data):
                    break
                recs.append((off, ln))
                off += 16 + ln
            if not recs:
                continue
            off, ln = recs[int(pick * len(recs))]
            payload = bytes(data[off + 16:off + 16 + ln])
            pos = off + 16 + ln // 2
            data[pos] ^= 0x5A
            with open(path, "r+b") as f:
                f.seek(pos)
                f.write(bytes([data[pos]]))
            self.flipped = path
            marker = payload.find(b'"id":"')
            self.flipped_id = payload[marker + 6:payload.find(b'"', marker + 6)].decode(
                errors="replace") if marker >= 0 else None
            log(f"  flipped a byte of record at offset {off} in {name} (event {self.flipped_id})")
            return
        self.extra.append("harness: no spool record to flip (no backlog)")

    # --- the episode ---------------------------------------------------------------------

    def run(self):
        ep = self.ep
        env = faults.ENV_FAULTS.get(ep["env"] or "", {})
        self.flipped = None
        self.flipped_id = None
        self.spool_dir = os.path.join(self.dir, "spool")
        if env.get("tmpfs"):
            os.makedirs(self.spool_dir)
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={env['tmpfs']}", "tmpfs",
                                self.spool_dir], capture_output=True, text=True)
            if r.returncode != 0:
                log(f"  SKIP disk_full: cannot mount a small tmpfs here ({r.stderr.strip()}); "
                    f"the fault is not exercised")
                return None, []
            self.tmpfs = self.spool_dir
        self.broker = Mosquitto(self.dir, ep["broker_persistence"], env.get("broker", []),
                                env.get("acl"))
        self.broker.start()
        self.sub = Subscriber(self.broker.port, f"campaign-sub-{self.index}", ["cp/#", "deny/#"])
        self.sub.start()
        self.proxy = Proxy(("127.0.0.1", self.broker.port))
        client_id = f"campaign-mqlink-{self.index}"
        self.daemon = Mqlink(self.binary, self.dir,
                             mqlink_config(ep, self.proxy.port, client_id), self.spool_dir)
        self.dead_at_start = 0
        if not self.daemon.start():
            raise RuntimeError(f"mqlink did not start; log:\n{self.daemon.log()[-3000:]}")
        self.last_start = time.monotonic()
        self.answers = Answers()
        stop = threading.Event()
        rng = random.Random(ep["load_seed"])
        pad = env.get("pad", 100)
        rate = env.get("rate", 40)
        specials = env.get("specials", [])
        if ep["cell"]["protocol"] == "3.1.1" and ep["env"] in REFUSED_BY_CLOSE:
            # MQTT 3.1.1 brokers announce no limits; Mosquitto refuses such a message by
            # closing the connection, and mqlink dead-letters it after the third close
            # (docs/operations.md). Each one costs three reconnects with backoff, so at 3-5 %
            # of the load the drain outlasts any deadline: a documented degradation, not a
            # stuck publisher. The rate here (1 in 500) keeps the mechanism under test.
            specials = [(n, min(p_, 0.002), x, pad_) for n, p_, x, pad_ in specials]
        clients = [Client(k, lambda: self.daemon.http_port, self.answers, rng.randrange(2**32),
                          rate, pad, 0.15 if pad < 4096 else 0.0, specials,
                          stop) for k in range(CLIENTS)]
        sampler = Sampler(self.daemon, self.sub, self.answers)
        sampler.start()
        t0 = time.monotonic()
        for c in clients:
            c.start()
        for at, action, args in ep["steps"]:
            wait = t0 + at - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # the schedule's timing is the fault
            if self.outage_on:
                self.outage_peak = max(self.outage_peak, sampler.peak_rss)
            log(f"  t={time.monotonic() - t0:5.1f}s {action} {args if args else ''}")
            self.act(action, args)
            if action == "until_accepted_mib":
                self.outage_peak = max(self.outage_peak, sampler.peak_rss)
        # Fresh load after the final heal shows delivery resumed, then quiesce.
        # After a full disk, the spool must drain before space returns: give it longer.
        stop.wait(env.get("after_heal", 2.0) if env.get("rate") != 0 else 0)
        stop.set()
        for c in clients:
            c.join(20)
        load_end = time.monotonic()
        accepted = self.answers.accepted()
        deadline = load_end + (120 if ep["env"] == "outage_rss" else 45)
        final_metrics = {}
        last_progress, last_move = None, time.monotonic()
        while time.monotonic() < deadline:
            if self.refused_start or not self.daemon.alive():
                break
            final_metrics = self.daemon.metrics()
            seen = {a[2] for a in self.sub.snapshot()}
            dl = {checker.dead_letter_id(d) for d in self.daemon.dead_letters()}
            waiting = [i for i, e in accepted.items()
                       if e["kind"] != "xfilt" and i not in seen and i not in dl]
            if final_metrics.get("mqlink_spool_records") == 0 and not waiting:
                break
            # No movement for a stall bound: the verdict will not change by waiting longer.
            progress = (len(seen), final_metrics.get("mqlink_spool_records"))
            if progress != last_progress:
                last_progress, last_move = progress, time.monotonic()
            elif time.monotonic() - last_move > STALL_BOUND + 4:
                break
            if (final_metrics.get("mqlink_spool_records") == 0 and ep["cell"]["qos"] == 0
                    and time.monotonic() - load_end > 5):
                break
            time.sleep(0.25)  # polling the world for quiescence; no event to await
        final_metrics = self.daemon.metrics() if self.daemon.alive() else final_metrics
        end = time.monotonic()
        sampler.stop.set()
        sampler.join(5)
        rc = self.daemon.unexpected_exit()
        protocols = self.broker.connections(client_id)
        ctx = {
            "heals": self.heals,
            "broker_kills": self.broker_kills,
            "stall_bound": STALL_BOUND,
            "ready_bound": READY_BOUND,
            "end": end,
            "dead_at_start": self.dead_at_start,
            "last_start": self.last_start,
            "protocols": protocols,
            "outage_peak_rss": self.outage_peak,
            "outage_mib": self.outage_mib,
            "unexpected_exits": [rc] if rc is not None else [],
            "extra_violations": self.extra,
            "refused_start": self.refused_start,
            "conns_after_heal": self.proxy.connections_total - self.conns_at_heal,
            "load_end": load_end,
        }
        answers = dict(self.answers.events)
        if self.refused_start:
            # The refused spool's events are accounted for by the refusal itself.
            answers = {}
        if self.flipped_id and self.flipped_id in answers:
            # The damaged record may be lost; mqlink must have said so in its log.
            e = answers.pop(self.flipped_id)
            if e["status"] == 202 and self.flipped_id not in {a[2] for a in self.sub.snapshot()}:
                text = self.daemon.log().lower()
                if not any(w in text for w in ("corrupt", "checksum", "crc", "damaged")):
                    ctx["extra_violations"].append(
                        f"honesty: event {self.flipped_id} in the damaged record was lost "
                        f"without a log line about corruption")
        row, violations = checker.check(ep, answers, self.sub.snapshot(),
                                        self.daemon.dead_letters(), final_metrics,
                                        sampler.samples, ctx)
        row["proxy_conns"] = self.proxy.connections_total
        row["answers"] = dict(sorted(self.answers.statuses.items(), key=str))
        return row, violations

    def cleanup(self):
        for f in (lambda: self.daemon.kill(), lambda: self.sub.close(),
                  lambda: self.proxy.close(), lambda: self.broker.stop()):
            try:
                f()
            except Exception:
                pass
        if self.tmpfs:
            subprocess.run(["umount", "-l", self.tmpfs], capture_output=True)
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def replay_cmd(args, eseed, ep):
    return (f"campaign/run.py --episode-seed {eseed} --faults {','.join(args.faults)} "
            f"--matrix {args.matrix}"
            + (" --long" if not args.short else "")
            + (f" --mqlink {args.mqlink}" if args.mqlink_given else ""))


def table(rows):
    head = ["faults", "QoS", "session", "MQTT", "accepted", "delivered", "dead-lettered",
            "duplicates", "lost", "stuck", "broker lost", "QoS 0 lost", "max stall s",
            "ready lie s", "peak RSS MiB", "violations"]
    keys = ["faults", "qos", "session", "protocol", "accepted", "delivered", "dead_lettered",
            "duplicates", "lost", "stuck", "broker_lost", "qos0_lost", "max_stall",
            "ready_lie", "peak_rss_mib", "violations"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = []
        for k in keys:
            x = r[k]
            cells.append(f"{x:.1f}" if isinstance(x, float) else str(x))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def parse_matrix(text):
    if not text or text == "all":
        return MATRIX
    out = []
    for part in text.split(","):
        q, s, p = part.split(":")
        out.append((int(q), s, p))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=None, help="run seed (default: from the time)")
    ap.add_argument("--minutes", type=float, default=4.0, help="time budget for episodes")
    ap.add_argument("--episodes", type=int, default=0, help="stop after N episodes (0: time)")
    ap.add_argument("--episode-seed", type=int, default=None, help="replay one episode")
    ap.add_argument("--mqlink", default=None, help="mqlink binary (default: target/debug)")
    ap.add_argument("--faults", default=",".join(faults.ALL_FAULTS),
                    help="comma list from: " + ",".join(faults.ALL_FAULTS))
    ap.add_argument("--matrix", default="all", help="cells q:session:protocol, comma list")
    ap.add_argument("--long", action="store_true", help="several faults per episode, 200 MB outage")
    ap.add_argument("--table", default=None, help="write the markdown table to this file")
    ap.add_argument("--keep", action="store_true", help="keep episode directories")
    args = ap.parse_args()
    # SIGTERM unwinds like ^C, so the running episode's processes and mounts are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.short = not args.long
    args.mqlink_given = args.mqlink is not None
    if args.mqlink is None:
        tdir = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        args.mqlink = os.path.join(tdir, "debug", "mqlink")
    if not os.access(args.mqlink, os.X_OK):
        sys.exit(f"error: mqlink binary not found at {args.mqlink} (cargo build -p mqlink-cli)")
    args.faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    for f in args.faults:
        if f not in faults.ALL_FAULTS:
            sys.exit(f"error: unknown fault {f!r}; known: {', '.join(faults.ALL_FAULTS)}")
    matrix = parse_matrix(args.matrix)
    seed = args.seed if args.seed is not None else int(time.time())
    print(f"campaign seed {seed}" if args.episode_seed is None
          else f"campaign replay of episode seed {args.episode_seed}", flush=True)
    run_rng = random.Random(seed)
    budget_end = time.monotonic() + args.minutes * 60
    rows, failures = [], []
    index = 0
    while True:
        if args.episode_seed is not None:
            if index:
                break
            eseed = args.episode_seed
        else:
            eseed = run_rng.randrange(2**31)
            if args.episodes and index >= args.episodes:
                break
            if not args.episodes and time.monotonic() > budget_end:
                break
        ep = faults.plan(random.Random(eseed), args.faults, matrix, args.short)
        c = ep["cell"]
        # A rough cost: outage episodes take longer; do not start one we cannot finish.
        cost = 150 if ep["env"] == "outage_rss" else ep["steps"][-1][0] + 25
        if (args.episode_seed is None and not args.episodes
                and time.monotonic() + cost > budget_end + 30 and index > 0):
            break
        index += 1
        log(f"episode {index} seed {eseed}: {ep['faults']} | QoS {c['qos']} {c['session']} "
            f"MQTT {c['protocol']} | broker persistence {ep['broker_persistence']}")
        e = Episode(ep, args.mqlink, args.keep, index)
        try:
            row, violations = e.run()
        except Exception as ex:  # a harness failure is reported, never hidden
            row, violations = None, [f"harness: {type(ex).__name__}: {ex}"]
        finally:
            e.cleanup()
        if row is None and not violations:
            continue
        if row is not None:
            rows.append(row)
            log(f"  accepted {row['accepted']} delivered {row['delivered']} dead-lettered "
                f"{row['dead_lettered']} dup {row['duplicates']} lost {row['lost']} stuck "
                f"{row['stuck']} broker-lost {row['broker_lost']} qos0-lost {row['qos0_lost']} "
                f"stall {row['max_stall']:.1f}s ready-lie {row['ready_lie']:.1f}s "
                f"RSS {row['peak_rss_mib']:.0f}MiB conns {row['proxy_conns']} "
                f"answers {row['answers']}")
        if violations:
            failures.append((eseed, ep, violations))
            origin = f"run seed {seed}, " if args.episode_seed is None else ""
            print(f"VIOLATION in episode {index} ({origin}episode seed {eseed}):", flush=True)
            for v in violations:
                print(f"  - {v}", flush=True)
            print("  schedule: " + json.dumps(ep["steps"]), flush=True)
            print(f"  replay: {replay_cmd(args, eseed, ep)}", flush=True)
    print()
    print(table(rows))
    if args.table:
        with open(args.table, "w") as f:
            f.write(f"Campaign seed {seed}, {len(rows)} episodes, "
                    f"{'long' if args.long else 'short'} mode.\n\n{table(rows)}\n")
            if failures:
                f.write("\nViolations:\n\n")
                for eseed, ep, vs in failures:
                    for v in vs:
                        f.write(f"- episode seed {eseed} ({ep['faults']}, QoS "
                                f"{ep['cell']['qos']} {ep['cell']['session']} MQTT "
                                f"{ep['cell']['protocol']}): {v}\n")
    what = (f"campaign seed {seed}" if args.episode_seed is None
            else f"replay of episode seed {args.episode_seed}")
    print(f"\n{what}: {len(rows)} episodes, {len(failures)} with violations")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
