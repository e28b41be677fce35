"""Grad-CAM heat maps in report.html: for each candidate's best configuration, where a model of it
looks in its most confidently wrong out-of-fold images and in one correctly classified image per class.

The out-of-fold models are not kept, so the maps come from a refit of the configuration on the rows
cross-validation used, with the seed of the export's refit and the test set's refit
(``fold_seed(study.seed, config_id, -1, -1)``). The refit is saved as
``results/<study>/models/<search_id>-<config_id>.keras`` (the test set's refit saves it there too)
and reused by every later build of the report. Each map explains the class the out-of-fold
prediction chose, so its caption's true and predicted classes are those of the rest of the page.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.core.seeds import refit_seed
from harness.errors import HarnessError
from harness.evaluation.evidence import OutOfFold, confidently_wrong

#: Where refit models are kept, in the results folder.
MODELS_DIR = "models"
#: Side, in pixels, of the overlays shown (smaller images are enlarged).
SHOWN = 112


@dataclass
class Refit:
    """A candidate's refit model and how it was made."""

    model: Any
    spec: Any
    image_size: tuple[int, int]
    rows: int
    seed: int


def model_path(results_dir: Path, search: str, config: str) -> Path:
    """Where the refit of configuration ``config`` of search ``search`` is kept."""
    return Path(results_dir) / MODELS_DIR / f"{search}-{config}.keras"


def heatmap_section(results_dir: Path, info: dict, candidate: str, config: str, records: list, oof: OutOfFold,
                    folds: pd.DataFrame, thumbnails) -> dict:
    """The heat maps of one candidate: ``{"note", "source", "images"}``; ``note`` says in one line
    why there are none. Each image: id, kind ("wrong" or "right"), true, predicted, probability and
    ``pixels`` (uint8 RGB overlay)."""
    section: dict = {"note": None, "source": None, "images": []}
    dataset = _dataset(thumbnails, folds)
    if dataset is None:
        section["note"] = ("No heat maps: the study's images are not available (harness report --data-root "
                           "gives where they are now).")
        return section
    search = next((c["search_id"] for c in info.get("candidates", []) if c["name"] == candidate), None)
    try:
        if search is None or not records:
            raise HarnessError(f"run.json names no search of {candidate}, or its configuration has no fold records")
        refit = refit_model(results_dir, candidate, search, config, records, dataset, folds)
        chosen = chosen_positions(oof, len(info["classes"]))
        section["images"] = _overlays(refit, dataset, oof, chosen, list(info["classes"]), folds)
    except Exception as exc:  # a model that cannot be built, loaded or explained: the page is written anyway
        section["note"] = f"No heat maps: the refit model could not be had or explained ({_one_line(exc)})."
        return section
    finally:
        _release()
    section["source"] = (f"from a refit of the best configuration on the {refit.rows} cross-validation images "
                         f"(seed {refit.seed})")
    return section


def refit_model(results_dir: Path, candidate: str, search: str, config: str, records: list, dataset,
                folds: pd.DataFrame) -> Refit:
    """The saved refit of the configuration, or a new one (saved whole or not at all) when there is none."""
    from harness.config.study import effective_params
    from harness.core.paths import default_cache_dir
    from harness.data.folds import cv_indices
    from harness.plugins import get_plugins
    from harness.training.build import load_keras
    from harness.training.features import FeatureCache
    from harness.training.fit import fit_fold

    plugins = get_plugins()
    study, chosen = run_candidate(results_dir, candidate, search, plugins)
    spec = plugins.models.get(chosen.model)
    rows, seed = cv_indices(folds), refit_seed(study.seed, config)
    path = model_path(results_dir, search, config)
    if not path.is_file():
        params, train = effective_params(chosen, records[0].tuned)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.stem}.{os.getpid()}.partial.keras")  # Keras saves only *.keras
        try:
            fit_fold(spec, dataset, chosen.image_size, params, train, rows, np.array([], dtype=int), seed=seed,
                     cache=FeatureCache(default_cache_dir()), save_model=partial)
            os.replace(partial, path)  # whole or absent
        finally:
            partial.unlink(missing_ok=True)
    model = load_keras().saving.load_model(path, compile=False, safe_mode=True)
    return Refit(model, spec, tuple(chosen.image_size), len(rows), seed)


def run_candidate(results_dir: Path, candidate: str, search: str, plugins):
    """The study and candidate as the run had them (the results folder's copy of the study file);
    refused when the candidate's settings are no longer those of ``search``."""
    from harness.config.study import load_study

    study = load_study(Path(results_dir) / "study.toml", plugins)
    chosen = next((c for c in study.candidates if c.name == candidate), None)
    if chosen is None or f"{chosen.name}-{chosen.fingerprint(study)}" != search:
        raise HarnessError(f"the study file no longer has candidate {candidate} as run (search {search})")
    return study, chosen


def chosen_positions(oof: OutOfFold, classes: int, k: int = 8) -> list[tuple[int, str]]:
    """Positions (into ``oof``) to explain: the ``k`` most confidently wrong, then per class the
    correctly classified image with the highest probability (none for a class never right)."""
    chosen = [(i, "wrong") for i in confidently_wrong(oof, k)]
    right = oof.predicted == oof.labels
    for label in range(classes):
        mine = np.flatnonzero(right & (oof.labels == label))
        if len(mine):
            chosen.append((int(mine[np.argmax(oof.probabilities[mine, label])]), "right"))
    return chosen


def _overlays(refit: Refit, dataset, oof: OutOfFold, chosen: list[tuple[int, str]], classes: list[str],
              folds: pd.DataFrame) -> list[dict]:
    from harness.toolkit.gradcam import grad_cam, overlay
    from harness.training.build import model_inputs

    if not chosen:
        return []
    positions = np.array([i for i, _ in chosen])
    rows = oof.rows[positions].astype(int)
    predicted = oof.predicted[positions]
    inputs = model_inputs(refit.spec, dataset, refit.image_size, rows)
    maps = grad_cam(refit.model, inputs, class_index=predicted, layer=refit.spec.explain_layer)
    images = dataset.images(refit.image_size)[rows]
    return [
        {"id": str(folds["id"].iloc[row]), "kind": kind, "true": classes[oof.labels[i]],
         "predicted": classes[oof.predicted[i]], "probability": float(oof.probabilities[i].max()),
         "pixels": overlay(_enlarged(image), heat)}
        for (i, kind), row, image, heat in zip(chosen, rows, images, maps)
    ]


def _enlarged(image: np.ndarray) -> np.ndarray:
    """The image at least ``SHOWN`` pixels on its longer side (the heat map is resized to it)."""
    from PIL import Image

    height, width = image.shape[:2]
    scale = SHOWN / max(height, width)
    if scale <= 1:
        return image
    size = (round(width * scale), round(height * scale))
    return np.asarray(Image.fromarray(np.asarray(image, dtype="uint8")).resize(size, Image.Resampling.BICUBIC))


def _dataset(thumbnails, folds: pd.DataFrame):
    """The run's dataset, when ``thumbnails`` is its bound method (the run and ``harness report``
    pass it so) and its images are still those of folds.csv; else None."""
    from harness.data.dataset import Dataset

    dataset = getattr(thumbnails, "__self__", None)
    if not isinstance(dataset, Dataset) or dataset.table["id"].astype(str).tolist() != folds["id"].tolist():
        return None
    return dataset


def _release() -> None:
    """Free the model's memory (only when Keras is already loaded: no import for nothing)."""
    import sys

    if "keras" in sys.modules:
        from harness.training.fit import release_device_memory

        release_device_memory()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
