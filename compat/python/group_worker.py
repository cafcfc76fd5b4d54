#!/usr/bin/env python3
"""A consumer-group worker, driven by compat/tests/groups.rs.

Usage: group_worker.py BOOTSTRAP GROUP TOPIC CLIENT [STRATEGY] [INSTANCE_ID]
  CLIENT: confluent | kafka-python
  STRATEGY: range | roundrobin | cooperative-sticky | sticky (default range)

Prints, line by line:
  JOINING t            when it subscribes (t: wall-clock seconds)
  ASSIGNMENT t p,p,... whenever the set of partitions it owns changes
  MSG p o              for every message, after "processing" it; offsets are committed
                       synchronously after processing, so delivery is at least once
Stops cleanly (leaving the group) when its stdin closes or reads STOP.
"""

import os
import select
import sys
import time

BOOTSTRAP, GROUP, TOPIC, CLIENT = sys.argv[1:5]
STRATEGY = sys.argv[5] if len(sys.argv) > 5 else "range"
INSTANCE = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] else None
SESSION_MS = 6000
# Rebalance timeout (librdkafka: max.poll.interval.ms), for bench/rebalance.py.
REBALANCE_MS = int(os.environ.get("REBALANCE_TIMEOUT_MS", "300000"))


def say(line):
    print(line, flush=True)


def assignment(owned):
    say(f"ASSIGNMENT {time.time():.6f} " + ",".join(str(p) for p in sorted(owned)))


def should_stop():
    ready, _, _ = select.select([sys.stdin], [], [], 0)
    if not ready:
        return False
    line = sys.stdin.readline()
    return line == "" or line.strip() == "STOP"


def run_confluent():
    import confluent_kafka

    owned = set()
    config = {
        "bootstrap.servers": BOOTSTRAP,
        "group.id": GROUP,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_MS,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": STRATEGY,
        "max.poll.interval.ms": REBALANCE_MS,
    }
    if INSTANCE:
        config["group.instance.id"] = INSTANCE
    consumer = confluent_kafka.Consumer(config)

    def on_assign(c, partitions):
        owned.update(p.partition for p in partitions)
        assignment(owned)

    def on_revoke(c, partitions):
        # Eager protocols revoke everything; cooperative ones only what moves.
        if STRATEGY == "cooperative-sticky":
            owned.difference_update(p.partition for p in partitions)
        else:
            owned.clear()
        assignment(owned)

    say(f"JOINING {time.time():.6f}")
    consumer.subscribe([TOPIC], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke)
    while not should_stop():
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            say(f"ERROR {msg.error()}")
            continue
        say(f"MSG {msg.partition()} {msg.offset()}")
        try:
            consumer.commit(message=msg, asynchronous=False)
        except confluent_kafka.KafkaException as err:
            # Kafka refuses commits while a rebalance completes (REBALANCE_IN_PROGRESS); the
            # message is processed and a later commit covers it, as a real worker would.
            say(f"COMMIT_RETRY {err}")
    consumer.close()


def run_kafka_python():
    import kafka
    import kafka.errors
    from kafka.consumer.subscription_state import ConsumerRebalanceListener

    assignors = {
        "range": kafka.coordinator.assignors.range.RangePartitionAssignor,
        "roundrobin": kafka.coordinator.assignors.roundrobin.RoundRobinPartitionAssignor,
        "sticky": kafka.coordinator.assignors.sticky.sticky_assignor.StickyPartitionAssignor,
    }
    owned = set()

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            owned.difference_update(tp.partition for tp in revoked)
            assignment(owned)

        def on_partitions_assigned(self, assigned):
            owned.update(tp.partition for tp in assigned)
            assignment(owned)

    extra = {"group_instance_id": INSTANCE} if INSTANCE else {}
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        group_id=GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=500,
        partition_assignment_strategy=[assignors[STRATEGY]],
        **extra,
    )
    say(f"JOINING {time.time():.6f}")
    consumer.subscribe([TOPIC], listener=Listener())
    while not should_stop():
        batches = consumer.poll(timeout_ms=200)
        for _tp, records in batches.items():
            for r in records:
                say(f"MSG {r.partition} {r.offset}")
        if batches:
            try:
                consumer.commit()
            except kafka.errors.KafkaError as err:
                # As above: a commit refused during a rebalance is retried by the next one.
                say(f"COMMIT_RETRY {err}")
    consumer.close()


if __name__ == "__main__":
    {"confluent": run_confluent, "kafka-python": run_kafka_python}[CLIENT]()
