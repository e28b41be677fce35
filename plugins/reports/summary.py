"""Writes results/<study>/report.md when a study ends: data, folds, leaderboard, per-fold scores."""

from __future__ import annotations

import pandas as pd

from harness import hookimpl
from harness.reports.leaderboard import tells_models_apart, to_markdown
from harness.results.records import read_records, RECORDS_FILE


@hookimpl
def on_study_end(run, leaderboard: pd.DataFrame) -> None:
    study, dataset, folds = run.study, run.dataset, run.folds
    lines = [f"# {study.name}", ""]
    if study.description:
        lines += [study.description, ""]
    lines += [
        f"Study file: `{study.path}`. Dataset `{study.dataset.name}`: {len(dataset.table)} images, "
        f"{len(dataset.classes)} classes. Cross-validation: {study.cv.folds} folds × {study.cv.repeats} "
        f"repeat(s), seed {study.cv.seed}, {'grouped' if study.cv.grouped and dataset.has_groups else 'ungrouped'}, "
        f"{'stratified' if study.cv.stratified else 'not stratified'}. Objective: {study.metrics.objective}.",
        "",
    ]
    if study.overrides:
        lines += ["Run with settings that override the study file (the saved study.toml has them written in):", ""]
        lines += [f"- {name} = {o['value']} (from {o['from']})" for name, o in study.overrides.items()] + [""]
    lines += [f"- warning: {note}" for note in run.notes] + ([""] if run.notes else [])
    lines += ["## Leaderboard", "", to_markdown(leaderboard)]
    failed = leaderboard[leaderboard.get("status", pd.Series(dtype=str)) == "failed"]
    if len(failed):
        lines += ["## Failed candidates", ""]
        lines += [f"- **{r['candidate']}** ({r['model']}): {r['error']}" for _, r in failed.iterrows()] + [""]
    records = read_records(run.results_dir / RECORDS_FILE)
    dead = [r for r in records if r.warnings]
    if dead:
        lines += [
            "## Folds whose model learned nothing", "",
            "Their predictions are the same for every image: the score is chance or the majority class, "
            "not evidence of learning.", "",
            "| candidate | trial | repeat | fold | finding |", "|---|---|---|---|---|",
        ]
        lines += [f"| {r.candidate} | {r.trial} | {r.repeat} | {r.fold} | {'; '.join(r.warnings)} |" for r in dead]
        lines.append("")
    lines += ["## Validation images per class and fold (repeat 0)", ""]
    counts = pd.crosstab(folds["label"], folds["repeat_0"])
    lines += ["| class | " + " | ".join(f"fold {f}" for f in counts.columns) + " |", "|---|" + "---|" * len(counts.columns)]
    lines += [f"| {label} | " + " | ".join(str(v) for v in row) + " |" for label, row in counts.iterrows()]
    lines += ["", "## Best configuration of each candidate, fold by fold", ""]
    info = {"classes": dataset.classes, "objective": study.metrics.objective}
    for _, row in leaderboard.iterrows():
        if not isinstance(row.get("best_params"), str):
            continue
        best = [r for r in records if r.candidate == row["candidate"] and r.config_id == row["config_id"]]
        metric_names = [m for m in (best[0].metrics if best else []) if tells_models_apart(m, info)]
        lines += [f"### {row['candidate']} (trial {row['best_trial']})", ""]
        lines += ["| repeat | fold | " + " | ".join(metric_names) + " | epochs | fit s |", "|---|---|" + "---|" * (len(metric_names) + 2)]
        for r in sorted(best, key=lambda r: (r.repeat, r.fold)):
            values = " | ".join(f"{r.metrics[m]:.4f}" for m in metric_names)
            lines.append(f"| {r.repeat} | {r.fold} | {values} | {r.epochs_run} | {r.fit_seconds:.1f} |")
        lines.append("")
    (run.results_dir / "report.md").write_text("\n".join(lines))
