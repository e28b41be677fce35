"""Serve benchmark: latency of `harness serve` under concurrent uploads, over real HTTP.

Starts `harness serve MODEL_DIR` as its own process on a free loopback port, sends REQUESTS uploads
of the given images from THREADS client threads (multipart POST /predict, as a browser would) and
prints the latency percentiles, the throughput and the count of non-200 answers.

    python benchmarks/serve_benchmark.py results/demo/export/cnn5 results/demo/export/cnn5/examples
    python benchmarks/serve_benchmark.py MODEL_DIR IMAGES… --requests 500 --threads 16
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def upload(url: str, data: bytes, name: str) -> int:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/predict", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            json.loads(response.read())
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("images", type=Path, nargs="+", help="image files or folders of them")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    files = [p for path in args.images for p in (sorted(path.rglob("*")) if path.is_dir() else [path]) if p.is_file()]
    payloads = [(f.read_bytes(), f.name) for f in files]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "harness", "serve", str(args.model_dir), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        started = time.perf_counter()
        while True:
            if server.poll() is not None:
                print(server.stderr.read(), file=sys.stderr)
                return 2
            try:
                urllib.request.urlopen(f"{url}/health", timeout=5).read()
                break
            except OSError:
                time.sleep(0.2)
        print(f"server up in {time.perf_counter() - started:.1f} s (model loaded once)")
        for data, name in payloads[:3]:
            upload(url, data, name)  # warm-up: the first call traces the model
        latencies: list[float] = []
        statuses: list[int] = []
        lock = threading.Lock()
        per_thread = args.requests // args.threads

        def client(k: int) -> None:
            for i in range(per_thread):
                data, name = payloads[(k + i) % len(payloads)]
                t0 = time.perf_counter()
                status = upload(url, data, name)
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    statuses.append(status)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.threads)]
        wall = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - wall
        ms = np.array(latencies) * 1000
        errors = sum(s != 200 for s in statuses)
        print(f"{len(ms)} requests from {args.threads} threads, {len(payloads)} distinct images, "
              f"{errors} not 200")
        print(f"latency p50 {np.percentile(ms, 50):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms, "
              f"p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms")
        print(f"throughput {len(ms) / wall:.1f} requests/s")
        return 1 if errors else 0
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
