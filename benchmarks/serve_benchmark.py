"""Serve benchmark: `harness serve` on each runtime side by side, under concurrent uploads, over real HTTP.

For each runtime (Keras and ONNX, those the model folder holds) starts `harness serve MODEL_DIR
--runtime R` as its own process on a free loopback port and measures its start-up (process start
to the first answer of /health), then sends REQUESTS uploads of the given images from THREADS
client threads (multipart POST /predict, as a browser would) and prints the latency percentiles,
the throughput, the count of non-200 answers, the server's resident memory (RSS, after the run) and
whether it loaded TensorFlow. Both runtimes must give the same top class for every image.

    harness export results/demo --format keras,onnx
    python benchmarks/serve_benchmark.py results/demo/export/cnn5-small-head results/demo/export/cnn5-small-head/examples
    python benchmarks/serve_benchmark.py MODEL_DIR IMAGES… --requests 500 --threads 16 --runtimes onnx
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, data: bytes, name: str) -> urllib.request.Request:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return urllib.request.Request(f"{url}/predict", data=body,
                                  headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})


def upload(url: str, data: bytes, name: str) -> int:
    try:
        with urllib.request.urlopen(_request(url, data, name), timeout=120) as response:
            json.loads(response.read())
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def start(model_dir: Path, runtime: str) -> tuple[subprocess.Popen, str, float]:
    """`harness serve` on ``runtime``, up: the process, its URL and its start-up seconds."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile("w+")  # not a pipe: uvicorn logs every request, a full pipe would block it
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "harness", "serve", str(model_dir), "--port", str(port),
                               "--runtime", runtime], stdout=subprocess.DEVNULL, stderr=log, text=True)
    while True:
        if server.poll() is not None:
            log.seek(0)
            raise SystemExit(f"harness serve --runtime {runtime} stopped: {log.read()[-2000:]}")
        try:
            urllib.request.urlopen(f"{url}/health", timeout=5).read()
            return server, url, time.perf_counter() - started
        except OSError:
            time.sleep(0.05)


def load(url: str, payloads: list, requests: int, threads: int) -> tuple[np.ndarray, int, float]:
    """Latencies (s), the count of non-200 answers and the wall seconds of ``requests`` uploads."""
    latencies: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        for i in range(requests // threads):
            data, name = payloads[(k + i) % len(payloads)]
            t0 = time.perf_counter()
            status = upload(url, data, name)
            with lock:
                latencies.append(time.perf_counter() - t0)
                statuses.append(status)

    workers = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
    wall = time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return np.array(latencies), sum(s != 200 for s in statuses), time.perf_counter() - wall


def top_classes(url: str, payloads: list) -> list[int]:
    return [answer(url, data, name)["predictions"][0]["label_id"] for data, name in payloads]


def answer(url: str, data: bytes, name: str) -> dict:
    with urllib.request.urlopen(_request(url, data, name), timeout=120) as response:
        return json.loads(response.read())


def measure(model_dir: Path, runtime: str, payloads: list, args) -> dict:
    server, url, startup = start(model_dir, runtime)
    try:
        process = psutil.Process(server.pid)
        idle_rss = process.memory_info().rss
        for data, name in payloads[:3]:
            upload(url, data, name)  # warm-up: the first call traces the model
        ms, errors, wall = load(url, payloads, args.requests, args.threads)
        ms = ms * 1000
        tensorflow = any("tensorflow" in m.path for m in process.memory_maps())
        return {"runtime": runtime, "startup": startup, "idle_rss": idle_rss, "rss": process.memory_info().rss,
                "p50": np.percentile(ms, 50), "p95": np.percentile(ms, 95), "p99": np.percentile(ms, 99),
                "rps": len(ms) / wall, "requests": len(ms), "errors": errors, "tensorflow": tensorflow,
                "top": top_classes(url, payloads)}
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("images", type=Path, nargs="+", help="image files or folders of them")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--runtimes", nargs="+", choices=("keras", "onnx"), default=None,
                        help="default: each runtime the folder holds")
    args = parser.parse_args()
    info_file = args.model_dir / "model.json"
    if not info_file.is_file():
        print(f"error: {args.model_dir}: not a model folder (no model.json); make one with harness export.",
              file=sys.stderr)
        return 2
    held = json.loads(info_file.read_text()).get("formats") or {"keras": {}}
    runtimes = args.runtimes or [r for r in ("keras", "onnx") if r in held]
    files = [p for path in args.images for p in (sorted(path.rglob("*")) if path.is_dir() else [path]) if p.is_file()]
    payloads = [(f.read_bytes(), f.name) for f in files]
    rows = [measure(args.model_dir, runtime, payloads, args) for runtime in runtimes]
    print(f"{args.requests // args.threads * args.threads} requests from {args.threads} threads, "
          f"{len(payloads)} distinct images, {os.cpu_count()} CPUs")
    print("| runtime | start-up | RSS idle | RSS after | p50 | p95 | p99 | requests/s | errors | TensorFlow loaded |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['runtime']} | {r['startup']:.1f} s | {r['idle_rss'] / 2**20:.0f} MiB | {r['rss'] / 2**20:.0f} MiB "
              f"| {r['p50']:.1f} ms | {r['p95']:.1f} ms | {r['p99']:.1f} ms | {r['rps']:.1f} | {r['errors']} "
              f"| {'yes' if r['tensorflow'] else 'no'} |")
    if len(rows) > 1 and any(r["top"] != rows[0]["top"] for r in rows):
        print("the runtimes disagree on a top class", file=sys.stderr)
        return 1
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
