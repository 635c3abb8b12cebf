#!/usr/bin/env python3
"""Kafka helper for bench/run.py (confluent-kafka, librdkafka bundled in its wheel).

    kafka_tool.py BROKERS create TOPIC...       topics with one partition, replication 1
    kafka_tool.py BROKERS produce TOPIC FILE KEY  the reference producer: one record per
                                                line of FILE (without the newline), key KEY,
                                                acks=all and idempotence as mqlink's Kafka
                                                sink sets them; exit 1 unless all delivered
    kafka_tool.py BROKERS watch TOPIC           for each line on stdin, print the topic's
                                                high watermark (records in partition 0)
"""
import sys

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def main():
    brokers, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if cmd == "create":
        admin = AdminClient({"bootstrap.servers": brokers})
        for topic, f in admin.create_topics([NewTopic(t, 1, 1) for t in args]).items():
            f.result(timeout=30)
    elif cmd == "produce":
        topic, path, key = args
        p = Producer({"bootstrap.servers": brokers, "acks": "all", "enable.idempotence": True})
        failed = []

        def report(err, _msg):
            if err is not None:
                failed.append(err)

        with open(path, "rb") as f:
            for line in f:
                while True:
                    try:
                        p.produce(topic, line.rstrip(b"\n"), key, on_delivery=report)
                        break
                    except BufferError:
                        p.poll(0.05)  # the local queue is full: let deliveries drain
                p.poll(0)
        left = p.flush(120)
        if failed or left:
            print(f"kafka_tool: {len(failed)} failed, {left} undelivered: {failed[:1]}", file=sys.stderr)
            sys.exit(1)
    elif cmd == "watch":
        c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-watch", "enable.auto.commit": False})
        for _ in sys.stdin:
            try:
                _, high = c.get_watermark_offsets(TopicPartition(args[0], 0), timeout=5, cached=False)
            except Exception:  # noqa: BLE001 - unknown topic yet: nothing there
                high = -1
            print(high, flush=True)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
