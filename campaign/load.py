"""The world around mqlink: HTTP clients that produce numbered events, a subscriber that
records what reached the broker, and a sampler of readiness, metrics and memory.

Every event carries a unique id ``"<client>-<n>"`` in its JSON body; the subscriber reads it
back from the payload, so the checker can join "what the clients were answered" with "what
a subscriber saw" without trusting mqlink's own account.
"""

import http.client
import json
import random
import threading
import time

import paho.mqtt.client as paho


class Answers:
    """What the clients were told, per event id."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = {}  # id -> dict(kind, client, n, topic, status, t)
        self.statuses = {}  # status -> count (events)

    def record(self, ids, meta, status, t):
        with self.lock:
            for i in ids:
                e = dict(meta[i])
                e["status"] = status
                e["t"] = t
                self.events[i] = e
            self.statuses[status] = self.statuses.get(status, 0) + len(ids)

    def accepted(self):
        with self.lock:
            return {i: e for i, e in self.events.items() if e["status"] == 202}

    def unknown(self):
        with self.lock:
            return {i for i, e in self.events.items() if e["status"] == "error"}


class Client(threading.Thread):
    """Posts uniquely numbered events to mqlink as fast as ``rate`` allows, one request at a
    time (so a client's own events are ordered: n+1 is sent after n was answered).

    ``specials`` are (event name, probability, extra fields, pad bytes) for events a fault
    needs (too large for the broker, retained, denied, filtered)."""

    def __init__(self, k, port_fn, answers, rng_seed, rate, pad, batch_p, specials, stop):
        super().__init__(name=f"client-{k}", daemon=True)
        self.k = k
        self.port_fn = port_fn
        self.answers = answers
        self.rng = random.Random(rng_seed)
        self.rate = rate
        self.pad = pad
        self.batch_p = batch_p
        self.specials = specials
        self.stop = stop
        self.n = 0
        self.conn = None

    def _event(self):
        self.n += 1
        eid = f"{self.k}-{self.n}"
        name, kind, extra, pad = f"c{self.k}", "normal", {}, self.pad
        for sname, p, sextra, spad in self.specials:
            if self.rng.random() < p:
                name, kind, extra, pad = sname, sname, sextra, spad
                break
        body = {"id": eid, "c": self.k, "n": self.n, **extra}
        if pad:
            body["pad"] = "x" * pad
        return eid, name, kind, body

    def _post(self, path, body, ctype):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port_fn(), timeout=15)
        try:
            self.conn.request("POST", path, body=body, headers={"Content-Type": ctype})
            r = self.conn.getresponse()
            r.read()
            return r.status
        except (OSError, http.client.HTTPException):
            try:
                self.conn.close()
            finally:
                self.conn = None
            return "error"

    def run(self):
        gap = 1.0 / self.rate if self.rate else 0
        while not self.stop.is_set():
            t0 = time.monotonic()
            if self.rng.random() < self.batch_p:
                evs = [self._event() for _ in range(self.rng.randint(2, 6))]
                payload = "".join(json.dumps({"event": name, **body}) + "\n"
                                  for _, name, _, body in evs)
                status = self._post("/v1/events", payload.encode(), "application/x-ndjson")
            else:
                evs = [self._event()]
                _, name, _, body = evs[0]
                status = self._post(f"/v1/events/{name}", json.dumps(body).encode(),
                                    "application/json")
            meta = {eid: {"kind": kind, "client": self.k, "n": int(eid.split("-")[1]),
                          "name": name} for eid, name, kind, _ in evs}
            self.answers.record(list(meta), meta, status, time.monotonic())
            if status == "error":
                # mqlink is down (killed by the nemesis): do not spin.
                self.stop.wait(0.1)
            left = gap - (time.monotonic() - t0)
            if left > 0:
                self.stop.wait(left)


class Subscriber:
    """A paho client straight to the broker (never through the proxy): persistent session,
    QoS 2, reconnecting quickly, so it loses nothing the broker holds for it."""

    def __init__(self, port, client_id, filters):
        self.lock = threading.Lock()
        self.arrivals = []  # (monotonic t, topic, id or None, retain)
        self.subscribed = threading.Event()
        self.filters = filters
        # paho-mqtt 2 (pip) wants a callback API version; Debian's 1.6 has none. The
        # callbacks below accept both signatures.
        api = ((paho.CallbackAPIVersion.VERSION2,) if hasattr(paho, "CallbackAPIVersion")
               else ())
        c = paho.Client(*api, client_id=client_id, clean_session=False,
                        protocol=paho.MQTTv311)
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(0.05, 0.2)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_disconnect = lambda *a: self.subscribed.clear()
        self.client = c
        self.port = port

    def start(self, timeout=10):
        self.client.connect("127.0.0.1", self.port, keepalive=5)
        self.client.loop_start()
        if not self.subscribed.wait(timeout):
            raise RuntimeError("subscriber did not get its SUBACK")

    def _on_connect(self, client, userdata, flags, rc, props=None):
        if rc == 0:
            client.subscribe([(f, 2) for f in self.filters])

    def _on_subscribe(self, *a):
        self.subscribed.set()

    def _on_message(self, client, userdata, msg):
        t = time.monotonic()
        eid = None
        try:
            v = json.loads(msg.payload)
            if isinstance(v, dict):
                eid = v.get("id")
        except ValueError:
            pass
        with self.lock:
            self.arrivals.append((t, msg.topic, eid, bool(msg.retain)))

    def snapshot(self):
        with self.lock:
            return list(self.arrivals)

    def count(self):
        with self.lock:
            return len(self.arrivals)

    def last_arrival(self):
        with self.lock:
            return self.arrivals[-1][0] if self.arrivals else None

    def close(self):
        self.client.loop_stop()
        try:
            self.client.disconnect()
        except Exception:
            pass


class Sampler(threading.Thread):
    """Every ``period`` s: /readyz, mqlink's RSS, subscriber arrivals and accepted count.
    The checker reads readiness against progress and RSS against the bound from these."""

    def __init__(self, daemon, sub, answers, period=0.25):
        super().__init__(name="sampler", daemon=True)
        self.daemon_ = daemon
        self.sub = sub
        self.answers = answers
        self.period = period
        self.stop = threading.Event()
        self.samples = []  # (t, ready: bool|None, rss_kib|None, arrivals, alive)
        self.peak_rss = 0

    def run(self):
        while not self.stop.is_set():
            t = time.monotonic()
            alive = self.daemon_.alive()
            ready = None
            rss = None
            if alive:
                rss = self.daemon_.rss_kib()
                status, _ = self.daemon_.get("/readyz", timeout=1)
                ready = None if status is None else status == 200
            if rss:
                self.peak_rss = max(self.peak_rss, rss)
            self.samples.append((t, ready, rss, self.sub.count(), alive))
            self.stop.wait(self.period)
