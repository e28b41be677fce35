"""Result storage at scale (issue 30): what storing one fold costs when the search holds 50 folds
and when it holds thousands, on a journal file, SQLite and PostgreSQL.

A fold here is what a worker does with the storage per fold: look its record up (not there yet),
store its out-of-fold predictions (``--rows`` × ``--classes`` probabilities) and append its record.
Printed: the median cost of the folds around the 50th and of the last ones; the target is that
they are within 20 % of each other. PostgreSQL runs when Debian's binaries and psycopg are
installed (a throwaway server, as the tests start). Not a test: run it by hand, e.g.

    python benchmarks/storage_flat_benchmark.py [--folds 5000] [--rows 1000] [--classes 20]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from postgres_server import missing, postgres_server  # noqa: E402

from harness.results.optuna_storage import open_storage  # noqa: E402
from harness.results.prediction_blobs import ARTIFACT_DIR_ENV  # noqa: E402
from harness.results.records import FoldRecord  # noqa: E402
from harness.results.storage import ResultStore  # noqa: E402

SEARCH = "bench-search"
#: How many folds' costs each median takes.
SAMPLE = 25
#: The early fold the last ones are compared with.
EARLY = 50


class Folds:
    """One search in one storage, filled a fold at a time as a worker would."""

    def __init__(self, storage, rows: int, classes: int):
        optuna.create_study(study_name=SEARCH, storage=storage)
        self.store = ResultStore(storage, "bench")
        self.rows, self.classes, self.done = rows, classes, 0
        self.rng = np.random.default_rng(0)
        self.history = {"loss": list(self.rng.random(20)), "accuracy": list(self.rng.random(20))}

    def next(self) -> float:
        """Store the next fold; the seconds its storage work took."""
        i, rows = self.done, self.rows
        config, fold = f"c{i // 5}", i % 5
        record = FoldRecord("bench", SEARCH, config, i // 5, 0, fold, {"learning_rate": 0.01},
                            {"learning_rate": 0.01}, {"accuracy": 0.5, "loss": 1.0}, 1.0, 20, 4 * rows, rows,
                            history=self.history)
        labels, probabilities = self.rng.integers(0, self.classes, rows), self.rng.random((rows, self.classes))
        started = time.perf_counter()
        assert self.store.get(SEARCH, config, 0, fold) is None
        self.store.write_predictions(record.key, np.arange(rows), labels, probabilities)
        assert self.store.append(record)
        self.done += 1
        return time.perf_counter() - started


def compare(open_one, folds: int, rows: int, classes: int) -> tuple[list[float], list[float], float]:
    """Fold costs around the 50th and of the last ones, each in a storage of its own, measured in
    turns so that the machine's other load weighs on both alike; and the seconds the big one took."""
    big = Folds(open_one("big"), rows, classes)
    started = time.perf_counter()
    while big.done < folds - SAMPLE:
        big.next()
    small = Folds(open_one("small"), rows, classes)
    while small.done < EARLY - SAMPLE // 2 - 1:
        small.next()
    early, late = [], []
    for _ in range(SAMPLE):
        early.append(small.next())
        late.append(big.next())
    return early, late, time.perf_counter() - started


def storages(tmp: Path, stack: contextlib.ExitStack):
    """(name, a function opening a fresh storage of that kind by a name, the folder kept in) for
    each storage this machine can run."""
    yield "journal file", lambda name: open_storage(f"journal:{tmp / 'j' / name / 'bench.journal'}", tmp), tmp / "j"

    def sqlite(name: str):
        (tmp / "s" / name).mkdir(parents=True)
        return open_storage(f"sqlite:///{tmp / 's' / name / 'bench.db'}", tmp)

    yield "SQLite", sqlite, tmp / "s"
    why = missing()
    if why:
        print(f"PostgreSQL skipped: {why}")
        return
    new_database = stack.enter_context(postgres_server())
    yield "PostgreSQL, predictions in the database (no shared artifact folder)", \
        lambda name: open_storage(new_database(), tmp), None
    os.environ[ARTIFACT_DIR_ENV] = str(tmp / "shared")
    try:
        yield f"PostgreSQL, predictions in {ARTIFACT_DIR_ENV}", lambda name: open_storage(new_database(), tmp), \
            tmp / "shared"
    finally:
        del os.environ[ARTIFACT_DIR_ENV]


def _size_mb(folder: Path | None) -> str:
    if folder is None:
        return "-"
    return f"{sum(p.stat().st_size for p in folder.rglob('*') if p.is_file()) / 1e6:.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=20)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"{os.cpu_count()} CPU cores; {args.folds} folds of {args.rows} × {args.classes} predictions; "
          f"median of {SAMPLE} folds each, the early and the late ones in turns")
    print(f"{'storage':<68} {f'fold {EARLY} ms':>10} {f'fold {args.folds} ms':>12} {'ratio':>6} {'fill s':>7} "
          f"{'size':>7}")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        for name, open_one, folder in storages(tmp, stack):
            early, late, total = compare(open_one, args.folds, args.rows, args.classes)
            early, late = statistics.median(early), statistics.median(late)
            print(f"{name:<68} {early * 1000:>10.1f} {late * 1000:>12.1f} {late / early:>6.2f} {total:>7.0f} "
                  f"{_size_mb(folder):>7}", flush=True)
            shutil.rmtree(folder, ignore_errors=True) if folder is not None else None


if __name__ == "__main__":
    main()
