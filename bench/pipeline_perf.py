#!/usr/bin/env python3
"""Load test of the metrics pipeline (`sluice pipeline` / `sluice ingest` + `sluice sink`).

Starts a private PostgreSQL (initdb in a temporary directory, as the `postgres` user when run
as root), then for each mode:
  embedded  one `sluice pipeline --embedded` process (gateway, broker and sink inside)
  broker    a `sluice broker` process, a `sluice ingest` process and a `sluice sink` process
drives it with wrk (keep-alive HTTP/1.1):
  - single-metric POSTs at each concurrency (--clients), every request a different series;
  - the batch endpoint: POSTs of --batch metrics each;
then measures the sink alone: a new consumer group and table reading everything the topic
holds into PostgreSQL, in rows/s; and reports end-to-end delay (message timestamp at the
gateway → database commit) from the sink's Prometheus histogram during the single-metric runs.

Usage: python3 bench/pipeline_perf.py --sluice target/release/sluice [--seconds 15]
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

SINGLE_LUA = r"""
local n = 0
request = function()
  n = n + 1
  local body = '{"name":"bench_cpu","value":' .. n .. ',"labels":{"host":"h' .. (n % 1000) .. '","thread":"' .. tostring(id) .. '"}}'
  return wrk.format("POST", "/api/v1/metrics", {["Content-Type"] = "application/json"}, body)
end
setup = function(thread) thread:set("id", tostring(thread)) end
"""

BATCH_LUA_TEMPLATE = r"""
local items = {}
for i = 1, %d do
  items[i] = '{"name":"bench_batch","value":' .. i .. ',"labels":{"host":"h' .. (i %% 1000) .. '"}}'
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = "[" .. table.concat(items, ",") .. "]"
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


class Postgres:
    def __init__(self):
        bindirs = sorted(d for d in os.listdir("/usr/lib/postgresql"))
        self.bin = f"/usr/lib/postgresql/{bindirs[-1]}/bin"
        self.dir = tempfile.mkdtemp(prefix="sluice-pg-")
        self.root = os.geteuid() == 0
        if self.root:
            shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        self.run("initdb", "--auth=trust", "--username=postgres", "--no-sync", "-D", self.data)
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=300"
        self.run("pg_ctl", "-D", self.data, "-o", opts, "-l", f"{self.dir}/log", "-w", "start")

    @property
    def data(self):
        return f"{self.dir}/data"

    def run(self, program, *args):
        cmd = [f"{self.bin}/{program}", *args]
        if self.root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def query(self, sql):
        out = subprocess.run(
            [f"{self.bin}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-X", "-A", "-t", "-c", sql],
            check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def stop(self):
        self.run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def start(args, env=None):
    e = dict(os.environ, SLUICE_LOG="warn,librdkafka=error")
    e.update(env or {})
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=None, env=e, text=True)
    first = proc.stdout.readline()
    return proc, first


def stop(proc):
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def wrk(url, clients, seconds, script):
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", str(clients), "-d", f"{seconds}s", "--latency", "-s", f.name, url],
        capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errors = 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors = sum(int(x) for x in m.groups())

    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    ok = requests - non2xx - errors
    return {"requests": requests, "rps": rps, "p50_ms": pct(50), "p99_ms": pct(99),
            "success": ok / requests if requests else 0.0, "non2xx": non2xx, "errors": errors}


def prometheus(addr):
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as r:
        return r.read().decode()


def histogram(text, name):
    buckets = []
    for m in re.finditer(rf'^{name}_bucket{{le="([^"]+)"}} (\d+)$', text, re.M):
        buckets.append((float("inf") if m.group(1) == "+Inf" else float(m.group(1)), int(m.group(2))))
    total = float(re.search(rf"^{name}_sum{{}} ([\d.e+-]+)$", text, re.M).group(1))
    count = int(re.search(rf"^{name}_count{{}} (\d+)$", text, re.M).group(1))
    return buckets, total, count


def delta_quantiles(before, after):
    """p50/p99 upper bucket bounds and the mean of what was observed between two scrapes."""
    (b0, s0, c0), (b1, s1, c1) = before, after
    count = c1 - c0
    if count <= 0:
        return None
    diff = [(le, n1 - n0) for (le, n1), (_, n0) in zip(b1, b0)]

    def q(p):
        for le, n in diff:
            if n >= p * count:
                return le * 1000
        return float("inf")

    return {"mean_ms": (s1 - s0) / count * 1000, "p50_le_ms": q(0.5), "p99_le_ms": q(0.99),
            "count": count}


def wait_stable(pg, table, polls=3, interval=0.5, timeout=900):
    """Waits until the row count of `table` stops changing (a sink has caught up)."""
    last, stable, deadline = -1, 0, time.time() + timeout
    while time.time() < deadline:
        try:
            n = int(pg.query(f"SELECT count(*) FROM {table}"))
        except subprocess.CalledProcessError:
            n = 0
        stable = stable + 1 if n == last else 0
        if stable >= polls:
            return n
        last = n
        time.sleep(interval)
    raise RuntimeError(f"{table} never stopped growing")


def run_mode(mode, sluice, pg, seconds, clients_list, batch, partitions):
    work = tempfile.mkdtemp(prefix=f"sluice-pipeline-{mode}-")
    listen = f"127.0.0.1:{free_port()}"
    procs = []
    common = ["--database-url", pg.url(), "--partitions", str(partitions)]
    if mode == "embedded":
        proc, first = start([sluice, "pipeline", "--embedded", "--data-dir", f"{work}/data",
                             "--listen", listen, *common])
        procs.append(proc)
        bootstrap = first.rsplit("log at ", 1)[1].strip()
        metrics_addr = listen
    else:
        port = free_port()
        bootstrap = f"127.0.0.1:{port}"
        broker = subprocess.Popen([sluice, "broker", "--listen", bootstrap, "--data-dir", f"{work}/data"],
                                  env=dict(os.environ, SLUICE_LOG="warn"))
        procs.append(broker)
        wait_port(port)
        proc, _ = start([sluice, "ingest", "-b", bootstrap, "--listen", listen, *common])
        procs.append(proc)
        metrics_addr = f"127.0.0.1:{free_port()}"
        proc, _ = start([sluice, "sink", "-b", bootstrap, *common, "--metrics-listen", metrics_addr])
        procs.append(proc)
    url = f"http://{listen}/api/v1/metrics"
    results = {"mode": mode, "single": [], "batch": None}
    wrk(url, 20, 3, SINGLE_LUA)  # warm-up: connections, topic metadata, table
    wait_stable(pg, "metrics")
    for clients in clients_list:
        before = histogram(prometheus(metrics_addr), "sluice_sink_end_to_end_seconds")
        r = wrk(url, clients, seconds, SINGLE_LUA)
        time.sleep(2)
        after = histogram(prometheus(metrics_addr), "sluice_sink_end_to_end_seconds")
        r["clients"] = clients
        r["end_to_end"] = delta_quantiles(before, after)
        results["single"].append(r)
        print(json.dumps({"mode": mode, **r}), flush=True)
        wait_stable(pg, "metrics")
    def batch_run(key, sink_running):
        r = wrk(url, 8, seconds, BATCH_LUA_TEMPLATE % batch)
        r.update(clients=8, metrics_per_request=batch, metrics_per_s=r["rps"] * batch,
                 sink_running=sink_running)
        results[key] = r
        print(json.dumps({"mode": mode, key: r}), flush=True)

    batch_run("batch", True)
    if mode == "broker":
        # The gateway on its own: the sink stopped, the broker and the gateway keep the cores.
        stop(procs.pop())
        batch_run("batch_gateway_only", False)
        stop(procs.pop())
    else:
        # The embedded sink catches up first, so that it does not compete with the next one.
        wait_stable(pg, "metrics", polls=6)

    # The sink alone: a fresh group and table read everything in the topic. In broker mode
    # the gateway and the first sink are stopped; in embedded mode they stay up, idle.
    table = f"sink_bench_{mode}"
    sink, _ = start([sluice, "sink", "-b", bootstrap, "--database-url", pg.url(), "--table", table,
                     "--group", f"bench-{mode}-{time.time_ns()}", "--partitions", str(partitions)])
    total = None
    first_seen = None
    deadline = time.time() + 600
    last = 0
    stable = 0
    while time.time() < deadline:
        try:
            n = int(pg.query(f"SELECT count(*) FROM {table}"))
        except subprocess.CalledProcessError:
            n = 0
        if n > 0 and first_seen is None:
            first_seen = (time.time(), n)
        stable = stable + 1 if (first_seen and n == last) else 0
        if stable >= 3:
            total = n
            break
        last = n
        time.sleep(0.5)
    end = time.time()
    stop(sink)
    # The last three polls (1.5 s) saw no new rows: take them off.
    elapsed = end - first_seen[0] - 1.5
    results["sink"] = {"rows": total, "rows_per_s": (total - first_seen[1]) / elapsed}
    print(json.dumps({"mode": mode, "sink": results["sink"]}), flush=True)
    for proc in reversed(procs):
        if proc.poll() is None:
            stop(proc)
    shutil.rmtree(work, ignore_errors=True)
    return results


PGBENCH_SQL = r"""
\set host random(0, 999)
INSERT INTO direct_metrics (time, name, value, labels, source_topic, source_partition, source_offset)
VALUES (now(), 'bench_cpu', :client_id, jsonb_build_object('host', 'h' || :host), 'direct', :client_id, nextval('direct_offsets'));
"""


def run_pgbench(pg, seconds, clients_list):
    """The peer: each request a durable single-row INSERT straight into PostgreSQL (what a
    service without the log would do), same table layout and indexes, same durability
    (synchronous commit)."""
    pg.query("""CREATE TABLE IF NOT EXISTS direct_metrics (
        time timestamptz NOT NULL, name text NOT NULL, value double precision NOT NULL,
        labels jsonb NOT NULL DEFAULT '{}', source_topic text NOT NULL,
        source_partition integer NOT NULL, source_offset bigint NOT NULL,
        PRIMARY KEY (source_topic, source_partition, source_offset));
        CREATE INDEX IF NOT EXISTS direct_name_time ON direct_metrics (name, time DESC);
        CREATE INDEX IF NOT EXISTS direct_time ON direct_metrics (time DESC);
        CREATE SEQUENCE IF NOT EXISTS direct_offsets;""")
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(PGBENCH_SQL)
    os.chmod(f.name, 0o644)
    results = []
    for clients in clients_list:
        out = subprocess.run(
            [f"{pg.bin}/pgbench", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-n",
             "-c", str(clients), "-j", "2", "-T", str(seconds), "-f", f.name, "postgres"],
            capture_output=True, text=True, check=True).stdout
        tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
        latency = float(re.search(r"latency average = ([\d.]+) ms", out).group(1))
        failed = int(m.group(1)) if (m := re.search(r"number of failed transactions: (\d+)", out)) else 0
        r = {"clients": clients, "tps": tps, "latency_avg_ms": latency, "failed": failed}
        results.append(r)
        print(json.dumps({"mode": "pgbench", **r}), flush=True)
    os.unlink(f.name)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sluice", default="target/release/sluice")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--clients", default="20,50,100,200")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--modes", default="embedded,broker,pgbench")
    parser.add_argument("--json", help="write all results here")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    pg = Postgres()
    try:
        clients = [int(c) for c in args.clients.split(",")]
        results = [run_mode(mode, args.sluice, pg, args.seconds, clients, args.batch, args.partitions)
                   for mode in args.modes.split(",") if mode != "pgbench"]
        peer = run_pgbench(pg, args.seconds, clients) if "pgbench" in args.modes else []
    finally:
        pg.stop()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"pipeline": results, "pgbench": peer}, f, indent=1)
    for r in results:
        print(f"\n{r['mode']}: single-metric requests")
        print("clients  req/s     p50 ms  p99 ms  success   e2e mean/p50/p99 ms")
        for s in r["single"]:
            e = s["end_to_end"] or {}
            print(f"{s['clients']:>7}  {s['rps']:>8.0f}  {s['p50_ms']:>6.2f}  {s['p99_ms']:>6.2f}  "
                  f"{s['success'] * 100:>6.2f}%   {e.get('mean_ms', 0):.1f}/≤{e.get('p50_le_ms', 0):g}/≤{e.get('p99_le_ms', 0):g}")
        for key, what in (("batch", "sink running"), ("batch_gateway_only", "sink stopped")):
            if b := r.get(key):
                print(f"batch ({b['metrics_per_request']}/request, {b['clients']} clients, {what}): "
                      f"{b['metrics_per_s']:.0f} metrics/s, p99 {b['p99_ms']:.1f} ms, success {b['success'] * 100:.2f}%")
        print(f"sink alone: {r['sink']['rows_per_s']:.0f} rows/s ({r['sink']['rows']} rows)")
    if peer:
        print("\npeer: one durable INSERT per request straight into PostgreSQL (pgbench)")
        print("clients  tps       latency avg ms  failed")
        for p in peer:
            print(f"{p['clients']:>7}  {p['tps']:>8.0f}  {p['latency_avg_ms']:>14.2f}  {p['failed']}")


if __name__ == "__main__":
    main()
