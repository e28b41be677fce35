"""report.html: one self-contained page of evidence per study, rebuilt from what the results folder
stores (run.json, folds.csv, records with their per-epoch history, out-of-fold predictions, the
Optuna storage), so ``harness report`` gives the same page mid-run or long after.

Plots are matplotlib figures embedded as PNG data URIs; the page is a Jinja2 template with
autoescaping; nothing is fetched from elsewhere when it opens.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from harness import __version__
from harness.evaluation.evidence import OutOfFold, calibration, confidently_wrong, confusion, most_confused, out_of_fold, per_class, top_k
from harness.reports.leaderboard import build_leaderboard, notes, table_cells
from harness.results.records import RECORDS_FILE, fold_predictions, read_records
from harness.results.storage import RUN_FILE, folds_grouped

REPORT_FILE = "report.html"
#: ``thumbnails(rows) -> uint8 images`` for dataset rows (positions in folds.csv), or None.
Thumbnails = Callable[[list[int]], np.ndarray] | None

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ info.study }} — harness report</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
.notes li { margin: .2rem 0; } .warning { color: #a35a00; } .failed { color: #b00020; }
figure { display: inline-block; margin: .5rem 1rem .5rem 0; vertical-align: top; }
figure img { max-width: 100%; } figcaption { font-size: .8rem; color: #555; max-width: 240px; word-break: break-all; }
.strip figure img { width: 112px; height: 112px; object-fit: cover; }
section.candidate { border-top: 2px solid #ddd; margin-top: 2rem; }
</style></head>
<body>
<h1>{{ info.study }}</h1>
{% if description %}<p>{{ description }}</p>{% endif %}
<p>{{ summary }}</p>
{% if info.overrides %}<p>Run with settings that override the study file:
{% for name, o in info.overrides.items() %}<code>{{ name }} = {{ o.value }}</code> (from {{ o['from'] }}){% if not loop.last %}, {% endif %}{% endfor %}.</p>{% endif %}
<h2>Data</h2>
{% if audit %}<ul class="notes">{% for line in audit %}<li class="warning">{{ line }}</li>{% endfor %}</ul>{% else %}<p>The data audit found nothing to warn about.</p>{% endif %}
<table><thead><tr><th>class</th><th>images</th>{% for f in fold_columns %}<th>fold {{ f }}</th>{% endfor %}</tr></thead><tbody>
{% for label, total, per_fold in class_counts %}<tr><td>{{ label }}</td><td>{{ total }}</td>{% for n in per_fold %}<td>{{ n }}</td>{% endfor %}</tr>{% endfor %}
</tbody></table>
<p>Validation images per class and fold (repeat 0).</p>

<h2>Leaderboard</h2>
<table><thead><tr>{% for h in headers %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in rows %}<tr>{% for cell in row %}<td{% if loop.index in (2, 3, 4) %} class="text"{% endif %}>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>
<p>Mean ± standard deviation over folds of each candidate's best configuration. The 95 % interval and
the p-value against the best use Nadeau and Bengio's corrected resampled t-test on the folds every
candidate shares: K-fold scores overlap in their training images, so the plain paired t-test is far
too confident. "Not distinguishable" means p ≥ 0.05. Each best configuration is the best of several,
so its score is optimistic (the winner's curse): the spread of the others is listed below.</p>
<ul class="notes">{% for line in board_notes %}<li{% if ': FAILED: ' in line %} class="failed"{% elif ': WARNING: ' in line %} class="warning"{% endif %}>{{ line }}</li>{% endfor %}</ul>

{% for c in candidates %}
<section class="candidate" id="{{ c.anchor }}">
<h2>{{ c.rank }}. {{ c.name }} <small>({{ c.model }}; trial {{ c.trial }}; {{ c.params }})</small></h2>
{% for note in c.notes %}<p class="warning">{{ note }}</p>{% endfor %}
{% if c.curves %}<figure><img alt="learning curves of {{ c.name }}" src="{{ c.curves }}"><figcaption>Loss and accuracy per epoch, mean ± std over folds (fit rows and early-stopping rows).</figcaption></figure>{% endif %}
{% if c.confusion %}<figure><img alt="confusion matrix of {{ c.name }}" src="{{ c.confusion }}"><figcaption>Out-of-fold confusion matrix (rows: true class).</figcaption></figure>{% endif %}
{% if c.reliability %}<figure><img alt="reliability of {{ c.name }}" src="{{ c.reliability }}"><figcaption>Reliability: expected calibration error {{ "%.3f"|format(c.ece) }}.</figcaption></figure>{% endif %}
{% if c.history_plot %}<figure><img alt="optimisation history of {{ c.name }}" src="{{ c.history_plot }}"><figcaption>Optuna: optimisation history.</figcaption></figure>{% endif %}
{% if c.importance_plot %}<figure><img alt="parameter importances of {{ c.name }}" src="{{ c.importance_plot }}"><figcaption>Optuna: parameter importances.</figcaption></figure>{% endif %}
{% if c.top_k %}<p>Out-of-fold top-k accuracy: {% for k, v in c.top_k.items() %}top-{{ k }} {{ "%.3f"|format(v) }}{% if not loop.last %}, {% endif %}{% endfor %}.</p>{% endif %}
{% if c.confused %}<p>Most confused: {% for t, p, n in c.confused %}{{ t }} → {{ p }} ({{ n }}){% if not loop.last %}; {% endif %}{% endfor %}.</p>{% endif %}
{% if c.per_class is not none %}
<table><thead><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr></thead><tbody>
{% for r in c.per_class %}<tr><td>{{ r.class }}</td><td>{{ "%.3f"|format(r.precision) }}</td><td>{{ "%.3f"|format(r.recall) }}</td><td>{{ "%.3f"|format(r.f1) }}</td><td>{{ r.support }}</td></tr>{% endfor %}
</tbody></table>{% endif %}
{% if c.wrong %}<h3>Most confidently wrong</h3><div class="strip">
{% for w in c.wrong %}<figure>{% if w.image %}<img alt="{{ w.id }}" src="{{ w.image }}">{% endif %}<figcaption>{{ w.id }}<br>true {{ w.true }}, predicted {{ w.predicted }} ({{ "%.2f"|format(w.probability) }})</figcaption></figure>{% endfor %}
</div>{% endif %}
</section>
{% endfor %}
<p><small>harness {{ version }}, {{ generated }}. Rebuild with <code>harness report {{ results_dir }}</code>.</small></p>
</body></html>
"""


def png(figure) -> str:
    """A matplotlib figure as a PNG data URI."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


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
    for the strip of confidently wrong predictions (left out without it)."""
    import jinja2

    results_dir = Path(results_dir)
    info = json.loads((results_dir / RUN_FILE).read_text())
    board = build_leaderboard(results_dir)
    records = read_records(results_dir / RECORDS_FILE)
    folds = pd.read_csv(results_dir / "folds.csv", dtype={"id": str, "label": str, "group": str}, keep_default_na=False)
    classes = list(info["classes"])
    headers, rows = table_cells(board)
    candidates = []
    for _, row in board.iterrows():
        if not isinstance(row.get("config_id"), str):
            continue
        mine = [r for r in records if r.candidate == row["candidate"] and r.config_id == row["config_id"]]
        entry = {
            "name": row["candidate"], "model": row["model"], "rank": row["rank"], "trial": row.get("best_trial"),
            "anchor": f"candidate-{len(candidates)}", "params": row.get("best_params"), "notes": [],
            "curves": learning_curves(mine), "per_class": None, "confusion": None, "reliability": None, "ece": 0.0,
            "confused": [], "top_k": {}, "wrong": [],
        }
        search_id = next((c["search_id"] for c in info["candidates"] if c["name"] == row["candidate"]), None)
        entry["history_plot"], entry["importance_plot"] = optuna_plots(info, results_dir, search_id)
        oof = out_of_fold(fold_predictions(results_dir, mine))
        if oof is None:
            entry["notes"].append("No out-of-fold predictions are stored for this configuration (recorded by an "
                                  "older harness): per-class evidence needs them.")
        else:
            if oof.missing:
                entry["notes"].append(f"{oof.missing} fold(s) without stored predictions are left out below.")
            matrix = confusion(oof, classes)
            entry["confusion"] = confusion_plot(matrix, classes)
            entry["reliability"], entry["ece"] = reliability_plot(oof)
            entry["per_class"] = per_class(oof, classes).to_dict("records")
            entry["confused"] = most_confused(matrix, classes)
            entry["top_k"] = top_k(oof, [k for k in info.get("top_k", []) if k > 1])
            wrong = confidently_wrong(oof)
            images = _strip_images(thumbnails, [int(oof.rows[i]) for i in wrong])
            entry["wrong"] = [
                {"id": folds["id"].iloc[int(oof.rows[i])], "true": classes[oof.labels[i]],
                 "predicted": classes[oof.predicted[i]], "probability": float(oof.probabilities[i].max()),
                 "image": images[n] if images else None}
                for n, i in enumerate(wrong)
            ]
        candidates.append(entry)
    repeats = [c for c in folds.columns if c.startswith("repeat_")]
    counts = pd.crosstab(folds["label"], folds[repeats[0]]) if repeats else pd.DataFrame()
    class_counts = [(label, int(row.sum()), [int(v) for v in row]) for label, row in counts.iterrows()]
    grouped = folds_grouped(info, folds)
    summary = (f"{len(folds)} images, {len(classes)} classes; {info['folds']}-fold cross-validation × "
               f"{len(repeats)} repeat(s), {'grouped' if grouped else 'ungrouped'}; objective {info['objective']}.")
    description = None
    study_file = results_dir / "study.toml"
    if study_file.exists():
        import tomllib

        try:
            description = tomllib.loads(study_file.read_text()).get("study", {}).get("description")
        except (tomllib.TOMLDecodeError, OSError):
            description = None
    page = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(TEMPLATE).render(
        info=info, description=description, summary=summary, audit=audit if audit is not None else info.get("notes", []),
        headers=headers, rows=rows, class_counts=class_counts, fold_columns=list(counts.columns), board_notes=notes(board), candidates=candidates, version=__version__,
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"), results_dir=str(results_dir),
    )
    path = results_dir / REPORT_FILE
    partial = path.with_name(f".{REPORT_FILE}.{os.getpid()}.tmp")
    partial.write_text(page, encoding="utf-8")
    partial.replace(path)
    return path


def _strip_images(thumbnails: Thumbnails, rows: list[int]) -> list[str] | None:
    if thumbnails is None or not rows:
        return None
    try:
        return [image_uri(image) for image in thumbnails(rows)]
    except Exception:  # images moved or unreadable since the run: the strip keeps its captions
        return None
