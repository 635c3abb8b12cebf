#!/usr/bin/env python3
"""MQTT scenarios run against any broker, printing one JSON outcome per scenario.

`crates/cli/tests/broker_conformance.rs` runs each scenario against a private Mosquitto 2
and against mqlink's embedded broker and requires the same outcome from both. The client
speaks raw MQTT over a socket (no client library) so that a scenario controls exactly what
is acknowledged and when: a library would ack for us and hide redelivery. Outcomes hold
only what the broker must agree on (payloads, flags, properties, reason codes), never
packet ids or assigned client ids.

Usage: scenarios.py PORT SCENARIO   (prints JSON on stdout; exit 0)
"""

import json
import socket
import struct
import sys
import time
import uuid

HOST = "127.0.0.1"
WAIT = 5.0  # longest wait for a packet the broker owes us
QUIET = 0.7  # how long "nothing arrives" is watched for

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, DISCONNECT = 8, 9, 14

# MQTT 5 property ids and their wire types.
PROPS = {
    0x01: ("payload_format", "byte"),
    0x02: ("message_expiry", "u32"),
    0x03: ("content_type", "str"),
    0x08: ("response_topic", "str"),
    0x09: ("correlation_data", "bin"),
    0x0B: ("subscription_id", "varint"),
    0x11: ("session_expiry", "u32"),
    0x12: ("assigned_client_id", "str"),
    0x13: ("server_keep_alive", "u16"),
    0x17: ("request_problem_info", "byte"),
    0x18: ("will_delay", "u32"),
    0x19: ("request_response_info", "byte"),
    0x1A: ("response_info", "str"),
    0x1C: ("server_reference", "str"),
    0x1F: ("reason_string", "str"),
    0x21: ("receive_maximum", "u16"),
    0x22: ("topic_alias_maximum", "u16"),
    0x23: ("topic_alias", "u16"),
    0x24: ("maximum_qos", "byte"),
    0x25: ("retain_available", "byte"),
    0x26: ("user", "pair"),
    0x27: ("maximum_packet_size", "u32"),
    0x28: ("wildcard_available", "byte"),
    0x29: ("sub_id_available", "byte"),
    0x2A: ("shared_available", "byte"),
}
BY_NAME = {name: (pid, kind) for pid, (name, kind) in PROPS.items()}


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def enc_props(props):
    """props: list of (name, value); user properties as ("user", (k, v))."""
    body = bytearray()
    for name, value in props:
        pid, kind = BY_NAME[name]
        body += varint(pid)
        if kind == "byte":
            body += bytes([value])
        elif kind == "u16":
            body += struct.pack("!H", value)
        elif kind == "u32":
            body += struct.pack("!I", value)
        elif kind == "varint":
            body += varint(value)
        elif kind in ("str", "bin"):
            body += utf8(value)
        elif kind == "pair":
            body += utf8(value[0]) + utf8(value[1])
    return varint(len(body)) + bytes(body)


class Reader:
    def __init__(self, data):
        self.d, self.i = data, 0

    def take(self, n):
        b = self.d[self.i : self.i + n]
        self.i += n
        return b

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack("!H", self.take(2))[0]

    def u32(self):
        return struct.unpack("!I", self.take(4))[0]

    def varint(self):
        n, mul = 0, 1
        while True:
            b = self.u8()
            n += (b & 0x7F) * mul
            mul *= 128
            if not b & 0x80:
                return n

    def string(self):
        return self.take(self.u16()).decode()

    def binary(self):
        return self.take(self.u16()).hex()

    def rest(self):
        return self.d[self.i :]

    def props(self):
        end = self.varint() + self.i
        out = []
        while self.i < end:
            name, kind = PROPS[self.varint()]
            value = {
                "byte": self.u8,
                "u16": self.u16,
                "u32": self.u32,
                "varint": self.varint,
                "str": self.string,
                "bin": self.binary,
                "pair": lambda: [self.string(), self.string()],
            }[kind]()
            out.append([name, value])
        return out


class Client:
    def __init__(self, port, client_id, version=5, clean=True, props=(), will=None):
        self.version = version
        self.sock = socket.create_connection((HOST, port), timeout=WAIT)
        self.buf = b""
        self.closed = False
        flags = 0x02 if clean else 0
        payload = utf8(client_id)
        if will is not None:
            topic, message, qos, will_props = will
            flags |= 0x04 | (qos << 3)
            if version == 5:
                payload += enc_props(will_props)
            payload += utf8(topic) + utf8(message)
        name = "MQIsdp" if version == 3 else "MQTT"
        body = utf8(name) + bytes([version, flags]) + struct.pack("!H", 60)
        if version == 5:
            body += enc_props(list(props))
        self.send(CONNECT, 0, body + payload)
        kind, _, data = self.recv()
        assert kind == CONNACK, kind
        r = Reader(data)
        self.session_present = bool(r.u8() & 1)
        self.connack_code = r.u8()
        self.connack_props = r.props() if version == 5 and r.rest() else []
        assert self.connack_code == 0, self.connack_code

    def prop(self, name, props=None):
        for n, v in self.connack_props if props is None else props:
            if n == name:
                return v
        return None

    def send(self, kind, flags, body):
        self.sock.sendall(bytes([kind << 4 | flags]) + varint(len(body)) + body)

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except ConnectionError:
                chunk = b""
            if not chunk:
                self.closed = True
                return False
            self.buf += chunk
        return True

    def recv(self, wait=WAIT):
        """The next packet as (type, flags, body), or None on timeout or close."""
        deadline = time.monotonic() + wait
        if not self._fill(2, deadline):
            return None
        length, mul, i = 0, 1, 1
        while True:
            if not self._fill(i + 1, deadline):
                return None
            b = self.buf[i]
            length += (b & 0x7F) * mul
            mul *= 128
            i += 1
            if not b & 0x80:
                break
        if not self._fill(i + length, deadline):
            return None
        head, body = self.buf[0], self.buf[i : i + length]
        self.buf = self.buf[i + length :]
        return head >> 4, head & 0x0F, body

    def subscribe(self, topic, qos, pid=1, options=0):
        body = struct.pack("!H", pid)
        if self.version == 5:
            body += enc_props([])
        body += utf8(topic) + bytes([qos | options])
        self.send(SUBSCRIBE, 0x02, body)
        kind, _, data = self.recv()
        assert kind == SUBACK, kind
        r = Reader(data)
        r.u16()
        if self.version == 5:
            r.props()
        return list(r.rest())

    def publish(self, topic, payload, qos=0, pid=1, retain=False, props=(), dup=False):
        body = utf8(topic)
        if qos:
            body += struct.pack("!H", pid)
        if self.version == 5:
            body += enc_props(list(props))
        body += payload.encode() if isinstance(payload, str) else payload
        self.send(PUBLISH, (qos << 1) | int(retain) | (0x08 if dup else 0), body)
        if qos == 1:
            assert self.recv()[0] == PUBACK
        elif qos == 2:
            assert self.recv()[0] == PUBREC
            self.send(PUBREL, 0x02, struct.pack("!H", pid))
            assert self.recv()[0] == PUBCOMP

    def next_publish(self, wait=WAIT):
        """The next PUBLISH as a dict (other packets are returned as {"packet": type})."""
        p = self.recv(wait)
        if p is None:
            return None
        kind, flags, data = p
        if kind != PUBLISH:
            out = {"packet": kind}
            if kind == DISCONNECT and data:
                out["reason"] = data[0]
            if kind == PUBREL:
                out["pid"] = struct.unpack("!H", data[:2])[0]
            return out
        r = Reader(data)
        qos = (flags >> 1) & 3
        msg = {
            "topic": r.string(),
            "qos": qos,
            "dup": bool(flags & 0x08),
            "retain": bool(flags & 1),
        }
        if qos:
            msg["pid"] = r.u16()
        if self.version == 5:
            msg["props"] = r.props()
        msg["payload"] = r.rest().decode(errors="replace")
        return msg

    def ack(self, msg):
        if msg["qos"] == 1:
            self.send(PUBACK, 0, struct.pack("!H", msg["pid"]))
        elif msg["qos"] == 2:
            self.send(PUBREC, 0, struct.pack("!H", msg["pid"]))

    def drain(self, wait=QUIET):
        out = []
        while True:
            m = self.next_publish(wait)
            if m is None:
                return out
            if m.get("packet") == PUBREL:
                self.send(PUBCOMP, 0, struct.pack("!H", m["pid"]))
                continue
            out.append(m)
            if "topic" in m:
                self.ack(m)

    def disconnect(self):
        self.send(DISCONNECT, 0, b"")
        self.sock.close()

    def drop(self):
        """Vanish without DISCONNECT, as a crashed client does."""
        self.sock.close()


def brief(msgs, keys=("topic", "payload", "qos", "dup")):
    return [{k: m.get(k) for k in keys} if "topic" in m else m for m in msgs]


def fresh(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def offline_queue(port, version):
    cid, topic = fresh("oq"), fresh("oq")
    props = [("session_expiry", 300)] if version == 5 else []
    sub = Client(port, cid, version, clean=version != 5, props=props)
    if version in (3, 4):
        sub.disconnect()
        sub = Client(port, cid, version, clean=False)
    codes = sub.subscribe(topic + "/#", 2)
    sub.disconnect()
    pub = Client(port, fresh("pub"), version)
    for i, qos in enumerate([1, 1, 2, 0, 1]):
        pub.publish(f"{topic}/{i}", f"m{i} q{qos}", qos=qos, pid=i + 1)
    pub.disconnect()
    back = Client(port, cid, version, clean=False, props=props)
    got = back.drain()
    return {
        "suback": codes,
        "session_present": back.session_present,
        "messages": [
            {"topic": m["topic"][len(topic) :], "payload": m["payload"], "qos": m["qos"]}
            for m in got
        ],
    }


def redelivery(port, version, qos):
    """A message delivered but not acknowledged comes again, with DUP, after reconnect."""
    cid, topic = fresh("rd"), fresh("rd")
    props = [("session_expiry", 300)] if version == 5 else []
    if version in (3, 4):
        Client(port, cid, version, clean=True).disconnect()
    sub = Client(port, cid, version, clean=False, props=props)
    sub.subscribe(topic, qos)
    pub = Client(port, fresh("pub"), version)
    pub.publish(topic, "once", qos=qos, pid=7)
    pub.disconnect()
    steps = [sub.next_publish()]
    sub.drop()  # never acknowledged
    sub = Client(port, cid, version, clean=False, props=props)
    again = sub.next_publish()
    steps.append(again)
    if qos == 2 and again and "topic" in again:
        sub.ack(again)  # PUBREC: the broker now owes PUBREL
        rel = sub.next_publish()
        steps.append(rel)
        sub.drop()  # PUBCOMP never sent: the PUBREL is owed again
        sub = Client(port, cid, version, clean=False, props=props)
        rel = sub.next_publish()
        steps.append(rel)
        if rel and rel.get("packet") == PUBREL:
            sub.send(PUBCOMP, 0, struct.pack("!H", rel["pid"]))
    elif again and "topic" in again:
        sub.ack(again)
    steps.append({"after_ack": brief(sub.drain())})
    sub.disconnect()
    return {
        "session_present": sub.session_present,
        "steps": [s if s is None else brief([s])[0] for s in steps[:-1]] + [steps[-1]],
    }


def session_expiry(port):
    cid, topic = fresh("se"), fresh("se")
    out = {}
    for expiry in (1, 300):
        sub = Client(port, cid, 5, clean=True, props=[("session_expiry", expiry)])
        sub.subscribe(topic, 1)
        sub.disconnect()
        pub = Client(port, fresh("pub"), 5)
        pub.publish(topic, f"while away {expiry}", qos=1)
        pub.disconnect()
        # Session expiry is a timeout by definition: nothing to await but the clock.
        time.sleep(2.5)
        back = Client(port, cid, 5, clean=False, props=[("session_expiry", 0)])
        out[str(expiry)] = {
            "session_present": back.session_present,
            "payloads": [m.get("payload") for m in back.drain()],
        }
        back.disconnect()
    return out


def message_expiry(port):
    cid, topic = fresh("me"), fresh("me")
    props = [("session_expiry", 300)]
    sub = Client(port, cid, 5, clean=True, props=props)
    sub.subscribe(topic, 1)
    sub.disconnect()
    pub = Client(port, fresh("pub"), 5)
    pub.publish(topic, "short", qos=1, pid=1, props=[("message_expiry", 1)])
    pub.publish(topic, "long", qos=1, pid=2, props=[("message_expiry", 100)])
    pub.publish(topic, "forever", qos=1, pid=3)
    pub.disconnect()
    # Message expiry is a timeout by definition: nothing to await but the clock.
    time.sleep(2.5)
    back = Client(port, cid, 5, clean=False, props=props)
    got = back.drain()
    out = []
    for m in got:
        expiry = back.prop("message_expiry", m.get("props", []))
        out.append(
            {
                "payload": m.get("payload"),
                # What is left of 100 s: less than sent (time passed), more than 90.
                "expiry": None if expiry is None else (90 < expiry < 100),
            }
        )
    return {"session_present": back.session_present, "messages": out}


APP_PROPS = [
    ("payload_format", 1),
    ("content_type", "text/plain"),
    ("response_topic", "reply/here"),
    ("correlation_data", b"\x01\x02"),
    ("user", ("a", "1")),
    ("user", ("a", "2")),
    ("user", ("b", "3")),
    ("user", ("x-mqtt-client-id", "mine")),
]


def normal(props):
    """Properties as a broker must keep them: user properties in their order (MQTT-3.3.2-18),
    the others in any order."""
    return sorted(p for p in props if p[0] != "user") + [p for p in props if p[0] == "user"]


def expected_props():
    out = []
    for name, v in APP_PROPS:
        if isinstance(v, bytes):
            v = v.hex()
        elif isinstance(v, tuple):
            v = list(v)
        out.append([name, v])
    return out


def user_properties(port):
    topic = fresh("up")
    sub = Client(port, fresh("sub"), 5)
    sub.subscribe(topic, 1)
    pub = Client(port, fresh("pub"), 5)
    pub.publish(topic, "live", qos=1, props=APP_PROPS, retain=True)
    pub.disconnect()
    live = sub.next_publish()
    sub.ack(live)
    late = Client(port, fresh("late"), 5)
    late.subscribe(topic, 1)
    retained = late.next_publish()
    late.ack(retained)
    # Clear the retained message so reruns start clean.
    clear = Client(port, fresh("clr"), 5)
    clear.publish(topic, b"", retain=True)
    clear.disconnect()
    return {
        "live": normal(live["props"]) == normal(expected_props()) or live["props"],
        "retained": normal(retained["props"]) == normal(expected_props()) or retained["props"],
        "retain_flag": retained["retain"],
    }


def will_properties(port):
    topic = fresh("will")
    sub = Client(port, fresh("sub"), 5)
    sub.subscribe(topic, 1)
    will_props = [("content_type", "text/plain"), ("user", ("k", "v")), ("message_expiry", 100)]
    dying = Client(port, fresh("dying"), 5, will=(topic, "gone", 1, will_props))
    dying.drop()
    got = sub.next_publish()
    props = got["props"]
    expiry = sub.prop("message_expiry", props)
    return {
        "payload": got["payload"],
        "props": normal([p for p in props if p[0] != "message_expiry"]),
        "expiry_kept": expiry is not None and 90 < expiry <= 100,
    }


def max_packet_size(port):
    """The client announces 300 bytes: what fits arrives, only what does not is dropped."""
    topic = fresh("mps")
    sub = Client(port, fresh("sub"), 5, props=[("maximum_packet_size", 300)])
    sub.subscribe(topic, 1)
    pub = Client(port, fresh("pub"), 5)
    for i, size in enumerate([200, 1000, 250]):
        pub.publish(topic, "x" * size, qos=1, pid=i + 1, props=[("user", ("k", "v"))])
    pub.disconnect()
    return {"sizes": [len(m.get("payload", "")) for m in sub.drain()]}


def topic_alias(port):
    """Within the announced maximum an alias works; beyond it is a protocol error."""
    topic = fresh("ta")
    sub = Client(port, fresh("sub"), 5)
    sub.subscribe(topic, 0)
    pub = Client(port, fresh("pub"), 5)
    maximum = pub.prop("topic_alias_maximum") or 0
    out = {"announced": maximum > 0}
    if maximum:
        pub.publish(topic, "aliased", props=[("topic_alias", 1)])
        pub.publish("", "by alias", props=[("topic_alias", 1)])
        out["delivered"] = [m.get("payload") for m in sub.drain()]
    if maximum < 65535:
        pub.publish(topic, "beyond", props=[("topic_alias", maximum + 1)])
        end = pub.next_publish()
        out["beyond"] = end if end is None else end.get("reason", end.get("packet"))
        out["closed"] = pub.closed or pub.recv(QUIET) is None and pub.closed
        out["beyond_delivered"] = [m.get("payload") for m in sub.drain()]
    return out


def refused_subscription(port, version):
    """An invalid filter (`#` not last): a failure code, or the connection closed."""
    sub = Client(port, fresh("sub"), version)
    try:
        codes = sub.subscribe("a/#/b", 1)
    except (AssertionError, TypeError, OSError):
        return {"closed": True}
    return {"codes": codes, "then": sub.subscribe("ok/x", 1, pid=2)}


# Restart scenarios: `persist_before` runs, the broker restarts (same persistence), then
# `persist_after` runs. Fixed ids and topics tie the two halves together.
PERSIST_ID, PERSIST_TOPIC = "persist-sub", "persist/topic"


def persist_before(port):
    # MQTT 3.1.1 for the session: with an MQTT 5 session (expiry 3600 s) Mosquitto 2.0.11
    # answered session present 0 after its restart here, so it cannot be the reference.
    Client(port, PERSIST_ID, 4, clean=True).disconnect()
    sub = Client(port, PERSIST_ID, 4, clean=False)
    sub.subscribe(PERSIST_TOPIC + "/#", 2)
    sub.disconnect()
    pub = Client(port, fresh("pub"), 5)
    pub.publish("persist/retained", "kept", qos=1, retain=True, props=[("user", ("k", "v"))])
    pub.publish(PERSIST_TOPIC + "/1", "queued q1", qos=1, pid=1)
    pub.publish(PERSIST_TOPIC + "/2", "queued q2", qos=2, pid=2)
    pub.disconnect()
    return {"done": True}


def persist_after(port):
    late = Client(port, fresh("late"), 5)
    late.subscribe("persist/retained", 1)
    retained = brief(late.drain(), ("topic", "payload", "retain", "props"))
    late.disconnect()
    back = Client(port, PERSIST_ID, 4, clean=False)
    queued = brief(back.drain(), ("topic", "payload", "qos"))
    back.disconnect()
    return {"retained": retained, "session_present": back.session_present, "queued": queued}


def persist5_before(port):
    sub = Client(port, PERSIST_ID + "-5", 5, props=[("session_expiry", 3600)])
    sub.subscribe(PERSIST_TOPIC + "5/#", 1)
    sub.disconnect()
    pub = Client(port, fresh("pub"), 5)
    pub.publish(PERSIST_TOPIC + "5/1", "queued v5", qos=1, props=[("user", ("k", "v"))])
    pub.disconnect()
    return {"done": True}


def persist5_after(port):
    back = Client(port, PERSIST_ID + "-5", 5, clean=False, props=[("session_expiry", 3600)])
    queued = brief(back.drain(), ("topic", "payload", "props"))
    back.disconnect()
    return {"session_present": back.session_present, "queued": queued}


SCENARIOS = {
    "persist_before": persist_before,
    "persist_after": persist_after,
    "persist5_before": persist5_before,
    "persist5_after": persist5_after,
    "offline_queue_v311": lambda p: offline_queue(p, 4),
    "offline_queue_v5": lambda p: offline_queue(p, 5),
    "offline_queue_v31": lambda p: offline_queue(p, 3),
    "redelivery_qos1_v31": lambda p: redelivery(p, 3, 1),
    "redelivery_qos2_v31": lambda p: redelivery(p, 3, 2),
    "redelivery_qos1_v311": lambda p: redelivery(p, 4, 1),
    "redelivery_qos1_v5": lambda p: redelivery(p, 5, 1),
    "redelivery_qos2_v311": lambda p: redelivery(p, 4, 2),
    "redelivery_qos2_v5": lambda p: redelivery(p, 5, 2),
    "session_expiry": session_expiry,
    "message_expiry": message_expiry,
    "user_properties": user_properties,
    "will_properties": will_properties,
    "max_packet_size": max_packet_size,
    "topic_alias": topic_alias,
    "refused_subscription_v311": lambda p: refused_subscription(p, 4),
    "refused_subscription_v5": lambda p: refused_subscription(p, 5),
}

if __name__ == "__main__":
    port, name = int(sys.argv[1]), sys.argv[2]
    print(json.dumps(SCENARIOS[name](port), sort_keys=True))
