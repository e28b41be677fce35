"""`harness export`: refit the leaderboard's choice and write it as a model folder.

A model folder holds the model in each format asked for (``.keras``, the default; ``model.onnx``;
``model.tflite``: see ``harness.workflows.formats``), ``model.json`` (classes, inputs and their
vocabularies, image size and resize policy, backend and versions, the cross-validated estimate, the
protocol and the locked test set's score) and ``MODEL_CARD.md``.

With a locked test set the refit trains on the cross-validation rows only: with the same seed and
rows it is the model the test set scored (``test.model = "refit"``). ``include_test`` refits on the
test rows too, and the card says so: then no unseen data is left to check the exported model.

``ExportedModel`` loads a model folder (Keras in safe mode, or ONNX on onnxruntime) and decodes
images exactly as training did; `harness predict` and `harness serve` use it.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from harness import __version__
from harness.config.study import Candidate, Study, effective_params, load_study
from harness.errors import HarnessError
from harness.serving.model_folder import CARD_FILE, EXAMPLES_DIR, FORMAT_VERSION, INFO_FILE
from harness.evaluation.evidence import out_of_fold, per_class
from harness.training.features import FeatureCache
from harness.data.folds import cv_indices, fold_indices, part_counts, test_indices
from harness.data.protocols import CV, TEST
from harness.evaluation.stats import binomial_interval
from harness.reports.leaderboard import build_leaderboard
from harness.plugins import Plugins
from harness.results.records import RECORDS_FILE, fold_predictions, read_records, read_test_records
from harness.workflows.formats import check_formats, format_words, write_formats
from harness.workflows.run import default_cache_dir, prepare
from harness.results.layout import RUN_FILE
from harness.search.engine import fold_seed
from harness.training.fit import fit_fold


def _versions() -> dict[str, str]:
    import keras

    backend = keras.backend.backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    found = {"harness": __version__, "keras": keras.__version__, "python": platform.python_version(),
             "numpy": np.__version__}
    if module:
        found[module] = getattr(__import__(module), "__version__", "?")
    return found


def _choose(board: pd.DataFrame, candidate: str | None, results_dir: Path) -> pd.Series:
    ranked = board[board["config_id"].apply(lambda v: isinstance(v, str))]
    if ranked.empty:
        raise HarnessError(f"{results_dir}: no candidate has a complete configuration yet; let `harness run` finish one.")
    if candidate is None:
        return ranked.iloc[0]
    chosen = ranked[ranked["candidate"] == candidate]
    if chosen.empty:
        raise HarnessError(f"{results_dir}: no complete candidate '{candidate}'; choose one of "
                           f"{', '.join(ranked['candidate'])}.")
    return chosen.iloc[0]


@dataclass
class _Choice:
    """The configuration to export: the leaderboard's row and what the results folder says of it."""

    info: dict
    row: pd.Series
    study: Study
    candidate: Candidate
    records: list
    params: dict
    train: Any


def export_model(results_dir: Path, plugins: Plugins, console: Console, candidate: str | None = None,
                 out: Path | None = None, data_root: Path | None = None, ensemble: bool = False,
                 include_test: bool = False, formats: list[str] | None = None) -> Path:
    """Refit the chosen candidate's best configuration on the study's cross-validation images (also
    on its test images with ``include_test``), or keep its K fold models with ``ensemble``, and write
    a model folder with the model in each of ``formats`` (default keras; see harness.workflows.formats);
    returns its path."""
    import keras

    formats = list(dict.fromkeys(formats or ["keras"]))
    results_dir = Path(results_dir)
    if include_test and ensemble:
        raise HarnessError("--include-test applies to the refit; --ensemble keeps the fold models, which never "
                           "train on test images. Give one of them.")
    choice = _choose_configuration(results_dir, plugins, candidate)
    check_formats(formats, keras.backend.backend(), choice.train.precision)  # before any training
    root = Path(data_root or choice.info.get("data_root") or ".")
    dataset, _ = prepare(choice.study, plugins, root, console)
    folds = pd.read_csv(results_dir / "folds.csv", dtype={"id": str}, keep_default_na=False)
    if list(folds["id"]) != list(dataset.table["id"]):
        raise HarnessError(f"the data under {root} is not the data {results_dir} was run on (its images differ from "
                           "folds.csv); point --data-root at the study's data.")
    spec = plugins.models.get(choice.candidate.model)
    out = Path(out or results_dir / "export" / choice.candidate.name)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    rows = _refit_rows(folds, include_test, console)
    started = time.perf_counter()
    models = _fit_models(choice, spec, dataset, folds, rows, staging, console, ensemble)
    fit_seconds = round(time.perf_counter() - started, 1)
    examples = [int(np.flatnonzero(dataset.labels == i)[0]) for i in range(len(dataset.classes))]
    pixels = np.stack(dataset.thumbnails(examples, tuple(choice.candidate.image_size)))
    written = write_formats(staging, models, formats, pixels, console)
    model_info = _model_info(choice, spec, dataset, models if "keras" in formats else [], root,
                             results_dir / "study.toml", ensemble)
    # A folder without Keras files needs this harness (format 2); with them, older ones read it too.
    model_info.update(format=1 if "keras" in formats else FORMAT_VERSION, formats=written, members=len(models))
    model_info["fit_seconds"] = fit_seconds
    includes_test = not ensemble and bool(np.isin(rows, test_indices(folds)).any())
    model_info["protocol"] = {**protocol_of(choice.study, folds), "training_images": None if ensemble else len(rows),
                              "refit_includes_test": includes_test}
    model_info["test"] = _test_score(results_dir, choice)
    oof = out_of_fold(fold_predictions(results_dir, choice.records))
    recall = per_class(oof, dataset.classes) if oof is not None else None
    (staging / INFO_FILE).write_text(json.dumps(model_info, indent=2))
    (staging / CARD_FILE).write_text(model_card(model_info, recall))
    _write_examples(staging / EXAMPLES_DIR, dataset, examples, pixels)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)  # whole or absent
    return out


def _choose_configuration(results_dir: Path, plugins: Plugins, candidate: str | None) -> _Choice:
    """The leaderboard's first complete candidate (or ``candidate``), its best configuration's fold
    records, and the parameters it trains with."""
    if not (results_dir / RUN_FILE).is_file():
        raise HarnessError(f"{results_dir}: not a results folder of harness (no {RUN_FILE}); run a study first, "
                           "e.g. harness run studies/demo.toml, then harness export results/demo.")
    info = json.loads((results_dir / RUN_FILE).read_text())
    row = _choose(build_leaderboard(results_dir), candidate, results_dir)
    study = load_study(results_dir / "study.toml", plugins)
    chosen = next(c for c in study.candidates if c.name == row["candidate"])
    records = [r for r in read_records(results_dir / RECORDS_FILE)
               if r.candidate == chosen.name and r.config_id == row["config_id"]]
    params, train = effective_params(chosen, records[0].tuned)
    return _Choice(info, row, study, chosen, records, params, train)


def _refit_rows(folds: pd.DataFrame, include_test: bool, console: Console) -> np.ndarray:
    """The rows a refit trains on: those cross-validation used (what the test set's refit trained on),
    and with ``include_test`` the test rows too; never the unused rows."""
    if not include_test:
        return cv_indices(folds)
    if not len(test_indices(folds)):
        console.print("note: --include-test: this study has no locked test set; the refit trains on its "
                      "cross-validation images as always.")
        return cv_indices(folds)
    return np.flatnonzero(folds["part"].isin([CV, TEST]).to_numpy())


def _fit_models(choice: _Choice, spec, dataset, folds: pd.DataFrame, rows: np.ndarray, staging: Path,
                console: Console, ensemble: bool) -> list[str]:
    """Train the model(s) into ``staging``: the K fold models, or one refit on ``rows``; their file names."""
    # The run's feature cache: the same training path (and so the same arithmetic) as the study's folds.
    cache = FeatureCache(default_cache_dir())
    chosen, config_id, n_folds = choice.candidate, choice.row["config_id"], choice.info["folds"]
    no_validation = np.array([], dtype=int)
    if not ensemble:
        console.print(f"refitting {chosen.name} on {len(rows)} of the {len(dataset.table)} images…"
                      if len(rows) < len(dataset.table) else f"refitting {chosen.name} on all {len(rows)} images…")
        fit_fold(spec, dataset, chosen.image_size, choice.params, choice.train, rows, no_validation,
                 seed=fold_seed(choice.study.seed, config_id, -1, -1), cache=cache, save_model=staging / "model.keras")
        return ["model.keras"]
    models = []
    for fold in range(n_folds):
        train_idx, val_idx = fold_indices(folds, 0, fold)  # never a test or unused row
        name = f"fold-{fold}.keras"
        console.print(f"training fold {fold + 1} of {n_folds} of {chosen.name}…")
        # The fold's model as its search trained it (validation_data = "scored_fold": its rows steered it).
        fit_fold(spec, dataset, chosen.image_size, choice.params, choice.train, train_idx, no_validation,
                 seed=fold_seed(choice.study.seed, config_id, 0, fold), cache=cache, save_model=staging / name,
                 steer_idx=val_idx)
        models.append(name)
    return models


def _model_info(choice: _Choice, spec, dataset, models: list[str], root: Path, study_file: Path,
                ensemble: bool) -> dict:
    """model.json: what the folder holds, its inputs, versions and the cross-validated estimate
    (``fit_seconds`` is added by the caller)."""
    import keras

    chosen, row, info = choice.candidate, choice.row, choice.info
    extra_inputs = {name: sorted(dataset.table[name].astype(str).unique()) for name in spec.inputs if name != "image"}
    return {
        "format": FORMAT_VERSION,
        "name": f"{choice.study.name}/{chosen.name}",
        "version": row["config_id"],
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kind": "ensemble" if ensemble else "refit",
        "models": models,
        "classes": list(dataset.classes),
        "inputs": {"image": {"size": list(chosen.image_size), "resize": dataset.resize, "channels": 3,
                             "dtype": "uint8 RGB, 0-255"},
                   **{name: {"one_hot": values} for name, values in extra_inputs.items()}},
        "candidate": chosen.name,
        "model": chosen.model,
        "params": choice.records[0].params,
        "tuned": choice.records[0].tuned,
        "backend": keras.backend.backend(),
        "versions": _versions(),
        "estimate": _estimate(row, info),
        "data": {"dataset": choice.study.dataset.name, "images": len(dataset.table), "root": str(root),
                 "per_class": {c: int((dataset.labels == i).sum()) for i, c in enumerate(dataset.classes)}},
        "study_sha256": hashlib.sha256(study_file.read_bytes()).hexdigest(),
    }


def _estimate(row: pd.Series, info: dict) -> dict:
    """The leaderboard's cross-validated estimate of the configuration, and under which protocol."""
    objective = info["objective"]
    return {
        "objective": objective,
        "mean": _number(row.get(f"{objective}_mean")),
        "std": _number(row.get(f"{objective}_std")),
        "ci_low": _number(row.get(f"{objective}_ci_low")),
        "ci_high": _number(row.get(f"{objective}_ci_high")),
        "folds": int(row["folds"]),
        "protocol": ("one split" if info["folds"] == 1 else f"{info['folds']}-fold CV"
                     + (f" × {info['repeats']} repeats" if info["repeats"] > 1 else "")),
    }


def _number(value) -> float | None:
    return None if value is None or pd.isna(value) else round(float(value), 6)


def protocol_of(study: Study, folds: pd.DataFrame) -> dict:
    """The protocol as the folds carry it out: scheme, folds, repeats, images per part, the test set."""
    cv = study.cv
    images = part_counts(folds)
    found = {"scheme": cv.scheme, "folds": cv.folds, "repeats": cv.repeats, "images": images}
    if cv.scheme == "given":
        found.update(train_split=cv.train_split, valid_split=cv.valid_split)
    if cv.outer:
        found["outer"] = cv.outer
    found["test"] = ({"source": cv.test_source, "size": images[TEST], "model": cv.test_model}
                     if cv.has_test else None)
    return found


def protocol_words(protocol: dict) -> str:
    """The scheme in words, e.g. '5-fold cross-validation × 2 repeats'."""
    scheme, repeats = protocol["scheme"], protocol["repeats"]
    words = {"kfold": f"{protocol['folds']}-fold cross-validation",
             "holdout": "holdout (one validation split)",
             "given": f"the dataset's own split (train on \"{protocol.get('train_split')}\", validate on "
                      f"\"{protocol.get('valid_split')}\")"}.get(scheme, scheme)
    words += f" × {repeats} repeats" if repeats > 1 else ""
    return words + (f", nested in {protocol['outer']} outer folds" if protocol.get("outer") else "")


def _test_score(results_dir: Path, choice: _Choice) -> dict | None:
    """The candidate's score on the locked test set (None without one, or before it was scored)."""
    search = next((c.get("search_id") for c in choice.info.get("candidates", [])
                   if c.get("name") == choice.candidate.name), None)
    found = [r for r in read_test_records(results_dir) if r.outer is None
             and (r.search_id == search or (search is None and r.candidate == choice.candidate.name))]
    if not found:
        return None
    record = found[-1]
    accuracy = record.metrics["accuracy"]
    low, high = binomial_interval(round(accuracy * record.n), record.n)
    return {"accuracy": round(accuracy, 6), "ci_low": round(low, 6), "ci_high": round(high, 6), "n": record.n,
            "config_id": record.config_id, "exported_configuration": record.config_id == choice.row["config_id"],
            "model": record.model, "train_size": record.train_size,
            "metrics": {k: round(float(v), 6) for k, v in record.metrics.items()}}


def _write_examples(folder: Path, dataset, rows: list[int], images: np.ndarray) -> None:
    """One training image per class as the model sees it: something to try `predict` and the page on."""
    from PIL import Image

    folder.mkdir()
    for i, pixels in zip(rows, images):
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in dataset.classes[dataset.labels[i]])
        Image.fromarray(pixels).save(folder / f"{safe}.png")


def model_card(info: dict, recall: pd.DataFrame | None) -> str:
    """The model card (Markdown): what the model is, how good it is expected to be, on what data."""
    e = info["estimate"]
    interval = (f" (95% CI {e['ci_low']:.3f}–{e['ci_high']:.3f}, Nadeau–Bengio corrected)"
                if e["ci_low"] is not None and e["ci_low"] != e["ci_high"] else "")
    kind = _kind(info)
    lines = [
        f"# Model card: {info['name']}",
        "",
        f"- Model: `{info['model']}`, candidate `{info['candidate']}`, configuration {info['version']}",
        f"- What this folder holds: {kind}.",
        f"- Formats: {format_words(info)}.",
        f"- Inputs: image {info['inputs']['image']['size'][0]}×{info['inputs']['image']['size'][1]} "
        f"({info['inputs']['image']['resize']})"
        + "".join(f", {n} (one of {', '.join(v['one_hot'])})" for n, v in info["inputs"].items() if n != "image"),
        f"- Exported {info['exported']} with harness {info['versions']['harness']}, Keras {info['versions']['keras']} "
        f"on {info['backend']}",
        f"- Study file sha256: `{info['study_sha256']}`",
        "",
        "## Expected performance",
        "",
        f"{e['objective']}: **{e['mean']:.3f} ± {e['std'] or 0:.3f}** over {e['folds']} folds ({e['protocol']})"
        f"{interval}.",
        "",
        *_test_lines(info),
        "## Data",
        "",
        f"Dataset `{info['data']['dataset']}`: {info['data']['images']} images, {len(info['classes'])} classes.",
        "",
    ]
    if recall is not None:
        lines += ["## Per class (out-of-fold predictions of cross-validation)", "",
                  "| class | images | recall | precision |", "|---|---:|---:|---:|"]
        for r in recall.itertuples():
            lines.append(f"| {r[1]} | {int(r.support)} | {r.recall:.3f} | {r.precision:.3f} |")
        lines.append("")
    lines += ["## Settings", "", "```json", json.dumps(info["params"], indent=2, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines)


def _kind(info: dict) -> str:
    """What the folder holds, in words: which images its model(s) trained on."""
    protocol = info.get("protocol") or {}
    if info["kind"] != "refit":
        return (f"the {info.get('members', len(info['models']))} fold models of cross-validation, probabilities averaged"
                + ("; none of them trained on a test image" if protocol.get("test") else ""))
    trained = protocol.get("training_images")
    if protocol.get("refit_includes_test"):
        rows = f"the {trained} cross-validation and test images of the study (the test images included)"
    elif protocol.get("test"):
        rows = f"the {trained} cross-validation images of the study, none of the test images,"
    elif trained is not None and trained < info["data"]["images"]:
        rows = f"the {trained} images of the study that cross-validation used"
    else:
        rows = "every image of the study"
    return (f"refit on {rows} with the same recipe (phases, early stopping on a held-out "
            "share, seed); the estimate below is that of the recipe under cross-validation")


def _test_lines(info: dict) -> list[str]:
    """The card's section on the protocol and the locked test set (none without a test set)."""
    protocol = info.get("protocol") or {}
    test = protocol.get("test")
    if not test:
        return []
    images = protocol["images"]
    lines = ["## Protocol and locked test set", "",
             f"Scored by {protocol_words(protocol)} on {images['cv']} images, with a locked test set of "
             f"{test['size']} images ({test['source']}) that no step of the search saw, scored once after selection"
             + (f"; {images['unused']} images unused." if images.get("unused") else "."), ""]
    score = info.get("test")
    if score is None:
        lines += ["Test score: not recorded (the run stopped before scoring the test set).", ""]
    else:
        which = ("the exported configuration" if score["exported_configuration"] else
                 f"configuration {score['config_id']}, selected by its search; not the exported configuration")
        lines += [(f"Test accuracy: **{score['accuracy']:.3f}** (95% CI {score['ci_low']:.3f}–{score['ci_high']:.3f}, "
                   f"exact binomial, n = {score['n']}), of {which}."), ""]
    if protocol.get("refit_includes_test"):
        lines += [(f"**The exported model was refit including the test images** ({protocol['training_images']} "
                   "images). The test score above describes a model trained on less data (the cross-validation "
                   "images only), and no unseen data is left to check this model."), ""]
    elif info["kind"] == "refit":
        same = (" With the same seed and images it is the model the test set scored." if score and
                score["exported_configuration"] and score["model"] == "refit" else "")
        lines += [(f"The exported model was refit on the {protocol['training_images']} cross-validation images "
                   f"only, not on the test images.{same}"), ""]
    return lines
