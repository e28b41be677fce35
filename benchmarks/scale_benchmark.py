"""Cost against collection size (issue 30): load + audit, one fold's training, storage appends.

Writes class-folder collections of small generated JPEGs to a scratch folder (never the
repository; the largest set once, the smaller ones as hard links to its first images) and measures
each step in a child process of its own, one at a time: its wall time and its peak resident memory
(the child's ru_maxrss, so the imports count too; ``import MB`` is the peak right after them).

- load + audit: ``load_dataset`` on a cold cache at the study size (probe, decode, stack) and ``audit``.
- one fold: the same load from the warm cache, ``dataset.images`` and ``fit_fold`` of fold 0 of 5:
  a tiny cnn4 (four 8-filter blocks), ``--epochs`` epochs; ``fit s`` is the fit alone and
  ``loaded MB`` the peak before it.
- appends: ``--appends`` folds appended to a fresh SQLite result store, each with the predictions
  of a fifth of the images; the median seconds per append.

Prints a table and each cost's growth exponent (the slope of a least-squares line through
log cost against log size); ``--plot`` draws them. ``--harness FOLDER`` measures the harness
package of another checkout (e.g. ``git archive`` of an older commit), ``--json`` keeps the figures
and ``--before JSON`` adds such a run's figures beside them. E.g.

    python benchmarks/scale_benchmark.py --sizes 10000 30000 --plot docs/scale_benchmark.png

``--memory-limit MB`` runs each step in a cgroup memory group of that size (page cache included),
e.g. a collection whose decoded pixels are larger than the memory the training is given:

    sudo python benchmarks/scale_benchmark.py --sizes 100000 --steps load train --memory-limit 2000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

STEPS = ("load", "train", "appends")
TITLES = {"load": "load + audit", "train": "one fold", "appends": "appends"}
MODEL_PARAMS = {"filters": [8, 8, 8, 8], "top_filters": 8, "dropout": 0.0}


def fail(message: str) -> None:
    print(f"scale_benchmark: {message}", file=sys.stderr)
    raise SystemExit(2)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


# -- the collections ------------------------------------------------------------------------------


def _write_images(job: tuple[str, int, int, int]) -> None:
    from PIL import Image

    folder, start, stop, side = job
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((side, side), Image.BILINEAR), dtype=np.int16)
        noisy = np.clip(smooth + rng.integers(-20, 21, smooth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(Path(folder) / f"{i:07d}.jpg", quality=85)


def collection(work: Path, n: int, largest: int, side: int, classes: int) -> Path:
    """``work/set-<n>/c<k>/``: the first ``n`` generated images, hard links into ``work/images``."""
    source = work / f"images-{side}"
    source.mkdir(parents=True, exist_ok=True)
    have = len(list(source.glob("*.jpg")))
    if have < largest:
        step = 2000
        jobs = [(str(source), s, min(s + step, largest), side) for s in range(have, largest, step)]
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(_write_images, jobs))
    folder = work / f"set-{side}-{n}"
    if not folder.exists():
        staging = work / f".staging-{n}"
        shutil.rmtree(staging, ignore_errors=True)
        for i in range(n):
            target = staging / f"c{i % classes}" / f"{i:07d}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(source / f"{i:07d}.jpg", target)
        staging.rename(folder)
    return folder


# -- the steps, each run in a child process ------------------------------------------------------


def _load(folder: Path, cache: Path, side: int):
    from harness.config.study import DatasetConfig
    from harness.data.dataset import load_dataset
    from harness.plugins import get_plugins
    from harness.specs import DatasetContext

    plugins = get_plugins()
    params = dict(plugins.datasets.get("folder").params) | {"root": str(folder)}
    config = DatasetConfig("folder", (side, side), params)
    return plugins, load_dataset(config, plugins, DatasetContext(folder.parent, cache, seed=0))


def step_load(folder: Path, cache: Path, side: int, _args) -> dict:
    from harness.config.study import CVConfig
    from harness.data.audit import audit

    _, dataset = _load(folder, cache, side)
    report = audit(dataset, CVConfig(folds=5), str(folder), folder.name)
    return {"images": len(dataset.table), "near pairs": len(report["near_duplicates"])}


def step_train(folder: Path, cache: Path, side: int, args) -> dict:
    from dataclasses import replace

    from harness.config.study import CVConfig, TrainConfig
    from harness.data.folds import fold_indices, make_folds
    from harness.training.train import fit_fold

    plugins, dataset = _load(folder, cache, side)
    dataset.images((side, side))
    loaded = peak_mb()  # the peak so far: imports, the dataset's table and its near-duplicate search
    train_idx, val_idx = fold_indices(make_folds(dataset, CVConfig(folds=5)), 0, 0)
    spec = plugins.models.get("cnn4")
    spec = replace(spec, params=dict(spec.params) | MODEL_PARAMS)
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch, weights="none")
    started = time.perf_counter()
    result = fit_fold(spec, dataset, (side, side), dict(spec.params), train, train_idx, val_idx, seed=0)
    accuracy = float((result.probabilities.argmax(1) == dataset.labels[val_idx]).mean())
    stacked = sum(f.stat().st_size for f in cache.rglob("*.npy")) / 2**20  # the decoded pixels on disk
    return {"fit s": time.perf_counter() - started, "loaded MB": loaded, "accuracy": accuracy, "pixels MB": stacked}


def step_appends(folder: Path, cache: Path, side: int, args) -> dict:
    import optuna

    from harness.results.optuna_storage import open_storage
    from harness.results.records import FoldRecord
    from harness.results.storage import ResultStore

    n = sum(1 for _ in folder.rglob("*.jpg"))
    rows, classes = n // 5, args.classes
    cache.mkdir(parents=True, exist_ok=True)
    storage = open_storage(f"sqlite:///{cache / 'results.sqlite3'}", cache)
    optuna.create_study(study_name="scale", storage=storage)
    store, rng, costs = ResultStore(storage, "scale"), np.random.default_rng(0), []
    for i in range(args.appends):
        record = FoldRecord("scale", "scale", f"c{i // 5}", i // 5, 0, i % 5, {"learning_rate": 0.01},
                            {"learning_rate": 0.01}, {"accuracy": 0.5}, 1.0, 1, 4 * rows, rows)
        labels, probabilities = rng.integers(0, classes, rows), rng.random((rows, classes))
        started = time.perf_counter()
        store.write_predictions(record.key, np.arange(rows), labels, probabilities)
        store.append(record)
        costs.append(time.perf_counter() - started)
    return {"append s": float(np.median(costs))}


def child(step: str, folder: Path, cache: Path, side: int, args) -> None:
    """Run one step here and print its figures as one JSON line."""
    import harness  # noqa: F401  (its imports count as the step's, reported apart)

    if step == "train":
        import keras  # noqa: F401

    imported = peak_mb()
    started = time.perf_counter()
    figures = {"load": step_load, "train": step_train, "appends": step_appends}[step](folder, cache, side, args)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak MB": peak_mb(), "import MB": imported, **figures}))


def measure(step: str, folder: Path, cache: Path, args) -> dict:
    """One step in a fresh child process; its figures."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HARNESS_CACHE": str(cache)}
    if args.harness:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(args.harness).resolve()), env.get("PYTHONPATH", "")])
    command = [sys.executable, str(Path(__file__).resolve()), "--child", step, "--folder", str(folder),
               "--cache", str(cache), *_passed_on(args)]
    with MemoryLimit(args.memory_limit) as limit:
        result = subprocess.run(command, check=False, capture_output=True, text=True, env=env,
                                cwd=tempfile.gettempdir(), preexec_fn=limit.enter)
    if result.returncode != 0:
        fail(f"the {step} step at {folder.name} failed{limit.describe()}:\n{result.stderr[-3000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    if args.memory_limit:
        figures |= {"limit MB": args.memory_limit, "group peak MB": limit.peak_mb}
    return figures


class MemoryLimit:
    """A cgroup memory group (v2, or v1's memory controller) that a child enters before it runs, so
    that it has ``mb`` of memory, page cache included; nothing with ``mb`` None."""

    def __init__(self, mb: int | None):
        self.mb, self.group, self.peak_mb = mb, None, None

    def __enter__(self):
        if not self.mb:
            return self
        v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
        root = Path("/sys/fs/cgroup") if v2 else Path("/sys/fs/cgroup/memory")
        self.group = root / f"harness-scale-{os.getpid()}"
        self.files = ("memory.max", "memory.peak") if v2 else ("memory.limit_in_bytes", "memory.max_usage_in_bytes")
        try:
            self.group.mkdir(exist_ok=True)
            (self.group / self.files[0]).write_text(str(self.mb * 2**20))
        except OSError as exc:
            fail(f"--memory-limit needs a cgroup memory group this user may create ({exc}); run as root or without it.")
        return self

    def enter(self) -> None:
        """In the child, before it runs: join the group."""
        if self.group is not None:
            (self.group / "cgroup.procs").write_text(str(os.getpid()))

    def describe(self) -> str:
        return f" under a memory limit of {self.mb} MB" if self.mb else ""

    def __exit__(self, *exc) -> None:
        if self.group is None:
            return
        try:
            self.peak_mb = int((self.group / self.files[1]).read_text()) / 2**20
        except (OSError, ValueError):
            pass
        for _ in range(50):  # the group can be removed once its last process is gone
            try:
                self.group.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def _passed_on(args) -> list[str]:
    return ["--side", str(args.side), "--classes", str(args.classes), "--epochs", str(args.epochs),
            "--batch", str(args.batch), "--appends", str(args.appends)]


# -- table, exponents and plot --------------------------------------------------------------------


def exponent(sizes: list[int], costs: list[float]) -> float | None:
    """The slope of log cost against log size (None with fewer than two sizes)."""
    if len(sizes) < 2 or min(costs) <= 0:
        return None
    return float(np.polyfit(np.log(sizes), np.log(costs), 1)[0])


def table(results: dict, before: dict | None) -> str:
    sizes = sorted(int(n) for n in results)
    steps = [s for s in STEPS if s in results[str(sizes[0])]]
    head = ["images", *(f"{TITLES[s]} {what}" for s in steps for what in ("s", "peak MB"))]
    head = [("s per append" if h == "appends s" else h) for h in head]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for n in sizes:
        cells = [f"{n:,}"]
        for step, figures in results[str(n)].items():
            old = (before or {}).get(str(n), {}).get(step)
            for key in ("seconds", "peak MB"):
                value = figures[key] if key == "peak MB" or step != "appends" else figures["append s"]
                text = f"{value:,.0f}" if key == "peak MB" else f"{value:.3g}"
                if old is not None:
                    was = old[key] if key == "peak MB" or step != "appends" else old["append s"]
                    text = f"{was:,.0f} → {text}" if key == "peak MB" else f"{was:.3g} → {text}"
                cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def growth(results: dict) -> dict[str, float | None]:
    """Each step's exponent of time and of peak memory above the imports."""
    sizes = sorted(int(n) for n in results)
    out = {}
    for step in results[str(sizes[0])]:
        rows = [results[str(n)][step] for n in sizes]
        seconds = [r["append s"] if step == "appends" else r["seconds"] for r in rows]
        out[f"{TITLES[step]} time"] = exponent(sizes, seconds)
        out[f"{TITLES[step]} memory"] = exponent(sizes, [max(r["peak MB"] - r["import MB"], 1.0) for r in rows])
    return out


def plot(results: dict, before: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(int(n) for n in results)
    steps = list(results[str(sizes[0])])
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "seconds", "seconds"), (axes[1], "peak MB", "peak resident MB")):
        for k, step in enumerate(steps):
            for runs, style, tag in ((before, "--", " (before)"), (results, "-", "")):
                have = [n for n in sizes if step in (runs or {}).get(str(n), {})]
                if not have:
                    continue
                values = [_value(runs[str(n)][step], key, step) for n in have]
                slope = exponent(have, values)
                name = f"{TITLES[step]}{tag}" + ("" if slope is None else f", n^{slope:.2f}")
                ax.plot(have, values, style, marker="o", color=f"C{k}", label=name)
        ax.set(xscale="log", yscale="log", xlabel="images", ylabel=label)
        ax.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def _value(figures: dict, key: str, step: str) -> float:
    return figures["append s"] if key == "seconds" and step == "appends" else figures[key]


# -- main ---------------------------------------------------------------------------------------


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000])
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--side", type=int, default=96, help="image side in pixels (generated and trained)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--appends", type=int, default=20)
    parser.add_argument("--memory-limit", type=int, default=None, metavar="MB",
                        help="run each step in a cgroup with this much memory, page cache included (Linux, root)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "harness-scale-benchmark")
    parser.add_argument("--keep", action="store_true", help="keep the generated images for another run")
    parser.add_argument("--harness", help="a folder holding the harness package to measure instead")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--before", type=Path, help="figures of an earlier run (--json) to show beside")
    parser.add_argument("--plot", type=Path, help="a PNG of cost against size")
    parser.add_argument("--again", type=Path, help="no measuring: the table and plot of figures written by --json")
    parser.add_argument("--child", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def check(args) -> None:
    if any(n < 5 * args.classes for n in args.sizes):
        fail(f"each size needs at least 5 images per class ({5 * args.classes} for --classes {args.classes}).")
    if args.classes < 2 or args.side < 16 or args.epochs < 1 or args.batch < 1 or args.appends < 1:
        fail("--classes must be at least 2, --side 16, and --epochs, --batch and --appends at least 1.")
    repository = Path(__file__).resolve().parents[1]
    if args.work.resolve().is_relative_to(repository):
        fail(f"--work {args.work} is inside the repository; generate the images elsewhere (e.g. /tmp).")
    if args.harness and not (Path(args.harness) / "harness" / "__init__.py").exists():
        fail(f"--harness {args.harness} holds no harness package (harness/__init__.py).")
    for given in (args.before, args.again):
        if given and not given.exists():
            fail(f"{given}: no such file (figures are written by --json).")


def main() -> None:
    args = arguments()
    if args.child:
        return child(args.child, args.folder, args.cache, args.side, args)
    check(args)
    before = json.loads(args.before.read_text()) if args.before else None
    results = json.loads(args.again.read_text()) if args.again else measure_all(args)
    print("\n" + table(results, before) + "\n")
    for name, slope in growth(results).items():
        print(f"growth exponent, {name}: {'n/a' if slope is None else f'{slope:.2f}'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.plot:
        plot(results, before, args.plot)
        print(f"plot: {args.plot}")


def measure_all(args) -> dict:
    """Each size's collection, and each step measured on it in a child process."""
    sizes = sorted(set(args.sizes))
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.side} px JPEGs in {args.classes} classes under {args.work}")
    results: dict[str, dict] = {}
    try:
        for n in sizes:
            folder = collection(args.work, n, sizes[-1], args.side, args.classes)
            cache = args.work / f"cache-{n}"
            shutil.rmtree(cache, ignore_errors=True)
            results[str(n)] = {}
            for step in [s for s in STEPS if s in args.steps]:
                results[str(n)][step] = figures = measure(step, folder, cache, args)
                print(f"{n:>9,} {TITLES[step]:<13} {figures['seconds']:8.1f} s  peak {figures['peak MB']:7,.0f} MB"
                      + (f"  (pixels on disk {figures['pixels MB']:,.0f} MB)" if "pixels MB" in figures else "")
                      + (f"  (limit {args.memory_limit:,} MB, group peak {figures['group peak MB']:,.0f} MB)"
                         if args.memory_limit else ""), flush=True)
            shutil.rmtree(cache, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
