#!/usr/bin/env python3
"""Python clients against a running Sluice broker.

Usage: clients.py BOOTSTRAP SCENARIO

Run by compat/tests/python.rs, which starts the broker. Exits non-zero (with a message on
stderr) on the first failed check. Scenarios use confluent-kafka (librdkafka 2.16) and
kafka-python (pure Python); each creates its own topics.
"""

import sys
import time

import confluent_kafka
import kafka
from confluent_kafka import admin as cadmin
from kafka import admin as kadmin
from kafka.structs import TopicPartition as KTopicPartition

TIMEOUT = 30
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def fail(message):
    print(f"FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def message_for(i, null_header_values=True):
    """Message i: some keys null, some values null (kafka-python refuses both null at once,
    and null header values: `null_header_values=False` avoids both)."""
    key = None if i % 5 == 0 else f"key-{i % 17}".encode()
    value = None if i % 11 == 0 else (f"value-{i}-".encode() + bytes((j % 251) for j in range((i * 7) % 300)))
    if key is None and value is None and not null_header_values:
        value = b""
    headers = []
    for h in range(i % 3):
        v = None if (h == 1 and null_header_values) else f"v{i}.{h}".encode()
        headers.append((f"h{h}", v))
    return key, value, headers, 1_700_000_000_000 + i


# --- confluent-kafka -------------------------------------------------------------------


def c_create(bootstrap, topic, partitions, config=None):
    client = cadmin.AdminClient({"bootstrap.servers": bootstrap})
    futures = client.create_topics([cadmin.NewTopic(topic, partitions, 1, config=config or {})])
    futures[topic].result(TIMEOUT)


def c_produce(bootstrap, topic, messages, partition=None, **config):
    errors = []
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 5}
    conf.update(config)
    producer = confluent_kafka.Producer(conf)

    def report(err, msg):
        if err is not None:
            errors.append(str(err))

    for key, value, headers, ts in messages:
        kwargs = {"key": key, "value": value, "headers": headers, "timestamp": ts, "on_delivery": report}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
    remaining = producer.flush(TIMEOUT)
    check(remaining == 0, f"{remaining} messages not delivered")
    check(not errors, f"delivery errors: {errors[:3]}")


def c_consume(bootstrap, topic, partitions, count, **config):
    conf = {"bootstrap.servers": bootstrap, "group.id": "assign-only", "enable.auto.commit": False, "check.crcs": True}
    conf.update(config)
    consumer = confluent_kafka.Consumer(conf)
    consumer.assign([confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in range(partitions)])
    out = []
    deadline = time.time() + TIMEOUT
    while len(out) < count:
        check(time.time() < deadline, f"consumed {len(out)} of {count} from {topic}")
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        check(msg.error() is None, f"consume error: {msg.error()}")
        headers = [(k, v) for k, v in (msg.headers() or [])]
        out.append((msg.partition(), msg.offset(), (msg.key(), msg.value(), headers, msg.timestamp()[1])))
    consumer.close()
    return out


# --- kafka-python ----------------------------------------------------------------------


def k_produce(bootstrap, topic, messages, partition=None, **config):
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, **config)
    futures = [
        producer.send(topic, key=key, value=value, headers=headers, timestamp_ms=ts, partition=partition)
        for key, value, headers, ts in messages
    ]
    producer.flush(TIMEOUT)
    metadata = [f.get(TIMEOUT) for f in futures]
    producer.close()
    return metadata


def k_consume(bootstrap, topic, partitions, count, **config):
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest", **config
    )
    tps = [KTopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    out = []
    deadline = time.time() + TIMEOUT
    while len(out) < count:
        check(time.time() < deadline, f"consumed {len(out)} of {count} from {topic}")
        for _tp, records in consumer.poll(timeout_ms=200).items():
            for r in records:
                headers = [(k, v) for k, v in r.headers]
                out.append((r.partition, r.offset, (r.key, r.value, headers, r.timestamp)))
    consumer.close()
    return out


def k_create(bootstrap, topic, partitions, config=None):
    client = kadmin.KafkaAdminClient(bootstrap_servers=bootstrap)
    client.create_topics([kadmin.NewTopic(topic, partitions, 1, topic_configs=config or {})])
    client.close()


# --- scenarios -------------------------------------------------------------------------


def compare(got, sent, label):
    check(len(got) == len(sent), f"{label}: got {len(got)} messages, sent {len(sent)}")
    for i, (partition, offset, message) in enumerate(got):
        check((partition, offset) == (0, i), f"{label}: message {i} at {partition}/{offset}")
        check(message == sent[i], f"{label}: message {i} differs: {message!r} != {sent[i]!r}")


def roundtrip_confluent(bootstrap):
    for codec in CODECS:
        topic = f"py-confluent-{codec}"
        c_create(bootstrap, topic, 1)
        sent = [message_for(i) for i in range(300)]
        c_produce(bootstrap, topic, sent, partition=0, **{"compression.type": codec, "batch.num.messages": 50})
        compare(c_consume(bootstrap, topic, 1, len(sent)), sent, f"confluent {codec}")


def roundtrip_kafka_python(bootstrap):
    for codec in CODECS:
        topic = f"py-kafka-{codec}"
        k_create(bootstrap, topic, 1)
        sent = [message_for(i, null_header_values=False) for i in range(300)]
        compression = None if codec == "none" else codec
        k_produce(bootstrap, topic, sent, partition=0, compression_type=compression, batch_size=4096)
        compare(k_consume(bootstrap, topic, 1, len(sent)), sent, f"kafka-python {codec}")
    # Produced by one client, read by the other.
    sent = [message_for(i, null_header_values=False) for i in range(50)]
    c_create(bootstrap, "py-cross", 1)
    k_produce(bootstrap, "py-cross", sent, partition=0, compression_type="lz4")
    compare(c_consume(bootstrap, "py-cross", 1, len(sent)), sent, "kafka-python -> confluent")


def big_messages_and_ordering(bootstrap):
    c_create(bootstrap, "py-big", 1, {"max.message.bytes": "2097152"})
    big = [(b"k%d" % i, bytes((j * 31 + i) % 256 for j in range(1 << 20)), [], 1_700_000_000_000 + i) for i in range(4)]
    c_produce(bootstrap, "py-big", big[:2], partition=0, **{"message.max.bytes": 2097152})
    k_produce(bootstrap, "py-big", big[2:], partition=0, max_request_size=2097152)
    compare(k_consume(bootstrap, "py-big", 1, 4, fetch_max_bytes=1 << 20), big, "1 MiB via kafka-python")
    compare(c_consume(bootstrap, "py-big", 1, 4), big, "1 MiB via confluent")

    c_create(bootstrap, "py-ordered", 1)
    sent = [(None, str(i).encode(), [], 1_700_000_000_000) for i in range(20000)]
    c_produce(bootstrap, "py-ordered", sent, partition=0, **{"linger.ms": 0, "max.in.flight.requests.per.connection": 20})
    got = k_consume(bootstrap, "py-ordered", 1, len(sent))
    for i, (_, offset, (_, value, _, _)) in enumerate(got):
        check(offset == i and value == str(i).encode(), f"order broken at {i}: offset {offset} value {value!r}")


def keyed_partitioning(bootstrap):
    # librdkafka's murmur2 partitioner is Java's default, as is kafka-python's.
    c_create(bootstrap, "py-keyed", 6)
    keys = [f"user-{i}".encode() for i in range(60)]
    c_produce(bootstrap, "py-keyed", [(k, b"c", [], 1_700_000_000_000) for k in keys], partitioner="murmur2_random")
    k_produce(bootstrap, "py-keyed", [(k, b"k", [], 1_700_000_000_000) for k in keys])
    got = c_consume(bootstrap, "py-keyed", 6, 120)
    placement = {}
    for partition, _, (key, value, _, _) in got:
        placement.setdefault(key, {})[value] = partition
    check(len(placement) == 60, f"{len(placement)} keys seen")
    for key, where in placement.items():
        check(where[b"c"] == where[b"k"], f"key {key!r}: confluent -> {where[b'c']}, kafka-python -> {where[b'k']}")
    check(len({where[b"c"] for where in placement.values()}) > 1, "all keys on one partition")


def timestamps_delete_autocreate(bootstrap):
    # Auto-created by producing.
    sent = [(b"k", str(i).encode(), [], 1_700_000_000_000 + 1000 * i) for i in range(50)]
    c_produce(bootstrap, "py-auto", sent, partition=0)
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "x", "enable.auto.commit": False})
    found = consumer.offsets_for_times([confluent_kafka.TopicPartition("py-auto", 0, 1_700_000_000_000 + 20_500)], TIMEOUT)
    check(found[0].offset == 21, f"confluent offsets_for_times -> {found[0].offset}")
    consumer.close()
    kc = kafka.KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    answer = kc.offsets_for_times({KTopicPartition("py-auto", 0): 1_700_000_000_000 + 20_500})
    hit = answer[KTopicPartition("py-auto", 0)]
    check(hit is not None and hit.offset == 21 and hit.timestamp == 1_700_000_000_000 + 21_000, f"kafka-python -> {hit}")
    check(kc.end_offsets([KTopicPartition("py-auto", 0)])[KTopicPartition("py-auto", 0)] == 50, "end offset")
    check(kc.beginning_offsets([KTopicPartition("py-auto", 0)])[KTopicPartition("py-auto", 0)] == 0, "beginning offset")
    kc.close()

    client = kadmin.KafkaAdminClient(bootstrap_servers=bootstrap)
    check("py-auto" in client.list_topics(), "auto-created topic listed")
    client.delete_topics(["py-auto"])
    client.close()
    cclient = cadmin.AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.time() + TIMEOUT
    while "py-auto" in cclient.list_topics(timeout=TIMEOUT).topics:
        check(time.time() < deadline, "deleted topic still listed")
        time.sleep(0.1)
    try:
        cclient.delete_topics(["py-auto"])["py-auto"].result(TIMEOUT)
        fail("deleting a missing topic succeeded")
    except confluent_kafka.KafkaException as err:
        check(err.args[0].code() == confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART, f"unexpected error {err}")


def restart(bootstrap):
    """Produces, waits for the harness to restart the broker, produces more, checks all."""
    c_create(bootstrap, "py-restart", 2)
    first = [(None, b"m%d" % i, [], 1_700_000_000_000) for i in range(500)]
    c_produce(bootstrap, "py-restart", first, acks="all")
    print("READY", flush=True)
    check(sys.stdin.readline().strip() == "RESTARTED", "harness did not restart the broker")
    second = [(None, b"m%d" % i, [], 1_700_000_000_000) for i in range(500, 1000)]
    c_produce(bootstrap, "py-restart", second, acks="all", **{"reconnect.backoff.ms": 50})
    got = k_consume(bootstrap, "py-restart", 2, 1000)
    values = sorted(v for _, _, (_, v, _, _) in got)
    check(values == sorted(b"m%d" % i for i in range(1000)), "messages lost or duplicated across the restart")


SCENARIOS = {
    "roundtrip-confluent": roundtrip_confluent,
    "roundtrip-kafka-python": roundtrip_kafka_python,
    "big-and-ordering": big_messages_and_ordering,
    "keyed-partitioning": keyed_partitioning,
    "timestamps-delete-autocreate": timestamps_delete_autocreate,
    "restart": restart,
}

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in SCENARIOS:
        fail(f"usage: clients.py BOOTSTRAP {{{','.join(SCENARIOS)}}}")
    SCENARIOS[sys.argv[2]](sys.argv[1])
    print("OK", flush=True)
