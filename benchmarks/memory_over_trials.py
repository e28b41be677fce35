"""Memory over a long search (issue 30, item 4): does a search's memory stay flat over its trials?

Runs ``harness run STUDY --trials N`` as a command would be run, and after each trial's line
("trial K complete / pruned / failed") reads the resident memory of the whole process tree (the
command and every process it started: the search's training workers). Prints, per trial, the
tree's memory and its growth since the fifth trial, then the largest growth and the number of
times any process of the tree replaced itself or was replaced. E.g.

    python benchmarks/memory_over_trials.py studies/demo.toml --trials 30 --epochs 2

``--env KEY=VALUE`` runs it with an environment setting (``HARNESS_WORKER_GROWTH_MB=0`` trains in
the command's own process, as before workers recycled; add ``HARNESS_MEMORY_GROWTH_MB=0`` for no
restart at all). ``--json FILE`` keeps the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

TRIAL_END = re.compile(r"trial (\d+) (complete|pruned|failed)")


def tree_mb(root: psutil.Process) -> tuple[float, int]:
    """Resident MB of ``root`` and all its descendants, and how many processes that is."""
    total, count = 0.0, 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss / 2**20
            count += 1
        except psutil.Error:
            continue
    return total, count


def watch(command: list[str], env: dict[str, str]) -> dict:
    """Run ``command``; the tree's memory at each trial end, the peak and the pids seen."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak, pids, stop = [0.0], set(), threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                now, _ = tree_mb(root)
                peak[0] = max(peak[0], now)
                pids.update(p.pid for p in root.children(recursive=True))
            except psutil.Error:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    trials, tail, started, restarts = [], [], time.perf_counter(), 0
    for line in proc.stderr:
        tail = (tail + [line])[-40:]
        restarts += "continuing in a fresh process" in line or "a fresh worker continues" in line
        if TRIAL_END.search(line):
            try:
                mb, count = tree_mb(root)
            except psutil.Error:
                continue
            trials.append({"trial": len(trials) + 1, "mb": round(mb, 1), "processes": count,
                           "seconds": round(time.perf_counter() - started, 1)})
            print(f"  trial {len(trials):3d}: {mb:7.0f} MB in {count} process(es), {trials[-1]['seconds']} s",
                  flush=True)
    proc.wait()
    stop.set()
    sampler.join()
    return {"returncode": proc.returncode, "trials": trials, "peak_mb": round(peak[0], 1),
            "worker_pids": len(pids), "replacements": restarts, "tail": "".join(tail[-10:])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the run's environment")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.update(dict(item.split("=", 1) for item in args.env))
    with tempfile.TemporaryDirectory(prefix="memory-over-trials-") as scratch:
        command = [sys.executable, "-m", "harness", "run", str(args.study), "--trials", str(args.trials),
                   "--results", scratch]
        if args.epochs is not None:
            command += ["--epochs", str(args.epochs)]
        print(f"{' '.join(command[2:])}  ({', '.join(args.env) or 'default settings'})", flush=True)
        result = watch(command, env)
    if result["returncode"] != 0:
        print(result["tail"], file=sys.stderr)
        return 1
    trials = result["trials"]
    fifth = trials[min(4, len(trials) - 1)]["mb"]
    growth = max(t["mb"] for t in trials[4:]) - fifth if len(trials) > 4 else 0.0
    print(f"trials: {len(trials)}; at the fifth: {fifth:.0f} MB; largest growth after it: {growth:+.0f} MB; "
          f"last: {trials[-1]['mb']:.0f} MB; peak (0.1 s samples): {result['peak_mb']:.0f} MB; "
          f"child processes seen: {result['worker_pids']}; replaced or restarted: {result['replacements']}; "
          f"time: {trials[-1]['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps({"settings": args.env, **result, "growth_after_fifth_mb": growth}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
