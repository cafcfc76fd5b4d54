#!/usr/bin/env python3
"""A 3-node Sluice cluster (`sluice dev cluster`) measured from a client's side.

Usage: cluster_bench.py --sluice target/release/sluice [--creates 200] [--kills 20]

1. Metadata commit latency: CreateTopics of one partition each, one at a time, through
   confluent-kafka's AdminClient (the quorum commits the change on a majority, fsynced, and
   the broker that took the request has applied it before answering): p50/p99.
2. Controller failover, `--kills` times: SIGKILL the active controller's process; time
   until a surviving broker's Metadata names another controller, and until a CreateTopics
   through the survivors succeeds; then restart the node on its data and wait until it is
   live again.

Prints one line per phase. Needs confluent-kafka (pip) and nothing listening on the ports.
"""

import argparse
import os
import signal
import subprocess
import tempfile
import time

from confluent_kafka import admin as cadmin

from cluster_common import node_commands, percentile, stop, wait


def start(command, log):
    return subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL)


def metadata(bootstrap):
    client = cadmin.AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000})
    return client.list_topics(timeout=2)


def create(bootstrap, name):
    client = cadmin.AdminClient({"bootstrap.servers": bootstrap})
    futures = client.create_topics([cadmin.NewTopic(name, 1, 1)], operation_timeout=10, request_timeout=15)
    futures[name].result(20)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sluice", required=True)
    parser.add_argument("--creates", type=int, default=200)
    parser.add_argument("--kills", type=int, default=20)
    # Below the ephemeral range: a restarted node must get its ports back.
    parser.add_argument("--port", type=int, default=19092)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    data = args.data_dir or tempfile.mkdtemp(prefix="sluice-cluster-bench-")
    os.makedirs(data, exist_ok=True)
    commands = node_commands(os.path.abspath(args.sluice), data, args.port)
    addresses = [f"127.0.0.1:{args.port + i}" for i in range(3)]
    bootstrap = ",".join(addresses)
    logs = [open(os.path.join(data, f"node-{i + 1}.log"), "ab") for i in range(3)]
    nodes = [start(c, logs[i]) for i, c in enumerate(commands)]
    try:
        wait("the cluster", 60, lambda: metadata(bootstrap).controller_id > 0 and len(metadata(bootstrap).brokers) == 3)
        create(bootstrap, "warm-up")
        latencies = []
        for i in range(args.creates):
            began = time.perf_counter()
            create(bootstrap, f"latency-{i}")
            latencies.append((time.perf_counter() - began) * 1000)
        print(f"CreateTopics (1 partition), {args.creates} one at a time: p50 {percentile(latencies, 0.5):.1f} ms, "
              f"p99 {percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms")

        elections, usable = [], []
        for k in range(args.kills):
            controller = metadata(bootstrap).controller_id
            victim = controller - 1
            survivors = ",".join(a for i, a in enumerate(addresses) if i != victim)
            nodes[victim].send_signal(signal.SIGKILL)
            killed = time.perf_counter()
            nodes[victim].wait()
            wait("a new controller", 30, lambda: metadata(survivors).controller_id not in (controller, -1))
            elections.append(time.perf_counter() - killed)
            wait("CreateTopics after failover", 30, lambda: create(survivors, f"failover-{k}") is None)
            usable.append(time.perf_counter() - killed)
            nodes[victim] = start(commands[victim], logs[victim])
            # Back: it answers on its own port and knows the controller (it has registered
            # and caught up), so the next kill finds a full quorum.
            wait("the node back", 60, lambda: metadata(addresses[victim]).controller_id > 0)
        if args.kills:
            print(f"controller failover over {args.kills} SIGKILLs: new controller p50 {percentile(elections, 0.5):.2f} s, "
                  f"p99 {percentile(elections, 0.99):.2f} s, max {max(elections):.2f} s; "
                  f"CreateTopics accepted again p50 {percentile(usable, 0.5):.2f} s, p99 {percentile(usable, 0.99):.2f} s")
            print("new controller after (s, sorted):", " ".join(f"{e:.2f}" for e in sorted(elections)))
    finally:
        stop(nodes)


if __name__ == "__main__":
    main()
