#!/usr/bin/env python3
"""`sluice bench produce|consume|e2e` against Sluice and a peer broker (tansu) in one run.

usage: bench/sluice_bench_vs.py --sluice target/release/sluice [--tansu PATH] [--messages N]
       [--data-dir DIR]

Each broker is started fresh; for every load the same `sluice bench` commands run against it
(JSON output), then a Markdown table is printed. Consumers assign partitions themselves
(`--assign`): tansu's in-memory mode serves no consumer group to librdkafka's subscribe, and
it keeps the group protocol out of the comparison.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"broker on {port} did not start")


def bench(sluice, bootstrap, kind, *args):
    cmd = [sluice, "bench", kind, "--bootstrap-server", bootstrap, "--json", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "SLUICE_LOG": "warn"})
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sluice", required=True)
    parser.add_argument("--tansu")
    parser.add_argument("--messages", type=int, default=2_000_000)
    parser.add_argument("--data-dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    brokers = [("sluice", lambda d, p: [args.sluice, "broker", "--data-dir", d, "--listen", f"127.0.0.1:{p}"])]
    if args.tansu:
        brokers.append(("tansu", lambda d, p: [args.tansu, "broker", "--listener-url", f"tcp://127.0.0.1:{p}",
                                              "--advertised-listener-url", f"tcp://127.0.0.1:{p}",
                                              "--storage-engine", "memory://tansu/"]))
    rows = []
    for name, command in brokers:
        data = tempfile.mkdtemp(prefix=f"bench-{name}-", dir=args.data_dir)
        port = free_port()
        proc = subprocess.Popen(command(os.path.join(data, "data"), port), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={**os.environ, "SLUICE_LOG": "warn"})
        try:
            wait_listening(port)
            bootstrap = f"127.0.0.1:{port}"
            for size in (100, 1024):
                count = args.messages if size == 100 else args.messages // 4
                for parts in (1, 16):
                    for acks in ("1", "all"):
                        topic = f"load-{size}-{parts}-{acks}"
                        p = bench(args.sluice, bootstrap, "produce", "--topic", topic, "--partitions", str(parts),
                                  "-s", f"{size}B", "-n", str(count), "--acks", acks)
                        c = bench(args.sluice, bootstrap, "consume", "--topic", topic, "-n", str(count), "--assign")
                        rows.append((name, size, parts, acks, p, c))
                        print(name, size, parts, acks, json.dumps(p), json.dumps(c), flush=True)
            e = bench(args.sluice, bootstrap, "e2e", "--topic", "e2e", "--rate", "10000", "--duration", "10",
                      "--acks", "all", "--assign")
            rows.append((name, "e2e", 1, "all", e, None))
            print(name, "e2e", json.dumps(e), flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
            shutil.rmtree(data, ignore_errors=True)

    def lat(r):
        l = r.get("latency_ms") or {}
        return " / ".join(f"{l.get(k, 0):.1f}" for k in ("p50", "p99", "p99_9", "max")) if l else ""

    print("\n| broker | msg size | partitions | acks | produce msgs/s | produce MB/s | produce latency p50 / p99 / p99.9 / max ms | consume msgs/s | consume MB/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, size, parts, acks, p, c in rows:
        if size == "e2e":
            continue
        ptxt = f"{p['msgs_per_s']:,.0f} | {p['mb_per_s']:.1f} | {lat(p)}" if "error" not in p else f"failed: {p['error']} | | "
        ctxt = f"{c['msgs_per_s']:,.0f} | {c['mb_per_s']:.1f}" if c and "error" not in c else f"failed: {c['error'] if c else ''} | "
        print(f"| {name} | {size} | {parts} | {acks} | {ptxt} | {ctxt} |")
    print("\n| broker | e2e messages (10 s at 10,000/s, acks=all) | latency p50 / p99 / p99.9 / max ms |")
    print("| --- | ---: | ---: |")
    for name, size, _, _, e, _ in rows:
        if size == "e2e":
            print(f"| {name} | {e.get('messages', 'failed: ' + e.get('error', ''))} | {lat(e)} |")


if __name__ == "__main__":
    main()
