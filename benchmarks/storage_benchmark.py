"""Trials per hour with 1, 2 and 4 `harness worker` processes on one PostgreSQL study of small
trials, and what the storage costs per fold (a record and its predictions, written and read back).

Starts its own PostgreSQL (Debian's binaries, a temporary data folder, a loopback port), as the
tests do. Each worker is a separate "machine": its own results folder and cache.

    python benchmarks/storage_benchmark.py [--trials 12] [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import tiny_study_text  # noqa: E402
from postgres_server import missing, postgres_server  # noqa: E402

from harness.results.records import FoldRecord  # noqa: E402
from harness.results.optuna_storage import open_storage  # noqa: E402
from harness.results.storage import RUN_STUDY_PREFIX, ResultStore  # noqa: E402


def search_throughput(url: str, workers: int, trials: int, folder: Path) -> dict[str, float]:
    folder.mkdir(parents=True, exist_ok=True)
    study = folder / "bench.toml"
    study.write_text(tiny_study_text(name="bench", trials=trials))
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "harness", "worker", str(study), "--storage", url, "--results", str(folder / f"m{i}")],
            env=dict(os.environ, HARNESS_CACHE=str(folder / f"cache{i}"), TF_CPP_MIN_LOG_LEVEL="3"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for i in range(workers)
    ]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a worker failed:\n{err[-3000:]}")
    wall = time.perf_counter() - started
    storage = optuna.storages.RDBStorage(url.replace("postgresql://", "postgresql+psycopg://"))
    name = next(n for n in optuna.get_all_study_names(storage) if not n.startswith(RUN_STUDY_PREFIX))
    trials = optuna.load_study(study_name=name, storage=storage).trials
    done = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    searching = (last - first).total_seconds()
    return {"wall_s": wall, "search_s": searching, "trials": len(done), "per_hour": len(done) / searching * 3600}


def storage_cost(storage, folds: int = 200, rows: int = 100, classes: int = 15) -> dict[str, float]:
    """Milliseconds per fold to store a record and its predictions, and to read one back."""
    name = f"cost-{time.time_ns()}"
    optuna.create_study(study_name=name, storage=storage)
    store = ResultStore(storage, "cost")
    rng = np.random.default_rng(0)
    history = {"loss": list(rng.random(20)), "accuracy": list(rng.random(20))}
    started = time.perf_counter()
    for i in range(folds):
        record = FoldRecord(name, name, f"c{i}", i, 0, 0, {"learning_rate": 0.01}, {"learning_rate": 0.01},
                            {"accuracy": 0.5, "loss": 1.0}, 1.0, 20, 400, rows, history=history)
        store.write_predictions(record.key, np.arange(rows), rng.integers(0, classes, rows),
                                rng.random((rows, classes)))
        store.append(record)
    write = (time.perf_counter() - started) / folds * 1000
    started = time.perf_counter()
    fresh = ResultStore(storage, "cost")
    for i in range(0, folds, 10):
        fresh.get(name, f"c{i}", 0, 0)
    read_all = (time.perf_counter() - started) * 1000
    return {"write_ms": write, "read_all_ms": read_all}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    why = missing()
    if why:
        raise SystemExit(why)
    print(f"{os.cpu_count()} CPU cores; tiny study: 36 images of 16 px, cnn5, 2 folds × 2 epochs per trial")
    with postgres_server() as new_database, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for kind, storage in (("PostgreSQL", open_storage(new_database(), tmp)),
                              ("journal file", open_storage(f"journal:{tmp / 'cost.journal'}", tmp))):
            cost = storage_cost(storage)
            print(f"storage cost per fold, {kind}: write record + predictions {cost['write_ms']:.1f} ms; "
                  f"a new reader loads 200 records in {cost['read_all_ms']:.0f} ms")
        print(f"\n{'workers':>7} {'trials':>6} {'wall s':>7} {'search s':>8} {'trials/hour':>11}")
        for workers in args.workers:
            figures = search_throughput(new_database(), workers, args.trials, tmp / f"w{workers}")
            print(f"{workers:>7} {figures['trials']:>6} {figures['wall_s']:>7.1f} {figures['search_s']:>8.1f} "
                  f"{figures['per_hour']:>11.0f}")


if __name__ == "__main__":
    main()
