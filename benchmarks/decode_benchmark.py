"""Decode benchmark: harness's decode-once cache against Keras's image_dataset_from_directory.

Prints, for the same image files at the same size: Keras's first epoch (decode + resize of every
file), harness cold (read, hash, probe, decode, resize and save every file into an empty cache),
harness warm (every array read back from the cache) and a decode floor: Pillow's reduced-scale
(draft) decode of every file from memory on all cores and nothing else, which no cold path that
decodes every file with libjpeg can beat. Not a test: run it by hand, e.g.

    python benchmarks/decode_benchmark.py --data ../shared/datasets/minerals --size 224
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

KERAS_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".gif")


def same_files(source: Path, target: Path) -> list[Path]:
    """Link the files Keras would read (by extension) into a class-per-subfolder tree."""
    from harness.data.images import is_ignored

    linked = []
    for file in sorted(source.rglob("*")):
        if file.is_file() and file.suffix.lower() in KERAS_EXTENSIONS and not is_ignored(file.name):
            link = target / file.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(file.resolve())
            linked.append(link)
    return linked


def _clock() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process, TensorFlow's too
    return time.perf_counter(), usage.ru_utime + usage.ru_stime


def _since(start: tuple[float, float]) -> tuple[float, float]:
    now = _clock()
    return now[0] - start[0], now[1] - start[1]


def keras_epoch(folder: Path, size: int) -> tuple[float, float]:
    import keras

    start = _clock()
    data = keras.utils.image_dataset_from_directory(folder, image_size=(size, size), batch_size=32, shuffle=False, verbose=False)
    n = sum(int(x.shape[0]) for x, _ in data)
    assert n == sum(1 for p in folder.rglob("*") if p.is_symlink())
    return _since(start)


def harness_load(paths: list[str], cache: Path, size: int, workers: int | None) -> tuple[float, float]:
    from harness.data.image_store import ImageStore

    start = _clock()
    store = ImageStore(cache, workers=workers, progress=False)
    probes = store.probe(paths, (size, size))  # what loading a study does: read, hash, check, decode
    pixels = store.pixels(paths, [p.hash for p in probes], (size, size))
    pixels.max()  # touch every byte: a memory-mapped warm array is read here
    store.close()
    assert len(pixels) == len(paths)
    return _since(start)


def decode_floor(paths: list[str], size: int, workers: int | None) -> tuple[float, float]:
    """Only the decode, at the smallest scale JPEG draft mode allows for ``size``; bytes in memory."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    blobs = [Path(p).read_bytes() for p in paths]

    def decode(data: bytes) -> None:
        image = Image.open(io.BytesIO(data))
        if image.format == "JPEG":
            image.draft("RGB", (size, size))
        image.load()

    start = _clock()
    with ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        list(pool.map(decode, blobs))
    return _since(start)


def main() -> None:
    default = Path(os.environ.get("HARNESS_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "datasets")) / "minerals"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default, help="a class-per-subfolder image folder (default: minerals)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=None, help="decode threads (default: all cores)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the fastest counts (default 3)")
    args = parser.parse_args()
    if not args.data.is_dir():
        parser.error(f"no folder {args.data}; give --data (a class-per-subfolder image folder, e.g. "
                 "../shared/datasets/minerals) or set HARNESS_TEST_DATA to the folder holding minerals/")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from harness.core.backend import start_backend

    print(start_backend())  # before timing: the backend's start-up is not decoding

    runs: dict[str, list[tuple[float, float]]] = {"keras": [], "cold": [], "warm": [], "floor": []}
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "files"
        paths = [str(p) for p in same_files(args.data, tree)]
        if not paths:
            parser.error(f"no image files ({', '.join(KERAS_EXTENSIONS)}) under {args.data}")
        for p in paths:  # both sides read from the page cache, not the disk
            Path(p).read_bytes()
        for i in range(args.repeat):
            cache = Path(tmp) / f"cache{i}"
            runs["keras"].append(keras_epoch(tree, args.size))
            runs["cold"].append(harness_load(paths, cache, args.size, args.workers))
            runs["warm"].append(harness_load(paths, cache, args.size, args.workers))
            runs["floor"].append(decode_floor(paths, args.size, args.workers))
    best = {k: min(v) for k, v in runs.items()}
    print(f"{len(paths)} images from {args.data} at {args.size}×{args.size}, {os.cpu_count()} cores, best of {args.repeat}")
    print(f"{'':48} {'wall s':>8} {'cpu s':>8}")
    for key, label in (("keras", "keras image_dataset_from_directory, 1st epoch"),
                       ("cold", "harness cold (read, hash, check, decode, cache)"),
                       ("warm", "harness warm (from the cache)"),
                       ("floor", "decode floor (draft decode only, in memory)")):
        print(f"{label:48} {best[key][0]:8.2f} {best[key][1]:8.2f}")
    print(f"cold vs keras: {best['keras'][0] / best['cold'][0]:.1f}× faster (cpu: {best['keras'][1] / best['cold'][1]:.1f}×)")
    print(f"warm vs cold:  {best['cold'][0] / best['warm'][0]:.0f}× faster")
    print(f"decode floor vs keras: {best['keras'][0] / best['floor'][0]:.1f}× faster: the most any cold path "
          "that decodes every file could reach here")


if __name__ == "__main__":
    main()
