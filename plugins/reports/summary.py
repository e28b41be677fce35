"""Writes results/<study>/report.md when a study ends: data, folds, leaderboard, per-fold scores."""

from __future__ import annotations

import pandas as pd

from harness import Leaderboard, RunInfo, hookimpl
from harness.reports.api import (
    RECORDS_FILE, build_leaderboard, dead_warnings, read_records, tells_models_apart, to_markdown,
)


@hookimpl
def on_study_end(run: RunInfo, leaderboard: Leaderboard) -> None:
    folds, cv = run.folds, run.cv
    lines = [f"# {run.study}", ""]
    if run.description:
        lines += [run.description, ""]
    lines += [
        f"Study file: `{run.study_file}`. Dataset `{run.dataset}`: {run.images} images, "
        f"{len(run.classes)} classes. Cross-validation: {cv.folds} folds × {cv.repeats} "
        f"repeat(s), seed {cv.seed}, {'grouped' if cv.grouped else 'ungrouped'}, "
        f"{'stratified' if cv.stratified else 'not stratified'}. Objective: {run.objective}.",
        "",
    ]
    if run.overrides:
        lines += ["Run with settings that override the study file (the saved study.toml has them written in):", ""]
        lines += [f"- {o.name} = {o.value} (from {o.source})" for o in run.overrides] + [""]
    lines += [f"- warning: {note}" for note in run.notes] + ([""] if run.notes else [])
    from harness.reports.api import confidence_markdown  # scoring code: loaded when a study ends, not with the plugin

    board = build_leaderboard(run.results_dir)
    lines += ["## Leaderboard", "", to_markdown(board)]
    confident = confidence_markdown(run.results_dir, board)
    lines += [confident] if confident else []
    failed = [r for r in leaderboard.rows if r.status == "failed"]
    if failed:
        lines += ["## Failed candidates", ""]
        lines += [f"- **{r.candidate}** ({r.model}): {r.error}" for r in failed] + [""]
    records = read_records(run.results_dir / RECORDS_FILE)
    dead = [r for r in records if dead_warnings(r.warnings)]
    if dead:
        lines += [
            "## Folds whose model learned nothing", "",
            "Their predictions are the same for every image: the score is chance or the majority class, "
            "not evidence of learning.", "",
            "| candidate | trial | repeat | fold | finding |", "|---|---|---|---|---|",
        ]
        lines += [f"| {r.candidate} | {r.trial} | {r.repeat} | {r.fold} | {'; '.join(dead_warnings(r.warnings))} |" for r in dead]
        lines.append("")
    lines += ["## Validation images per class and fold (repeat 0)", ""]
    counts = pd.crosstab(folds["label"], folds["repeat_0"])
    lines += ["| class | " + " | ".join(f"fold {f}" for f in counts.columns) + " |", "|---|" + "---|" * len(counts.columns)]
    lines += [f"| {label} | " + " | ".join(str(v) for v in row) + " |" for label, row in counts.iterrows()]
    lines += ["", "## Best configuration of each candidate, fold by fold", ""]
    info = {"classes": list(run.classes), "objective": run.objective}
    for row in leaderboard.rows:
        if row.config_id is None:
            continue
        best = [r for r in records if r.candidate == row.candidate and r.config_id == row.config_id]
        metric_names = [m for m in (best[0].metrics if best else []) if tells_models_apart(m, info)]
        lines += [f"### {row.candidate} (trial {row.best_trial})", ""]
        lines += ["| repeat | fold | " + " | ".join(metric_names) + " | epochs | fit s |", "|---|---|" + "---|" * (len(metric_names) + 2)]
        for r in sorted(best, key=lambda r: (r.repeat, r.fold)):
            values = " | ".join(f"{r.metrics[m]:.4f}" for m in metric_names)
            lines.append(f"| {r.repeat} | {r.fold} | {values} | {r.epochs_run} | {r.fit_seconds:.1f} |")
        lines.append("")
    (run.results_dir / "report.md").write_text("\n".join(lines))
