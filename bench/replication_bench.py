#!/usr/bin/env python3
"""Replication measured from a client's side (issue 16), one run, one machine.

Usage: replication_bench.py --sluice target/release/sluice --perf /tmp/perf/rdkafka_performance
       [--messages 500000] [--kills 20] [--session-ms 1500] [--port 19092]

1. Throughput, acks=all, 100 B and 1 KiB messages, rdkafka_performance (librdkafka
   defaults, one partition): a single node (RF 1), then a 3-node cluster with a topic of
   RF 3 and min.insync.replicas=2. Prints msgs/s and MB/s and the RF 3 / RF 1 ratio.
2. Replication lag under that load: the leader's /metrics `sluice_replication_uncommitted_
   records` (records appended but not yet held by every in-sync replica) sampled every 50 ms
   during the RF 3 runs: max and p99.
3. Failover, `--kills` times: an idempotent acks=all confluent-kafka producer writes all
   along; SIGKILL the leader of its partition; time from the kill to the first write
   acknowledged after it (which the new leader acknowledged); restart the node and wait
   until it is back in the ISR. p50/p99/max. The cluster runs with
   broker.session.timeout.ms=--session-ms (the time to notice a dead broker dominates).

Needs confluent-kafka (pip) and nothing listening on the ports.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from cluster_common import node_commands, percentile, stop, wait

SUMMARY = re.compile(r"(\d+) messages produced \((\d+) bytes\), (\d+) delivered .* in (\d+)ms: (\d+) msgs/s and ([\d.]+) MB/s")


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 3000})


def create(bootstrap, name, rf, configs=None):
    client = admin(bootstrap)
    futures = client.create_topics([NewTopic(name, 1, rf, config=configs or {})], operation_timeout=10)
    futures[name].result(20)


def placement(bootstrap, topic):
    client = admin(bootstrap)
    meta = client.list_topics(topic, timeout=3)
    p = meta.topics[topic].partitions[0]
    return p.leader, list(p.isrs)


def perf(perf_path, bootstrap, topic, size, count):
    out = subprocess.run(
        [perf_path, "-P", "-t", topic, "-s", str(size), "-c", str(count), "-b", bootstrap, "-X", "acks=all"],
        capture_output=True, text=True, check=True,
    ).stdout + ""
    lines = [l for l in out.splitlines() if "messages produced" in l]
    m = SUMMARY.search(lines[-1]) if lines else None
    if not m:
        sys.exit(f"no summary from rdkafka_performance:\n{out}")
    return int(m.group(5)), float(m.group(6))


def sample_lag(http, done, samples):
    url = f"http://{http}/metrics"
    while not done.is_set():
        try:
            body = urllib.request.urlopen(url, timeout=1).read().decode()
            for line in body.splitlines():
                if line.startswith("sluice_replication_uncommitted_records "):
                    samples.append(float(line.split()[1]))
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.05)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sluice", required=True)
    parser.add_argument("--perf", required=True)
    parser.add_argument("--messages", type=int, default=500000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--session-ms", type=int, default=1500)
    parser.add_argument("--port", type=int, default=19092)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a broker property for every node (repeatable), e.g. replica.sync.before.fetch=false")
    parser.add_argument("--skip-single", action="store_true", help="skip the single-node runs (ratios then print as n/a)")
    args = parser.parse_args()
    sluice = os.path.abspath(args.sluice)
    data = tempfile.mkdtemp(prefix="sluice-replication-bench-")
    sizes = [100, 1024]
    results = {}

    # 1. A single node, RF 1.
    single = f"127.0.0.1:{args.port + 50}"
    node = subprocess.Popen([sluice, "broker", "--data-dir", os.path.join(data, "single"), "--set", f"listeners={single}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait("the single node", 30, lambda: admin(single).list_topics(timeout=2) is not None)
        for size in ([] if args.skip_single else sizes):
            create(single, f"single-{size}", 1)
            results[("rf1", size)] = perf(args.perf, single, f"single-{size}", size, args.messages)
            print(f"single node, RF 1, acks=all, {size} B: {results[('rf1', size)][0]} msgs/s, {results[('rf1', size)][1]:.1f} MB/s", flush=True)
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(30)

    # 2. Three nodes, RF 3.
    commands = []
    for i, command in enumerate(node_commands(sluice, os.path.join(data, "cluster"), args.port)):
        http = f"127.0.0.1:{args.port + 200 + i}"
        commands.append(command + [
            "--set", f"broker.session.timeout.ms={args.session_ms}",
            "--set", f"broker.heartbeat.interval.ms={max(50, args.session_ms // 6)}",
            "--set", f"admin.http.listener={http}",
        ] + [a for kv in args.set for a in ("--set", kv)])
    addresses = [f"127.0.0.1:{args.port + i}" for i in range(3)]
    https = [f"127.0.0.1:{args.port + 200 + i}" for i in range(3)]
    bootstrap = ",".join(addresses)
    logs = [open(os.path.join(data, f"node-{i + 1}.log"), "ab") for i in range(3)]
    nodes = [subprocess.Popen(c, stdout=logs[i], stderr=logs[i], stdin=subprocess.DEVNULL) for i, c in enumerate(commands)]
    try:
        wait("the cluster", 60, lambda: len(admin(bootstrap).list_topics(timeout=2).brokers) == 3)
        for size in sizes:
            topic = f"replicated-{size}"
            create(bootstrap, topic, 3, {"min.insync.replicas": "2"})
            wait("a full ISR", 30, lambda: len(placement(bootstrap, topic)[1]) == 3)
            leader = placement(bootstrap, topic)[0]
            sampled, samples = threading.Event(), []
            sampler = threading.Thread(target=sample_lag, args=(https[leader - 1], sampled, samples))
            sampler.start()
            results[("rf3", size)] = perf(args.perf, bootstrap, topic, size, args.messages)
            sampled.set()
            sampler.join()
            rf3, rf1 = results[("rf3", size)], results.get(("rf1", size))
            lag = f"uncommitted records at the leader: p50 {percentile(samples, 0.5):.0f}, p99 {percentile(samples, 0.99):.0f}, max {max(samples):.0f} over {len(samples)} samples" if samples else "no lag samples"
            ratio = f"{100 * rf3[0] / rf1[0]:.0f}% of RF 1" if rf1 else "RF 1 not measured"
            print(f"3 nodes, RF 3, min.insync.replicas=2, acks=all, {size} B: {rf3[0]} msgs/s, {rf3[1]:.1f} MB/s "
                  f"({ratio}); {lag}", flush=True)

        # 3. Failover under an idempotent acks=all producer.
        topic = "failover"
        create(bootstrap, topic, 3, {"min.insync.replicas": "2"})
        acks = []
        failures = []
        lock = threading.Lock()

        def delivered(err, msg):
            # When the write was sent and when its acknowledgement was seen: only a write
            # sent after a kill proves the new leader took it.
            sent = float(msg.value().decode())
            with lock:
                (failures if err else acks).append((sent, time.perf_counter()))

        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                             "linger.ms": 1, "topic.metadata.refresh.interval.ms": 1000})
        running = threading.Event()
        running.set()

        def produce():
            i = 0
            while running.is_set():
                producer.produce(topic, repr(time.perf_counter()).encode(), on_delivery=delivered)
                producer.poll(0)
                i += 1
                time.sleep(0.001)
            producer.flush(30)

        writer = threading.Thread(target=produce)
        writer.start()
        recoveries = []
        for k in range(args.kills):
            wait("a full ISR", 60, lambda: len(placement(bootstrap, topic)[1]) == 3)
            leader = placement(bootstrap, topic)[0]
            victim = leader - 1
            nodes[victim].send_signal(signal.SIGKILL)
            killed = time.perf_counter()
            nodes[victim].wait()

            def acked_after():
                with lock:
                    return any(sent > killed for sent, _ in acks[-50:])
            wait("a write acknowledged after the kill", 60, acked_after)
            with lock:
                first = min(seen for sent, seen in acks if sent > killed)
            recoveries.append(first - killed)
            print(f"kill {k + 1} at {time.strftime('%H:%M:%S')}: leader {leader}, first write sent after the kill acknowledged after {recoveries[-1]:.2f} s", flush=True)
            nodes[victim] = subprocess.Popen(commands[victim], stdout=logs[victim], stderr=logs[victim], stdin=subprocess.DEVNULL)
        running.clear()
        writer.join()
        if recoveries:
            print(f"leader SIGKILL to the first acknowledged write, {len(recoveries)} kills "
                  f"(broker.session.timeout.ms={args.session_ms}): p50 {percentile(recoveries, 0.5):.2f} s, "
                  f"p99 {percentile(recoveries, 0.99):.2f} s, max {max(recoveries):.2f} s; "
                  f"{len(acks)} writes acknowledged, {len(failures)} failed")
    finally:
        stop(nodes)


if __name__ == "__main__":
    main()
