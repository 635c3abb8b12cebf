#!/usr/bin/env python3
"""Publish each line of FILE with Python paho-mqtt (what OctoPrint and Zuul use).

usage: paho_pub.py HOST PORT QOS TOPIC FILE [WINDOW]

The network loop runs in paho's thread; the main thread publishes and keeps at most WINDOW
messages unconfirmed (paho stalls past 65,535 outstanding message ids). Exits 0 once every
message was confirmed (QoS 0: written), 1 on a timeout or a disconnect.
"""
import sys
import threading
import time

import paho.mqtt.client as mqtt


def main():
    host, port, qos, topic, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    window = int(sys.argv[6]) if len(sys.argv) > 6 else 1000
    with open(path, "rb") as f:
        lines = [l.rstrip(b"\n") for l in f if l.strip()]
    done = [0]
    cond = threading.Condition()

    def on_publish(client, userdata, mid, reason_code=None, properties=None):
        with cond:
            done[0] += 1
            cond.notify_all()

    try:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"paho-bench-{time.time_ns()}")
    except AttributeError:  # paho-mqtt 1.x
        client = mqtt.Client(client_id=f"paho-bench-{time.time_ns()}")
    client.on_publish = on_publish
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)
    client.connect(host, port, 60)
    client.loop_start()
    deadline = time.time() + 600
    for i, line in enumerate(lines):
        with cond:
            while i - done[0] >= window:
                if not cond.wait(timeout=30) or time.time() > deadline:
                    if i - done[0] >= window:
                        print(f"paho_pub: stalled at {done[0]} of {len(lines)}", file=sys.stderr)
                        sys.exit(1)
        client.publish(topic, line, qos=qos)
    with cond:
        while done[0] < len(lines):
            if not cond.wait(timeout=30):
                print(f"paho_pub: timed out at {done[0]} of {len(lines)}", file=sys.stderr)
                sys.exit(1)
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
