#!/usr/bin/env python3
"""Broker CPU per consumed message, two Sluice builds side by side, consume only.

Starts both brokers, produces --messages 100-byte messages once into a one-partition topic
of each (rdkafka_performance, fixed batches), then reads them all from the beginning
--rounds times per broker, the builds alternated, and reports broker CPU per message from
schedstat (the helpers of bench/broker_perf.py). A consume phase of a second or two is too
short to compare inside broker_perf.py's produce-then-consume rounds; repeating only the
consume gives a steadier figure.

usage: bench/consume_cpu.py --perf PATH --sluice PATH --baseline PATH [--messages N] [--rounds N]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import broker_perf as bp  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--perf", required=True)
    parser.add_argument("--sluice", required=True)
    parser.add_argument("--baseline", required=True)
    parser.add_argument("--messages", type=int, default=4_000_000)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    builds = {"sluice": args.sluice, "base": args.baseline}
    brokers = {}
    try:
        for name, binary in builds.items():
            data = tempfile.mkdtemp(dir=args.data_dir)
            port = bp.free_port()
            process = bp.start_sluice(binary, data, port, [])
            bp.wait_for(port)
            bootstrap = f"127.0.0.1:{port}"
            brokers[name] = (process, bootstrap, data)
            bp.create_topics(bootstrap, [("consume-cpu", 1)])
            if bp.produce(args.perf, bootstrap, "consume-cpu", 1, 100, args.messages, 1, "plain", fixed=True) is None:
                sys.exit(f"{name}: producing the messages failed")
        results = {name: [] for name in builds}
        for _ in range(args.rounds):
            for name, (process, bootstrap, _) in brokers.items():
                before = bp.cpu_seconds(process.pid)
                consumed = bp.consume(args.perf, bootstrap, "consume-cpu", 1, args.messages)
                if consumed is None:
                    sys.exit(f"{name}: consuming failed")
                cpu = bp.cpu_seconds(process.pid) - before
                results[name].append((cpu * 1e6 / args.messages, consumed["msgs"]))
                print(f"{name}: {results[name][-1][0]:.4f} µs/msg, {consumed['msgs']:,} msgs/s", flush=True)
    finally:
        for process, _, data in brokers.values():
            process.kill()
            process.wait()
            shutil.rmtree(data, ignore_errors=True)
    print("\n| build | mean µs/msg | median µs/msg | per round |\n| --- | ---: | ---: | --- |")
    for name, rounds in results.items():
        cpu = [c for c, _ in rounds]
        print(f"| {name} | {statistics.mean(cpu):.4f} | {statistics.median(cpu):.4f} | "
              f"{min(cpu):.4f}-{max(cpu):.4f} |")
    ratio = statistics.mean(c for c, _ in results["sluice"]) / statistics.mean(c for c, _ in results["base"])
    print(f"\nmean ratio sluice / base: {ratio:.3f}")


if __name__ == "__main__":
    main()
