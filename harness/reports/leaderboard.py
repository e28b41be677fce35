"""The leaderboard: per candidate, its best configuration's mean and spread over folds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.errors import HarnessError
from harness.results.records import RECORDS_FILE, load_records, skipped_lines_note
from harness.results.layout import RUN_FILE
from harness.evaluation.scores import folds_findings
from harness.evaluation.stats import corrected_interval, corrected_paired_test
from harness.reports.final_columns import add_final_columns, final_cells

CSV_FILE = "leaderboard.csv"
MARKDOWN_FILE = "leaderboard.md"


def metric_names(info: dict) -> list[str]:
    """Accuracy, each top-k accuracy that can tell models apart, loss."""
    top = [f"top_{k}_accuracy" for k in info["top_k"]]
    return [m for m in ["accuracy", *top, "loss"] if tells_models_apart(m, info)]


def tells_models_apart(metric: str, info: dict) -> bool:
    """False for top-k accuracy with k at or above the number of classes: 1 for every model. The
    fold records keep it; the leaderboard and reports leave it out (unless it is the objective)."""
    top = re.fullmatch(r"top_(\d+)_accuracy", metric)
    return top is None or int(top.group(1)) < len(info["classes"]) or metric == info["objective"]


def base_setting(params: dict) -> str:
    """A backbone's weights and how it trains, e.g. "imagenet, frozen + fine-tuned"; "—" without one."""
    if "weights" not in params:
        return "—"
    how = "frozen" if params.get("freeze_base", True) else "trained"
    return f"{params['weights']}, {how}" + (" + fine-tuned" if params.get("fine_tune") else "")


def build_leaderboard(results_dir: Path) -> pd.DataFrame:
    """Rank candidates by the objective's mean over folds of their best complete configuration.

    Built from the fold records alone, so it is the same whether the search finished in one run or
    was resumed. A configuration counts only when all its folds are recorded.
    """
    results_dir = Path(results_dir)
    run_path = results_dir / RUN_FILE
    if not run_path.exists():
        raise HarnessError(f"{results_dir}: not a results folder of harness (no {RUN_FILE}); run a study first.")
    info = json.loads(run_path.read_text())
    records, skipped = load_records(results_dir / RECORDS_FILE)
    objective, maximize = info["objective"], info["direction"] == "maximize"
    names = metric_names(info)
    extra = sorted(
        m for m in {m for r in records for m in r.metrics} - set(names)
        if not re.fullmatch(r"top_\d+_accuracy", m)  # top-k of the study's top_k only
    )
    rows = []
    scores: dict[str, dict[tuple[int, int], float]] = {}
    ratios: dict[str, float] = {}
    for cand in info["candidates"]:
        row, fold_scores, ratio = _candidate_row(cand, [r for r in records if r.search_id == cand["search_id"]],
                                                 info, names + extra)
        if fold_scores:
            scores[cand["name"]], ratios[cand["name"]] = fold_scores, ratio
        rows.append(row)
    table = pd.DataFrame(rows)
    key = f"{objective}_mean"
    if key not in table.columns:
        table[key] = float("nan")
    table = table.sort_values(key, ascending=not maximize, na_position="last", kind="stable").reset_index(drop=True)
    ranked = table[key].notna()
    table.insert(0, "rank", pd.Series(range(1, int(ranked.sum()) + 1), index=table.index[ranked], dtype="Int64"))
    _compare_with_best(table, scores, ratios, objective)
    add_final_columns(table, info, results_dir, names + extra)
    table.attrs["warnings"] = [skipped_lines_note(results_dir / RECORDS_FILE, skipped)] if skipped else []
    return table


def _candidate_row(cand: dict, mine: list, info: dict, metrics: list[str]) -> tuple[dict, dict, float]:
    """One candidate's leaderboard row (its best complete configuration's means, spreads and
    interval, and what it is), that configuration's objective per (repeat, fold) ({} when none is
    complete) and its mean ratio of validation to training images."""
    failed = info.get("failed", {})
    by_config: dict[str, list] = {}
    for r in mine:
        by_config.setdefault(r.config_id, []).append(r)
    n_splits = info["folds"] * info["repeats"]
    complete = {cid: rs for cid, rs in by_config.items() if len(rs) == n_splits}
    row = {"candidate": cand["name"], "model": cand["model"]}
    row["status"] = "failed" if cand["name"] in failed else "ok" if complete else "incomplete"
    row["error"] = failed.get(cand["name"], "")
    row["trials"] = len(by_config)  # configurations tried: a retried trial is the same configuration
    row["complete"] = len(complete)
    if not complete:
        return row, {}, 0.0
    objective, maximize = info["objective"], info["direction"] == "maximize"
    frame = {cid: pd.DataFrame([r.metrics for r in rs]) for cid, rs in complete.items()}
    means = pd.Series({cid: f[objective].mean() for cid, f in frame.items()})
    best = means.idxmax() if maximize else means.idxmin()
    folds = frame[best]
    for m in [m for m in metrics if m in folds.columns]:
        row[f"{m}_mean"] = folds[m].mean()
        row[f"{m}_std"] = folds[m].std(ddof=1) if len(folds) > 1 else 0.0
    best_records = complete[best]
    row["folds"] = len(best_records)
    row["fit_seconds"] = sum(r.fit_seconds for r in best_records) / len(best_records)
    row["best_trial"] = max(r.trial for r in best_records)  # the trial that completed it
    row["config_id"] = best
    row["best_params"] = json.dumps(best_records[0].tuned, sort_keys=True)
    row["config"] = json.dumps(best_records[0].params, sort_keys=True)
    row["base"] = base_setting(best_records[0].params)
    row["warnings"] = folds_findings(best_records)
    scores = {(r.repeat, r.fold): r.metrics[objective] for r in best_records}
    ratio = float(np.mean([r.val_size / max(r.train_size, 1) for r in best_records]))
    low, high = corrected_interval(list(scores.values()), ratio)
    if objective.endswith("accuracy"):  # a proportion: its interval stays within [0, 1]
        low, high = max(low, 0.0), min(high, 1.0)
    row[f"{objective}_ci_low"], row[f"{objective}_ci_high"] = low, high
    row["config_means"] = json.dumps(sorted((round(float(v), 6) for v in means), reverse=maximize))
    return row, scores, ratio


#: Below this p-value (corrected resampled t-test) a candidate counts as worse than the best.
SIGNIFICANCE = 0.05


def _compare_with_best(table: pd.DataFrame, scores: dict, ratios: dict, objective: str) -> None:
    """``p_vs_best`` and ``vs_best``: each candidate's best configuration against the leader's, by the
    Nadeau–Bengio corrected resampled t-test on the folds both have (the same folds: shared)."""
    table["p_vs_best"] = float("nan")
    table["vs_best"] = ""
    if not len(table) or pd.isna(table.loc[0, "rank"]):
        return
    leader = table.loc[0, "candidate"]
    for index, row in table.iterrows():
        name = row["candidate"]
        if name not in scores:
            continue
        if name == leader:
            table.loc[index, "vs_best"] = "best"
            continue
        shared = sorted(scores[name].keys() & scores[leader].keys())
        if len(shared) < 2:
            table.loc[index, "vs_best"] = "no shared folds"
            continue
        ratio = (ratios[name] + ratios[leader]) / 2
        _, p = corrected_paired_test([scores[leader][k] for k in shared], [scores[name][k] for k in shared], ratio)
        table.loc[index, "p_vs_best"] = p
        table.loc[index, "vs_best"] = "worse" if p < SIGNIFICANCE else "not distinguishable"


def write_leaderboard(table: pd.DataFrame, results_dir: Path) -> None:
    table.to_csv(Path(results_dir) / CSV_FILE, index=False, float_format="%.6g")
    (Path(results_dir) / MARKDOWN_FILE).write_text(to_markdown(table))


def table_cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headers and text cells: 'mean ± std' per metric, the rest as is."""
    # top-1 accuracy is accuracy: shown once on screen, kept in the CSV
    metrics = [c[: -len("_mean")] for c in table.columns
               if c.endswith("_mean") and c != "top_1_accuracy_mean" and not c.startswith("nested_")]
    interval = next((c[: -len("_ci_low")] for c in table.columns if c.endswith("_ci_low")), None)
    compared = interval is not None and "vs_best" in table.columns
    headers = ["#", "candidate", "model", "base", *(_short_name(m) for m in metrics)]
    if compared:
        headers += [f"{_short_name(interval)} 95% CI", "vs best (p)"]
    objective = interval or "accuracy"
    final = list(final_cells(table.iloc[0], _short_name(objective))) if len(table) else []
    headers += final
    headers += ["trials", "s/fold"]
    rows = []
    for _, r in table.iterrows():
        failed = r.get("status") == "failed"
        rank = r.get("rank")
        cells = ["—" if pd.isna(rank) else str(rank), str(r["candidate"]), str(r["model"]), _text(r.get("base"))]
        for m in metrics:
            mean, std = r.get(f"{m}_mean"), r.get(f"{m}_std")
            cells.append("failed" if failed else "—" if pd.isna(mean) else f"{mean:.3f}±{std:.3f}")
        if compared:
            low, high = r.get(f"{interval}_ci_low"), r.get(f"{interval}_ci_high")
            cells.append("—" if low is None or pd.isna(low) else f"{low:.3f}–{high:.3f}")
            p = r.get("p_vs_best")
            verdict = _text(r.get("vs_best"))
            cells.append(verdict if p is None or pd.isna(p) else f"{verdict} ({p:.2g})")
        cells += list(final_cells(r, _short_name(objective)).values()) if final else []
        cells.append(f"{int(r['complete'])}/{int(r['trials'])}")
        fit = r.get("fit_seconds")
        cells.append("—" if fit is None or pd.isna(fit) else f"{fit:.1f}")
        rows.append(cells)
    return headers, rows


def _text(value: object) -> str:
    return value if isinstance(value, str) and value else "—"


def notes(table: pd.DataFrame) -> list[str]:
    """What to read below the table, per candidate: its best parameters, or why it failed, and
    whether its model learned nothing."""
    lines = []
    for _, r in table.iterrows():
        if r.get("status") == "failed":
            lines.append(f"{r['candidate']}: FAILED: {r.get('error') or 'no trial completed'}")
            continue
        lines.append(f"{r['candidate']}: {_params_text(r.get('best_params'))}{_selection_note(r.get('config_means'))}")
        if isinstance(r.get("warnings"), str) and r["warnings"]:
            lines.append(f"{r['candidate']}: WARNING: {r['warnings']}")
        tested = r.get("test_config_id")
        if isinstance(tested, str) and tested != r.get("config_id"):
            lines.append(f"{r['candidate']}: the test score is of configuration {tested}, selected before more trials "
                         f"made {r.get('config_id')} the best by cross-validation; a test set is scored once")
    return lines


def _selection_note(text: object) -> str:
    """The spread of a candidate's complete configurations: its best is the best of these, so
    optimistic (the winner's curse)."""
    if not isinstance(text, str):
        return ""
    means = json.loads(text)
    if len(means) < 2:
        return ""
    others = means[1:]
    spread = f"the other {others[0]:.3f}" if len(others) == 1 else f"the others {min(others):.3f}–{max(others):.3f}"
    return f" (best of {len(means)} configurations; {spread}: the best of several is optimistic)"


def _short_name(metric: str) -> str:
    return metric.replace("_accuracy", "").replace("top_", "top-")


def _params_text(text: object) -> str:
    if not isinstance(text, str):
        return "—"
    params = json.loads(text)
    shown = (f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={json.dumps(v)}" for k, v in params.items())
    return ", ".join(shown) or "fixed"


def to_markdown(table: pd.DataFrame) -> str:
    """The table, then each candidate's best parameters (or failure) and warnings as a list."""
    headers, rows = table_cells(table)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    lines += [""] + [f"- {line}" for line in notes(table)]
    return "\n".join(lines) + "\n"


#: Columns repeated in every part of a leaderboard too wide for the screen.
KEY_COLUMNS = 2
#: Rich's cell padding and border per column.
COLUMN_FRAME = 3


def column_groups(widths: list[int], room: int, keys: int = KEY_COLUMNS) -> list[list[int]]:
    """Column indices per table so that each fits ``room`` characters: the first ``keys`` columns
    in every table, the others in order, never dropped (a column wider than the room gets its own)."""
    key_width = sum(widths[:keys]) + COLUMN_FRAME * keys + 1
    groups: list[list[int]] = []
    used = room
    for i in range(keys, len(widths)):
        need = widths[i] + COLUMN_FRAME
        if not groups or used + need > room:
            groups.append(list(range(keys)))
            used = key_width
        groups[-1].append(i)
        used += need
    return groups or [list(range(len(widths)))]


def print_leaderboard(table: pd.DataFrame, console: Console, title: str = "Leaderboard") -> None:
    """The table with every column whole: split into parts (the candidate repeated in each) when
    the terminal is too narrow; piped or redirected, one table as wide as it needs."""
    headers, rows = table_cells(table)
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    needed = sum(widths) + COLUMN_FRAME * len(widths) + 1
    if not console.is_terminal:
        console.width = max(console.width, needed)  # a log file has no width: keep the rows whole
    groups = column_groups(widths, console.width)
    for part, columns in enumerate(groups):
        caption = (
            "mean ± std over folds of each candidate's best configuration; 95% CI and p against the best: "
            "Nadeau–Bengio corrected resampled t-test on the shared folds"
            + ("; test: scored once after selection, exact binomial 95% CI, exact McNemar test against the "
               "best by CV (never used to rank)" if "test_n" in table.columns else "")
            + ("; nested: outer folds pooled, optimism = selected CV score − nested estimate"
               if "optimism" in table.columns else "")
        ) if part == len(groups) - 1 else None
        suffix = f" ({part + 1}/{len(groups)})" if len(groups) > 1 else ""
        rich_table = Table(title=title + suffix, caption=caption)
        for i in columns:
            rich_table.add_column(headers[i], no_wrap=True, min_width=widths[i])
        for row in rows:
            rich_table.add_row(*(escape(row[i]) for i in columns))
        console.print(rich_table)
    for warning in table.attrs.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True, highlight=False)
    for line in notes(table):
        style = "red" if ": FAILED: " in line else "yellow" if ": WARNING: " in line else ""
        console.print(f"  [{style}]{escape(line)}[/]" if style else f"  {escape(line)}", soft_wrap=True, highlight=False)
