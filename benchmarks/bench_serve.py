"""Policy-server speed over loopback (issue 7): round trip p50/p99, throughput, server overhead.

The server runs in its own process (as in deployment); clients are separate processes (one per
simulated robot) sending LIBERO-style observations: two 224×224×3 uint8 cameras + state + prompt.
Overhead = round-trip p50 − in-process ``policy.infer`` p50 for the same observation, i.e. what
msgpack-numpy, websockets, the thread hop and loopback TCP add per request.

    .venv/bin/python benchmarks/bench_serve.py [--requests 300]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np

from vlastack.serving.toy import ToyPolicy, example_observation


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    port: int, delay_ms: float = 0.0, batch_window_ms: float = 0.0
) -> subprocess.Popen:
    code = (
        "import logging; logging.basicConfig(level=logging.WARNING);"
        "from vlastack.serving.server import run_server; from vlastack.serving.toy import ToyPolicy;"
        f"run_server(ToyPolicy('libero', delay_s={delay_ms / 1000}), port={port}, batch_window_ms={batch_window_ms}, reset_on_connect=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def client_worker(port: int, n: int, start_at: float, out: mp.Queue) -> None:
    from vlastack.serving.client import PolicyClient

    obs = example_observation("libero", image_size=224)
    with PolicyClient("127.0.0.1", port) as client:
        for _ in range(3):
            client.infer(obs)  # warm-up
        while time.time() < start_at:
            time.sleep(0.001)
        lat = []
        t0 = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            client.infer(obs)
            lat.append((time.perf_counter() - t) * 1000)
        out.put((lat, time.perf_counter() - t0))


def run_clients(port: int, num_clients: int, requests_each: int) -> dict:
    q: mp.Queue = mp.Queue()
    start_at = time.time() + 1.0 + 0.1 * num_clients
    procs = [
        mp.Process(target=client_worker, args=(port, requests_each, start_at, q))
        for _ in range(num_clients)
    ]
    for p in procs:
        p.start()
    results = [q.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    lat = np.concatenate([r[0] for r in results])
    wall = max(r[1] for r in results)
    return {
        "clients": num_clients,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "req_per_s": float(len(lat) / wall),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--requests", type=int, default=300, help="requests per client for the 1-client run"
    )
    args = ap.parse_args()

    policy, obs = ToyPolicy("libero"), example_observation("libero", image_size=224)
    for _ in range(20):
        policy.infer(obs)
    t = []
    for _ in range(args.requests):
        t0 = time.perf_counter()
        policy.infer(obs)
        t.append((time.perf_counter() - t0) * 1000)
    inproc_p50 = float(np.percentile(t, 50))
    frame_kb = len(__import__("vlastack.serving.protocol", fromlist=["packb"]).packb(obs)) / 1024
    print(f"observation frame {frame_kb:.0f} KiB; in-process infer p50 {inproc_p50:.3f} ms")

    rows = []
    print(f"{'policy':<22} {'batch':>6} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    configs = [(0.0, 0.0, n) for n in (1, 4, 16)] + [(10.0, 0.0, 16), (10.0, 5.0, 16)]
    for delay_ms, window_ms, n in configs:
        port = free_port()
        server = start_server(port, delay_ms, window_ms)
        try:
            each = args.requests if n == 1 else max(20, args.requests // n * 2)
            row = {
                "policy_delay_ms": delay_ms,
                "batch_window_ms": window_ms,
                **run_clients(port, n, each),
            }
        finally:
            server.terminate()
            server.wait(10)
        rows.append(row)
        label = f"toy +{delay_ms:.0f} ms sleep" if delay_ms else "toy (no sleep)"
        print(
            f"{label:<22} {window_ms:>4.0f}ms {n:>7d} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['req_per_s']:>8.0f}",
            flush=True,
        )
    overhead = rows[0]["p50_ms"] - inproc_p50
    print(f"server overhead at p50 (1 client): {overhead:.2f} ms (target < 2 ms)")
    print(
        json.dumps(
            {
                "bench": "serve",
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                "frame_kib": frame_kb,
                "inprocess_p50_ms": inproc_p50,
                "overhead_p50_ms": overhead,
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
