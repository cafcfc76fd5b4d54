#!/usr/bin/env python3
"""Rebalance speed: time from a 4th consumer joining a group of 3 to all 4 owning
partitions again, rebalance timeout 30 s, on an 8-partition topic.

librdkafka (confluent-kafka workers, compat/python/group_worker.py) and the Java client
(compat/java/JavaClientCheck.java, scenario rebalance-bench), against a fresh Sluice broker.

usage: bench/rebalance.py --sluice target/release/sluice [--java-classpath CP] [--rounds 5]
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "..", "compat", "python", "group_worker.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    def __init__(self, bootstrap, group, topic):
        env = {**os.environ, "REBALANCE_TIMEOUT_MS": "30000"}
        self.proc = subprocess.Popen(
            [sys.executable, WORKER, bootstrap, group, topic, "confluent", "range", ""],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        self.joined = None
        self.assignments = []  # (time, partitions)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            parts = line.split()
            if parts[:1] == ["JOINING"]:
                self.joined = float(parts[1])
            elif parts[:1] == ["ASSIGNMENT"]:
                owned = set(map(int, parts[2].split(","))) if len(parts) > 2 else set()
                self.assignments.append((float(parts[1]), owned))

    def owned_since(self, t):
        later = [a for a in self.assignments if a[0] >= t]
        return later[-1] if later else None

    def stop(self):
        try:
            self.proc.stdin.write("STOP\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        self.proc.wait(30)


def wait(what, predicate, timeout=60):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.01)


def librdkafka_round(bootstrap, topic, group):
    workers = [Worker(bootstrap, group, topic) for _ in range(3)]

    def covered(ws, since):
        last = [w.owned_since(since) for w in ws]
        return all(a and a[1] for a in last) and sum(len(a[1]) for a in last) == 8

    wait("3 workers", lambda: covered(workers, 0))
    fourth = Worker(bootstrap, group, topic)
    workers.append(fourth)
    wait("the 4th worker to subscribe", lambda: fourth.joined is not None)
    t0 = fourth.joined
    wait("4 workers", lambda: covered(workers, t0))
    done = max(w.owned_since(t0)[0] for w in workers)
    for w in workers:
        w.stop()
    return (done - t0) * 1000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sluice", required=True)
    parser.add_argument("--java-classpath")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    data = tempfile.mkdtemp(prefix="sluice-rebalance-")
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = subprocess.Popen([args.sluice, "broker", "--data-dir", data, "--listen", bootstrap],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "SLUICE_LOG": "warn"})
    try:
        wait("the broker", lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0)
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("rb", 8, 1)])["rb"].result(30)
        times = [librdkafka_round(bootstrap, "rb", f"rb-{i}") for i in range(args.rounds)]
        print(f"librdkafka {__import__('confluent_kafka').libversion()[0]} (confluent-kafka): "
              f"median {statistics.median(times):.0f} ms, all {[round(t) for t in times]}")
        if args.java_classpath:
            out = subprocess.run(["java", "-cp", args.java_classpath, "JavaClientCheck", bootstrap, "rebalance-bench"],
                                 capture_output=True, text=True, timeout=600)
            java = [float(l.split()[1]) for l in out.stdout.splitlines() if l.startswith("REBALANCE_MS")]
            if not java:
                sys.exit(f"java bench failed: {out.stdout}\n{out.stderr}")
            print(f"Java client 4.3.0: median {statistics.median(java):.0f} ms, all {[round(t) for t in java]}")
    finally:
        broker.terminate()
        broker.wait(30)


if __name__ == "__main__":
    main()
