"""report.html: one self-contained page of evidence per study, rebuilt from what the results folder
stores (run.json, folds.csv, records with their per-epoch history, out-of-fold predictions, the
Optuna storage), so ``harness report`` gives the same page mid-run or long after.

Plots are matplotlib figures embedded as PNG data URIs; the page is a Jinja2 template
(templates/report.html.j2) with autoescaping; nothing is fetched from elsewhere when it opens.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from harness import __version__
from harness.core.files import atomic_write
from harness.evaluation.evidence import OutOfFold, calibration, confidently_wrong, confusion, most_confused, out_of_fold, per_class, top_k
from harness.reports.confidence import confidence, confidence_plot
from harness.reports.data_figures import data_figures
from harness.reports.figures import png
from harness.reports.heatmaps import heatmap_section
from harness.reports.leaderboard import build_leaderboard, notes, table_cells
from harness.reports.protocol_sections import nested_section, test_section
from harness.results.records import RECORDS_FILE, fold_predictions, read_records
from harness.results.layout import RUN_FILE, folds_grouped
from harness.data.folds import OUTSIDE, part_counts

REPORT_FILE = "report.html"
#: The page, in harness/reports/templates/ (package data).
TEMPLATE_FILE = "report.html.j2"
#: ``thumbnails(rows) -> uint8 images`` for dataset rows (positions in folds.csv), or None.
Thumbnails = Callable[[list[int]], np.ndarray] | None


def image_uri(pixels: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype="uint8")).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def learning_curves(records) -> str | None:
    """Loss and accuracy per epoch over folds (mean ± std of the folds that reached the epoch)."""
    from matplotlib.figure import Figure

    histories = [r.history for r in records if r.history and r.history.get("loss")]
    if not histories:
        return None
    figure = Figure(figsize=(8, 3))
    for axis, metric in zip(figure.subplots(1, 2), ("loss", "accuracy")):
        for key, label in ((metric, "fit rows"), (f"val_{metric}", "early-stopping rows")):
            series = [h.get(key) for h in histories if h.get(key) and any(v is not None for v in h[key])]
            if not series:
                continue
            longest = max(len(s) for s in series)
            table = np.full((len(series), longest), np.nan)
            for i, s in enumerate(series):
                table[i, : len(s)] = [np.nan if v is None else v for v in s]
            mean, std = np.nanmean(table, axis=0), np.nanstd(table, axis=0)
            epochs = np.arange(1, longest + 1)
            axis.plot(epochs, mean, label=label)
            axis.fill_between(epochs, mean - std, mean + std, alpha=0.2)
        phases = histories[0].get("phase") or []
        if "fine-tune" in phases:
            axis.axvline(phases.index("fine-tune") + 0.5, color="grey", linestyle=":", label="fine-tuning starts")
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend(fontsize=7)
    return png(figure)


def confusion_plot(matrix: np.ndarray, classes: list[str]) -> str:
    from matplotlib.figure import Figure

    side = min(12, 2 + 0.35 * len(classes))
    figure = Figure(figsize=(side, side))
    axis = figure.subplots()
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    axis.set_yticks(range(len(classes)), classes, fontsize=7)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if len(classes) <= 20:
        for t in range(len(classes)):
            for p in range(len(classes)):
                if matrix[t, p]:
                    axis.text(p, t, str(matrix[t, p]), ha="center", va="center", fontsize=7,
                              color="white" if rates[t, p] > 0.5 else "black")
    return png(figure)


def reliability_plot(oof: OutOfFold) -> tuple[str, float]:
    from matplotlib.figure import Figure

    curve = calibration(oof)
    figure = Figure(figsize=(3.5, 3.5))
    axis = figure.subplots()
    axis.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axis.plot(curve.confidence, curve.accuracy, marker="o")
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    return png(figure), curve.ece


def optuna_plots(info: dict, results_dir: Path, search_id: str) -> tuple[str | None, str | None]:
    """Optuna's own optimisation-history and parameter-importance plots (matplotlib), if there is
    a storage with the candidate's trials and enough of them."""
    import warnings

    import matplotlib
    import optuna
    from matplotlib import pyplot

    storage = info.get("storage")
    journal = results_dir / "optuna.journal"
    if not storage:
        if not journal.exists():
            return None, None
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    try:
        study = optuna.load_study(study_name=search_id, storage=storage)
    except Exception:  # no such study (yet) in the storage
        return None, None
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    plots: list[str | None] = [None, None]
    # Optuna's plots switch matplotlib to its own style; rc_context restores ours afterwards.
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore")
        for i, plot in enumerate((optuna.visualization.matplotlib.plot_optimization_history,
                                  optuna.visualization.matplotlib.plot_param_importances)):
            if not complete or (i == 1 and (len(complete) < 2 or not complete[0].params)):
                continue
            try:
                axis = plot(study)
                axis.figure.set_size_inches(5.5, 3.2)
                plots[i] = png(axis.figure)
                pyplot.close(axis.figure)
            except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. importances of a constant objective
                pyplot.close("all")
    return plots[0], plots[1]


def write_html_report(results_dir: Path, thumbnails: Thumbnails = None, audit: list[str] | None = None) -> Path:
    """Build ``results_dir/report.html`` from what the folder stores; ``thumbnails`` gives images
    for the strip of confidently wrong predictions (left out without it). The Grad-CAM heat maps
    need the dataset itself: ``thumbnails`` as its bound method ``dataset.thumbnails`` gives it;
    they refit each candidate's best configuration once (``harness.reports.heatmaps``)."""
    results_dir = Path(results_dir)
    info = json.loads((results_dir / RUN_FILE).read_text())
    board = build_leaderboard(results_dir)
    records = read_records(results_dir / RECORDS_FILE)
    folds = pd.read_csv(results_dir / "folds.csv", dtype={"id": str, "label": str, "group": str}, keep_default_na=False)
    candidates = []
    for _, row in board.iterrows():
        if isinstance(row.get("config_id"), str):
            mine = [r for r in records if r.candidate == row["candidate"] and r.config_id == row["config_id"]]
            candidates.append(_candidate_section(row, mine, f"candidate-{len(candidates)}", info, results_dir,
                                                 folds, thumbnails))
    headers, rows = table_cells(board)
    test = test_section(results_dir, info, board, folds)
    for entry in test["candidates"] if test else []:
        matrix = entry.pop("matrix")
        entry["confusion"] = confusion_plot(matrix, list(info["classes"])) if matrix is not None else None
    page = _templates().get_template(TEMPLATE_FILE).render(
        info=info, description=_study_description(results_dir), audit=audit if audit is not None else info.get("notes", []),
        headers=headers, rows=rows, board_notes=notes(board), candidates=candidates, version=__version__,
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"), results_dir=str(results_dir), test=test,
        nested=nested_section(info, board), **_data_section(info, folds),
        figures=data_figures(results_dir, info, folds, thumbnails),
    )
    return atomic_write(results_dir / REPORT_FILE, page)


def _templates():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("harness.reports", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined)


def _candidate_section(row: pd.Series, records: list, anchor: str, info: dict, results_dir: Path,
                       folds: pd.DataFrame, thumbnails: Thumbnails) -> dict:
    """One candidate's evidence: learning curves, Optuna's plots, and what its out-of-fold
    predictions show (confusion, calibration, per class, the most confidently wrong)."""
    entry = {
        "name": row["candidate"], "model": row["model"], "rank": row["rank"], "trial": row.get("best_trial"),
        "anchor": anchor, "params": row.get("best_params"), "notes": [],
        "curves": learning_curves(records), "per_class": None, "confusion": None, "reliability": None, "ece": 0.0,
        "confused": [], "top_k": {}, "wrong": [], "confidence": None, "confidence_plot": None, "heatmaps": None,
    }
    search_id = next((c["search_id"] for c in info["candidates"] if c["name"] == row["candidate"]), None)
    entry["history_plot"], entry["importance_plot"] = optuna_plots(info, results_dir, search_id)
    oof = out_of_fold(fold_predictions(results_dir, records))
    if oof is None:
        entry["notes"].append("No out-of-fold predictions are stored for this configuration (recorded by an "
                              "older harness): per-class evidence needs them.")
        return entry
    if oof.missing:
        entry["notes"].append(f"{oof.missing} fold(s) without stored predictions are left out below.")
    classes = list(info["classes"])
    matrix = confusion(oof, classes)
    entry["confusion"] = confusion_plot(matrix, classes)
    entry["reliability"], entry["ece"] = reliability_plot(oof)
    entry["confidence"] = confidence(oof)
    entry["confidence_plot"] = confidence_plot(entry["confidence"], len(classes))
    entry["per_class"] = per_class(oof, classes).to_dict("records")
    entry["confused"] = most_confused(matrix, classes)
    entry["top_k"] = top_k(oof, [k for k in info.get("top_k", []) if k > 1])
    entry["wrong"] = _confidently_wrong(oof, classes, folds, thumbnails)
    entry["heatmaps"] = heatmap_section(results_dir, info, row["candidate"], row["config_id"], records, oof, folds,
                                        thumbnails)
    for image in entry["heatmaps"]["images"]:
        image["image"] = image_uri(image.pop("pixels"))
    return entry


def _confidently_wrong(oof: OutOfFold, classes: list[str], folds: pd.DataFrame, thumbnails: Thumbnails) -> list[dict]:
    wrong = confidently_wrong(oof)
    images = _strip_images(thumbnails, [int(oof.rows[i]) for i in wrong])
    return [
        {"id": folds["id"].iloc[int(oof.rows[i])], "true": classes[oof.labels[i]],
         "predicted": classes[oof.predicted[i]], "probability": float(oof.probabilities[i].max()),
         "image": images[n] if images else None}
        for n, i in enumerate(wrong)
    ]


def _data_section(info: dict, folds: pd.DataFrame) -> dict:
    """The one-line summary of the data and protocol, and images per class and fold (repeat 0);
    rows outside cross-validation (a locked test set, unused splits) are counted apart."""
    repeats = [c for c in folds.columns if c.startswith("repeat_")]
    inside = folds[folds[repeats[0]] != OUTSIDE] if repeats else folds
    counts = pd.crosstab(inside["label"], inside[repeats[0]]) if repeats else pd.DataFrame()
    grouped = folds_grouped(info, folds)
    parts = part_counts(folds)
    apart = "".join(f", {parts[p]} {label}" for p, label in (("test", "in the locked test set"), ("unused", "unused"))
                    if parts.get(p))
    summary = (f"{len(folds)} images{f' ({len(inside)} in cross-validation{apart})' if apart else ''}, "
               f"{len(info['classes'])} classes; {info['folds']}-fold cross-validation × "
               f"{len(repeats)} repeat(s), {'grouped' if grouped else 'ungrouped'}; objective {info['objective']}.")
    return {
        "summary": summary,
        "class_counts": [(label, int(row.sum()), [int(v) for v in row]) for label, row in counts.iterrows()],
        "fold_columns": list(counts.columns),
    }


def _study_description(results_dir: Path) -> str | None:
    """The study file's ``[study] description``, if the results folder's copy has one."""
    import tomllib

    study_file = results_dir / "study.toml"
    if not study_file.exists():
        return None
    try:
        return tomllib.loads(study_file.read_text()).get("study", {}).get("description")
    except (tomllib.TOMLDecodeError, OSError):
        return None


def _strip_images(thumbnails: Thumbnails, rows: list[int]) -> list[str] | None:
    if thumbnails is None or not rows:
        return None
    try:
        return [image_uri(image) for image in thumbnails(rows)]
    except Exception:  # images moved or unreadable since the run: the strip keeps its captions
        return None
