"""report.html's data, drawn: images per class and fold, part and split; the source images' sizes;
and a few training images as the study's augmentation varies them.

The counts come from folds.csv (``part``: cv, test, unused) and, when the study's images are
reachable, the dataset's own ``split`` column. Sizes are the source files' (the image probes
recorded them when the data was loaded), not the size the model sees.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.data.folds import OUTSIDE
from harness.reports.figures import png
from harness.toolkit.augment import Augment

#: Training images in the augmentation strip, and variants of each.
STRIP_IMAGES, STRIP_VARIANTS = 4, 5
#: At most this many files are opened for their sizes when no probe recorded them.
SIZE_SAMPLE = 2000


def count_tables(folds: pd.DataFrame, classes: list[str], table: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Images per class (rows) and fold of repeat 0 (cross-validation rows only), per ``part`` when
    folds.csv has one, and per the dataset's ``split`` when ``table`` (the dataset's) has one."""
    out: dict[str, pd.DataFrame] = {}
    if "repeat_0" in folds.columns:
        inside = folds[folds["repeat_0"] != OUTSIDE]
        out["fold"] = pd.crosstab(inside["label"], inside["repeat_0"]).reindex(classes, fill_value=0)
    if "part" in folds.columns:
        out["part"] = pd.crosstab(folds["label"], folds["part"].astype(str)).reindex(classes, fill_value=0)
    if table is not None and "split" in table.columns and len(table) == len(folds):
        out["split"] = pd.crosstab(folds["label"].to_numpy(), table["split"].astype(str).to_numpy(),
                                   rownames=["label"], colnames=["split"]).reindex(classes, fill_value=0)
    return out


def counts_plot(tables: dict[str, pd.DataFrame]) -> str | None:
    """One bar chart per table: a group of bars per column (fold, part, split), a bar per class."""
    from matplotlib.figure import Figure


    if not tables:
        return None
    figure = Figure(figsize=(4.2 * len(tables), 3.2))
    axes = np.atleast_1d(figure.subplots(1, len(tables)))
    for axis, (name, counts) in zip(axes, tables.items()):
        columns, classes = list(counts.columns), list(counts.index)
        width = 0.8 / max(len(classes), 1)
        for i, label in enumerate(classes):
            axis.bar(np.arange(len(columns)) + (i - (len(classes) - 1) / 2) * width, counts.loc[label].to_numpy(),
                     width, label=str(label))
        axis.set_xticks(range(len(columns)), [str(c) for c in columns])
        axis.set_xlabel("validation fold (repeat 0)" if name == "fold" else name)
        axis.set_ylabel("images")
    if len(classes) <= 12:
        axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    return png(figure)


def dataset_of(thumbnails: Any):
    """The loaded dataset behind a ``thumbnails`` callable (the run and ``harness report`` pass a
    Dataset's bound method), or None: without it the report has no image files to measure."""
    owner = getattr(thumbnails, "__self__", None)
    from harness.data.dataset import Dataset

    return owner if isinstance(owner, Dataset) else None


def image_sizes(dataset) -> tuple[np.ndarray | None, str]:
    """(width, height) per source file, and a sentence on where they come from."""
    table = dataset.table
    if dataset.samples.pixels is not None or "path" not in table.columns:
        return None, (f"Dataset '{dataset.name}' makes its pixels itself (no source files): every image is "
                      "made at the study's image size.")
    if dataset.store is not None and "hash" in table.columns:
        probes = dataset.store.cached(table["hash"].unique().tolist())
        known = [probes[h] for h in table["hash"] if h in probes]
        if known:
            sizes = np.array([(p.width, p.height) for p in known])
            return sizes, f"Sizes of the {len(sizes)} source files as probed when the data was loaded."
    return _read_sizes(table["path"].astype(str).tolist())


def _read_sizes(paths: list[str]) -> tuple[np.ndarray | None, str]:
    from PIL import Image

    chosen = paths if len(paths) <= SIZE_SAMPLE else list(np.random.default_rng(0).choice(paths, SIZE_SAMPLE, False))
    sizes = []
    for path in chosen:
        try:
            with Image.open(path) as image:  # the header only: no pixels are decoded
                sizes.append(image.size)
        except OSError:
            continue
    if not sizes:
        return None, "None of the source files could be opened for their sizes."
    sample = f"a random {len(chosen)} of the {len(paths)} " if len(chosen) < len(paths) else ""
    return np.array(sizes), f"Sizes read from {sample}source files ({len(sizes)} opened)."


def sizes_plot(sizes: np.ndarray) -> str:
    """Width against height, a dot per distinct size, its area by how many files have it."""
    from matplotlib.figure import Figure


    distinct, count = np.unique(sizes, axis=0, return_counts=True)
    figure = Figure(figsize=(4, 3.5))
    axis = figure.subplots()
    axis.scatter(distinct[:, 0], distinct[:, 1], s=12 + 100 * count / count.max(), alpha=0.6)
    axis.set_xlabel("width (pixels)")
    axis.set_ylabel("height (pixels)")
    axis.set_title(f"{len(sizes)} files, {len(distinct)} distinct sizes", fontsize=9)
    return png(figure)


def study_settings(results_dir: Path) -> dict:
    """The results folder's copy of the study file (empty when missing or unreadable)."""
    try:
        return tomllib.loads((Path(results_dir) / "study.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def study_augment(settings: dict) -> Augment | None:
    """The study's ``[train.augment]`` settings, or None when it has none (or all off)."""
    given = settings.get("train", {}).get("augment")
    if given is True:
        given = {}
    if not isinstance(given, dict):
        return None
    try:
        augment = Augment(**given)
    except TypeError:  # a key this harness does not know: the study would not have run
        return None
    return augment if augment.active() else None


def augmented_variants(augment: Augment, images: np.ndarray, variants: int = STRIP_VARIANTS) -> np.ndarray:
    """``variants`` independent draws of the study's augmentation layers (the training's, in training
    mode) on ``images``: float (variants, n, height, width, 3) on the 0–255 scale."""
    from harness.core.backend import import_keras
    from harness.toolkit.augment import augmentation_layers

    keras = import_keras()
    pipeline = keras.Sequential(augmentation_layers(augment))
    batch = np.asarray(images, dtype="float32")
    return np.stack([keras.ops.convert_to_numpy(pipeline(batch, training=True)) for _ in range(variants)])


def augmentation_strip(augment: Augment, images: np.ndarray, variants: int = STRIP_VARIANTS) -> str:
    """A grid: each image, then ``variants`` draws of its augmentation (PNG URI)."""
    from matplotlib.figure import Figure


    drawn = augmented_variants(augment, images, variants)
    figure = Figure(figsize=(1.3 * (variants + 1), 1.3 * len(images)))
    axes = np.atleast_2d(figure.subplots(len(images), variants + 1))
    for i in range(len(images)):
        for j, pixels in enumerate([images[i], *drawn[:, i]]):
            axes[i, j].imshow(np.clip(pixels, 0, 255).astype("uint8"))
            axes[i, j].set_axis_off()
            if i == 0:
                axes[i, j].set_title("original" if j == 0 else f"draw {j}", fontsize=7)
    return png(figure)


def strip_rows(folds: pd.DataFrame, classes: list[str], count: int = STRIP_IMAGES) -> list[int]:
    """The first cross-validation image of each class, for up to ``count`` classes."""
    inside = folds["repeat_0"] != OUTSIDE if "repeat_0" in folds.columns else pd.Series(True, index=folds.index)
    rows = []
    for label in classes[:count]:
        found = np.flatnonzero(inside.to_numpy() & (folds["label"] == label).to_numpy())
        if len(found):
            rows.append(int(found[0]))
    return rows


def _augment_text(augment: Augment) -> str:
    default = Augment()
    return ", ".join(f"{k} = {json.dumps(v)}" for k, v in vars(augment).items() if v != getattr(default, k))


def data_figures(results_dir: Path, info: dict, folds: pd.DataFrame, thumbnails: Any) -> dict:
    """The data section's figures and the sentences that stand in for those that cannot be drawn."""
    classes = list(info["classes"])
    dataset = dataset_of(thumbnails) if thumbnails is not None else None
    tables = count_tables(folds, classes, dataset.table if dataset is not None else None)
    out: dict[str, Any] = {"counts_plot": counts_plot(tables), "count_tables": list(tables),
                           "sizes_plot": None, "augment_plot": None}
    if dataset is None:
        out["sizes_note"] = ("The study's images are not reachable from here: their sizes are not shown "
                             "(rebuild with harness report --data-root pointing at them).")
    else:
        sizes, out["sizes_note"] = image_sizes(dataset)
        out["sizes_plot"] = sizes_plot(sizes) if sizes is not None else None
    settings = study_settings(results_dir)
    augment = study_augment(settings)
    if augment is None:
        out["augment_note"] = "The study trains without augmentation ([train.augment] is not set)."
        return out
    out["augment_note"] = f"Augmentation ([train.augment]): {_augment_text(augment)}."
    rows = strip_rows(folds, classes)
    size = tuple(settings.get("dataset", {}).get("image_size", (112, 112)))
    try:
        images = dataset.thumbnails(rows, size) if dataset is not None else thumbnails(rows) if thumbnails else None
    except Exception:  # images moved or unreadable since the run: the sentence says so
        images = None
    if images is None or not len(images):
        out["augment_note"] += " The study's images are not reachable from here: no strip of augmented images."
    else:
        out["augment_plot"] = augmentation_strip(augment, images)
    return out
