"""What the cluster benchmarks share: percentiles, waiting for a condition while nodes may
be down, the node commands `sluice dev cluster --print-commands` prints, and stopping the
nodes."""

import shlex
import signal
import subprocess
import sys
import time


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def wait(what, deadline_s, check):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - a node that is down answers with errors
            pass
        time.sleep(0.02)
    sys.exit(f"timed out waiting for {what}")


def node_commands(sluice, data, port, nodes=3):
    """The `sluice broker` command of each node of a dev cluster, run with `sluice`."""
    out = subprocess.run(
        [sluice, "dev", "cluster", "--nodes", str(nodes), "--data-dir", data, "--port", str(port), "--print-commands"],
        check=True, capture_output=True, text=True,
    ).stdout
    # "sluice broker ..." → our binary.
    return [[sluice] + shlex.split(line)[1:] for line in out.splitlines()]


def stop(nodes):
    """SIGTERM (controlled shutdown) to every node still running, SIGKILL after 30 s."""
    for node in nodes:
        if node.poll() is None:
            node.send_signal(signal.SIGTERM)
    for node in nodes:
        try:
            node.wait(30)
        except subprocess.TimeoutExpired:
            node.kill()
